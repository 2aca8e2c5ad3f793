// The live fleet map: every vehicle of the organisation on a map and in a list, moved by the
// `fleet` topic, the shipments with their status and ETA, the geofences, and the alerts panel
// (the `alerts` topic, on the same connection).
//
// Built for thousands of vehicles: the list is searched and filtered and renders only the rows
// in view; the map draws the vehicles on one canvas, clustered when zoomed out (fleet-layer.js);
// live positions wait in a buffer, newest per vehicle, and are applied once per animation frame.
// `/dispatch?vehicle=<id>` selects that vehicle and pans to it.

/* global L */

import { api, goToSignIn, goToSignInIfLapsed, stillSignedIn } from './api.js';
import { mountAlerts } from './alerts.js';
import { formatAgo, formatClock, formatSpeed, serverNow, setServerTime, statusLabel, timeKey } from './format.js';
import { createFleetLayer } from './fleet-layer.js';
import { connectLive } from './live.js';
import { createMap } from './map.js';

const STALE_AFTER_S = 300; // no position for 5 minutes: the vehicle is shown as silent
const MOVING_MS = 0.5; // faster than this counts as moving
const SHIPMENTS_REFRESH_MS = 30000;
const GEOFENCES_REFRESH_MS = 60000;
const VEHICLES_REFRESH_MS = 300000; // renames and retirements missed while away (they come as events)
const NAME_LOOKUP_DELAY_MS = 400; // vehicles first seen live are named together, in one request
const ROW_OVERSCAN = 6;
const ACTIVE = new Set(['planned', 'in_transit']);
const STATUS_ORDER = ['in_transit', 'planned', 'arrived', 'delivered', 'cancelled'];

const body = document.body;
const mapEl = document.getElementById('map');
const map = createMap(mapEl, {
  tileUrl: body.dataset.tileUrl,
  attribution: body.dataset.tileAttribution,
});

const list = document.getElementById('vehicle-list');
const spacer = document.getElementById('vehicle-spacer');
const rowTemplate = document.getElementById('vehicle-row');
const countEl = document.getElementById('vehicle-count');
const shownEl = document.getElementById('vehicle-shown');
const emptyEl = document.getElementById('vehicle-empty');
const searchEl = document.getElementById('vehicle-search');
const withShipmentEl = document.getElementById('vehicle-with-shipment');
const statusInputs = [...document.querySelectorAll('input[name="vehicle-status"]')];
const shipmentList = document.getElementById('shipment-list');
const shipmentTemplate = document.getElementById('shipment-row');
const shipmentCount = document.getElementById('shipment-count');
const shipmentEmpty = document.getElementById('shipment-empty');

/** id -> { id, name, search, pos, key, eta } */
const vehicles = new Map();
/** vehicle id -> its active shipment */
let activeByVehicle = new Map();
let knownShipments = new Set();
let shipments = [];
let selectedId = null;
let following = false;
let fitted = false;
/** `?vehicle=<id>`: selected and panned to once it is on the map. */
let deepLink = Number(new URLSearchParams(window.location.search).get('vehicle')) || null;

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

// ---- vehicles ----

function activity(v) {
  if (!v.pos) return 'none';
  // The time key is in microseconds: no date to parse for each of thousands of vehicles.
  if (serverNow() - v.key / 1000 > STALE_AFTER_S * 1000) return 'silent';
  return (v.pos.speed || 0) > MOVING_MS ? 'moving' : 'stopped';
}

function ensureVehicle(id, name) {
  let v = vehicles.get(id);
  if (v) {
    if (name && name !== v.name) setName(v, name);
    return v;
  }
  v = { id, name: '', search: '', pos: null, key: -Infinity, eta: null };
  vehicles.set(id, v);
  setName(v, name || `Vehicle ${id}`);
  fleetLayer.reindexSoon();
  return v;
}

function setName(v, name) {
  v.name = name;
  v.search = name.toLocaleLowerCase();
  orderDirty = true;
  listSoon();
}

function removeVehicle(v) {
  vehicles.delete(v.id);
  pending.delete(v.id);
  if (selectedId === v.id) select(null);
  orderDirty = true;
  fleetLayer.reindexSoon();
  listSoon();
}

