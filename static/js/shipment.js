// One shipment on a map: planned route, origin and destination, the driven track, the live
// vehicle with its ETA, and (signed in) the shipment's alerts. Serves both the signed-in page and
// the customer's share link (data-share-token set), in which case every call carries the share
// token and the dispatcher's controls stay hidden.

/* global L */

import { mountAlerts } from './alerts.js';
import { mountChat } from './chat.js';
import { api, ApiError, goToSignIn, goToSignInIfLapsed } from './api.js';
import { busy, clearErrors, confirmAction, copyText, driverOption, errorText, showApiError, vehicleOption } from './forms.js';
import { formatAgo, formatClock, formatLatLon, formatSpeed, setServerTime, statusLabel, timeKey } from './format.js';
import { connectLive } from './live.js';
import { showPhoneLink } from './qr.js';
import { createMap, lineLatLngs, placeMarker, Track, VehicleMarker } from './map.js';

const HEADLINES = {
  planned: 'Waiting to depart',
  in_transit: 'On its way',
  arrived: 'Arrived',
  delivered: 'Delivered',
  cancelled: 'Cancelled',
};

const SHIPMENT_REFRESH_MS = 60000;

const body = document.body;
const shipmentId = body.dataset.shipmentId;
const share = body.dataset.shareToken || '';
const $ = (id) => document.getElementById(id);

if (share) body.classList.add('is-share');
$('share-footer').hidden = !share;

const map = createMap($('map'), { tileUrl: body.dataset.tileUrl, attribution: body.dataset.tileAttribution });
const routeLine = L.polyline([], { className: 'wm-route', weight: 4, dashArray: '8 10', interactive: false }).addTo(map);
const trackLine = L.polyline([], { className: 'wm-track', weight: 5, interactive: false }).addTo(map);
const track = new Track();

let shipment = null;
let places = [];
let drawnGeometry = '';
let vehicle = null; // VehicleMarker
let markerKey = -Infinity;
let markerTime = null;
let follow = true;
let fitted = false;
let live = null;
let dispatcher = false; // signed in as admin or dispatcher

map.on('dragstart', () => {
  follow = false;
});

// ---- drawing ----

function addPoint(lat, lon, key) {
  if (!Number.isFinite(lat) || !Number.isFinite(lon)) return;
  if (track.insert(key, [lat, lon])) {
    trackLine.setLatLngs(track.latlngs);
    $('track-points').textContent = String(track.length);
  }
}

/** Put the vehicle at `pos` unless it already shows a newer position. */
function moveMarker(pos, key = timeKey(pos.recorded_at)) {
  if (!Number.isFinite(pos.lat) || !Number.isFinite(pos.lon) || key < markerKey) return;
  markerKey = key;
  if (!vehicle) {
    vehicle = new VehicleMarker([pos.lat, pos.lon], { name: shipment ? shipment.reference : 'Vehicle', heading: pos.heading });
    vehicle.addTo(map);
  } else {
    vehicle.update(pos);
  }
  $('last-position').textContent = formatLatLon(pos.lat, pos.lon);
  $('speed').textContent = formatSpeed(pos.speed);
  if (pos.eta) $('eta').textContent = formatClock(pos.eta, { seconds: false });
  markerTime = pos.recorded_at || null;
  const when = $('last-update');
  when.textContent = markerTime ? formatClock(markerTime) : '—';
  if (markerTime) when.dateTime = markerTime;
  renderAgo();
  if (fitted && follow) {
    const ll = vehicle.getLatLng();
    if (!map.getBounds().pad(-0.1).contains(ll)) map.panTo(ll);
  }
}

function renderAgo() {
  const text = markerTime ? `(${formatAgo(markerTime)})` : '';
  const el = $('last-update-ago');
  if (el.textContent !== text) el.textContent = text;
}

/** A position from the API or the live feed: into the track, and onto the marker if current. */
function applyPosition(pos) {
  if (!pos) return;
  const key = timeKey(pos.recorded_at);
  addPoint(pos.lat, pos.lon, key);
  if (!pos.late) moveMarker(pos, key);
}

