// The live fleet map: every vehicle of the organisation on a map and in a list, moved by the
// `fleet` topic, the shipments with their status and ETA, the geofences, and the alerts panel
// (the `alerts` topic, on the same connection).

/* global L */

import { api, goToSignIn, goToSignInIfLapsed, stillSignedIn } from './api.js';
import { mountAlerts } from './alerts.js';
import { ageSeconds, formatAgo, formatClock, formatSpeed, setServerTime, statusLabel, timeKey } from './format.js';
import { connectLive } from './live.js';
import { createMap, VehicleMarker } from './map.js';

const STALE_AFTER_S = 300; // no position for 5 minutes: the vehicle is shown as silent
const MOVING_MS = 0.5; // faster than this counts as moving
const SHIPMENTS_REFRESH_MS = 30000;
const GEOFENCES_REFRESH_MS = 60000;
const ACTIVE = new Set(['planned', 'in_transit']);
const STATUS_ORDER = ['in_transit', 'planned', 'arrived', 'delivered', 'cancelled'];

const body = document.body;
const map = createMap(document.getElementById('map'), {
  tileUrl: body.dataset.tileUrl,
  attribution: body.dataset.tileAttribution,
});

const list = document.getElementById('vehicle-list');
const rowTemplate = document.getElementById('vehicle-row');
const countEl = document.getElementById('vehicle-count');
const emptyEl = document.getElementById('vehicle-empty');
const shipmentList = document.getElementById('shipment-list');
const shipmentTemplate = document.getElementById('shipment-row');
const shipmentCount = document.getElementById('shipment-count');
const shipmentEmpty = document.getElementById('shipment-empty');

/** id -> { id, name, pos, key, row, marker } */
const vehicles = new Map();
/** vehicle id -> its active shipment */
let activeByVehicle = new Map();
let knownShipments = new Set();
let shipments = [];
let selectedId = null;
let fitted = false;

const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' });

// ---- vehicles ----

function ensureVehicle(id, name) {
  let v = vehicles.get(id);
  if (v) {
    if (name && name !== v.name) setName(v, name);
    return v;
  }
  const row = rowTemplate.content.firstElementChild.cloneNode(true);
  row.dataset.vehicleId = String(id);
  row.querySelector('.vehicle__button').addEventListener('click', () => select(id, { pan: true }));
  v = { id, name: '', pos: null, key: -Infinity, row, marker: null };
  vehicles.set(id, v);
  setName(v, name || `Vehicle ${id}`);
  renderShipmentOf(v);
  updateCount();
  return v;
}

function setName(v, name) {
  v.name = name;
  v.row.querySelector('.vehicle__name').textContent = name;
  if (v.marker) v.marker.setName(name);
  // Keep the list in name order.
  let before = null;
  for (const other of list.children) {
    if (other !== v.row && collator.compare(other.querySelector('.vehicle__name').textContent, name) > 0) {
      before = other;
      break;
    }
  }
  list.insertBefore(v.row, before);
}

function removeVehicle(v) {
  v.row.remove();
  if (v.marker) v.marker.remove();
  vehicles.delete(v.id);
  if (selectedId === v.id) selectedId = null;
  updateCount();
}

function updateCount() {
  countEl.textContent = String(vehicles.size);
  emptyEl.hidden = vehicles.size > 0;
}

/** Show a position unless it is older than what the vehicle already shows. */
function applyPosition(v, pos) {
  if (!pos || !Number.isFinite(pos.lat) || !Number.isFinite(pos.lon)) return;
  const key = timeKey(pos.recorded_at);
  if (key < v.key) return;
  v.key = key;
  v.pos = pos;
  if (!v.marker) {
    v.marker = new VehicleMarker([pos.lat, pos.lon], { name: v.name, heading: pos.heading });
    v.marker.on('click', () => select(v.id, { pan: false, scroll: true }));
    v.marker.addTo(map);
    v.marker.toggleClass('is-selected', selectedId === v.id);
  } else {
    v.marker.update(pos);
  }
  v.row.querySelector('.vehicle__speed').textContent = formatSpeed(pos.speed);
  if (pos.eta) v.eta = pos.eta;
  renderShipmentOf(v);
  renderAge(v);
  // A shipment we do not know yet, or one that just started: the list is out of date.
  if (pos.shipment_id != null) {
    const active = activeByVehicle.get(v.id);
    if (!knownShipments.has(pos.shipment_id) || !active || active.id !== pos.shipment_id || active.status === 'planned') {
      refreshShipmentsSoon();
    }
  }
}