/** Show a position unless it is older than what the vehicle already shows. */
function applyPosition(v, pos) {
  if (!pos || !Number.isFinite(pos.lat) || !Number.isFinite(pos.lon)) return false;
  const key = timeKey(pos.recorded_at);
  if (key < v.key) return false;
  if (!v.pos) fleetLayer.reindexSoon();
  v.key = key;
  v.pos = pos;
  if (pos.eta) v.eta = pos.eta;
  // A shipment we do not know yet, or one that just started: the list is out of date.
  if (pos.shipment_id != null) {
    const active = activeByVehicle.get(v.id);
    if (!knownShipments.has(pos.shipment_id) || !active || active.id !== pos.shipment_id || active.status === 'planned') {
      refreshShipmentsSoon();
    }
  }
  return true;
}

function shipmentText(v) {
  const s = activeByVehicle.get(v.id);
  if (!s) return '';
  const eta = (v.pos && v.pos.shipment_id === s.id && v.eta) || s.eta;
  return eta ? `${s.reference} · ETA ${formatClock(eta, { seconds: false })}` : s.reference;
}

// ---- the list: search, filters, counts, and only the rows in view ----

/** Every vehicle in name order; re-sorted only when a name or the set of vehicles changes. */
let order = [];
let orderDirty = true;
/** The vehicles the filters let through, in name order. */
let shown = [];
let listTimer = 0;
const rows = new Map(); // vehicle id -> row element in the DOM

function filters() {
  const checked = statusInputs.find((i) => i.checked);
  return {
    query: searchEl.value.trim().toLocaleLowerCase(),
    status: checked ? checked.value : 'all',
    withShipment: withShipmentEl.checked,
  };
}

function matchesQuery(v, query) {
  if (!query) return true;
  if (v.search.includes(query)) return true;
  const s = activeByVehicle.get(v.id);
  return !!s && s.reference.toLocaleLowerCase().includes(query);
}

/** Re-filter and re-count; each count is what the list would show with that choice. */
function refilter() {
  if (orderDirty) {
    order = [...vehicles.values()].sort((a, b) => collator.compare(a.name, b.name) || a.id - b.id);
    orderDirty = false;
  }
  const f = filters();
  const counts = { all: 0, moving: 0, stopped: 0, silent: 0, none: 0, shipment: 0 };
  const next = [];
  for (const v of order) {
    if (!matchesQuery(v, f.query)) continue;
    const a = activity(v);
    const hasShipment = activeByVehicle.has(v.id);
    if (!f.withShipment || hasShipment) {
      counts.all += 1;
      counts[a] += 1;
    }
    const statusOk = f.status === 'all' || f.status === a;
    if (statusOk && hasShipment) counts.shipment += 1;
    if (statusOk && (!f.withShipment || hasShipment)) next.push(v);
  }
  shown = next;
  for (const [key, n] of Object.entries(counts)) {
    const el = document.querySelector(`[data-count="${key}"]`);
    if (el && el.textContent !== String(n)) el.textContent = String(n);
  }
  countEl.textContent = String(vehicles.size);
  const filtered = f.query || f.status !== 'all' || f.withShipment;
  shownEl.textContent = filtered ? `${shown.length} of ${vehicles.size} shown` : '';
  shownEl.hidden = !filtered;
  emptyEl.hidden = shown.length > 0;
  if (vehicles.size > 0) emptyEl.textContent = filtered ? 'No vehicle matches.' : 'No vehicles yet.';
  renderRows();
}

/** Re-filter in a moment, once however many changes ask. */
function listSoon() {
  if (!listTimer) listTimer = window.setTimeout(() => {
    listTimer = 0;
    refilter();
  }, 0);
}

/** Every row is this tall (dispatch.css); measured once from the first row drawn. */
let rowH = 58;
let rowMeasured = false;

