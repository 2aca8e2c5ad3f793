// The Reports page: a report (trips, stops, daily totals, geofence visits, shipments) over a
// range of days for some or all vehicles, as a table sortable by column with a totals row, and a
// link to download the same report as CSV. Times are shown in the organisation's time zone and
// distances in its unit, as the CSV has them; the API's JSON is in metres, seconds and UTC.

import { api, ApiError, goToSignInIfLapsed } from './api.js';
import { el, vehicleOption } from './forms.js';

const $ = (id) => document.getElementById(id);

/** The organisation's `reports` settings: time zone and distance unit. */
let settings = { time_zone: 'UTC', distance_unit: 'km' };
/** The rows shown, and the column they are sorted by. */
let shown = { kind: null, rows: [], totals: null };
let sort = { key: null, descending: false };

const METRES = { km: 1000, mi: 1609.344 };
const SPEED = { km: 'km/h', mi: 'mph' };

function timeFormat() {
  return new Intl.DateTimeFormat([], {
    timeZone: settings.time_zone, year: 'numeric', month: 'short', day: 'numeric',
    hour: '2-digit', minute: '2-digit',
  });
}

let formatTime = (iso) => iso;

function distance(m) {
  if (m == null) return '—';
  const unit = settings.distance_unit;
  return `${(m / METRES[unit]).toFixed(1)} ${unit}`;
}

function speed(mps) {
  if (mps == null) return '—';
  const unit = settings.distance_unit;
  return `${Math.round(mps * 3600 / METRES[unit])} ${SPEED[unit]}`;
}