function renderAge(v) {
  if (!v.pos) return;
  const age = ageSeconds(v.pos.recorded_at);
  const stale = age > STALE_AFTER_S;
  const moving = !stale && (v.pos.speed || 0) > MOVING_MS;
  v.row.dataset.activity = stale ? 'silent' : moving ? 'moving' : 'stopped';
  const ago = v.row.querySelector('.vehicle__ago');
  const text = formatAgo(v.pos.recorded_at);
  if (ago.textContent !== text) ago.textContent = text;
  if (v.marker) v.marker.toggleClass('is-stale', stale);
}

function renderShipmentOf(v) {
  const s = activeByVehicle.get(v.id);
  const el = v.row.querySelector('.vehicle__shipment');
  const eta = (v.pos && v.pos.shipment_id === (s && s.id) && v.eta) || (s && s.eta);
  el.textContent = s ? (eta ? `${s.reference} · ETA ${formatClock(eta, { seconds: false })}` : s.reference) : '';
  el.hidden = !s;
}

function select(id, { pan = false, scroll = false } = {}) {
  const prev = vehicles.get(selectedId);
  if (prev) {
    prev.row.classList.remove('is-selected');
    if (prev.marker) prev.marker.toggleClass('is-selected', false);
  }
  selectedId = id;
  const v = vehicles.get(id);
  if (!v) return;
  v.row.classList.add('is-selected');
  if (scroll) v.row.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
  if (!v.marker) return;
  v.marker.toggleClass('is-selected', true);
  if (pan) map.setView(v.marker.getLatLng(), Math.max(map.getZoom(), 14), { animate: true });
}

function fitToFleet() {
  const points = [...vehicles.values()].filter((v) => v.marker).map((v) => v.marker.getLatLng());
  if (points.length === 0) return false;
  if (points.length === 1) map.setView(points[0], 14);
  else map.fitBounds(L.latLngBounds(points).pad(0.15), { maxZoom: 15 });
  return true;
}

async function fetchVehicleName(v) {
  try {
    const vehicle = await api(`/vehicles/${v.id}`);
    if (vehicle && vehicle.name) setName(v, vehicle.name);
  } catch (e) {
    console.warn(`could not load vehicle ${v.id}`, e);
  }
}

// ---- live feed ----

function onSnapshot(topic, snapshot) {
  if (topic !== 'fleet') return;
  const seen = new Set();
  for (const vehicle of snapshot.vehicles || []) {
    seen.add(vehicle.id);
    applyPosition(ensureVehicle(vehicle.id, vehicle.name), vehicle.last_position);
  }
  for (const v of [...vehicles.values()]) if (!seen.has(v.id)) removeVehicle(v);
  emptyEl.textContent = 'No vehicles yet.';
  updateCount();
  renderShipments();
  if (!fitted) fitted = fitToFleet();
}

function onEvent(frame) {
  if (frame.type !== 'position' || !frame.data) return;
  const pos = frame.data;
  if (pos.late) return; // belongs to a track, never moves a marker
  const isNew = !vehicles.has(pos.vehicle_id);
  const v = ensureVehicle(pos.vehicle_id);
  if (isNew) fetchVehicleName(v);
  applyPosition(v, pos);
  if (!fitted) fitted = fitToFleet();
}

const live = connectLive({
  topics: ['fleet'],
  onHello: (frame) => setServerTime(frame.server_time),
  onSnapshot,
  onEvent,
  onRefused: goToSignIn,
  checkAuth: stillSignedIn,
});

window.setInterval(() => {
  for (const v of vehicles.values()) renderAge(v);
}, 1000);

// ---- alerts ----

mountAlerts(document.getElementById('alerts-panel'), live, {
  describe: (a) => {
    const v = vehicles.get(a.vehicle_id);
    return v ? v.name : a.vehicle_id != null ? `Vehicle ${a.vehicle_id}` : '';
  },
  onFocus: (a) => {
    if (vehicles.has(a.vehicle_id) && vehicles.get(a.vehicle_id).marker) {
      select(a.vehicle_id, { pan: true, scroll: true });
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
  const rows = sorted.map((s) => {
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
  shipmentList.replaceChildren(...rows);
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
  for (const v of vehicles.values()) renderShipmentOf(v);
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
