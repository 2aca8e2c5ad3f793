// One shipment on a map: planned route, origin and destination, the driven track, the live
// vehicle with its ETA, and (signed in) the shipment's alerts. Serves both the signed-in page and
// the customer's share link (data-share-token set), in which case every call carries the share
// token and the dispatcher's controls stay hidden.

/* global L */

import { mountAlerts } from './alerts.js';
import { mountChat } from './chat.js';
import { api, ApiError, goToSignIn } from './api.js';
import { formatAgo, formatClock, formatLatLon, formatSpeed, setServerTime, statusLabel, timeKey } from './format.js';
import { connectLive } from './live.js';
import { parsedSvg } from './qr.js';
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
  if (!share) renderPhoneLink();
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
    if (e instanceof ApiError && e.status === 401) goToSignIn();
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
    dispatcher = true;
    renderPhoneLink();
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
  const button = $(buttonId);
  const errorEl = $(errorId);
  errorEl.hidden = true;
  button.disabled = true;
  try {
    await action();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      goToSignIn();
      return;
    }
    errorEl.textContent = e instanceof ApiError && e.message ? e.message : 'Could not create the link.';
    errorEl.hidden = false;
  } finally {
    button.disabled = false;
  }
}

function createPhoneLink() {
  return linkAction('phone-link-button', 'phone-link-error', async () => {
    const reply = await api(`/users/${shipment.driver_id}/device-link`, { method: 'POST' });
    $('phone-link-qr').replaceChildren(parsedSvg(reply.qr_svg, 'QR code of the phone link'));
    $('phone-link-url').value = reply.url;
    $('phone-link-expires').textContent = `Works once, until ${formatClock(reply.expires_at, { seconds: false })}`;
    $('phone-link-result').hidden = false;
  });
}

function createShareLink() {
  return linkAction('share-button', 'share-error', async () => {
    const reply = await api(`/shipments/${shipmentId}/share`, {
      method: 'POST',
      body: { expires_in_s: Number($('share-expiry').value) },
    });
    const path = reply.url || `/t/${encodeURIComponent(reply.token)}`;
    const input = $('share-url');
    input.value = /^https?:\/\//.test(path) ? path : window.location.origin + path;
    $('share-expires').textContent = reply.expires_at ? `Valid until ${formatClock(reply.expires_at, { seconds: false })}` : '';
    $('share-result').hidden = false;
    input.focus();
    input.select();
  });
}

async function copyShareLink() {
  const input = $('share-url');
  const button = $('share-copy');
  try {
    await navigator.clipboard.writeText(input.value);
  } catch {
    input.select();
    document.execCommand('copy');
  }
  button.textContent = 'Copied';
  window.setTimeout(() => {
    button.textContent = 'Copy';
  }, 1500);
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
  $('share-button').addEventListener('click', createShareLink);
  $('phone-link-button').addEventListener('click', createPhoneLink);
  $('share-copy').addEventListener('click', copyShareLink);
}
