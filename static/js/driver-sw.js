// The driver page's service worker, served as /driver-sw.js with scope /driver: it lets the page
// open with no signal at all (in a tunnel, after the browser was closed). Pages and scripts come
// from the network when it answers, and from the last copy when it does not. The API is never
// cached: positions wait in the page's IndexedDB queue instead.

const CACHE = 'waymark-driver-v3';
const SHELL = [
  '/static/css/app.css',
  '/static/img/waymark.svg',
  '/static/js/alerts.js',
  '/static/js/api.js',
  '/static/js/chat.js',
  '/static/js/driver.js',
  '/static/js/format.js',
  '/static/js/live.js',
  '/static/js/queue.js',
  '/static/js/sound.js',
];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith('/api/')) return;
  event.respondWith(
    fetch(request)
      .then((response) => {
        // Keep the signed-in page and the assets; never a redirect to the sign-in page.
        if (response.ok && !response.redirected) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(request, copy));
        }
        return response;
      })
      .catch(() => caches.match(request).then((hit) => hit || Response.error())),
  );
});
