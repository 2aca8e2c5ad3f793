// The Geofences page: every geofence on a map and in a list; draw circles, rectangles and
// polygons (Leaflet-Geoman), edit vertices and move shapes, or type a shape; name it, scope it
// to vehicles or a shipment, set its debounce and dwell, and delete it. The API judges every
// shape: its refusal shows on the shape itself and next to the field, and the shape stays on
// the map to be fixed. The organisation's alerts run live below, to watch a new fence work.

/* global L */

import { mountAlerts } from './alerts.js';
import { api, ApiError, goToSignIn, goToSignInIfLapsed, stillSignedIn } from './api.js';
import { setServerTime } from './format.js';
import { busy, clearErrors, confirmAction, shipmentOption, showApiError, showErrorAt, vehicleOption } from './forms.js';
import { connectLive } from './live.js';
import { createMap } from './map.js';
import { geofenceFromText, geofenceText, plainLatLngs, polygonGeojson, ShapeError } from './shapes.js';

const ACTIVE = new Set(['planned', 'in_transit']);
const EDITING = 'wm-geofence wm-geofence--editing';
const EDIT_OPTIONS = { allowSelfIntersection: true, snappable: true };

const body = document.body;
const $ = (id) => document.getElementById(id);
const form = $('geofence-form');
const shapeText = $('geofence-shape');

const map = createMap($('map'), { tileUrl: body.dataset.tileUrl, attribution: body.dataset.tileAttribution });
// Shapes are judged by the API, which explains a crossing better than a refusal to draw one.
map.pm.setGlobalOptions({
  allowSelfIntersection: true,
  snappable: true,
  finishOnEnter: true,
  exitModeOnEscape: true,
  pathOptions: { className: 'wm-geofence wm-geofence--editing' },
});

/** id -> Geofence as the API answered it */
const fences = new Map();
/** id -> the map layer of a geofence not being edited */
const layers = new Map();
/** vehicle id -> name, for the list and the alerts */
const vehicleNames = new Map();
let shipments = [];
/**
 * The geofence in the form: `id` (null for a new one), its `layer` on the map (null before a
 * shape is drawn), and whether its shape changed since it was loaded (`dirty`).
 */
let draft = { id: null, layer: null, dirty: false };
/** The shape text as last written from the map, to tell a typed change. */
let syncedText = '';
let fitted = false;

// ---- shapes and layers ----

function textSpan(text) {
  const span = document.createElement('span');
  span.textContent = text;
  return span;
}

/** The shape of a layer: { circle } or { rings } (rings of [lat, lon], closed). */
function shapeOf(layer) {
  if (layer instanceof L.Circle) {
    const c = layer.getLatLng();
    return { circle: { lat: c.lat, lon: c.lng, radius_m: layer.getRadius() } };
  }
  let rings = plainLatLngs(layer.getLatLngs());
  // A multi-polygon's first polygon; what Geoman draws is one polygon of rings.
  while (Array.isArray(rings[0]) && Array.isArray(rings[0][0]) && Array.isArray(rings[0][0][0])) rings = rings[0];
  return { rings: rings.map((ring) => [...ring, ring[0]]) };
}

/** The API body for a shape. */
function shapeBody(shape) {
  if (shape.circle) return { circle: shape.circle };
  return { area: polygonGeojson(shape.rings) };
}

function layerFromShape(shape, className) {
  if (shape.circle) {
    return L.circle([shape.circle.lat, shape.circle.lon], { radius: shape.circle.radius_m, className });
  }
  // Leaflet closes rings itself: drop the repeated first position.
  return L.polygon(shape.rings.map((ring) => ring.slice(0, -1)), { className });
}

/** A stored geofence's shape: its circle, or its area's rings. */
function storedShape(f) {
  if (f.circle) return { circle: f.circle };
  return { rings: f.area.coordinates.map((ring) => ring.map(([lon, lat]) => [lat, lon])) };
}

function describe(f) {
  const shape = f.circle ? `Circle ${Math.round(f.circle.radius_m)} m` : 'Polygon';
  let scope = 'every vehicle';
  if (f.shipment_id != null) {
    const s = shipments.find((x) => x.id === f.shipment_id);
    scope = `carrying ${s ? s.reference : `shipment ${f.shipment_id}`}`;
  } else if (f.vehicle_ids.length) {
    scope = f.vehicle_ids.map((id) => vehicleNames.get(id) || `vehicle ${id}`).join(', ');
  }
  return `${shape} · ${scope}`;
}

// ---- the list and the map ----