/** Draw the rows in view (and a few either side) and nothing else. */
function renderRows() {
  spacer.style.height = `${shown.length * rowH}px`;
  const first = Math.max(0, Math.floor(list.scrollTop / rowH) - ROW_OVERSCAN);
  const last = Math.min(shown.length, Math.ceil((list.scrollTop + list.clientHeight) / rowH) + ROW_OVERSCAN);
  const keep = new Set();
  for (let i = first; i < last; i += 1) {
    const v = shown[i];
    keep.add(v.id);
    let row = rows.get(v.id);
    if (!row) {
      row = rowTemplate.content.firstElementChild.cloneNode(true);
      row.id = `vehicle-row-${v.id}`;
      row.dataset.vehicleId = String(v.id);
      rows.set(v.id, row);
      spacer.appendChild(row);
    }
    row.style.transform = `translateY(${i * rowH}px)`;
    renderRow(row, v);
  }
  for (const [id, row] of rows) {
    if (!keep.has(id)) {
      row.remove();
      rows.delete(id);
    }
  }
  if (!rowMeasured && rows.size) {
    rowMeasured = true;
    const measured = rows.values().next().value.offsetHeight;
    if (measured && measured !== rowH) {
      rowH = measured;
      renderRows();
      return;
    }
  }
  list.setAttribute('aria-activedescendant', rows.has(selectedId) ? `vehicle-row-${selectedId}` : '');
}

function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

function renderRow(row, v) {
  setText(row.querySelector('.vehicle__name'), v.name);
  const ship = shipmentText(v);
  const shipEl = row.querySelector('.vehicle__shipment');
  setText(shipEl, ship);
  shipEl.hidden = !ship;
  setText(row.querySelector('.vehicle__speed'), v.pos ? formatSpeed(v.pos.speed) : '—');
  setText(row.querySelector('.vehicle__ago'), v.pos ? formatAgo(v.pos.recorded_at) : 'no position yet');
  const a = activity(v);
  if (row.dataset.activity !== a) row.dataset.activity = a;
  const selected = v.id === selectedId;
  row.classList.toggle('is-selected', selected);
  row.setAttribute('aria-selected', String(selected));
}

list.addEventListener('scroll', () => window.requestAnimationFrame(renderRows), { passive: true });
window.addEventListener('resize', () => window.requestAnimationFrame(renderRows));
list.addEventListener('click', (e) => {
  const row = e.target.closest('[data-vehicle-id]');
  if (row) select(Number(row.dataset.vehicleId), { pan: true, zoom: true });
});
list.addEventListener('keydown', (e) => {
  if (!shown.length) return;
  const at = shown.findIndex((v) => v.id === selectedId);
  const page = Math.max(1, Math.floor(list.clientHeight / rowH) - 1);
  let to = null;
  switch (e.key) {
    case 'ArrowDown': to = at < 0 ? 0 : at + 1; break;
    case 'ArrowUp': to = at < 0 ? 0 : at - 1; break;
    case 'PageDown': to = at + page; break;
    case 'PageUp': to = at - page; break;
    case 'Home': to = 0; break;
    case 'End': to = shown.length - 1; break;
    case 'Enter':
    case ' ':
      if (at >= 0) select(selectedId, { pan: true, zoom: true });
      e.preventDefault();
      return;
    default: return;
  }
  e.preventDefault();
  select(shown[Math.max(0, Math.min(shown.length - 1, to))].id, { pan: true, scroll: true });
});

for (const input of [searchEl, withShipmentEl, ...statusInputs]) {
  for (const type of ['input', 'change']) {
    input.addEventListener(type, () => {
      list.scrollTop = 0;
      refilter();
    });
  }
}

/** Bring row `i` of the shown list into view. */
function scrollToRow(i) {
  const top = i * rowH;
  if (top < list.scrollTop) list.scrollTop = top;
  else if (top + rowH > list.scrollTop + list.clientHeight) list.scrollTop = top + rowH - list.clientHeight;
}

// ---- selection and follow ----

function select(id, { pan = false, zoom = false, scroll = true } = {}) {
  selectedId = id;
  if (id == null) following = false;
  fleetLayer.select(id);
  followControl.update();
  const v = id == null ? null : vehicles.get(id);
  if (v && scroll) {
    const i = shown.indexOf(v);
    if (i >= 0) scrollToRow(i);
  }
  renderRows();
  if (!v || !v.pos) return;
  const at = [v.pos.lat, v.pos.lon];
  if (following) map.setView(at, map.getZoom(), { animate: false });
  else if (pan && zoom) map.setView(at, Math.max(map.getZoom(), 15), { animate: true });
  else if (pan) map.panTo(at);
}

function setFollowing(on) {
  following = on && selectedId != null;
  followControl.update();
  const v = vehicles.get(selectedId);
  if (following && v && v.pos) map.setView([v.pos.lat, v.pos.lon], map.getZoom(), { animate: false });
}

