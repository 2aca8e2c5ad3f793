// Leaflet helpers shared by the dispatch and shipment pages: the base map, the vehicle marker
// with its heading arrow, origin/destination pins, and a track kept in time order.
// Leaflet itself is loaded as a classic script before these modules, as the global `L`.

/* global L */

/**
 * A background of faint grid squares that pans and zooms with the map, so the map still reads
 * as a map when no tile server answers (offline, tests, a blocked network).
 */
const GridLayer = L.GridLayer.extend({
  createTile() {
    const tile = document.createElement('div');
    tile.className = 'wm-grid-tile';
    return tile;
  },
});

/**
 * A Leaflet map in `el`, drawn with SVG. Tiles come from `tileUrl` (a Leaflet URL template);
 * with an empty URL there is no tile layer, only the grid.
 */
export function createMap(el, { tileUrl = '', attribution = '' } = {}) {
  const map = L.map(el, {
    renderer: L.svg({ padding: 0.5 }),
    zoomControl: false,
    worldCopyJump: true,
  });
  L.control.zoom({ position: 'topright' }).addTo(map);
  L.control.scale({ imperial: false, position: 'bottomright' }).addTo(map);
  new GridLayer({ zIndex: 0 }).addTo(map);
  if (tileUrl) {
    L.tileLayer(tileUrl, { attribution, maxZoom: 19, zIndex: 1 }).addTo(map);
  }
  map.setView([20, 0], 2);
  return map;
}

/** A text node wrapper for Leaflet tooltips: Leaflet would treat a string as HTML. */
function textContent(text, className) {
  const span = document.createElement('span');
  if (className) span.className = className;
  span.textContent = text;
  return span;
}

/**
 * A vehicle marker: an arrow pointing along `heading` (degrees clockwise from north), or a dot
 * when the heading is unknown, with the vehicle's name as a tooltip.
 */
export class VehicleMarker {
  constructor(latlng, { name = '', heading = null, className = '' } = {}) {
    this.root = document.createElement('div');
    this.root.className = `wm-vehicle ${className}`.trim();
    this.arrow = document.createElement('div');
    this.arrow.className = 'wm-vehicle__arrow';
    this.root.appendChild(this.arrow);
    this.label = textContent(name);
    this.marker = L.marker(latlng, {
      icon: L.divIcon({ html: this.root, className: 'wm-vehicle-icon', iconSize: [30, 30] }),
      keyboard: false,
      riseOnHover: true,
      zIndexOffset: 1000, // above the origin and destination pins
    });
    this.marker.bindTooltip(this.label, { direction: 'top', offset: [0, -14], className: 'wm-tooltip' });
    this.setHeading(heading);
  }

  addTo(map) {
    this.marker.addTo(map);
    return this;
  }

  remove() {
    this.marker.remove();
  }

  setLatLng(latlng) {
    this.marker.setLatLng(latlng);
  }

  getLatLng() {
    return this.marker.getLatLng();
  }

  setName(name) {
    this.label.textContent = name;
  }

  setHeading(heading) {
    const known = typeof heading === 'number' && Number.isFinite(heading);
    this.root.classList.toggle('wm-vehicle--no-heading', !known);
    this.arrow.style.transform = known ? `rotate(${heading}deg)` : '';
  }

  /** Move to a published position (lat, lon, heading). */
  update(position) {
    this.setLatLng([position.lat, position.lon]);
    this.setHeading(position.heading);
  }

  toggleClass(name, on) {
    this.root.classList.toggle(name, on);
  }

  on(event, fn) {
    this.marker.on(event, fn);
    return this;
  }
}

/** A round origin ("A") or destination ("B") pin; `name` becomes its tooltip. */
export function placeMarker(latlng, kind, name) {
  const pin = document.createElement('div');
  pin.className = `wm-place wm-place--${kind}`;
  pin.textContent = kind === 'origin' ? 'A' : 'B';
  const marker = L.marker(latlng, {
    icon: L.divIcon({ html: pin, className: 'wm-place-icon', iconSize: [24, 24] }),
    keyboard: false,
  });
  const title = kind === 'origin' ? 'Origin' : 'Destination';
  marker.bindTooltip(textContent(name ? `${title}: ${name}` : title), {
    direction: 'top',
    offset: [0, -12],
    className: 'wm-tooltip',
  });
  return marker;
}

/** A GeoJSON LineString's coordinates ([lon, lat]) as Leaflet [lat, lon] pairs. */
export function lineLatLngs(geometry) {
  if (!geometry || geometry.type !== 'LineString' || !Array.isArray(geometry.coordinates)) return [];
  return geometry.coordinates
    .filter((c) => Array.isArray(c) && Number.isFinite(c[0]) && Number.isFinite(c[1]))
    .map((c) => [c[1], c[0]]);
}

/**
 * The driven track: vertices kept sorted by their time key, one per key, so points that arrive
 * late or twice (a replay after reconnecting) land in the right place exactly once.
 */
export class Track {
  constructor() {
    this.keys = [];
    this.latlngs = [];
  }

  get length() {
    return this.keys.length;
  }

  /** Insert a vertex; false when a vertex with this key is already there. */
  insert(key, latlng) {
    let lo = 0;
    let hi = this.keys.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.keys[mid] < key) lo = mid + 1;
      else hi = mid;
    }
    if (this.keys[lo] === key) return false;
    this.keys.splice(lo, 0, key);
    this.latlngs.splice(lo, 0, latlng);
    return true;
  }

  /** The newest vertex as [lat, lon], or null. */
  last() {
    return this.latlngs.length ? this.latlngs[this.latlngs.length - 1] : null;
  }
}