function render() {
  for (const layer of layers.values()) layer.remove();
  layers.clear();
  const sorted = [...fences.values()].sort((a, b) => a.name.localeCompare(b.name));
  for (const f of sorted) {
    if (f.id === draft.id) continue;
    const layer = layerFromShape(storedShape(f), 'wm-geofence');
    layer.bindTooltip(textSpan(f.name), { className: 'wm-tooltip', sticky: true });
    layer.on('click', () => {
      if (!map.pm.globalDrawModeEnabled()) select(f.id);
    });
    layer.addTo(map);
    layers.set(f.id, layer);
  }
  const rows = sorted.map((f) => {
    const li = document.createElement('li');
    li.className = 'editor-item';
    li.dataset.geofenceId = String(f.id);
    if (f.id === draft.id) li.classList.add('is-selected');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'editor-item__button';
    const name = document.createElement('span');
    name.className = 'editor-item__name';
    name.textContent = f.name;
    const meta = document.createElement('span');
    meta.className = 'editor-item__meta';
    meta.textContent = describe(f);
    button.append(name, meta);
    if (f.id === draft.id) button.setAttribute('aria-current', 'true');
    button.addEventListener('click', () => select(f.id));
    li.append(button);
    return li;
  });
  $('geofence-list').replaceChildren(...rows);
  $('geofence-count').textContent = String(fences.size);
  $('geofence-empty').textContent = 'No geofences yet: draw one.';
  $('geofence-empty').hidden = fences.size > 0;
}

function fitAll() {
  const bounds = L.latLngBounds([]);
  for (const layer of layers.values()) bounds.extend(layer.getBounds());
  if (draft.layer) bounds.extend(draft.layer.getBounds());
  if (bounds.isValid()) map.fitBounds(bounds.pad(0.15), { maxZoom: 16 });
  return bounds.isValid();
}

// ---- the geofence in the form ----

function clearShapeError() {
  if (draft.layer && draft.layer.getTooltip()) draft.layer.unbindTooltip();
}

/** Show the API's word on the shape on the shape itself, where the person is looking. */
function showShapeError(message) {
  if (!draft.layer) return;
  draft.layer.unbindTooltip();
  draft.layer
    .bindTooltip(textSpan(message), { permanent: true, direction: 'center', className: 'wm-tooltip wm-tooltip--error' })
    .openTooltip();
}

function dropDraftLayer() {
  if (!draft.layer) return;
  setMoving(false);
  if (draft.layer.pm) draft.layer.pm.disable();
  draft.layer.remove();
  draft.layer = null;
  $('shape-actions').hidden = true;
}

/**
 * Moving the whole shape is Geoman's drag mode, which cannot run with vertex editing: the
 * "Move shape" button switches between the two.
 */
function setMoving(on) {
  const button = $('shape-move');
  button.setAttribute('aria-pressed', String(on));
  const layer = draft.layer;
  if (!layer || !layer.pm) return;
  if (on) {
    layer.pm.disable();
    layer.pm.enableLayerDrag();
    $('draw-hint').textContent = 'Drag the shape to move it; press Move shape again to edit its corners.';
  } else {
    if (layer.pm.layerDragEnabled()) layer.pm.disableLayerDrag();
    if (!layer.pm.enabled()) layer.pm.enable(EDIT_OPTIONS);
  }
}

$('shape-move').addEventListener('click', () => {
  setMoving($('shape-move').getAttribute('aria-pressed') !== 'true');
});

/** Write the shape's text from the map. */
function syncText() {
  syncedText = draft.layer ? geofenceText(shapeOf(draft.layer)) : '';
  shapeText.value = syncedText;
}

/** Make `layer` the form's shape: editable (vertices, dragging), its changes kept in the text. */
function setDraftLayer(layer, { dirty = true } = {}) {
  if (draft.layer && draft.layer !== layer) dropDraftLayer();
  draft.layer = layer;
  draft.dirty = dirty;
  if (!map.hasLayer(layer)) layer.addTo(map);
  $('shape-move').setAttribute('aria-pressed', 'false');
  $('shape-actions').hidden = false;
  layer.pm.enable(EDIT_OPTIONS);
  const changed = () => {
    draft.dirty = true;
    clearShapeError();
    syncText();
  };
  layer.on('pm:edit pm:dragend pm:vertexremoved pm:vertexadded pm:markerdragend', changed);
  syncText();
}

