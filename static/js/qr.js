// QR codes drawn in the page: the vendored qrcode-generator computes the modules, and this
// draws them as one SVG path (no HTML strings, no style attributes).

import qrcode from '/static/vendor/qrcode-generator/qrcode.mjs';

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

/** The server's SVG (a device link's `qr_svg`), parsed as a document rather than assigned as HTML. */
export function parsedSvg(source, label) {
  const svg = new DOMParser().parseFromString(source, 'image/svg+xml').documentElement;
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  return document.importNode(svg, true);
}
