// The driver's phone page: see the assigned shipment, start and stop sharing the phone's
// location, and see what is happening. Every fix goes into the IndexedDB queue first; a sender
// posts the queue oldest first in batches whenever the network lets it, so lost signal, reloads
// and browser restarts lose nothing. Sharing, once started, resumes by itself after a reload.

import { mountAlerts } from './alerts.js';
import { mountChat } from './chat.js';
import { api, ApiError, goToSignIn, goToSignInIfLapsed, signOut } from './api.js';
import { formatClock, setServerTime, statusLabel } from './format.js';
import { connectLive } from './live.js';
import { FixQueue } from './queue.js';

const BATCH = 100; // fixes per request; the server takes up to 1000
const RETRY_BASE_MS = 1000;
const RETRY_CAP_MS = 60000;
const SAFETY_NET_MS = 30000; // try the queue this often even if nothing else wakes the sender
const ASSIGNMENT_REFRESH_MS = 60000; // dispatch may reassign, start or finish the shipment
const SHARING_KEY = 'waymark-driver-sharing';
const ASSIGNMENT_KEY = 'waymark-driver-assignment';

const $ = (id) => document.getElementById(id);
const userId = document.body.dataset.userId;

const state = {
  assignment: null,
  sharing: false,
  watchId: null,
  wakeLock: null,
  lastFix: null,
  lastSentAt: null,
  waiting: 0,
  sending: false,
  attempt: 0,
  retryTimer: 0,
  blocked: '', // why the sender waits for something other than the network
  live: null,
};

let queue = null;

// ---- the assigned shipment ----

async function loadAssignment() {
  try {
    const assignment = await api('/driver');
    localStorage.setItem(ASSIGNMENT_KEY, JSON.stringify(assignment));
    return assignment;
  } catch (e) {
    if (goToSignInIfLapsed(e)) return null;
    // Offline: the page came from the cache; so does what we last knew of the shipment.
    const saved = localStorage.getItem(ASSIGNMENT_KEY);
    return saved ? JSON.parse(saved) : { shipment: null, vehicle: null };
  }
}

function renderAssignment() {
  const { shipment, vehicle } = state.assignment || {};
  if (!shipment) {
    $('driver-shipment').textContent = 'No shipment assigned';
    $('driver-destination').textContent = '—';
    $('driver-status').textContent = '';
    $('driver-status').dataset.status = '';
    $('driver-vehicle').textContent = '';
  } else {
    $('driver-shipment').textContent = shipment.reference;
    const d = shipment.destination || {};
    $('driver-destination').textContent = d.name || `${d.lat?.toFixed(4)}, ${d.lon?.toFixed(4)}`;
    $('driver-status').textContent = statusLabel(shipment.status);
    $('driver-status').dataset.status = shipment.status;
    $('driver-vehicle').textContent = vehicle ? vehicle.name : 'No vehicle assigned';
  }
  const canShare = Boolean(shipment && vehicle);
  $('share-toggle').disabled = !canShare && !state.sharing;
  if (!canShare && !state.sharing) {
    $('share-hint').textContent = shipment
      ? 'Dispatch has not assigned a vehicle yet.'
      : 'Dispatch has not assigned you a shipment yet.';
  }
}

// ---- sharing ----

function startSharing() {
  if (state.sharing) return;
  if (!window.isSecureContext) {
    showError('Browsers share location only with secure pages: open Waymark through its https:// address.');
    return;
  }
  if (!('geolocation' in navigator)) {
    showError('This browser cannot share its location.');
    return;
  }
  state.sharing = true;
  localStorage.setItem(SHARING_KEY, '1');
  state.watchId = navigator.geolocation.watchPosition(onFix, onFixError, {
    enableHighAccuracy: true,
    maximumAge: 0,
    timeout: 60000,
  });
  keepAwake();
  render();
}

function stopSharing() {
  if (!state.sharing) return;
  state.sharing = false;
  localStorage.removeItem(SHARING_KEY);
  if (state.watchId !== null) navigator.geolocation.clearWatch(state.watchId);
  state.watchId = null;
  if (state.wakeLock) state.wakeLock.release().catch(() => {});
  state.wakeLock = null;
  render();
  sendSoon(); // what is still queued goes out regardless
}

let battery = null;
if (navigator.getBattery) {
  navigator.getBattery().then((b) => {
    battery = b;
  }, () => {});
}

