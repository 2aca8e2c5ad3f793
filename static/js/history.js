// A vehicle's past on the map, and its replay: `/history?vehicle=ID[,ID]&from=ISO&to=ISO`.
//
// The tracks come from `GET /vehicles/{id}/history`, simplified by the server to about a screen
// pixel at the map's zoom (`tolerance_m`); zooming in far enough asks again, finer. They are
// drawn on one canvas, coloured by speed, with the stops and alerts pinned. Beside the map, the
// trips and stops (a click fits the map to one); under it, the replay: a clock over the range
// that a marker follows along the track, turned to its heading, at ×1 to ×60, with the stops and
// alerts marked on the timeline (a click jumps there).
//
// What was drawn is on the elements, so people and tests can read it without a test-only path:
// `#map` has data-drawn-paths, data-drawn-vertices, data-drawn-stops, data-drawn-alerts,
// data-tolerance and the first vehicle's replayed place (data-replay-lat, data-replay-lon);
// `#timeline` has the replay clock (data-t, ms since the epoch), data-playing and data-rate.
// `performance.mark('history-drawn')` is set once the tracks asked for are drawn.

/* global L */

import { api, goToSignInIfLapsed } from './api.js';
import { formatSpeed } from './format.js';
import { createMap, VehicleMarker } from './map.js';

/** Speed bands (upper bound in km/h) and their colours, slow to fast. */
const BANDS = [
  { below: 10, colour: '#94a3b8', label: 'under 10 km/h' },
  { below: 30, colour: '#2563eb', label: '10–30 km/h' },
  { below: 50, colour: '#16a34a', label: '30–50 km/h' },
  { below: 70, colour: '#eab308', label: '50–70 km/h' },
  { below: 100, colour: '#f97316', label: '70–100 km/h' },
  { below: Infinity, colour: '#dc2626', label: '100 km/h and over' },
];
const FIRST_TOLERANCE_M = 20; // before the map is fitted to the data
const MAX_TOLERANCE_M = 10000;
const REFETCH_DELAY_MS = 250;
const MAX_FRAME_MS = 1000; // a frame late by more (a hidden tab) moves the clock no further
const EARTH_M = 6371008.8;

const $ = (id) => document.getElementById(id);
const body = document.body;
const mapEl = $('map');
const form = $('history-form');
const vehicleSelect = $('history-vehicles');
const fromInput = $('history-from');
const toInput = $('history-to');
const errorEl = $('history-error');
const listEl = $('segment-list');
const countEl = $('segment-count');
const emptyEl = $('segment-empty');
const timelineEl = $('timeline');
const playButton = $('replay-play');
const rateSelect = $('replay-speed');
const slider = $('replay-slider');
const eventsEl = $('replay-events');
const timeEl = $('replay-time');
const readoutEl = $('replay-readout');

const map = createMap(mapEl, { tileUrl: body.dataset.tileUrl, attribution: body.dataset.tileAttribution });
const renderer = L.canvas({ padding: 0.5 });
const layers = L.layerGroup().addTo(map);

/** What is shown: the vehicles asked for and the range (ms), and each vehicle's history. */
const shown = { ids: [], from: 0, to: 0, tolerance: FIRST_TOLERANCE_M, generation: 0 };
/** vehicle id -> { name, reply, track, marker, heading } */
const histories = new Map();
const replay = { t: 0, playing: false, rate: Number(rateSelect.value), last: 0 };

// ---- small helpers ----

function pad(n) {
  return String(n).padStart(2, '0');
}

