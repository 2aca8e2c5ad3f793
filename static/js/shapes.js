// Reading and writing shapes as people and files give them: GPX and GeoJSON routes, typed
// coordinate lists ("lat, lon" a line), and GeoJSON polygons. Positions are [lat, lon] pairs
// (Leaflet's order) unless the name says GeoJSON; GeoJSON itself is [lon, lat].

/** Raised for input that holds no usable shape; the message says what was expected. */
export class ShapeError extends Error {}

const DIGITS = 6; // about 0.1 m: what a drawn vertex means

function round(x) {
  return Number(x.toFixed(DIGITS));
}

function validPair(lat, lon) {
  return Number.isFinite(lat) && Number.isFinite(lon) && Math.abs(lat) <= 90 && Math.abs(lon) <= 180;
}

/** "48.137154, 11.576124" lines for [lat, lon] pairs. */
export function formatLines(latlngs) {
  return latlngs.map(([lat, lon]) => `${round(lat)}, ${round(lon)}`).join('\n');
}

/** Every line of `text` with numbers, as arrays of numbers ("48.1, 11.5" or "48.1 11.5"). */
function numberLines(text) {
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line, i) => {
      const nums = line.split(/[\s,;]+/).filter(Boolean).map(Number);
      if (nums.length < 2 || nums.some((n) => !Number.isFinite(n))) {
        throw new ShapeError(`line ${i + 1} is not "lat, lon": ${line}`);
      }
      return nums;
    });
}

/** Every LineString in a GeoJSON value (geometry, Feature, FeatureCollection), in order. */
function geojsonLines(value, out = []) {
  if (!value || typeof value !== 'object') return out;
  switch (value.type) {
    case 'LineString':
      out.push(value.coordinates);
      break;
    case 'MultiLineString':
      out.push(...value.coordinates);
      break;
    case 'Feature':
      geojsonLines(value.geometry, out);
      break;
    case 'FeatureCollection':
      for (const f of value.features || []) geojsonLines(f, out);
      break;
    case 'GeometryCollection':
      for (const g of value.geometries || []) geojsonLines(g, out);
      break;
    default:
  }
  return out;
}

function fromGeojsonPositions(coords) {
  if (!Array.isArray(coords)) return [];
  return coords
    .filter((c) => Array.isArray(c) && validPair(c[1], c[0]))
    .map((c) => [c[1], c[0]]);
}

/** A route from GeoJSON text or value: its lines joined in order, as [lat, lon] pairs. */
export function routeFromGeojson(value) {
  const lines = geojsonLines(value);
  const latlngs = lines.flatMap(fromGeojsonPositions);
  if (latlngs.length < 2) throw new ShapeError('no LineString or MultiLineString with two positions or more');
  return latlngs;
}

/** A route from GPX text: its track points (trk), or else its route points (rte). */
export function routeFromGpx(text) {
  const doc = new DOMParser().parseFromString(text, 'application/xml');
  if (doc.getElementsByTagName('parsererror').length) throw new ShapeError('the file is not valid GPX (XML)');
  for (const tag of ['trkpt', 'rtept']) {
    const points = [...doc.getElementsByTagName(tag)]
      .map((p) => [Number(p.getAttribute('lat')), Number(p.getAttribute('lon'))])
      .filter(([lat, lon]) => validPair(lat, lon));
    if (points.length >= 2) return points;
  }
  throw new ShapeError('the GPX file has no track (trk) or route (rte) of two points or more');
}

/** A route from a file's text, GPX or GeoJSON, told apart by its content. */
export function routeFromFile(text) {
  const start = text.trimStart();
  if (start.startsWith('<')) return routeFromGpx(text);
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    throw new ShapeError('the file is neither GPX nor GeoJSON');
  }
  return routeFromGeojson(value);
}

/** A route typed as "lat, lon" lines, or pasted as GeoJSON. */
export function routeFromText(text) {
  const start = text.trim();
  if (!start) return [];
  if (start.startsWith('{')) return routeFromFile(start);
  const latlngs = numberLines(start).map(([lat, lon]) => [lat, lon]);
  const bad = latlngs.findIndex(([lat, lon]) => !validPair(lat, lon));
  if (bad >= 0) throw new ShapeError(`line ${bad + 1}: latitude must be -90..90 and longitude -180..180`);
  return latlngs;
}