function placeText(place) {
  if (!place) return '—';
  return place.name || formatLatLon(place.lat, place.lon);
}

function applyShipment(s) {
  if (!s) return;
  shipment = s;
  if (!share) {
    renderPhoneLink();
    renderManage();
  }
  $('reference').textContent = s.reference;
  $('topbar-title').textContent = s.reference;
  document.title = `${s.reference} · Waymark`;
  const status = $('status');
  status.textContent = s.status;
  status.dataset.status = s.status;
  status.title = statusLabel(s.status);
  $('status-headline').textContent = HEADLINES[s.status] || statusLabel(s.status);
  body.dataset.status = s.status;
  $('eta').textContent = s.eta ? formatClock(s.eta, { seconds: false }) : '—';
  $('due').textContent = s.due_at ? formatClock(s.due_at, { seconds: false }) : '—';
  $('origin').textContent = placeText(s.origin);
  $('destination').textContent = placeText(s.destination);
  if (vehicle) vehicle.setName(s.reference);

  const geometry = JSON.stringify([s.origin, s.destination, s.planned_route]);
  if (geometry !== drawnGeometry) {
    drawnGeometry = geometry;
    for (const m of places) m.remove();
    places = [];
    for (const [kind, place] of [['origin', s.origin], ['destination', s.destination]]) {
      if (place && Number.isFinite(place.lat) && Number.isFinite(place.lon)) {
        places.push(placeMarker([place.lat, place.lon], kind, place.name).addTo(map));
      }
    }
    routeLine.setLatLngs(lineLatLngs(s.planned_route));
  }
  applyPosition(s.last_position);
}

function applyTrack(geojson) {
  const feature = geojson && Array.isArray(geojson.features) ? geojson.features[0] : null;
  if (!feature || !feature.geometry) return;
  const coords = feature.geometry.coordinates || [];
  const times = (feature.properties && feature.properties.times) || [];
  coords.forEach((c, i) => {
    // Without times the vertices still keep their order, ahead of any live point.
    const key = times[i] ? timeKey(times[i]) : i - 1e15;
    addPoint(c[1], c[0], key);
  });
  // The newest vertex is where the vehicle is, should the shipment not say (yet).
  const last = coords[coords.length - 1];
  const lastTime = times[coords.length - 1];
  if (last && lastTime && timeKey(lastTime) > markerKey) {
    moveMarker({ lat: last[1], lon: last[0], recorded_at: lastTime, heading: null, speed: null });
  }
}

function fitOnce() {
  if (fitted) return;
  const points = [...routeLine.getLatLngs(), ...track.latlngs, ...places.map((m) => m.getLatLng())];
  if (vehicle) points.push(vehicle.getLatLng());
  if (points.length === 0) return;
  fitted = true;
  if (points.length === 1) map.setView(points[0], 14);
  else map.fitBounds(L.latLngBounds(points).pad(0.12), { maxZoom: 16 });
}

// ---- loading and errors ----

function showError(message) {
  const el = $('page-error');
  el.textContent = message;
  el.hidden = !message;
}

/** Act on a failed REST call; true when the page cannot go on. */
function handleFailure(e, what) {
  if (e instanceof ApiError) {
    if (share && (e.status === 401 || e.status === 403 || e.status === 404)) {
      linkExpired();
      return true;
    }
    if (e.status === 401) {
      goToSignIn();
      return true;
    }
    if (e.status === 404 || e.status === 403) {
      showError('This shipment does not exist or you cannot see it.');
      if (live) live.stop('Unavailable');
      return true;
    }
  }
  console.error(`could not load the ${what}`, e);
  return false;
}

function linkExpired() {
  showError('This tracking link has expired or was withdrawn. Ask the sender for a new one.');
  $('status-headline').textContent = 'Link expired';
  body.classList.add('is-expired');
  if (live) live.stop('Link expired');
}

async function loadShipment() {
  try {
    applyShipment(await api(`/shipments/${shipmentId}`, { share }));
    showError('');
  } catch (e) {
    if (!handleFailure(e, 'shipment')) showError('Could not load the shipment. Retrying when the connection is back.');
  }
}

