// What each tracker app needs to post to this server, from the address the page was opened at
// and a vehicle's ingest token: the settings to type, and where an app takes a configuration
// link (Traccar Client, OwnTracks), that link for its QR code. OsmAnd has no such link: its QR
// code holds the web address to paste.

/** The speed unit a vehicle needs for the tracker it uses (OsmAnd protocol speeds). */
export const TRACKER_SPEED_UNITS = {
  osmand: 'mps', // the OsmAnd app sends Android's m/s
  traccar: 'knots', // Traccar Client's query form sends knots
  owntracks: null, // km/h, fixed by its format
  api: null, // m/s, fixed by Waymark's format
};

export const SPEED_UNITS = {
  knots: 'knots',
  mps: 'm/s',
  kmh: 'km/h',
  mph: 'mph',
};

/** Standard base64 of `text`'s UTF-8 bytes. */
function base64(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(''));
}

/** Up to two letters or digits for OwnTracks' tracker id, from the vehicle's name. */
function trackerId(name) {
  const letters = (name.normalize('NFKD').match(/[A-Za-z0-9]/g) || []).join('');
  return (letters.slice(0, 2) || 'WM').toUpperCase();
}

function slug(name) {
  const s = name.normalize('NFKD').toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
  return s.slice(0, 40) || 'vehicle';
}

/**
 * One entry per way of posting: `{ id, title, steps, text, qr, qrSays, note }`. `text` is what to
 * type (copyable), `qr` what the QR code encodes (null: none), `qrSays` what scanning it does.
 */
export function trackerSetups(origin, token, vehicle) {
  const osmandUrl = `${origin}/api/v1/osmand`;
  const setups = [];

  // OsmAnd fills the placeholders with java.text.MessageFormat; the token (URL-safe base64) has
  // no quote or brace that it would read. {2} is epoch milliseconds, {3} the accuracy in metres.
  const osmand = `${osmandUrl}?deviceid=${token}&lat={0}&lon={1}&timestamp={2}&accuracy={3}&altitude={4}&speed={5}&bearing={6}`;
  setups.push({
    id: 'osmand',
    title: 'OsmAnd',
    steps: 'Android: turn on the Trip recording plugin, then in its settings under Online tracking paste this as the Web address and turn online tracking on.',
    text: osmand,
    qr: osmand,
    qrSays: 'OsmAnd takes no configuration link: scan this with the phone’s camera to copy the address, then paste it.',
    note: vehicle.speed_unit === 'mps' ? '' : `This vehicle reads OsmAnd-protocol speeds as ${SPEED_UNITS[vehicle.speed_unit] || vehicle.speed_unit}, but the OsmAnd app sends m/s: set its speed unit to m/s.`,
  });

  const traccarLink = `org.traccar.client://config?url=${encodeURIComponent(osmandUrl)}&id=${encodeURIComponent(token)}`;
  setups.push({
    id: 'traccar',
    title: 'Traccar Client',
    steps: 'Scan the code from the app’s settings (its QR scanner), or open the link on the phone and confirm. Or type the two settings.',
    text: `Server URL: ${osmandUrl}\nDevice identifier: ${token}\nConfiguration link: ${traccarLink}`,
    qr: traccarLink,
    qrSays: 'Sets the server URL and the device identifier.',
    note: vehicle.speed_unit === 'knots' ? '' : `This vehicle reads OsmAnd-protocol speeds as ${SPEED_UNITS[vehicle.speed_unit] || vehicle.speed_unit}; the older Traccar Client for Android sends knots (the current app sends m/s in its own format, read whatever the unit).`,
  });

  const owntracksUrl = `${origin}/api/v1/owntracks`;
  const config = {
    _type: 'configuration',
    mode: 3, // HTTP
    url: owntracksUrl,
    auth: true,
    usePassword: true,
    username: 'waymark',
    password: token,
    deviceId: slug(vehicle.name),
    tid: trackerId(vehicle.name),
  };
  // Android URL-decodes the value before reading the base64, so `+`, `/` and `=` are escaped.
  const owntracksLink = `owntracks:///config?inline=${encodeURIComponent(base64(JSON.stringify(config)))}`;
  setups.push({
    id: 'owntracks',
    title: 'OwnTracks',
    steps: 'Scan the code with the phone’s camera, or open the link on the phone. Newer versions take it only with Allow external configuration turned on in the app. Or type: Mode HTTP, the URL, and the token as the password (any user name).',
    text: `Mode: HTTP\nURL: ${owntracksUrl}\nAuthentication: on\nUsername: waymark (any)\nPassword: ${token}\nConfiguration link: ${owntracksLink}`,
    qr: owntracksLink,
    qrSays: 'Sets HTTP mode, the URL, and the token as the password.',
    note: '',
  });

  setups.push({
    id: 'api',
    title: 'Waymark’s API',
    steps: 'Any client of your own: POST JSON positions (one, or an array of up to 1000) with the token as a bearer token.',
    text: `curl ${origin}/api/v1/positions -H 'Authorization: Bearer ${token}' -H 'Content-Type: application/json' -d '{"lat": 48.1374, "lon": 11.5755, "speed": 8.3}'`,
    qr: null,
    qrSays: '',
    note: '',
  });
  return setups;
}
