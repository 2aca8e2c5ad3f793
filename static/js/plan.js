// The Plan a shipment page: reference; origin and destination clicked on the map (then
// draggable) or typed; a planned route drawn and edited on the map (Leaflet-Geoman), imported
// from GPX or GeoJSON, taken from an earlier shipment's track, or typed; due time, vehicle and
// driver. The API judges it all: a refusal shows next to the field it names, and the form
// keeps everything. A planned shipment opens on its own page.

/* global L */

import { api, goToSignInIfLapsed } from './api.js';
import { formatLatLon } from './format.js';
import { clearErrors, driverOption, shipmentOption, showApiError, showErrorAt, showFormError, vehicleOption } from './forms.js';
import { createMap, placeMarker } from './map.js';
import {
  formatLines,
  lineGeojson,
  localToRfc3339,
  plainLatLngs,
  routeFromFile,
  routeFromGeojson,
  routeFromText,
  ShapeError,
} from './shapes.js';

/** Above this many vertices a route is shown, not given a handle per vertex. */
const MAX_EDITABLE = 500;

const body = document.body;
const $ = (id) => document.getElementById(id);
const form = $('plan-form');
const routeText = $('route-text');

const map = createMap($('map'), { tileUrl: body.dataset.tileUrl, attribution: body.dataset.tileAttribution });
map.pm.setGlobalOptions({ snappable: true, finishOnEnter: true, exitModeOnEscape: true, pathOptions: { className: 'wm-route wm-route--editing' } });

// ---- origin and destination ----

const places = {
  origin: { marker: null, coords: $('plan-origin-coords'), name: $('plan-origin-name'), pick: $('plan-origin-pick') },
  destination: {
    marker: null,
    coords: $('plan-destination-coords'),
    name: $('plan-destination-name'),
    pick: $('plan-destination-pick'),
  },
};
/** The place the next map click sets ('origin', 'destination'), or null. */
let picking = null;

/** "48.1, 11.5" as [lat, lon], or null. */
function parseCoords(text) {
  const nums = text.split(/[\s,;]+/).filter(Boolean).map(Number);
  if (nums.length !== 2 || nums.some((n) => !Number.isFinite(n))) return null;
  return nums;
}

function placeLatLng(kind) {
  return parseCoords(places[kind].coords.value);
}

/** Put `kind`'s pin at [lat, lon] (draggable; dragging writes the coordinates back). */
function setPlace(kind, latlng, { fromInput = false } = {}) {
  const p = places[kind];
  if (!fromInput) p.coords.value = formatLatLon(latlng[0], latlng[1]);
  if (p.marker) p.marker.remove();
  p.marker = placeMarker(latlng, kind, p.name.value.trim());
  p.marker.options.draggable = true;
  p.marker.options.pmIgnore = true; // pins are not Geoman's: they move by dragging alone
  p.marker.on('dragend', () => {
    const ll = p.marker.getLatLng();
    p.coords.value = formatLatLon(ll.lat, ll.lng);
  });
  p.marker.addTo(map);
  if (p.marker.dragging) p.marker.dragging.enable();
}

function armPick(kind) {
  picking = picking === kind ? null : kind;
  for (const [k, p] of Object.entries(places)) p.pick.setAttribute('aria-pressed', String(picking === k));
  map.getContainer().classList.toggle('is-picking', picking !== null);
}

for (const [kind, p] of Object.entries(places)) {
  p.pick.addEventListener('click', () => armPick(kind));
  p.coords.addEventListener('change', () => {
    const latlng = placeLatLng(kind);
    if (latlng) {
      setPlace(kind, latlng, { fromInput: true });
      showAll();
    } else if (p.coords.value.trim()) {
      showErrorAt(form, kind, 'Type the coordinates as "lat, lon", e.g. 48.13715, 11.57612.');
    }
  });
  p.name.addEventListener('change', () => {
    const latlng = placeLatLng(kind);
    if (latlng) setPlace(kind, latlng, { fromInput: true });
  });
}

map.on('click', (e) => {
  if (map.pm.globalDrawModeEnabled()) return;
  // With nothing armed, a click fills the first empty place.
  const kind = picking || ['origin', 'destination'].find((k) => !places[k].coords.value.trim());
  if (!kind) return;
  setPlace(kind, [e.latlng.lat, e.latlng.lng]);
  if (picking) armPick(picking);
});

// ---- the planned route ----

/** The route's line on the map, or null. */
let route = null;

function routeLatLngs() {
  return route ? plainLatLngs(route.getLatLngs()) : [];
}

/** Write the route's count and text from the map. */
function syncRoute() {
  const latlngs = routeLatLngs();
  $('route-points').textContent = String(latlngs.length);
  routeText.value = formatLines(latlngs);
}

/** Make `latlngs` (or a drawn `layer`) the route: on the map, editable when small enough. */
function setRoute({ latlngs, layer }) {
  if (route && route !== layer) {
    if (route.pm) route.pm.disable();
    route.remove();
  }
  route = layer || (latlngs && latlngs.length ? L.polyline(latlngs, { className: 'wm-route wm-route--editing' }) : null);
  if (route) {
    if (!map.hasLayer(route)) route.addTo(map);
    const editable = route.getLatLngs().length <= MAX_EDITABLE;
    if (editable) route.pm.enable({ snappable: true });
    route.on('pm:edit pm:vertexremoved pm:vertexadded pm:markerdragend', syncRoute);
    $('route-hint').textContent = editable
      ? 'Drag a point to move it, drag a middle handle to add one, right-click a point to remove it.'
      : `${route.getLatLngs().length} points: shown, too many to edit by hand.`;
  }
  syncRoute();
}