async function loadTrack() {
  try {
    applyTrack(await api(`/shipments/${shipmentId}/track`, { share }));
  } catch (e) {
    handleFailure(e, 'track');
  }
}

// ---- live feed ----

const topic = `shipment:${shipmentId}`;
let snapshots = 0;

live = connectLive({
  topics: [topic],
  share,
  onHello: (frame) => setServerTime(frame.server_time),
  onSnapshot: (t, snapshot) => {
    if (t !== topic) return;
    showError('');
    applyShipment(snapshot.shipment);
    // The first page load read the track before this subscription existed; read it once more
    // so nothing committed in between is missing. Later resubscribes resume with `since`.
    if (++snapshots === 1) loadTrack().then(fitOnce);
  },
  onEvent: (frame) => {
    if (frame.topic !== topic) return;
    // Arrival changes the status; the alert is the sign to look again.
    if (frame.type === 'alert' && frame.data && frame.data.rule === 'arrived') refreshShipmentSoon(0);
    if (frame.type !== 'position') return;
    applyPosition(frame.data);
    // A planned shipment starts with its first position; fetch the new status.
    if (shipment && shipment.status === 'planned') refreshShipmentSoon();
  },
  onRefused: () => {
    if (share) linkExpired();
    else goToSignIn();
  },
  checkAuth: async () => {
    try {
      await api(`/shipments/${shipmentId}`, { share });
      return true;
    } catch (e) {
      return !(e instanceof ApiError && [401, 403, 404].includes(e.status));
    }
  },
});

Promise.all([loadShipment(), loadTrack()]).then(fitOnce);
window.setInterval(renderAgo, 1000);

// Status and ETA change without a position event; look again now and then.
let refreshTimer = 0;
function refreshShipmentSoon(delay = 1500) {
  if (refreshTimer || (live && live.state === 'closed')) return;
  refreshTimer = window.setTimeout(() => {
    refreshTimer = 0;
    loadShipment();
  }, delay);
}
window.setInterval(() => refreshShipmentSoon(0), SHIPMENT_REFRESH_MS);

// ---- signed-in extras: the way back, and the share link for dispatchers ----

async function setUpSignedIn() {
  let me;
  try {
    me = await api('/auth/me');
  } catch (e) {
    goToSignInIfLapsed(e);
    return;
  }
  const user = (me && me.user) || me || {};
  const back = $('back-link');
  const dispatches = user.role === 'admin' || user.role === 'dispatcher';
  const panel = $('alerts-panel');
  panel.hidden = false;
  mountAlerts(panel, live, { topic, canAcknowledge: dispatches, sound: dispatches, notify: false });
  showChat();
  if (dispatches) {
    back.hidden = false;
    $('share-section').hidden = false;
    $('manage-section').hidden = false;
    dispatcher = true;
    renderPhoneLink();
    renderManage();
    loadAssignees();
    loadShares();
  } else if (user.role === 'driver') {
    back.href = '/driver';
    back.textContent = '← Driver';
    back.hidden = false;
  }
}

/** The driver's-phone section, for dispatchers, while the shipment has a driver. */
function renderPhoneLink() {
  $('phone-link-section').hidden = !(dispatcher && shipment && shipment.driver_id);
}

/**
 * Runs a dispatcher's link action from `buttonId`: the button is disabled meanwhile, and a
 * failure shows in `errorId` (or sends the user to sign in).
 */
async function linkAction(buttonId, errorId, action) {
  const errorEl = $(errorId);
  errorEl.hidden = true;
  await busy($(buttonId), async () => {
    try {
      await action();
    } catch (e) {
      if (goToSignInIfLapsed(e)) return;
      errorEl.textContent = errorText(e, 'Could not create the link.');
      errorEl.hidden = false;
    }
  });
}

function createPhoneLink() {
  return linkAction('phone-link-button', 'phone-link-error', async () => {
    await showPhoneLink(shipment.driver_id, 'QR code of the phone link');
    $('phone-link-result').hidden = false;
  });
}

