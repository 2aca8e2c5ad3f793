// Small formatting helpers shared by the pages. Times from the server are RFC 3339 strings.

let clockOffsetMs = 0;

/** Tell the helpers how far the server clock is ahead of this browser's (from `hello`). */
export function setServerTime(serverTime) {
  const t = Date.parse(serverTime);
  if (Number.isFinite(t)) clockOffsetMs = t - Date.now();
}

/** "Now" on the server's clock, as milliseconds since the epoch. */
export function serverNow() {
  return Date.now() + clockOffsetMs;
}

/**
 * A sortable key for an RFC 3339 timestamp, in microseconds. `Date.parse` stops at
 * milliseconds, and two points of a track may differ by less than that.
 */
export function timeKey(iso) {
  const m = /^(.*T\d{2}:\d{2}:\d{2})(?:[.,](\d+))?(.*)$/.exec(String(iso));
  if (!m) return Date.parse(iso) * 1000;
  const ms = Date.parse(m[1] + (m[3] || 'Z'));
  const micros = Number(((m[2] || '') + '000000').slice(0, 6));
  return ms * 1000 + micros;
}

/** "48.13715, 11.57612" — the exact form the pages show for a position. */
export function formatLatLon(lat, lon) {
  return `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
}

/** Speed from m/s to a km/h label; "—" when unknown. */
export function formatSpeed(metresPerSecond) {
  if (metresPerSecond == null || !Number.isFinite(metresPerSecond)) return '—';
  return `${Math.round(metresPerSecond * 3.6)} km/h`;
}

/** "12 s ago", "4 min ago", "3 h ago", "2 d ago". */
export function formatAgo(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const s = Math.max(0, Math.floor((serverNow() - t) / 1000));
  if (s < 1) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Seconds since `iso` on the server's clock (Infinity when unknown). */
export function ageSeconds(iso) {
  const t = Date.parse(iso);
  return Number.isFinite(t) ? (serverNow() - t) / 1000 : Infinity;
}

/** Local wall-clock time (with seconds unless `seconds` is false); the date when not today. */
export function formatClock(iso, { seconds = true } = {}) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '—';
  const parts = { hour: '2-digit', minute: '2-digit' };
  if (seconds) parts.second = '2-digit';
  const time = d.toLocaleTimeString([], parts);
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.toLocaleDateString([], { day: 'numeric', month: 'short' })} ${time}`;
}

const STATUS_LABELS = {
  planned: 'Planned',
  in_transit: 'In transit',
  arrived: 'Arrived',
  delivered: 'Delivered',
  cancelled: 'Cancelled',
};

/** A shipment status as people read it ("in_transit" → "In transit"). */
export function statusLabel(status) {
  return STATUS_LABELS[status] || String(status || '').replace(/_/g, ' ');
}