function finite(v) {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

async function onFix(pos) {
  const shipment = state.assignment?.shipment;
  if (!shipment) return;
  const c = pos.coords;
  const fix = {
    t: Math.round(pos.timestamp),
    shipment: shipment.id,
    lat: c.latitude,
    lon: c.longitude,
    accuracy: finite(c.accuracy),
    speed: finite(c.speed),
    heading: finite(c.heading),
    altitude: finite(c.altitude),
    battery: battery ? Math.round(battery.level * 100) : undefined,
  };
  state.lastFix = fix;
  try {
    await queue.add(fix);
  } catch (e) {
    showError('This phone could not store the position; is its storage full?');
    console.error('queueing a fix', e);
    return;
  }
  await refreshCount();
  render();
  sendSoon();
}

function onFixError(err) {
  // 1: permission denied, 2: unavailable, 3: timeout. Only a refusal stops sharing.
  if (err.code === 1) {
    stopSharing();
    showError('Location access is blocked. Allow it for this site in the browser settings, then start sharing again.');
  } else {
    $('last-fix-detail').textContent = err.code === 3 ? 'waiting for GPS…' : 'no GPS signal';
  }
}

async function keepAwake() {
  if (!('wakeLock' in navigator)) {
    $('wake-state').textContent = 'May sleep (not supported here)';
    return;
  }
  try {
    state.wakeLock = await navigator.wakeLock.request('screen');
    state.wakeLock.addEventListener('release', () => {
      state.wakeLock = null;
      render();
    });
  } catch (e) {
    state.wakeLock = null; // refused, e.g. battery saver or the page is hidden
  }
  render();
}

document.addEventListener('visibilitychange', () => {
  // The browser drops the wake lock when the page is hidden; take it again on return.
  if (document.visibilityState === 'visible' && state.sharing && !state.wakeLock) keepAwake();
  if (document.visibilityState === 'visible') sendSoon();
});

// ---- sending ----

function sendSoon() {
  if (state.retryTimer) {
    clearTimeout(state.retryTimer);
    state.retryTimer = 0;
  }
  send();
}

function retryLater() {
  const cap = Math.min(RETRY_CAP_MS, RETRY_BASE_MS * 2 ** state.attempt);
  state.attempt += 1;
  const delay = Math.max(RETRY_BASE_MS / 2, Math.random() * cap);
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(() => {
    state.retryTimer = 0;
    send();
  }, delay);
}

function wire(fix) {
  const p = { recorded_at: new Date(fix.t).toISOString(), lat: fix.lat, lon: fix.lon };
  for (const k of ['accuracy', 'speed', 'heading', 'altitude', 'battery']) {
    if (fix[k] !== undefined) p[k] = fix[k];
  }
  // The browser reports headings of 360 now and then; the API takes 0 to 360.
  if (p.heading !== undefined) p.heading = ((p.heading % 360) + 360) % 360;
  return p;
}

/** Posts the queue oldest first, one batch at a time, until it is empty or the network fails. */
async function send() {
  if (state.sending || !queue) return;
  state.sending = true;
  try {
    for (;;) {
      const oldest = await queue.oldest(BATCH);
      if (!oldest.length) break;
      // One request carries fixes of one shipment (the one shared when they were taken).
      const batch = oldest.filter((f) => f.shipment === oldest[0].shipment);
      let result;
      try {
        result = await api(`/driver/positions?shipment=${batch[0].shipment}`, {
          method: 'POST',
          body: batch.map(wire),
        });
      } catch (e) {
        if (!(await handleFailure(e, batch))) return;
        continue;
      }
      await queue.remove(batch.map((f) => f.t));
      state.lastSentAt = new Date();
      state.attempt = 0;
      // A planned shipment starts with its first position: show that.
      if (state.assignment?.shipment?.status === 'planned') refreshAssignment();
      state.blocked = '';
      hideError();
      if (result && result.seqs) console.debug('sent', batch.length, 'fixes');
      await refreshCount();
      render();
    }
  } finally {
    state.sending = false;
  }
}

/** Decides what a failed post means; true to go on with the queue, false to wait. */
async function handleFailure(e, batch) {
  if (e instanceof ApiError && e.status === 400 && e.code === 'validation') {
    // The server names the bad fix; it can never be stored, so it must not block the rest.
    const bad = batch[Number.isInteger(e.index) ? e.index : 0];
    console.warn('the server refused a fix', bad, e.message);
    await queue.remove([bad.t]);
    await refreshCount();
    return true;
  }
  if (e instanceof ApiError && e.status === 401) {
    state.blocked = 'Signed out: sign in again to send the waiting positions.';
    showError(state.blocked);
    render();
    return false; // kept for after sign-in
  }
  if (e instanceof ApiError && e.status === 410) {
    // Retired for good: retrying would never succeed. The positions stay on the phone, and are
    // sent should dispatch put the vehicle back in service (the next reload tries again).
    state.blocked = 'Dispatch has retired this vehicle: stop sharing. Waiting positions are kept on this phone.';
    showError(state.blocked);
    render();
    return false;
  }
  if (e instanceof ApiError && (e.status === 404 || e.status === 409)) {
    state.blocked = 'Dispatch changed your assignment; waiting positions are kept.';
  }
  render();
  retryLater(); // offline, server busy or restarting: try again with backoff
  return false;
}

async function refreshCount() {
  state.waiting = await queue.count();
}

// ---- display ----

function showError(text) {
  $('driver-error').textContent = text;
  $('driver-error').hidden = false;
}

function hideError() {
  if (!state.blocked) $('driver-error').hidden = true;
}

function render() {
  const toggle = $('share-toggle');
  toggle.dataset.sharing = String(state.sharing);
  $('share-label').textContent = state.sharing ? 'Stop sharing' : 'Start sharing';
  if (state.sharing) {
    toggle.disabled = false;
    $('share-hint').textContent = 'Dispatch sees where you are. Keep this page open.';
  } else if (state.assignment?.vehicle) {
    $('share-hint').textContent = 'Your location goes to dispatch while this is on.';
  }
  const sharingEl = $('sharing-state');
  sharingEl.dataset.state = state.sharing ? 'on' : 'off';
  sharingEl.textContent = state.sharing ? 'On' : 'Off';

  if (state.lastFix) {
    $('last-fix').textContent = formatClock(new Date(state.lastFix.t).toISOString());
    const acc = state.lastFix.accuracy;
    $('last-fix-detail').textContent = acc !== undefined ? `± ${Math.round(acc)} m` : '';
  }
  $('last-sent').textContent = state.lastSentAt ? formatClock(state.lastSentAt.toISOString()) : '—';
  $('queue-count').textContent = String(state.waiting);
  const online = navigator.onLine !== false;
  $('network-state').textContent = online ? (state.retryTimer ? 'Retrying…' : 'Online') : 'Offline: positions are kept';
  $('network-state').dataset.online = String(online);
  if (state.sharing) {
    $('wake-state').textContent = state.wakeLock ? 'Kept on while sharing' : ('wakeLock' in navigator ? 'May sleep' : 'May sleep (not supported here)');
  } else {
    $('wake-state').textContent = '—';
  }
}

window.addEventListener('online', () => {
  render();
  sendSoon();
});
window.addEventListener('offline', render);

/** Follows the assigned shipment live (its status changes with the first position). */
function watchShipment() {
  const shipment = state.assignment?.shipment;
  const topic = shipment ? `shipment:${shipment.id}` : '';
  if (state.live && state.live.topics[0] === topic) return;
  if (state.live) state.live.stop();
  state.live = null;
  $('alerts-panel').hidden = !shipment;
  $('chat-panel').hidden = !shipment;
  if (!shipment) {
    $('conn-status').dataset.state = 'closed';
    $('conn-status').querySelector('.conn__label').textContent = 'No shipment';
    return;
  }
  state.live = connectLive({
    topics: [topic],
    onHello: (frame) => setServerTime(frame.server_time),
    onSnapshot: (_, snapshot) => {
      if (snapshot && snapshot.shipment && state.assignment) {
        state.assignment.shipment = snapshot.shipment;
        renderAssignment();
      }
    },
    onRefused: () => goToSignIn(),
  });
  // What dispatch is told about this shipment (off route, late, arrived…), as it happens.
  mountAlerts($('alerts-panel'), state.live, { topic, canAcknowledge: false, notify: false });
  // The conversation with dispatch, with large touch targets for a phone in a cab.
  mountChat($('chat-panel'), state.live, { shipmentId: shipment.id, large: true });
}

/** Asks again what this driver is assigned; a finished shipment ends sharing for it. */
async function refreshAssignment() {
  const before = state.assignment?.shipment?.id;
  let assignment;
  try {
    assignment = await api('/driver');
  } catch (e) {
    goToSignInIfLapsed(e);
    return; // offline: keep what we know
  }
  localStorage.setItem(ASSIGNMENT_KEY, JSON.stringify(assignment));
  state.assignment = assignment;
  if (state.sharing && !assignment.shipment) {
    stopSharing();
    showError('The shipment is finished: sharing stopped. Waiting positions are still sent.');
  }
  renderAssignment();
  if (assignment.shipment?.id !== before) watchShipment();
}

// ---- start ----

async function main() {
  $('share-toggle').addEventListener('click', () => (state.sharing ? stopSharing() : startSharing()));
  $('sign-out').addEventListener('click', async () => {
    stopSharing();
    await signOut();
  });
  if ('serviceWorker' in navigator) {
    // Lets the page open with no signal at all; the queue does the rest.
    navigator.serviceWorker.register('/driver-sw.js', { scope: '/driver' }).catch((e) => {
      console.warn('no offline page', e);
    });
  }
  queue = await FixQueue.open(userId);
  state.assignment = await loadAssignment();
  if (!state.assignment) return;
  renderAssignment();
  await refreshCount();
  if (localStorage.getItem(SHARING_KEY) === '1' && state.assignment.shipment) startSharing();
  render();
  sendSoon();
  setInterval(() => {
    if (!state.retryTimer) send();
    render();
  }, SAFETY_NET_MS);

  watchShipment();
  setInterval(refreshAssignment, ASSIGNMENT_REFRESH_MS);
  document.body.dataset.ready = 'true';
}

main().catch((e) => {
  console.error(e);
  showError('The page could not start. Reload it.');
});
