// The service worker (the server puts VERSION and SHELL in front of this): the application
// shell is cached at install and served from the cache when the network fails (online, the
// network answers); nothing else is ever cached, so no signed-in data stays on the device.
self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(VERSION).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});
self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('infernet-') && k !== VERSION).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});
self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  const path = url.pathname + url.search;
  if (!SHELL.includes(path)) return; // data, sessions: straight to the network, never stored
  event.respondWith(
    fetch(request).catch(() => caches.match(path, { cacheName: VERSION }).then((hit) => hit || Response.error())),
  );
});