/**
 * A geofence's shape typed or pasted: one line "lat, lon, radius in metres" is a circle;
 * three or more "lat, lon" lines are a polygon's outline (closed for you); a GeoJSON Polygon
 * (or a Feature of one) is taken as it is. Returns { circle: {lat, lon, radius_m} } or
 * { rings: [[[lat, lon], ...]] } (rings closed).
 */
export function geofenceFromText(text) {
  const start = text.trim();
  if (!start) throw new ShapeError('give a shape: "lat, lon" lines, "lat, lon, radius" or GeoJSON');
  if (start.startsWith('{')) {
    let value;
    try {
      value = JSON.parse(start);
    } catch {
      throw new ShapeError('this is not valid JSON');
    }
    const geometry = value.type === 'Feature' ? value.geometry : value;
    if (!geometry || geometry.type !== 'Polygon' || !Array.isArray(geometry.coordinates)) {
      throw new ShapeError('GeoJSON must be a Polygon (or a Feature of one)');
    }
    return { rings: geometry.coordinates.map((ring) => fromGeojsonPositions(ring)) };
  }
  const lines = numberLines(start);
  if (lines.length === 1 && lines[0].length === 3) {
    const [lat, lon, radius] = lines[0];
    if (!validPair(lat, lon)) throw new ShapeError('latitude must be -90..90 and longitude -180..180');
    return { circle: { lat, lon, radius_m: radius } };
  }
  if (lines.length < 3) throw new ShapeError('a polygon needs three "lat, lon" lines or more');
  const ring = lines.map(([lat, lon]) => [lat, lon]);
  const bad = ring.findIndex(([lat, lon]) => !validPair(lat, lon));
  if (bad >= 0) throw new ShapeError(`line ${bad + 1}: latitude must be -90..90 and longitude -180..180`);
  return { rings: [closeRing(ring)] };
}

/** The ring with its first position repeated at the end, unless it already is. */
export function closeRing(ring) {
  if (ring.length === 0) return ring;
  const [a, b] = [ring[0], ring[ring.length - 1]];
  return a[0] === b[0] && a[1] === b[1] ? ring : [...ring, a];
}

/** The text form of a geofence shape (as geofenceFromText reads it). */
export function geofenceText(shape) {
  if (shape.circle) {
    const c = shape.circle;
    return `${round(c.lat)}, ${round(c.lon)}, ${Math.round(c.radius_m * 10) / 10}`;
  }
  if (shape.rings.length === 1) {
    const ring = shape.rings[0];
    // The closing position is implied in the typed form.
    return formatLines(ring.length > 1 ? ring.slice(0, -1) : ring);
  }
  return JSON.stringify(polygonGeojson(shape.rings));
}

/** A GeoJSON Polygon from rings of [lat, lon] (each closed here). */
export function polygonGeojson(rings) {
  return {
    type: 'Polygon',
    coordinates: rings.map((ring) => closeRing(ring).map(([lat, lon]) => [round(lon), round(lat)])),
  };
}

/** A GeoJSON LineString from [lat, lon] pairs. */
export function lineGeojson(latlngs) {
  return { type: 'LineString', coordinates: latlngs.map(([lat, lon]) => [round(lon), round(lat)]) };
}

/** Leaflet LatLngs (possibly nested, as a polygon's) as [lat, lon] arrays. */
export function plainLatLngs(value) {
  if (Array.isArray(value)) return value.map(plainLatLngs);
  return [value.lat, value.lng];
}

/** A local date-time input's value ("2026-12-03T14:30") as RFC 3339 with this browser's offset. */
export function localToRfc3339(value) {
  if (!value) return null;
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return null;
  const pad = (n) => String(Math.floor(Math.abs(n))).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const sign = offset >= 0 ? '+' : '-';
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}` +
    `T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}` +
    `${sign}${pad(offset / 60)}:${pad(offset % 60)}`
  );
}
