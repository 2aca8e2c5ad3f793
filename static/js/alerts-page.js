// The Alerts page: the organisation's alerts with the API's filters (rule, vehicle, shipment,
// acknowledged) and paging (`before`, `limit`), acknowledging one or many at once, and a link
// from each to its vehicle on the fleet map. The first page takes new alerts and changes live
// from the `alerts` topic.

import { api, ApiError, goToSignIn, goToSignInIfLapsed, stillSignedIn } from './api.js';
import { alertTitle } from './alerts.js';
import { formatClock, setServerTime } from './format.js';
import { busy, el } from './forms.js';
import { connectLive } from './live.js';

const $ = (id) => document.getElementById(id);

const RULES = {
  geofence_enter: 'Geofence entered',
  geofence_exit: 'Geofence left',
  geofence_dwell: 'Dwell in a geofence',
  overspeed: 'Speeding',
  stopped: 'Stopped in transit',
  silent: 'Not reporting',
  off_route: 'Off route',
  arrived: 'Arrived',
  late: 'Running late',
};

const FILTERS = ['rule', 'vehicle_id', 'shipment_id', 'acknowledged', 'limit'];
const vehicleNames = new Map();
const shipmentRefs = new Map();

/** The pages walked so far: each entry the `before` cursor of that page (null: the newest). */
let cursors = [null];
/** id -> alert shown */
const shown = new Map();

function filterValues() {
  const out = {};
  for (const name of FILTERS) {
    const value = $('alert-filters').elements[name].value;
    if (value !== '') out[name] = value;
  }
  return out;
}

function query(before) {
  const params = new URLSearchParams(filterValues());
  if (before != null) params.set('before', String(before));
  return params.toString();
}

/** Whether `alert` belongs under the current filters (for live additions). */
function matches(alert) {
  const f = filterValues();
  if (f.rule && alert.rule !== f.rule) return false;
  if (f.vehicle_id && String(alert.vehicle_id) !== f.vehicle_id) return false;
  if (f.shipment_id && String(alert.shipment_id) !== f.shipment_id) return false;
  if (f.acknowledged === 'true' && !alert.acknowledged_at) return false;
  if (f.acknowledged === 'false' && alert.acknowledged_at) return false;
  return true;
}

async function load() {
  $('alerts-error').hidden = true;
  const before = cursors[cursors.length - 1];
  const filters = new URLSearchParams(filterValues());
  history.replaceState(null, '', filters.toString() ? `?${filters}` : window.location.pathname);
  try {
    const reply = await api(`/alerts?${query(before)}`);
    shown.clear();
    $('alerts-body').replaceChildren(...reply.alerts.map((a) => {
      shown.set(a.id, a);
      return row(a);
    }));
    setCount(reply.unacknowledged);
    const limit = Number(filterValues().limit || 100);
    $('page-older').disabled = reply.alerts.length < limit;
    $('page-newest').disabled = cursors.length === 1;
    $('alerts-empty').hidden = reply.alerts.length > 0;
    $('select-all').checked = false;
    updateBulk();
    $('alerts-table').dataset.ready = 'true';
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    $('alerts-error').textContent = e instanceof ApiError ? e.message : 'The alerts could not be loaded.';
    $('alerts-error').hidden = false;
  }
}

function setCount(n) {
  $('alerts-unacknowledged').textContent = String(n);
  $('alerts-unacknowledged').dataset.unacknowledged = String(n);
}

function row(a) {
  const tr = el('tr', { className: 'alert-row', attrs: { 'data-alert-id': a.id } });
  fill(tr, a);
  return tr;
}

function fill(tr, a) {
  const checked = tr.querySelector('.alert-row__select')?.checked;
  tr.dataset.rule = a.rule;
  tr.dataset.acknowledged = a.acknowledged_at ? 'true' : 'false';
  const title = alertTitle(a);
  const select = el('input', { className: 'alert-row__select', attrs: { type: 'checkbox', 'aria-label': `Select: ${title}` } });
  select.disabled = !!a.acknowledged_at;
  select.checked = !a.acknowledged_at && !!checked;
  select.addEventListener('change', updateBulk);
  const vehicle = a.vehicle_id == null ? '—' : vehicleNames.get(a.vehicle_id) || `Vehicle ${a.vehicle_id}`;
  const shipment = a.shipment_id == null ? el('span', { text: '—' }) : el('a', { text: shipmentRefs.get(a.shipment_id) || `#${a.shipment_id}`, attrs: { href: `/shipments/${a.shipment_id}` } });
  const state = [];
  if (a.cleared_at) state.push(`Over ${formatClock(a.cleared_at)}`);
  state.push(a.acknowledged_at ? `Acknowledged ${formatClock(a.acknowledged_at)}` : 'Not acknowledged');
  const map = a.vehicle_id == null ? el('span') : el('a', { className: 'button', text: 'On the map', attrs: { href: `/dispatch?vehicle=${a.vehicle_id}`, 'aria-label': `${vehicle} on the fleet map` } });
  tr.replaceChildren(
    el('td', {}, select),
    el('td', { className: 'alert-row__title', text: title }),
    el('td', { text: vehicle }),
    el('td', {}, shipment),
    el('td', { text: formatClock(a.position_at || a.raised_at) }),
    el('td', { className: 'alert-row__state', text: state.join(' · ') }),
    el('td', { className: 'table__actions' }, map));
}