/** A map control: follow the selected vehicle, keeping it in the middle as it moves. */
const followControl = (() => {
  const Control = L.Control.extend({
    onAdd() {
      const box = L.DomUtil.create('div', 'leaflet-bar wm-follow');
      this.button = L.DomUtil.create('button', 'wm-follow__button', box);
      this.button.type = 'button';
      this.button.id = 'follow';
      this.button.setAttribute('aria-pressed', 'false');
      this.button.textContent = 'Follow';
      this.button.addEventListener('click', () => setFollowing(!following));
      L.DomEvent.disableClickPropagation(box);
      return box;
    },
  });
  const control = new Control({ position: 'topleft' }).addTo(map);
  return {
    update() {
      const v = vehicles.get(selectedId);
      const b = control.button;
      b.disabled = !v;
      b.setAttribute('aria-pressed', String(following));
      b.textContent = following && v ? `Following ${v.name}` : v ? `Follow ${v.name}` : 'Follow';
      b.title = v ? 'Keep the selected vehicle in the middle of the map' : 'Select a vehicle to follow it';
    },
  };
})();

// Moving the map by hand ends following.
map.on('dragstart', () => {
  if (following) setFollowing(false);
});

const fleetLayer = createFleetLayer(map, {
  vehicles: () => vehicles.values(),
  get: (id) => vehicles.get(id),
  activity,
  onSelect: (id) => select(id, { pan: false }),
});

function fitToFleet() {
  let south = Infinity, west = Infinity, north = -Infinity, east = -Infinity;
  let n = 0;
  for (const v of vehicles.values()) {
    if (!v.pos) continue;
    n += 1;
    south = Math.min(south, v.pos.lat);
    north = Math.max(north, v.pos.lat);
    west = Math.min(west, v.pos.lon);
    east = Math.max(east, v.pos.lon);
  }
  if (n === 0) return false;
  if (n === 1) map.setView([south, west], 14);
  else map.fitBounds(L.latLngBounds([south, west], [north, east]).pad(0.15), { maxZoom: 15 });
  return true;
}

/** The deep-linked vehicle, once it is known: select it and show it. */
function followDeepLink() {
  if (deepLink == null) return false;
  const v = vehicles.get(deepLink);
  if (!v) return false;
  if (selectedId !== v.id) select(v.id, { scroll: true });
  if (!v.pos) return false;
  map.setView([v.pos.lat, v.pos.lon], Math.max(map.getZoom(), 15), { animate: false });
  deepLink = null;
  return true;
}

// ---- live feed: buffered, applied once per animation frame ----

/** vehicle id -> the newest position received since the last frame */
const pending = new Map();
let frameRequested = 0;

function onSnapshot(topic, snapshot) {
  if (topic !== 'fleet') return;
  const seen = new Set();
  for (const vehicle of snapshot.vehicles || []) {
    seen.add(vehicle.id);
    applyPosition(ensureVehicle(vehicle.id, vehicle.name), vehicle.last_position);
  }
  for (const v of [...vehicles.values()]) if (!seen.has(v.id)) removeVehicle(v);
  emptyEl.textContent = 'No vehicles yet.';
  refilter();
  renderShipments();
  if (followDeepLink()) fitted = true;
  if (!fitted) fitted = fitToFleet();
  fleetLayer.reindexSoon();
}

/** A vehicle added, renamed or retired anywhere: the list and the map follow at once. */
function applyVehicle(vehicle) {
  const v = vehicles.get(vehicle.id);
  if (vehicle.status === 'retired') {
    if (v) removeVehicle(v);
    unnamed.delete(vehicle.id);
    return;
  }
  ensureVehicle(vehicle.id, vehicle.name);
  unnamed.delete(vehicle.id);
  refilter();
}

function onEvent(frame) {
  if (frame.type === 'vehicle' && frame.data) {
    applyVehicle(frame.data);
    return;
  }
  if (frame.type !== 'position' || !frame.data) return;
  const pos = frame.data;
  if (pos.late) return; // belongs to a track, never moves a marker
  const waiting = pending.get(pos.vehicle_id);
  if (waiting && timeKey(waiting.recorded_at) > timeKey(pos.recorded_at)) return;
  pending.set(pos.vehicle_id, pos);
  if (!frameRequested) frameRequested = window.requestAnimationFrame(applyPending);
}