function fillForm(f) {
  $('geofence-name').value = f ? f.name : '';
  const ids = new Set(f ? f.vehicle_ids : []);
  for (const o of $('geofence-vehicles').options) o.selected = ids.has(Number(o.value));
  fillShipments(f ? f.shipment_id : null);
  $('geofence-debounce').value = f && f.debounce_s != null ? String(f.debounce_s) : '';
  $('geofence-dwell').value = f && f.dwell_s != null ? String(f.dwell_s) : '';
  $('geofence-form-title').textContent = f ? `Edit ${f.name}` : 'New geofence';
  $('geofence-delete').hidden = !f;
  $('geofence-save').textContent = f ? 'Save changes' : 'Save geofence';
}

/** Start a new geofence; what is typed in the form stays unless `clear`. */
function startNew({ clear = true } = {}) {
  stopDrawing();
  dropDraftLayer();
  draft = { id: null, layer: null, dirty: false };
  clearErrors(form);
  if (clear) {
    fillForm(null);
    syncText();
  }
  render();
}

function select(id) {
  const f = fences.get(id);
  if (!f) return;
  stopDrawing();
  dropDraftLayer();
  draft = { id, layer: null, dirty: false };
  clearErrors(form);
  $('geofence-saved').hidden = true;
  fillForm(f);
  render();
  setDraftLayer(layerFromShape(storedShape(f), EDITING), { dirty: false });
  map.fitBounds(draft.layer.getBounds().pad(0.3), { maxZoom: 17 });
}

// ---- drawing ----

const SHAPES = { 'draw-polygon': 'Polygon', 'draw-rectangle': 'Rectangle', 'draw-circle': 'Circle' };
const HINTS = {
  Polygon: 'Click the map for each corner; click the first corner, press Enter or Finish shape to close it.',
  Rectangle: 'Click one corner, then the opposite one.',
  Circle: 'Click the centre, then click where the edge should be.',
};

function stopDrawing() {
  if (map.pm.globalDrawModeEnabled()) map.pm.disableDraw();
}

for (const [buttonId, shape] of Object.entries(SHAPES)) {
  $(buttonId).addEventListener('click', () => {
    stopDrawing();
    map.pm.enableDraw(shape, { allowSelfIntersection: true, snappable: true, finishOn: null });
    $('draw-hint').textContent = HINTS[shape];
    $('draw-actions').hidden = false;
    $('draw-finish').hidden = shape !== 'Polygon';
    map.getContainer().focus({ preventScroll: true });
  });
}

map.on('pm:drawend', () => {
  $('draw-actions').hidden = true;
  $('draw-hint').textContent = 'Drag the corners to change the shape; Move shape moves all of it.';
});

map.on('pm:create', ({ layer }) => {
  clearErrors(form);
  $('geofence-saved').hidden = true;
  // A new shape for the geofence in the form (new, or one being changed).
  setDraftLayer(layer);
});

$('draw-finish').addEventListener('click', () => {
  const polygon = map.pm.Draw.Polygon;
  if (polygon && polygon.enabled()) polygon._finishShape();
});
$('draw-cancel').addEventListener('click', stopDrawing);

/** Put the typed shape on the map. False (with the reason shown) when it cannot be read. */
function applyText() {
  let shape;
  try {
    shape = geofenceFromText(shapeText.value);
  } catch (e) {
    if (!(e instanceof ShapeError)) throw e;
    showErrorAt(form, 'area', e.message);
    return false;
  }
  const typed = shapeText.value;
  setDraftLayer(layerFromShape(shape, EDITING));
  // Keep the person's own text (their format, their typo to fix) until the map changes it.
  shapeText.value = typed;
  syncedText = typed;
  map.fitBounds(draft.layer.getBounds().pad(0.3), { maxZoom: 17 });
  return true;
}

$('geofence-shape-apply').addEventListener('click', () => {
  clearErrors(form);
  applyText();
});

// ---- saving ----

/** A number field's value: null when empty; undefined (and the error shown) when not a number. */
function numberField(id, field) {
  const input = $(id);
  if (input.validity.badInput) {
    showErrorAt(form, field, 'Enter a whole number of seconds.');
    return undefined;
  }
  return input.value === '' ? null : Number(input.value);
}

function formBody() {
  const debounce = numberField('geofence-debounce', 'debounce_s');
  const dwell = numberField('geofence-dwell', 'dwell_s');
  if (debounce === undefined || dwell === undefined) return null;
  const shipment = $('geofence-shipment').value;
  return {
    name: $('geofence-name').value,
    vehicle_ids: [...$('geofence-vehicles').selectedOptions].map((o) => Number(o.value)),
    shipment_id: shipment ? Number(shipment) : null,
    debounce_s: debounce,
    dwell_s: dwell,
  };
}