function selectedIds() {
  return [...document.querySelectorAll('.alert-row__select:checked')].map((box) => Number(box.closest('tr').dataset.alertId));
}

function updateBulk() {
  const n = selectedIds().length;
  const button = $('acknowledge-selected');
  button.disabled = n === 0;
  button.textContent = n ? `Acknowledge selected (${n})` : 'Acknowledge selected';
}

$('select-all').addEventListener('change', (event) => {
  for (const box of document.querySelectorAll('.alert-row__select:not(:disabled)')) box.checked = event.target.checked;
  updateBulk();
});

$('acknowledge-selected').addEventListener('click', async (event) => {
  const ids = selectedIds();
  if (!ids.length) return;
  $('alerts-error').hidden = true;
  $('bulk-status').textContent = '';
  await busy(event.currentTarget, async () => {
    const results = await Promise.allSettled(ids.map((id) => api(`/alerts/${id}/acknowledge`, { method: 'POST' })));
    let failed = 0;
    let message = '';
    results.forEach((r) => {
      if (r.status === 'fulfilled') apply(r.value);
      else {
        failed += 1;
        if (r.reason instanceof ApiError && r.reason.status === 401) goToSignIn();
        message = r.reason instanceof ApiError ? r.reason.message : 'The server cannot be reached.';
      }
    });
    const done = ids.length - failed;
    $('bulk-status').textContent = `${done} acknowledged.`;
    if (failed) {
      $('alerts-error').textContent = `${failed} not acknowledged: ${message}`;
      $('alerts-error').hidden = false;
    }
  });
  updateBulk();
  refreshCount();
});

let countTimer = 0;

/** Read the unacknowledged count again from the API, once a burst of changes has passed. */
function refreshCount() {
  window.clearTimeout(countTimer);
  countTimer = window.setTimeout(async () => {
    try {
      setCount((await api('/alerts?limit=1')).unacknowledged);
    } catch {
      // the next change reads it again
    }
  }, 250);
}

/** An alert as it now stands: replace its row, or add it on the first page if it is new and matches. */
function apply(a) {
  const tr = document.querySelector(`.alert-row[data-alert-id="${a.id}"]`);
  if (tr) {
    shown.set(a.id, a);
    if (matches(a)) fill(tr, a);
    else tr.remove();
    return;
  }
  if (cursors.length === 1 && matches(a) && !shown.has(a.id)) {
    shown.set(a.id, a);
    $('alerts-body').prepend(row(a));
    $('alerts-empty').hidden = true;
  }
}

$('alert-filters').addEventListener('change', () => {
  cursors = [null];
  load();
});
$('alert-filters').addEventListener('submit', (event) => event.preventDefault());
$('page-older').addEventListener('click', () => {
  const ids = [...shown.keys()];
  if (!ids.length) return;
  cursors.push(Math.min(...ids));
  load();
});
$('page-newest').addEventListener('click', () => {
  cursors = [null];
  load();
});

async function fillChoices() {
  for (const [value, label] of Object.entries(RULES)) $('filter-rule').append(el('option', { text: label, attrs: { value } }));
  const [vehicles, shipments] = await Promise.allSettled([api('/vehicles?status=all'), api('/shipments')]);
  if (vehicles.status === 'fulfilled') {
    for (const v of vehicles.value.sort((a, b) => a.name.localeCompare(b.name))) {
      vehicleNames.set(v.id, v.name);
      $('filter-vehicle').append(el('option', { text: v.name, attrs: { value: v.id } }));
    }
  }
  if (shipments.status === 'fulfilled') {
    for (const s of shipments.value.sort((a, b) => b.id - a.id)) {
      shipmentRefs.set(s.id, s.reference);
      $('filter-shipment').append(el('option', { text: s.reference, attrs: { value: s.id } }));
    }
  }
  // Filters given in the address (a bookmark, a reload).
  const params = new URLSearchParams(window.location.search);
  for (const name of FILTERS) {
    const value = params.get(name);
    const control = $('alert-filters').elements[name];
    if (value != null && [...control.options].some((o) => o.value === value)) control.value = value;
  }
}

await fillChoices();
await load();

connectLive({
  topics: ['alerts'],
  onHello: (frame) => setServerTime(frame.server_time),
  onSnapshot: (topic, snapshot) => {
    if (topic === 'alerts' && typeof snapshot.unacknowledged === 'number') setCount(snapshot.unacknowledged);
  },
  onEvent: (frame) => {
    if (frame.type !== 'alert' || frame.topic !== 'alerts' || !frame.data) return;
    apply(frame.data);
    refreshCount();
  },
  onRefused: goToSignIn,
  checkAuth: stillSignedIn,
});