function applyPending() {
  frameRequested = 0;
  let added = false;
  let visibleChange = false;
  let selectedMoved = false;
  let redraw = false;
  for (const [id, pos] of pending) {
    let v = vehicles.get(id);
    if (!v) {
      v = ensureVehicle(id);
      unnamed.add(id);
      added = true;
    }
    if (applyPosition(v, pos)) {
      if (rows.has(id)) visibleChange = true;
      if (!redraw && fleetLayer.shows(id)) redraw = true;
      if (id === selectedId) selectedMoved = true;
    }
  }
  pending.clear();
  if (added) {
    lookUpNamesSoon();
    refilter();
  } else if (visibleChange) {
    for (const [id, row] of rows) {
      const v = vehicles.get(id);
      if (v) renderRow(row, v);
    }
  }
  if (deepLink != null && followDeepLink()) fitted = true;
  if (!fitted) fitted = fitToFleet();
  if (selectedMoved && following) {
    const v = vehicles.get(selectedId);
    map.setView([v.pos.lat, v.pos.lon], map.getZoom(), { animate: false });
  }
  if (redraw || added) fleetLayer.draw();
}

const live = connectLive({
  topics: ['fleet'],
  onHello: (frame) => setServerTime(frame.server_time),
  onSnapshot,
  onEvent,
  onRefused: goToSignIn,
  checkAuth: stillSignedIn,
});

// Ages and activities follow the clock.
window.setInterval(() => {
  refilter();
  fleetLayer.redrawSoon();
}, 1000);

// ---- names, renames and retirements: GET /vehicles ----

/** Vehicles first seen in a live frame, still called "Vehicle <id>". */
const unnamed = new Set();
let lookupTimer = 0;
let lookupRunning = false;

/**
 * Re-read the organisation's vehicles: names for the new ones, renames, and vehicles no longer
 * listed (retired) leave the map and the list. A vehicle first seen after the request left is
 * not judged by its answer.
 */
async function reconcileVehicles() {
  if (lookupRunning) return;
  lookupRunning = true;
  const known = new Set(vehicles.keys());
  let listed;
  try {
    listed = (await api('/vehicles')) || [];
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) goToSignIn();
    else console.warn('could not load the vehicles', e);
    return;
  } finally {
    lookupRunning = false;
  }
  const ids = new Set();
  for (const vehicle of listed) {
    ids.add(vehicle.id);
    const v = vehicles.get(vehicle.id);
    if (!v) continue;
    if (vehicle.name && vehicle.name !== v.name) setName(v, vehicle.name);
    unnamed.delete(vehicle.id);
    if (applyPosition(v, vehicle.last_position)) fleetLayer.redrawSoon();
  }
  for (const id of known) {
    const v = vehicles.get(id);
    if (v && !ids.has(id)) {
      removeVehicle(v);
      unnamed.delete(id);
    }
  }
  renderShipments();
  if (unnamed.size) lookUpNamesSoon();
}

function lookUpNamesSoon() {
  if (lookupTimer || !unnamed.size) return;
  lookupTimer = window.setTimeout(() => {
    lookupTimer = 0;
    reconcileVehicles();
  }, NAME_LOOKUP_DELAY_MS);
}

window.setInterval(reconcileVehicles, VEHICLES_REFRESH_MS);
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible') reconcileVehicles();
});

// ---- alerts ----

mountAlerts(document.getElementById('alerts-panel'), live, {
  describe: (a) => {
    const v = vehicles.get(a.vehicle_id);
    return v ? v.name : a.vehicle_id != null ? `Vehicle ${a.vehicle_id}` : '';
  },
  onFocus: (a) => {
    const v = vehicles.get(a.vehicle_id);
    if (v && v.pos) {
      select(a.vehicle_id, { pan: true, zoom: true });
    } else if (Number.isFinite(a.lat) && Number.isFinite(a.lon)) {
      map.setView([a.lat, a.lon], Math.max(map.getZoom(), 14));
    }
  },
});

// ---- geofences ----

const geofenceLayer = L.layerGroup().addTo(map);