async function save(event) {
  event.preventDefault();
  clearErrors(form);
  clearShapeError();
  $('geofence-saved').hidden = true;
  if (shapeText.value.trim() !== syncedText.trim() && !applyText()) return;
  if (!draft.layer) {
    showErrorAt(form, 'area', 'Draw a shape on the map, or type one.');
    return;
  }
  const body = formBody();
  if (!body) return;
  if (draft.id == null || draft.dirty) Object.assign(body, shapeBody(shapeOf(draft.layer)));
  await busy($('geofence-save'), async () => {
    try {
      const saved = draft.id == null
        ? await api('/geofences', { method: 'POST', body })
        : await api(`/geofences/${draft.id}`, { method: 'PATCH', body });
      fences.set(saved.id, saved);
      select(saved.id);
      const notice = $('geofence-saved');
      notice.textContent = `Saved ${saved.name}.`;
      notice.hidden = false;
    } catch (e) {
      const field = showApiError(form, e);
      if (field && /^(area|circle)/.test(field)) showShapeError(e.message);
    }
  });
}

form.addEventListener('submit', save);

$('geofence-delete').addEventListener('click', async () => {
  const f = fences.get(draft.id);
  if (!f) return;
  const ok = await confirmAction({
    title: `Delete ${f.name}?`,
    message: 'A vehicle inside it is forgotten there, with no exit alert. This cannot be undone.',
    confirm: 'Delete geofence',
  });
  if (!ok) return;
  clearErrors(form);
  try {
    await api(`/geofences/${f.id}`, { method: 'DELETE' });
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) {
      showApiError(form, e);
      return;
    }
  }
  fences.delete(f.id);
  startNew();
  const notice = $('geofence-saved');
  notice.textContent = `Deleted ${f.name}.`;
  notice.hidden = false;
});

$('geofence-new').addEventListener('click', () => {
  startNew();
  $('geofence-saved').hidden = true;
  $('geofence-name').focus();
});

// ---- loading ----

function fillVehicles(vehicles) {
  const select = $('geofence-vehicles');
  const chosen = new Set([...select.selectedOptions].map((o) => o.value));
  select.replaceChildren(
    ...vehicles.map((v) => {
      vehicleNames.set(v.id, v.name);
      // Retired vehicles stay listed, so saving keeps a geofence's scope as it was.
      const o = vehicleOption(v);
      o.selected = chosen.has(o.value);
      return o;
    }),
  );
}

function fillShipments(current) {
  const select = $('geofence-shipment');
  const wanted = current === undefined ? select.value : current == null ? '' : String(current);
  const shown = shipments.filter((s) => ACTIVE.has(s.status) || String(s.id) === wanted);
  select.replaceChildren(
    new Option('Any shipment', ''),
    ...shown.map(shipmentOption),
  );
  select.value = wanted;
}

let vehicleList = [];

/** With no geofence yet, start where the fleet is. */
function fitFleet(vehicles) {
  const seen = vehicles.filter((v) => v.last_position && v.status !== 'retired').map((v) => [v.last_position.lat, v.last_position.lon]);
  if (seen.length === 1) map.setView(seen[0], 14);
  else if (seen.length > 1) map.fitBounds(L.latLngBounds(seen).pad(0.3), { maxZoom: 14 });
  return seen.length > 0;
}

async function load() {
  try {
    const [list, vehicles, shipmentList] = await Promise.all([api('/geofences'), api('/vehicles?status=all'), api('/shipments')]);
    vehicleList = vehicles || [];
    fillVehicles(vehicleList);
    shipments = shipmentList || [];
    fillShipments(undefined);
    for (const f of list || []) fences.set(f.id, f);
  } catch (e) {
    if (goToSignInIfLapsed(e)) return undefined;
    $('geofence-empty').textContent = 'Could not load the geofences. Reload to try again.';
    return undefined;
  }
  render();
  if (!fitted) fitted = fitAll() || fitFleet(vehicleList);
  body.dataset.ready = 'true';
  return undefined;
}

load();

// ---- live alerts: see a geofence work ----

const live = connectLive({
  topics: [],
  onHello: (frame) => setServerTime(frame.server_time),
  onRefused: goToSignIn,
  checkAuth: stillSignedIn,
});

mountAlerts($('alerts-panel'), live, {
  describe: (a) => (a.vehicle_id != null ? vehicleNames.get(a.vehicle_id) || `Vehicle ${a.vehicle_id}` : ''),
  onFocus: (a) => {
    if (a.geofence_id != null && fences.has(a.geofence_id)) select(a.geofence_id);
    else if (Number.isFinite(a.lat) && Number.isFinite(a.lon)) map.setView([a.lat, a.lon], Math.max(map.getZoom(), 15));
  },
  sound: false,
  notify: false,
});
