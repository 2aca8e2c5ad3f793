// The alerts panel: a list of alerts, newest first, with the unacknowledged count, an
// acknowledge button, a short sound and a browser notification for each new one. It mounts
// into any element and shares the page's LiveClient:
//
//   mountAlerts(el, live)                                   // the organisation's `alerts` topic
//   mountAlerts(el, live, { topic: `shipment:${id}`, canAcknowledge: false })   // one shipment
//
// On `alerts` the snapshot carries the newest alerts and the count; on a shipment's topic they
// are read from GET /alerts?shipment_id=. Every `alert` frame (raised, cleared, acknowledged)
// replaces the alert it names, so replays after a reconnect change nothing twice.

import { api } from './api.js';
import { formatClock, formatSpeed } from './format.js';
import { tones } from './sound.js';

const MAX_SHOWN = 100;

const TITLES = {
  geofence_enter: (a) => `Entered ${a.details.geofence || 'a geofence'}`,
  geofence_exit: (a) => `Left ${a.details.geofence || 'a geofence'}`,
  geofence_dwell: (a) => `In ${a.details.geofence || 'a geofence'} for ${a.details.minutes ?? '?'} min`,
  overspeed: (a) => `Speeding, peak ${formatSpeed(a.details.peak_mps)}`,
  stopped: () => 'Stopped in transit',
  silent: () => 'Not reporting',
  off_route: (a) => `Off route by ${Math.round(a.details.farthest_m || a.details.distance_m || 0)} m`,
  arrived: () => 'Arrived at the destination',
  late: (a) => (a.details.eta ? `Running late, ETA ${formatClock(a.details.eta, { seconds: false })}` : 'Running late'),
};

/** One line a person reads for an alert. */
export function alertTitle(alert) {
  const title = TITLES[alert.rule];
  return title ? title({ ...alert, details: alert.details || {} }) : alert.rule;
}

/** A short two-tone chime. */
function chime() {
  tones([880, 1320]);
}

function notify(alert, subject) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  try {
    new Notification(alertTitle(alert), { body: subject, tag: `alert-${alert.id}` });
  } catch (e) {
    console.warn('alerts: no notification', e);
  }
}

/**
 * Mount the panel into `el`, fed by `live` (a LiveClient).
 * Options: `topic` ('alerts' or 'shipment:N'), `canAcknowledge`, `onFocus(alert)` (a click on an
 * alert), `describe(alert)` (the subject line: e.g. the vehicle's name), `sound`, `notify`.
 * Returns { alerts, unacknowledged() } for the page.
 */