async function loadGeofences() {
  let fences;
  try {
    fences = (await api('/geofences')) || [];
  } catch (e) {
    console.warn('could not load geofences', e);
    return;
  }
  geofenceLayer.clearLayers();
  for (const f of fences) {
    const layer = L.geoJSON(f.area, { className: 'wm-geofence', interactive: true });
    const label = document.createElement('span');
    label.textContent = f.name;
    layer.bindTooltip(label, { className: 'wm-tooltip', sticky: true });
    geofenceLayer.addLayer(layer);
  }
}

loadGeofences();
window.setInterval(loadGeofences, GEOFENCES_REFRESH_MS);

// ---- shipments ----

function renderShipments() {
  const sorted = shipments.slice().sort((a, b) => {
    const byStatus = STATUS_ORDER.indexOf(a.status) - STATUS_ORDER.indexOf(b.status);
    return byStatus || collator.compare(a.reference, b.reference);
  });
  const rowsOut = sorted.map((s) => {
    const row = shipmentTemplate.content.firstElementChild.cloneNode(true);
    row.dataset.shipmentId = String(s.id);
    row.dataset.status = s.status;
    const link = row.querySelector('.shipment__link');
    link.href = `/shipments/${encodeURIComponent(s.id)}`;
    row.querySelector('.shipment__ref').textContent = s.reference;
    const v = s.vehicle_id != null ? vehicles.get(s.vehicle_id) : null;
    row.querySelector('.shipment__vehicle').textContent = v ? v.name : s.vehicle_id != null ? `Vehicle ${s.vehicle_id}` : 'No vehicle';
    const badge = row.querySelector('.shipment__status');
    badge.textContent = statusLabel(s.status);
    badge.dataset.status = s.status;
    const unread = unreadByShipment.get(s.id) || 0;
    const count = row.querySelector('.shipment__unread');
    count.textContent = String(unread);
    count.dataset.unread = String(unread);
    count.hidden = unread === 0;
    return row;
  });
  shipmentList.replaceChildren(...rowsOut);
  shipmentCount.textContent = String(shipments.length);
  shipmentEmpty.textContent = 'No shipments yet.';
  shipmentEmpty.hidden = shipments.length > 0;
}

async function loadShipments() {
  try {
    shipments = (await api('/shipments')) || [];
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    console.error('could not load shipments', e);
    if (!shipments.length) shipmentEmpty.textContent = 'Could not load shipments.';
    return;
  }
  knownShipments = new Set(shipments.map((s) => s.id));
  activeByVehicle = new Map();
  for (const s of shipments) {
    if (s.vehicle_id != null && ACTIVE.has(s.status)) activeByVehicle.set(s.vehicle_id, s);
  }
  refilter();
  renderShipments();
  watchConversations();
}

// ---- chat: unread messages per shipment, live ----

// The conversations of the first active shipments are followed on the page's socket; any
// message or read mark in one re-reads the counts, which the server keeps exact.
const MAX_CONVERSATIONS = 50;
let unreadByShipment = new Map();
let unreadTimer = 0;

async function loadUnread() {
  try {
    const reply = await api('/chat/unread');
    unreadByShipment = new Map((reply.conversations || []).map((c) => [c.shipment_id, c.unread]));
    renderShipments();
  } catch (e) {
    console.error('chat: could not load unread counts', e);
  }
}

function loadUnreadSoon() {
  if (unreadTimer) return;
  unreadTimer = window.setTimeout(() => {
    unreadTimer = 0;
    loadUnread();
  }, 300);
}

function watchConversations() {
  const active = shipments.filter((s) => ACTIVE.has(s.status)).slice(0, MAX_CONVERSATIONS);
  for (const s of active) live.addTopic(`chat:${s.id}`);
  loadUnreadSoon();
}

live.listen({
  onEvent(frame) {
    if ((frame.type === 'chat' || frame.type === 'chat_read') && String(frame.topic).startsWith('chat:')) loadUnreadSoon();
  },
});

let refreshTimer = 0;
let lastRefresh = 0;
/** Reload the shipments shortly, at most once every few seconds however many events ask. */
function refreshShipmentsSoon() {
  if (refreshTimer) return;
  const wait = Math.max(1000, lastRefresh + 5000 - Date.now());
  refreshTimer = window.setTimeout(() => {
    refreshTimer = 0;
    lastRefresh = Date.now();
    loadShipments();
  }, wait);
}

loadShipments();
window.setInterval(loadShipments, SHIPMENTS_REFRESH_MS);
refilter();