$('route-draw').addEventListener('click', () => {
  if (map.pm.globalDrawModeEnabled()) return;
  if (picking) armPick(picking);
  map.pm.enableDraw('Line', { snappable: true, finishOn: null });
  $('route-finish').hidden = false;
  $('route-hint').textContent = 'Click the map for each point; click the last point again, press Enter or Finish route to end.';
});

$('route-finish').addEventListener('click', () => {
  const line = map.pm.Draw.Line;
  if (line && line.enabled()) line._finishShape();
});

map.on('pm:drawend', () => {
  $('route-finish').hidden = true;
});

map.on('pm:create', ({ layer }) => {
  clearErrors(form);
  setRoute({ layer });
});

$('route-clear').addEventListener('click', () => {
  if (map.pm.globalDrawModeEnabled()) map.pm.disableDraw();
  setRoute({ latlngs: [] });
  $('route-hint').textContent = 'No planned route.';
});

function routeError(e) {
  if (!(e instanceof ShapeError)) throw e;
  showErrorAt(form, 'planned_route', e.message);
}

routeText.addEventListener('change', () => {
  clearErrors(form);
  try {
    setRoute({ latlngs: routeFromText(routeText.value) });
    showAll();
  } catch (e) {
    routeError(e);
  }
});

$('route-file').addEventListener('change', async () => {
  const file = $('route-file').files[0];
  if (!file) return;
  clearErrors(form);
  try {
    setRoute({ latlngs: routeFromFile(await file.text()) });
    showAll();
  } catch (e) {
    routeError(e);
  }
});

$('route-from-track').addEventListener('click', async () => {
  const id = $('route-shipment').value;
  clearErrors(form);
  if (!id) {
    showErrorAt(form, 'planned_route', 'Choose the earlier shipment whose track to follow.');
    return;
  }
  const simplify = Math.max(0, Number($('route-simplify').value) || 0);
  try {
    const track = await api(`/shipments/${id}/track?format=geojson&simplify_m=${simplify}`);
    setRoute({ latlngs: routeFromGeojson(track) });
    showAll();
  } catch (e) {
    if (e instanceof ShapeError) routeError(new ShapeError('that shipment has no track of two points or more yet'));
    else showApiError(form, e);
  }
});

// ---- the map's view ----

function showAll() {
  const points = [...routeLatLngs()];
  for (const p of Object.values(places)) if (p.marker) points.push(p.marker.getLatLng());
  if (points.length === 1) map.setView(points[0], Math.max(map.getZoom(), 13));
  else if (points.length > 1) map.fitBounds(L.latLngBounds(points).pad(0.2), { maxZoom: 15 });
}

// ---- submitting ----

function place(kind) {
  const p = places[kind];
  const latlng = placeLatLng(kind);
  if (!latlng) {
    showErrorAt(form, kind, p.coords.value.trim()
      ? 'Type the coordinates as "lat, lon", e.g. 48.13715, 11.57612.'
      : `Click the map or type the ${kind}'s coordinates.`);
    return null;
  }
  const name = p.name.value.trim();
  return { lat: latlng[0], lon: latlng[1], ...(name ? { name } : {}) };
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  clearErrors(form);
  // A route typed but not yet applied (the change event comes on leaving the field).
  if (routeText.value.trim() !== formatLines(routeLatLngs())) {
    try {
      setRoute({ latlngs: routeFromText(routeText.value) });
    } catch (e) {
      routeError(e);
      return;
    }
  }
  const origin = place('origin');
  const destination = origin && place('destination');
  if (!origin || !destination) return;
  const due = $('plan-due').value;
  const dueAt = localToRfc3339(due);
  if (due && !dueAt) {
    showErrorAt(form, 'due_at', 'Give a date and time.');
    return;
  }
  const request = {
    reference: $('plan-reference').value,
    origin,
    destination,
    ...(route ? { planned_route: lineGeojson(routeLatLngs()) } : {}),
    ...(dueAt ? { due_at: dueAt } : {}),
    ...($('plan-vehicle').value ? { vehicle_id: Number($('plan-vehicle').value) } : {}),
    ...($('plan-driver').value ? { driver_id: Number($('plan-driver').value) } : {}),
  };
  const button = $('plan-submit');
  button.disabled = true;
  try {
    const shipment = await api('/shipments', { method: 'POST', body: request });
    window.location.assign(`/shipments/${shipment.id}`);
  } catch (e) {
    showApiError(form, e);
    button.disabled = false;
  }
});

// ---- choices from the API ----

async function load() {
  try {
    const [vehicles, drivers, shipments] = await Promise.all([
      api('/vehicles'),
      api('/users?role=driver'),
      api('/shipments'),
    ]);
    $('plan-vehicle').append(...(vehicles || []).map(vehicleOption));
    $('plan-driver').append(
      ...(drivers || []).filter((u) => !u.disabled).map(driverOption),
    );
    const earlier = (shipments || []).filter((s) => s.started_at).sort((a, b) => b.id - a.id);
    $('route-shipment').append(
      ...earlier.map(shipmentOption),
    );
    // Start where the fleet is, when it has been anywhere.
    const seen = (vehicles || []).filter((v) => v.last_position).map((v) => [v.last_position.lat, v.last_position.lon]);
    if (seen.length && !places.origin.marker) map.fitBounds(L.latLngBounds(seen).pad(0.3), { maxZoom: 13 });
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    showFormError(form, 'Could not load the vehicles and drivers. Reload to try again.');
  }
  body.dataset.ready = 'true';
}

load();