async function createShareLink(event) {
  event.preventDefault();
  await linkAction('share-button', 'share-error', async () => {
    const reply = await api(`/shipments/${shipmentId}/share`, {
      method: 'POST',
      body: { expires_in_s: Number($('share-expiry').value), chat: $('share-chat').checked },
    });
    const path = reply.url || `/t/${encodeURIComponent(reply.token)}`;
    const input = $('share-url');
    input.value = /^https?:\/\//.test(path) ? path : window.location.origin + path;
    $('share-expires').textContent = reply.expires_at ? `Valid until ${formatClock(reply.expires_at, { seconds: false })}` : '';
    $('share-result').hidden = false;
    input.focus();
    input.select();
  });
  loadShares();
}

// ---- a dispatcher's management: status, assignment, the customer links ----

const FINAL = new Set(['delivered', 'cancelled']);

/** The status buttons as the shipment stands: none once it is over. */
function renderManage() {
  if (!dispatcher || !shipment) return;
  const over = FINAL.has(shipment.status);
  $('manage-status').hidden = over;
  $('manage-final').hidden = !over;
  $('assign-form').hidden = over;
  for (const [id, key] of [['assign-vehicle', 'vehicle_id'], ['assign-driver', 'driver_id']]) {
    const select = $(id);
    // Follow the shipment unless the person is choosing another one.
    if (document.activeElement !== select && select.dataset.changed !== 'true') {
      select.value = shipment[key] == null ? '' : String(shipment[key]);
    }
  }
}

function fillAssignees(select, items, label, current) {
  select.replaceChildren(new Option(`No ${label}`, '', false, current == null), ...items);
  select.value = current == null ? '' : String(current);
  select.options[0].disabled = current != null; // the API can reassign, not unassign
}

async function loadAssignees() {
  try {
    const [vehicles, drivers] = await Promise.all([api('/vehicles?status=all'), api('/users?role=driver')]);
    const current = shipment || {};
    // A retired vehicle cannot be given the shipment; the one it has is shown all the same.
    const vehicleOptions = vehicles
      .filter((v) => v.status !== 'retired' || v.id === current.vehicle_id)
      .map(vehicleOption);
    fillAssignees($('assign-vehicle'), vehicleOptions, 'vehicle', current.vehicle_id);
    fillAssignees(
      $('assign-driver'),
      drivers.filter((u) => !u.disabled || u.id === current.driver_id).map(driverOption),
      'driver',
      current.driver_id,
    );
    renderManage();
  } catch (e) {
    goToSignInIfLapsed(e);
  }
}

for (const id of ['assign-vehicle', 'assign-driver']) {
  $(id).addEventListener('change', () => {
    $(id).dataset.changed = 'true';
  });
}

/** PATCH the shipment with `change`; errors show in the management form. */
async function changeShipment(change, done) {
  const form = $('assign-form');
  clearErrors(form);
  $('manage-notice').hidden = true;
  try {
    applyShipment(await api(`/shipments/${shipmentId}`, { method: 'PATCH', body: change }));
    $('manage-notice').textContent = done;
    $('manage-notice').hidden = false;
    return true;
  } catch (e) {
    if (form.hidden) form.hidden = false;
    showApiError(form, e);
    return false;
  }
}

async function reassign(event) {
  event.preventDefault();
  const change = {};
  const vehicle = $('assign-vehicle').value;
  const driver = $('assign-driver').value;
  if (vehicle && Number(vehicle) !== shipment.vehicle_id) change.vehicle_id = Number(vehicle);
  if (driver && Number(driver) !== shipment.driver_id) change.driver_id = Number(driver);
  if (Object.keys(change).length === 0) {
    $('manage-notice').textContent = 'Nothing changed.';
    $('manage-notice').hidden = false;
    return;
  }
  await busy($('assign-save'), async () => {
    if (await changeShipment(change, 'Reassigned.')) {
      delete $('assign-vehicle').dataset.changed;
      delete $('assign-driver').dataset.changed;
      renderManage();
    }
  });
}