export function mountAlerts(el, live, options = {}) {
  const o = {
    topic: 'alerts',
    canAcknowledge: true,
    onFocus: () => {},
    describe: (a) => (a.vehicle_id != null ? `Vehicle ${a.vehicle_id}` : ''),
    sound: true,
    notify: true,
    ...options,
  };
  el.classList.add('alerts');
  el.innerHTML = `
    <h2 class="panel__heading">Alerts <span class="count alerts__count" data-unacknowledged="0" title="Unacknowledged">0</span>
      <button class="button alerts__notify" type="button" hidden>Notify me</button></h2>
    <ul class="list alerts__list"></ul>
    <p class="empty alerts__empty">No alerts.</p>`;
  const listEl = el.querySelector('.alerts__list');
  const countEl = el.querySelector('.alerts__count');
  const emptyEl = el.querySelector('.alerts__empty');
  const notifyButton = el.querySelector('.alerts__notify');

  /** id -> alert */
  const alerts = new Map();
  let unacknowledged = 0;
  // Events at or below the snapshot's seq are already counted in it.
  let snapshotSeq = Infinity;

  if (o.notify && 'Notification' in window && Notification.permission === 'default') {
    notifyButton.hidden = false;
    notifyButton.addEventListener('click', async () => {
      await Notification.requestPermission();
      notifyButton.hidden = Notification.permission === 'default';
    });
  }

  function render() {
    const sorted = [...alerts.values()].sort((a, b) => b.id - a.id).slice(0, MAX_SHOWN);
    listEl.replaceChildren(...sorted.map(row));
    countEl.textContent = String(unacknowledged);
    countEl.dataset.unacknowledged = String(unacknowledged);
    emptyEl.hidden = alerts.size > 0;
  }

  function row(a) {
    const li = document.createElement('li');
    li.className = 'alert';
    li.dataset.alertId = String(a.id);
    li.dataset.rule = a.rule;
    li.dataset.acknowledged = a.acknowledged_at ? 'true' : 'false';
    if (a.cleared_at) li.dataset.cleared = 'true';
    const main = document.createElement('button');
    main.type = 'button';
    main.className = 'alert__main';
    const title = document.createElement('span');
    title.className = 'alert__title';
    title.textContent = alertTitle(a);
    const meta = document.createElement('span');
    meta.className = 'alert__meta';
    const parts = [formatClock(a.position_at || a.raised_at), o.describe(a)];
    if (a.cleared_at) parts.push(`over ${formatClock(a.cleared_at)}`);
    meta.textContent = parts.filter(Boolean).join(' · ');
    main.append(title, meta);
    main.addEventListener('click', () => o.onFocus(a));
    li.append(main);
    if (o.canAcknowledge && !a.acknowledged_at) {
      const ack = document.createElement('button');
      ack.type = 'button';
      ack.className = 'button alert__ack';
      ack.textContent = 'Acknowledge';
      ack.addEventListener('click', () => acknowledge(a.id, ack));
      li.append(ack);
    }
    return li;
  }

  async function acknowledge(id, button) {
    button.disabled = true;
    // Over the WebSocket when it is open; the change comes back as an `alert` event.
    if (live.send({ type: 'acknowledge', alert_id: id, ref: `ack:${id}` })) return;
    try {
      apply(await api(`/alerts/${id}/acknowledge`, { method: 'POST' }), 'acknowledged', Infinity);
    } catch (e) {
      console.error('alerts: could not acknowledge', e);
      button.disabled = false;
    }
  }

  /**
   * Take the alert as it now stands. Only a change the snapshot did not already count moves
   * the counter: a new unacknowledged alert, or one acknowledged that was not before.
   */
  function apply(alert, event, seq) {
    const before = alerts.get(alert.id);
    alerts.set(alert.id, alert);
    if (seq > snapshotSeq) {
      if (event === 'raised' && !before && !alert.acknowledged_at) {
        unacknowledged += 1;
        if (o.sound) chime();
        if (o.notify) notify(alert, o.describe(alert));
      }
      if (event === 'acknowledged' && !(before && before.acknowledged_at)) {
        unacknowledged = Math.max(0, unacknowledged - 1);
      }
    }
    render();
  }

  async function loadShipmentAlerts(shipmentId) {
    try {
      const reply = await api(`/alerts?shipment_id=${encodeURIComponent(shipmentId)}`);
      for (const a of reply.alerts || []) alerts.set(a.id, a);
      unacknowledged = [...alerts.values()].filter((a) => !a.acknowledged_at).length;
      render();
    } catch (e) {
      console.error('alerts: could not load', e);
    }
  }

  live.listen({
    onSnapshot(topic, snapshot) {
      if (topic !== o.topic) return;
      snapshotSeq = typeof snapshot.seq === 'number' ? snapshot.seq : -Infinity;
      if (topic === 'alerts') {
        alerts.clear();
        for (const a of snapshot.alerts || []) alerts.set(a.id, a);
        unacknowledged = snapshot.unacknowledged || 0;
        render();
      } else if (topic.startsWith('shipment:')) {
        loadShipmentAlerts(topic.slice('shipment:'.length));
      }
    },
    onEvent(frame) {
      // The reply to our own acknowledgement (`acknowledged`) needs nothing: the `alert` event
      // that every dispatcher gets follows it.
      if (frame.type !== 'alert' || frame.topic !== o.topic || !frame.data) return;
      apply(frame.data, frame.event, frame.seq);
    },
  });
  live.addTopic(o.topic);
  render();
  return { alerts, unacknowledged: () => unacknowledged };
}