function duration(s) {
  if (s == null) return '—';
  const minutes = Math.round(s / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${String(minutes % 60).padStart(2, '0')} min`;
}

const place = (p) => (p ? `${p.lat.toFixed(5)}, ${p.lon.toFixed(5)}` : '—');
const time = (iso) => (iso ? formatTime(iso) : '—');
const count = (n) => String(n ?? 0);

/** A link to a trip on the history page. */
function historyLink(row) {
  const params = new URLSearchParams({ vehicle: row.vehicle_id, from: row.started_at, to: row.ended_at });
  return el('a', { className: 'report-history', text: 'History', attrs: { href: `/history?${params}` } });
}

/**
 * Each report's columns: header, how a row's cell reads (`show`), the value sorted by (`key`,
 * the raw one), whether it is a number, and its total (`total`, from the API's totals).
 */
const REPORTS = {
  trips: [
    { label: 'Vehicle', key: (r) => r.vehicle_name, total: () => 'Total' },
    { label: 'Start', key: (r) => r.started_at, show: (r) => time(r.started_at), total: (t) => `${count(t.trips)} trips` },
    { label: 'From', key: (r) => r.start.lat, show: (r) => place(r.start) },
    { label: 'End', key: (r) => r.ended_at, show: (r) => time(r.ended_at) },
    { label: 'To', key: (r) => r.end.lat, show: (r) => place(r.end) },
    { label: 'Distance', number: true, key: (r) => r.distance_m, show: (r) => distance(r.distance_m), total: (t) => distance(t.distance_m) },
    { label: 'Duration', number: true, key: (r) => r.duration_s, show: (r) => duration(r.duration_s), total: (t) => duration(t.duration_s) },
    { label: 'Average speed', number: true, key: (r) => r.average_speed_mps, show: (r) => speed(r.average_speed_mps), total: (t) => speed(t.average_speed_mps) },
    { label: 'Top speed', number: true, key: (r) => r.max_speed_mps, show: (r) => speed(r.max_speed_mps), total: (t) => speed(t.max_speed_mps) },
    { label: '', cell: historyLink },
  ],
  stops: [
    { label: 'Vehicle', key: (r) => r.vehicle_name, total: () => 'Total' },
    { label: 'Place', key: (r) => r.place.lat, show: (r) => place(r.place), total: (t) => `${count(t.stops)} stops` },
    { label: 'Arrived', key: (r) => r.arrived_at, show: (r) => time(r.arrived_at) },
    { label: 'Left', key: (r) => r.departed_at, show: (r) => (r.in_progress ? 'still there' : time(r.departed_at)) },
    { label: 'Duration', number: true, key: (r) => r.duration_s, show: (r) => duration(r.duration_s), total: (t) => duration(t.duration_s) },
  ],
  daily: [
    { label: 'Vehicle', key: (r) => r.vehicle_name, total: () => 'Total' },
    { label: 'Day', key: (r) => r.date, show: (r) => r.date, total: (t) => `${count(t.days)} vehicle-days` },
    { label: 'Distance', number: true, key: (r) => r.distance_m, show: (r) => distance(r.distance_m), total: (t) => distance(t.distance_m) },
    { label: 'Driving', number: true, key: (r) => r.driving_s, show: (r) => duration(r.driving_s), total: (t) => duration(t.driving_s) },
    { label: 'Stopped', number: true, key: (r) => r.stopped_s, show: (r) => duration(r.stopped_s), total: (t) => duration(t.stopped_s) },
    { label: 'Top speed', number: true, key: (r) => r.max_speed_mps, show: (r) => speed(r.max_speed_mps), total: (t) => speed(t.max_speed_mps) },
    { label: 'Trips', number: true, key: (r) => r.trips, show: (r) => count(r.trips), total: (t) => count(t.trips) },
    { label: 'Alerts', number: true, key: (r) => r.alerts, show: (r) => count(r.alerts), total: (t) => count(t.alerts) },
  ],
  'geofence-visits': [
    { label: 'Vehicle', key: (r) => r.vehicle_name, total: () => 'Total' },
    { label: 'Geofence', key: (r) => r.geofence_name, show: (r) => (r.geofence_deleted ? `${r.geofence_name} (deleted)` : r.geofence_name), total: (t) => `${count(t.visits)} visits` },
    { label: 'Entered', key: (r) => r.entered_at, show: (r) => time(r.entered_at) },
    { label: 'Left', key: (r) => r.exited_at, show: (r) => (r.inside ? 'still inside' : time(r.exited_at)) },
    { label: 'Dwell', number: true, key: (r) => r.dwell_s, show: (r) => duration(r.dwell_s), total: (t) => duration(t.dwell_s) },
  ],
  shipments: [
    { label: 'Reference', key: (r) => r.reference, show: (r) => el('a', { text: r.reference, attrs: { href: `/shipments/${r.id}` } }), total: () => 'Total' },
    { label: 'Vehicle', key: (r) => r.vehicle_name, show: (r) => r.vehicle_name ?? '—', total: (t) => `${count(t.shipments)} shipments` },
    { label: 'Due', key: (r) => r.due_at, show: (r) => time(r.due_at) },
    { label: 'Arrived', key: (r) => r.arrived_at, show: (r) => time(r.arrived_at) },
    { label: 'On time', key: (r) => r.on_time, show: (r) => (r.on_time == null ? '—' : r.on_time ? 'on time' : 'late'), total: (t) => `${count(t.on_time)} on time, ${count(t.late)} late` },
    { label: 'Late by', number: true, key: (r) => r.late_by_s, show: (r) => duration(r.late_by_s), total: (t) => duration(t.late_by_s) },
    { label: 'ETA error 10 min before', number: true, key: (r) => r.eta_error_10min_s, show: (r) => (r.eta_error_10min_s == null ? '—' : `${Math.round(r.eta_error_10min_s / 60)} min`) },
  ],
};

/** The report's query as the form says it: the API's parameters. */
function query(format) {
  const form = $('report-form');
  const params = new URLSearchParams();
  const chosen = [...form.elements.vehicle_ids.selectedOptions].map((o) => o.value);
  if (chosen.length) params.set('vehicle_ids', chosen.join(','));
  params.set('from', form.elements.from.value);
  params.set('to', form.elements.to.value);
  if (format) params.set('format', format);
  return params;
}

function kind() {
  return $('report-form').elements.kind.value;
}

function sortedRows() {
  const column = REPORTS[shown.kind].find((c) => c.label === sort.key);
  if (!column) return shown.rows;
  const sign = sort.descending ? -1 : 1;
  return [...shown.rows].sort((a, b) => {
    const [x, y] = [column.key(a), column.key(b)];
    if (x == null || y == null) return x == null ? (y == null ? 0 : 1) : -1;
    return (x < y ? -1 : x > y ? 1 : 0) * sign;
  });
}

function cell(column, row) {
  const td = el('td', { className: column.number ? 'number' : '' });
  const value = column.cell ? column.cell(row) : column.show ? column.show(row) : column.key(row);
  if (value instanceof Node) td.append(value);
  else td.textContent = value ?? '—';
  return td;
}

function draw() {
  const columns = REPORTS[shown.kind];
  $('report-head').replaceChildren(...columns.map((c) => {
    const th = el('th', { className: c.number ? 'number' : '', attrs: { scope: 'col' } });
    if (!c.key) {
      th.append(el('span', { className: 'visually-hidden', text: 'Links' }));
      return th;
    }
    if (sort.key === c.label) th.setAttribute('aria-sort', sort.descending ? 'descending' : 'ascending');
    const button = el('button', { text: c.label, attrs: { type: 'button', 'data-sort': c.label } });
    button.addEventListener('click', () => {
      sort = { key: c.label, descending: sort.key === c.label ? !sort.descending : false };
      draw();
    });
    th.append(button);
    return th;
  }));
  $('report-body').replaceChildren(...sortedRows().map((row) => {
    const tr = el('tr', { className: `report-row${row.in_progress ? ' report-row--live' : ''}` });
    tr.append(...columns.map((c) => cell(c, row)));
    return tr;
  }));
  $('report-totals').replaceChildren(...columns.map((c) => el('td', { className: c.number ? 'number' : '', text: c.total ? c.total(shown.totals) : '' })));
  $('report-empty').hidden = shown.rows.length > 0;
}

async function load() {
  $('report-error').hidden = true;
  const table = $('report-table');
  delete table.dataset.ready;
  const params = query();
  const path = `/reports/${kind()}`;
  $('report-csv').href = `/api/v1${path}?${query('csv')}`;
  window.history.replaceState(null, '', `?${new URLSearchParams({ kind: kind(), ...Object.fromEntries(params) })}`);
  try {
    const report = await api(`${path}?${params}`);
    if (!REPORTS[shown.kind] || shown.kind !== kind()) sort = { key: null, descending: false };
    shown = { kind: kind(), rows: report.rows, totals: report.totals };
    draw();
    const n = report.rows.length;
    $('report-summary').textContent = `${n} ${n === 1 ? 'row' : 'rows'} · times in ${report.time_zone}`;
    table.dataset.kind = shown.kind;
    table.dataset.ready = 'true';
  } catch (e) {
    if (goToSignInIfLapsed(e)) return;
    $('report-error').textContent = e instanceof ApiError ? e.message : 'The report could not be loaded.';
    $('report-error').hidden = false;
  }
}

/** Today in the organisation's time zone, as YYYY-MM-DD. */
function today() {
  return new Intl.DateTimeFormat('en-CA', { timeZone: settings.time_zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
}

function daysBefore(date, n) {
  const d = new Date(`${date}T12:00:00Z`);
  d.setUTCDate(d.getUTCDate() - n);
  return d.toISOString().slice(0, 10);
}

async function start() {
  const [loaded, vehicles] = await Promise.allSettled([api('/settings'), api('/vehicles?status=all')]);
  if (loaded.status === 'fulfilled' && loaded.value.reports) settings = loaded.value.reports;
  const format = timeFormat();
  formatTime = (iso) => format.format(new Date(iso));
  const form = $('report-form');
  if (vehicles.status === 'fulfilled') {
    form.elements.vehicle_ids.append(...vehicles.value.sort((a, b) => a.name.localeCompare(b.name)).map(vehicleOption));
  } else if (goToSignInIfLapsed(vehicles.reason)) {
    return;
  }
  // The report in the address (a bookmark, a reload), else trips over the last seven days.
  const params = new URLSearchParams(window.location.search);
  form.elements.to.value = params.get('to') || today();
  form.elements.from.value = params.get('from') || daysBefore(form.elements.to.value, 6);
  if (REPORTS[params.get('kind')]) form.elements.kind.value = params.get('kind');
  const chosen = new Set((params.get('vehicle_ids') || '').split(','));
  for (const option of form.elements.vehicle_ids.options) option.selected = chosen.has(option.value);
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    load();
  });
  form.elements.kind.addEventListener('change', load);
  await load();
}

start();