/** A time as a datetime-local input's value, in the browser's zone. */
function localInput(ms) {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function clock(ms, { date = false } = {}) {
  const d = new Date(ms);
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  return date ? `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}` : time;
}

function duration(seconds) {
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${pad(minutes % 60)} min`;
}

function metres(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * EARTH_M * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Degrees clockwise from north, from the first point to the second. */
function bearing(lat1, lon1, lat2, lon2) {
  const rad = Math.PI / 180;
  const y = Math.sin((lon2 - lon1) * rad) * Math.cos(lat2 * rad);
  const x = Math.cos(lat1 * rad) * Math.sin(lat2 * rad) - Math.sin(lat1 * rad) * Math.cos(lat2 * rad) * Math.cos((lon2 - lon1) * rad);
  return (Math.atan2(y, x) / rad + 360) % 360;
}

function band(mps) {
  const kmh = mps * 3.6;
  return BANDS.findIndex((b) => kmh < b.below);
}

/** Metres a screen pixel covers at the map's zoom and middle: the tolerance worth asking for. */
function pixelMetres() {
  const lat = map.getCenter().lat;
  const m = (40075016.686 * Math.cos((lat * Math.PI) / 180)) / 2 ** (map.getZoom() + 8);
  return Math.min(MAX_TOLERANCE_M, Math.max(0, Math.round(m * 10) / 10));
}

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = !message;
}

// ---- the form and the address ----

function readAddress() {
  const params = new URLSearchParams(window.location.search);
  const ids = (params.get('vehicle') || '')
    .split(',')
    .map(Number)
    .filter((id) => Number.isInteger(id) && id > 0);
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const tomorrow = new Date(today);
  tomorrow.setDate(today.getDate() + 1);
  const from = Date.parse(params.get('from') || '');
  const to = Date.parse(params.get('to') || '');
  return {
    ids,
    from: Number.isFinite(from) ? from : today.getTime(),
    to: Number.isFinite(to) ? to : tomorrow.getTime(),
  };
}

function writeAddress() {
  const params = new URLSearchParams();
  params.set('vehicle', shown.ids.join(','));
  params.set('from', new Date(shown.from).toISOString());
  params.set('to', new Date(shown.to).toISOString());
  window.history.replaceState(null, '', `/history?${params}`);
}

function selectedIds() {
  return [...vehicleSelect.selectedOptions].map((o) => Number(o.value));
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  const ids = selectedIds();
  const from = new Date(fromInput.value).getTime();
  const to = new Date(toInput.value).getTime();
  if (!ids.length) return showError('Choose a vehicle.');
  if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from) return showError('The range must end after it begins.');
  show(ids, from, to);
});

// ---- loading and drawing ----

async function show(ids, from, to) {
  showError('');
  pause();
  Object.assign(shown, { ids, from, to, tolerance: FIRST_TOLERANCE_M });
  writeAddress();
  replay.t = from;
  const loaded = await load(FIRST_TOLERANCE_M);
  if (!loaded) return;
  fit();
  listSegments();
  setUpTimeline();
  render();
  requestAnimationFrame(() => performance.mark('history-drawn'));
  // Fitted, the map may want finer tracks than the first guess.
  refetchIfFiner();
}

/** Fetches every vehicle's history at `tolerance` and draws it; false if it failed or was overtaken. */
async function load(tolerance) {
  const generation = ++shown.generation;
  const query = `from=${encodeURIComponent(new Date(shown.from).toISOString())}&to=${encodeURIComponent(new Date(shown.to).toISOString())}&tolerance_m=${tolerance}`;
  let replies;
  try {
    replies = await Promise.all(shown.ids.map((id) => api(`/vehicles/${id}/history?${query}`)));
  } catch (e) {
    if (generation !== shown.generation || goToSignInIfLapsed(e)) return false;
    showError(e.status === 404 ? 'There is no such vehicle.' : e.message || 'The history could not be read.');
    return false;
  }
  if (generation !== shown.generation) return false;
  shown.tolerance = tolerance;
  for (const [id, h] of histories) {
    if (!shown.ids.includes(id)) {
      h.marker.remove();
      histories.delete(id);
    }
  }
  for (const reply of replies) {
    const id = reply.vehicle.id;
    let h = histories.get(id);
    if (!h) {
      h = { marker: new VehicleMarker([0, 0], { name: reply.vehicle.name }), heading: null };
      // Clicks go through it to the stops and alerts beneath; its name and speed stay shown.
      h.marker.marker.options.interactive = false;
      h.marker.marker.unbindTooltip().bindTooltip(h.marker.label, {
        permanent: true,
        direction: 'top',
        offset: [0, -14],
        className: 'wm-tooltip',
      });
      histories.set(id, h);
    }
    h.name = reply.vehicle.name;
    h.reply = reply;
    h.track = replayTrack(reply);
  }
  draw();
  return true;
}

/** The stop or alert whose popup is open, kept open when the tracks are drawn again finer. */
let openKey = null;

function keyed(marker, key) {
  marker.popupKey = key;
  marker.on('popupopen', () => {
    openKey = key;
  });
  marker.on('popupclose', () => {
    if (openKey === key) openKey = null;
  });
  return marker;
}

function draw() {
  const reopen = openKey;
  layers.clearLayers();
  let paths = 0;
  let vertices = 0;
  let stops = 0;
  let alerts = 0;
  for (const h of histories.values()) {
    for (const s of h.reply.segments) {
      if (s.kind === 'trip') {
        paths += drawTrip(s.path);
        vertices += s.path.t.length;
      } else {
        keyed(stopMarker(h, s), `stop:${h.reply.vehicle.id}:${s.arrival}`).addTo(layers);
        stops += 1;
      }
    }
    for (const a of h.reply.alerts) {
      const at = a.place ? [a.place.lat, a.place.lon] : placeAt(h.track, Date.parse(a.at));
      if (!at) continue;
      keyed(alertMarker(h, a, at), `alert:${a.id}`).addTo(layers);
      alerts += 1;
    }
  }
  if (reopen) {
    layers.eachLayer((layer) => {
      if (layer.popupKey === reopen) layer.openPopup();
    });
  }
  Object.assign(mapEl.dataset, {
    drawnPaths: String(paths),
    drawnVertices: String(vertices),
    drawnStops: String(stops),
    drawnAlerts: String(alerts),
    tolerance: String(shown.tolerance),
  });
}

/** Speed along the stretch from vertex i to i + 1: as reported, else as driven. */
function stretchSpeed(p, i) {
  const a = p.speed[i];
  const b = p.speed[i + 1];
  if (a != null && b != null) return (a + b) / 2;
  if (b != null) return b;
  const dt = (p.t[i + 1] - p.t[i]) / 1000;
  return dt > 0 ? metres(p.lat[i], p.lon[i], p.lat[i + 1], p.lon[i + 1]) / dt : 0;
}

/** Draws a track as runs of one speed band each; how many lines that took. */
function drawTrip(p) {
  const n = p.t.length;
  if (n < 2) return 0;
  let lines = 0;
  let start = 0;
  let current = band(stretchSpeed(p, 0));
  const flush = (end) => {
    const latlngs = [];
    for (let i = start; i <= end; i++) latlngs.push([p.lat[i], p.lon[i]]);
    L.polyline(latlngs, {
      renderer,
      color: BANDS[current].colour,
      weight: 4,
      opacity: 0.9,
      lineCap: 'round',
      lineJoin: 'round',
      interactive: false,
    }).addTo(layers);
    lines += 1;
  };
  for (let i = 1; i < n - 1; i++) {
    const b = band(stretchSpeed(p, i));
    if (b !== current) {
      flush(i);
      start = i;
      current = b;
    }
  }
  flush(n - 1);
  return lines;
}

function popupText(lines) {
  const el = document.createElement('div');
  el.className = 'history-popup';
  for (const [i, line] of lines.entries()) {
    const p = document.createElement(i === 0 ? 'strong' : 'div');
    p.textContent = line;
    el.appendChild(p);
  }
  return el;
}

function stopLines(h, s) {
  const arrival = Date.parse(s.arrival);
  return [
    histories.size > 1 ? `Stop · ${h.name}` : 'Stop',
    `Arrived ${clock(arrival, { date: true })}`,
    s.departure ? `Left ${clock(Date.parse(s.departure), { date: true })}` : 'Still there',
    `Stayed ${duration(s.duration_s)}`,
  ];
}

function stopMarker(h, s) {
  return L.circleMarker([s.place.lat, s.place.lon], {
    renderer,
    radius: 7,
    color: '#ffffff',
    weight: 2,
    fillColor: '#0f172a',
    fillOpacity: 1,
  }).bindPopup(popupText(stopLines(h, s)));
}

const RULES = {
  geofence_enter: 'Entered a geofence',
  geofence_exit: 'Left a geofence',
  geofence_dwell: 'Stayed in a geofence',
  overspeed: 'Over the speed limit',
  stopped: 'Stopped too long',
  silent: 'Went silent',
  off_route: 'Off route',
  arrived: 'Arrived',
  late: 'Late',
};

function alertMarker(h, a, at) {
  const lines = [RULES[a.rule] || a.rule, clock(Date.parse(a.at), { date: true })];
  if (a.details && a.details.geofence) lines.push(a.details.geofence);
  if (histories.size > 1) lines.push(h.name);
  return L.circleMarker(at, {
    renderer,
    radius: 6,
    color: '#ffffff',
    weight: 2,
    fillColor: '#dc2626',
    fillOpacity: 1,
  }).bindPopup(popupText(lines));
}

function fit() {
  const bounds = L.latLngBounds([]);
  for (const h of histories.values()) {
    const tr = h.track;
    for (let i = 0; i < tr.t.length; i++) bounds.extend([tr.lat[i], tr.lon[i]]);
  }
  if (bounds.isValid()) map.fitBounds(bounds, { padding: [30, 30], maxZoom: 17, animate: false });
}

// Zoomed in beyond what the tracks were simplified for (a zoom level or more): ask again, finer.
let refetchTimer = null;
function refetchIfFiner() {
  clearTimeout(refetchTimer);
  if (!shown.ids.length) return;
  refetchTimer = setTimeout(async () => {
    const wanted = pixelMetres();
    if (wanted >= shown.tolerance * 0.75) return;
    if (await load(wanted)) render();
  }, REFETCH_DELAY_MS);
}
map.on('zoomend', refetchIfFiner);

// ---- the list of trips and stops ----

function listSegments() {
  listEl.replaceChildren();
  let count = 0;
  for (const h of histories.values()) {
    if (histories.size > 1) {
      const heading = document.createElement('li');
      heading.className = 'history-list__vehicle';
      heading.textContent = h.name;
      listEl.appendChild(heading);
    }
    for (const s of h.reply.segments) {
      listEl.appendChild(segmentRow(h, s));
      count += 1;
    }
  }
  countEl.textContent = String(count);
  emptyEl.hidden = count > 0;
  emptyEl.textContent = count ? '' : 'No trips or stops in this range.';
}

function segmentRow(h, s) {
  const li = document.createElement('li');
  li.className = `history-list__item history-list__item--${s.kind}`;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'history-segment';
  button.dataset.kind = s.kind;
  const kind = document.createElement('span');
  kind.className = 'history-segment__kind';
  const when = document.createElement('span');
  when.className = 'history-segment__when mono';
  const what = document.createElement('span');
  what.className = 'history-segment__what muted';
  let start;
  if (s.kind === 'trip') {
    start = Date.parse(s.started_at);
    kind.textContent = s.in_progress ? 'Trip (going on)' : 'Trip';
    when.textContent = `${clock(start)}–${clock(Date.parse(s.ended_at))}`;
    what.textContent = `${(s.distance_m / 1000).toFixed(1)} km · up to ${formatSpeed(s.max_speed_mps)}`;
    button.addEventListener('click', () => {
      const latlngs = s.path.t.map((_, i) => [s.path.lat[i], s.path.lon[i]]);
      if (latlngs.length) map.fitBounds(L.latLngBounds(latlngs), { padding: [30, 30], maxZoom: 17 });
      seek(Math.max(start, shown.from));
    });
  } else {
    start = Date.parse(s.arrival);
    kind.textContent = s.in_progress ? 'Stop (still there)' : 'Stop';
    const end = s.departure ? clock(Date.parse(s.departure)) : 'now';
    when.textContent = `${clock(start)}–${end}`;
    what.textContent = duration(s.duration_s);
    button.addEventListener('click', () => {
      map.setView([s.place.lat, s.place.lon], Math.max(map.getZoom(), 16), { animate: false });
      seek(Math.max(start, shown.from));
    });
  }
  button.append(kind, when, what);
  li.appendChild(button);
  return li;
}

function fillLegend() {
  const legend = $('speed-legend');
  for (const b of BANDS) {
    const li = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'history-legend__swatch';
    swatch.style.background = b.colour;
    li.append(swatch, document.createTextNode(b.label));
    legend.appendChild(li);
  }
}

// ---- the replay ----

/**
 * A vehicle's whereabouts over time for the replay, as parallel arrays in time order: its
 * tracks' vertices, and its stops (standing still at the place from arrival to departure).
 */
function replayTrack(reply) {
  const points = [];
  for (const s of reply.segments) {
    if (s.kind === 'trip') {
      const p = s.path;
      for (let i = 0; i < p.t.length; i++) points.push([p.t[i], p.lat[i], p.lon[i], p.speed[i]]);
    } else {
      const arrival = Date.parse(s.arrival);
      const until = s.departure ? Date.parse(s.departure) : Date.parse(s.arrival) + s.duration_s * 1000;
      points.push([arrival, s.place.lat, s.place.lon, 0], [until, s.place.lat, s.place.lon, 0]);
    }
  }
  points.sort((a, b) => a[0] - b[0]);
  return {
    t: points.map((p) => p[0]),
    lat: points.map((p) => p[1]),
    lon: points.map((p) => p[2]),
    speed: points.map((p) => p[3]),
  };
}

/** The last index whose time is at or before `t` (-1 if none). */
function indexAt(track, t) {
  let lo = 0;
  let hi = track.t.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (track.t[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/** Where the vehicle was at `t`: on the straight line between the vertices around it. */
function stateAt(track, t) {
  const n = track.t.length;
  if (!n) return null;
  const i = indexAt(track, t);
  if (i < 0) return { lat: track.lat[0], lon: track.lon[0], speed: null, heading: null };
  if (i >= n - 1) return { lat: track.lat[n - 1], lon: track.lon[n - 1], speed: null, heading: null };
  const span = track.t[i + 1] - track.t[i];
  const f = span > 0 ? (t - track.t[i]) / span : 0;
  const [lat1, lon1, lat2, lon2] = [track.lat[i], track.lon[i], track.lat[i + 1], track.lon[i + 1]];
  const moved = metres(lat1, lon1, lat2, lon2);
  const a = track.speed[i];
  const b = track.speed[i + 1];
  let speed;
  if (a != null && b != null) speed = a + (b - a) * f;
  else speed = span > 0 ? moved / (span / 1000) : 0;
  return {
    lat: lat1 + (lat2 - lat1) * f,
    lon: lon1 + (lon2 - lon1) * f,
    speed,
    heading: moved > 0.5 ? bearing(lat1, lon1, lat2, lon2) : null,
  };
}

function placeAt(track, t) {
  const s = stateAt(track, t);
  return s ? [s.lat, s.lon] : null;
}

function setUpTimeline() {
  const span = Math.max(1, Math.round((shown.to - shown.from) / 1000));
  slider.max = String(span);
  slider.disabled = false;
  playButton.disabled = false;
  eventsEl.replaceChildren();
  const at = (ms) => `${(((ms - shown.from) / (shown.to - shown.from)) * 100).toFixed(3)}%`;
  // Stops last, above any alert at the same place on the timeline.
  for (const h of histories.values()) {
    for (const a of h.reply.alerts) {
      const t = Date.parse(a.at);
      eventsEl.appendChild(eventButton('alert', t, at(t), `${RULES[a.rule] || a.rule} · ${clock(t, { date: true })}`));
    }
  }
  for (const h of histories.values()) {
    for (const s of h.reply.segments) {
      if (s.kind !== 'stop') continue;
      const t = Math.max(Date.parse(s.arrival), shown.from);
      eventsEl.appendChild(eventButton('stop', t, at(t), stopLines(h, s).join(' · ')));
    }
  }
}

function eventButton(kind, t, left, title) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = `timeline__event timeline__event--${kind}`;
  b.dataset.t = String(t);
  b.title = title;
  b.setAttribute('aria-label', title);
  b.style.left = left;
  b.addEventListener('click', () => seek(t));
  return b;
}

function render() {
  const t = replay.t;
  timelineEl.dataset.t = String(Math.round(t));
  timelineEl.dataset.playing = String(replay.playing);
  timelineEl.dataset.rate = String(replay.rate);
  slider.value = String(Math.round((t - shown.from) / 1000));
  timeEl.textContent = clock(t, { date: true });
  const readout = [];
  let first = true;
  for (const h of histories.values()) {
    const s = stateAt(h.track, t);
    if (!s) {
      h.marker.remove();
      continue;
    }
    if (!map.hasLayer(h.marker.marker)) h.marker.addTo(map);
    h.marker.setLatLng([s.lat, s.lon]);
    if (s.heading != null) h.heading = s.heading;
    h.marker.setHeading(h.heading);
    const speed = formatSpeed(s.speed);
    h.marker.setName(`${h.name} · ${speed}`);
    readout.push(histories.size > 1 ? `${h.name} ${speed}` : speed);
    if (first) {
      mapEl.dataset.replayLat = s.lat.toFixed(6);
      mapEl.dataset.replayLon = s.lon.toFixed(6);
      // While playing, the map keeps the (first) vehicle in view.
      if (replay.playing && !map.getBounds().pad(-0.1).contains([s.lat, s.lon])) map.panTo([s.lat, s.lon]);
      first = false;
    }
  }
  readoutEl.textContent = readout.length ? readout.join(' · ') : '—';
}

function frame(now) {
  if (!replay.playing) return;
  const dt = Math.min(MAX_FRAME_MS, Math.max(0, now - replay.last));
  replay.last = now;
  replay.t += dt * replay.rate;
  if (replay.t >= shown.to) {
    replay.t = shown.to;
    replay.playing = false;
    playButton.textContent = 'Play';
    playButton.setAttribute('aria-pressed', 'false');
  }
  render();
  if (replay.playing) requestAnimationFrame(frame);
}

function play() {
  if (replay.playing || !histories.size) return;
  if (replay.t >= shown.to) replay.t = shown.from;
  replay.playing = true;
  replay.last = performance.now();
  playButton.textContent = 'Pause';
  playButton.setAttribute('aria-pressed', 'true');
  render();
  requestAnimationFrame(frame);
}

function pause() {
  replay.playing = false;
  playButton.textContent = 'Play';
  playButton.setAttribute('aria-pressed', 'false');
  if (histories.size) render();
}

function seek(t) {
  replay.t = Math.min(shown.to, Math.max(shown.from, t));
  render();
}

playButton.addEventListener('click', () => (replay.playing ? pause() : play()));
rateSelect.addEventListener('change', () => {
  replay.rate = Number(rateSelect.value) || 1;
  timelineEl.dataset.rate = String(replay.rate);
});
slider.addEventListener('input', () => seek(shown.from + Number(slider.value) * 1000));

// ---- start ----

async function start() {
  fillLegend();
  const address = readAddress();
  fromInput.value = localInput(address.from);
  toInput.value = localInput(address.to);
  try {
    const vehicles = await api('/vehicles?status=all');
    for (const v of vehicles) {
      const option = document.createElement('option');
      option.value = String(v.id);
      option.textContent = v.status === 'retired' ? `${v.name} (retired)` : v.name;
      option.selected = address.ids.includes(v.id);
      vehicleSelect.appendChild(option);
    }
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    showError('The vehicles could not be read.');
  }
  if (address.ids.length) await show(address.ids, address.from, address.to);
  body.dataset.ready = 'true';
}

start();