async function setStatus(status) {
  const questions = {
    delivered: {
      title: `Mark ${shipment.reference} delivered?`,
      message: 'The shipment ends: its vehicle is free for the next one, and its status cannot change again.',
      confirm: 'Mark delivered',
    },
    cancelled: {
      title: `Cancel ${shipment.reference}?`,
      message: 'The shipment ends without delivery, and its status cannot change again.',
      confirm: 'Cancel shipment',
      cancel: 'Keep shipment',
    },
  };
  if (!(await confirmAction(questions[status]))) return;
  await changeShipment({ status }, status === 'delivered' ? 'Marked delivered.' : 'Cancelled.');
}

function shareState(link) {
  if (link.active) return 'Active';
  return link.revoked_at ? 'Revoked' : 'Expired';
}

function shareRow(link) {
  const li = document.createElement('li');
  li.className = 'share-link';
  li.dataset.shareId = String(link.id);
  li.dataset.state = shareState(link).toLowerCase();
  const main = document.createElement('span');
  main.className = 'share-link__main';
  const state = document.createElement('span');
  state.className = 'share-link__state';
  state.textContent = shareState(link);
  const meta = document.createElement('span');
  meta.className = 'share-link__meta muted';
  const when = link.revoked_at
    ? `revoked ${formatClock(link.revoked_at, { seconds: false })}`
    : `${link.active ? 'until' : 'ended'} ${formatClock(link.expires_at, { seconds: false })}`;
  meta.textContent = [`made ${formatClock(link.created_at, { seconds: false })}`, when, link.chat ? 'with chat' : '']
    .filter(Boolean)
    .join(' · ');
  main.append(state, meta);
  li.append(main);
  if (link.active) {
    const revoke = document.createElement('button');
    revoke.type = 'button';
    revoke.className = 'button share-link__revoke';
    revoke.textContent = 'Revoke';
    revoke.addEventListener('click', () => revokeShare(link, revoke));
    li.append(revoke);
  }
  return li;
}

async function loadShares() {
  let links;
  try {
    links = (await api(`/shipments/${shipmentId}/shares`)) || [];
  } catch (e) {
    goToSignInIfLapsed(e);
    $('share-empty').textContent = 'Could not load the links.';
    $('share-empty').hidden = false;
    return;
  }
  $('share-list').replaceChildren(...links.map(shareRow));
  $('share-count').textContent = String(links.filter((l) => l.active).length);
  $('share-empty').textContent = 'No links yet.';
  $('share-empty').hidden = links.length > 0;
}

async function revokeShare(link, button) {
  const ok = await confirmAction({
    title: 'Revoke this link?',
    message: 'Whoever holds it loses access at once. A new link can be made at any time.',
    confirm: 'Revoke link',
  });
  if (!ok) return;
  button.disabled = true;
  $('share-error').hidden = true;
  try {
    await api(`/shipments/${shipmentId}/shares/${link.id}`, { method: 'DELETE' });
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    $('share-error').textContent = errorText(e, 'Could not revoke the link.');
    $('share-error').hidden = false;
    button.disabled = false;
    return;
  }
  loadShares();
}

/** The shipment's conversation, for its people and for a share link made with chat. */
function showChat() {
  const panel = $('chat-panel');
  panel.hidden = false;
  mountChat(panel, live, { shipmentId, share });
}

if (share) {
  // Only a link made with chat may take part; the others never see the panel.
  api(`/shipments/${shipmentId}/chat?limit=1`, { share }).then(showChat, () => {});
}

if (!share) {
  setUpSignedIn();
  $('share-form').addEventListener('submit', createShareLink);
  $('assign-form').addEventListener('submit', reassign);
  $('mark-delivered').addEventListener('click', () => setStatus('delivered'));
  $('cancel-shipment').addEventListener('click', () => setStatus('cancelled'));
  $('phone-link-button').addEventListener('click', createPhoneLink);
  $('share-copy').addEventListener('click', () => copyText($('share-url').value, $('share-copy'), { select: $('share-url') }));
}
