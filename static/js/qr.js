// QR codes in the page: drawn here (the vendored qrcode-generator computes the modules, and
// this draws them as one SVG path: no HTML strings, no style attributes), or the server's, as
// for a driver's one-time phone link.

import qrcode from '/static/vendor/qrcode-generator/qrcode.mjs';
import { api } from './api.js';
import { formatClock } from './format.js';

const SVG = 'http://www.w3.org/2000/svg';
const QUIET = 4; // modules of white border the standard asks for

/** `text` as a string of UTF-8 bytes, one character per byte, as the library's Byte mode reads it. */
function utf8Bytes(text) {
  return Array.from(new TextEncoder().encode(text), (b) => String.fromCharCode(b)).join('');
}

/**
 * An `<svg>` element showing `text` as a QR code (error correction level M, the smallest
 * version that holds it). `label` is read out by screen readers; `data-qr` holds the text.
 */
export function qrSvg(text, label) {
  const qr = qrcode(0, 'M');
  qr.addData(utf8Bytes(text), 'Byte');
  qr.make();
  const n = qr.getModuleCount();
  const size = n + 2 * QUIET;
  let d = '';
  for (let r = 0; r < n; r += 1) {
    for (let c = 0; c < n; c += 1) {
      if (qr.isDark(r, c)) d += `M${c + QUIET} ${r + QUIET}h1v1h-1z`;
    }
  }
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${size} ${size}`);
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.dataset.qr = text;
  const bg = document.createElementNS(SVG, 'rect');
  bg.setAttribute('width', String(size));
  bg.setAttribute('height', String(size));
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#000');
  svg.append(bg, path);
  return svg;
}

/**
 * Make a one-time link that signs the driver `userId`'s phone in, and show it in the page's
 * `#phone-link-qr`, `#phone-link-url` and `#phone-link-expires` (`label` names the QR code for
 * screen readers). Rejects as `api()` does.
 */
export async function showPhoneLink(userId, label) {
  const reply = await api(`/users/${userId}/device-link`, { method: 'POST' });
  document.getElementById('phone-link-qr').replaceChildren(parsedSvg(reply.qr_svg, label));
  document.getElementById('phone-link-url').value = reply.url;
  document.getElementById('phone-link-expires').textContent = `Works once, until ${formatClock(reply.expires_at, { seconds: false })}.`;
}

/** The server's SVG (a device link's `qr_svg`), parsed as a document rather than assigned as HTML. */
export function parsedSvg(source, label) {
  const svg = new DOMParser().parseFromString(source, 'image/svg+xml').documentElement;
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  return document.importNode(svg, true);
}
