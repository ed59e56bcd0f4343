// @ts-check
// The driver app's service worker: keeps the app shell, so the app opens (and a
// reload mid-trip works) while the region that served it is away; the app then
// talks to the region that took over. API calls and the socket are never cached.
/// <reference lib="webworker" />

const sw = /** @type {ServiceWorkerGlobalScope} */ (/** @type {unknown} */ (self));
const cacheName = "understudy-driver-v1";
const shell = ["./", "./app.js", "./manifest.webmanifest", "./icon.svg", "/shared/core.js", "/shared/style.css"];

sw.addEventListener("install", (e) => {
  e.waitUntil(caches.open(cacheName).then((c) => c.addAll(shell)).then(() => sw.skipWaiting()));
});

sw.addEventListener("activate", (e) => {
  e.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== cacheName).map((k) => caches.delete(k))))
      .then(() => sw.clients.claim()),
  );
});

// The shell: from the network when it answers (so updates arrive), else the copy.
sw.addEventListener("fetch", (e) => {
  const url = new URL(e.request.url);
  if (e.request.method !== "GET" || url.origin !== location.origin || url.pathname.startsWith("/v1/")) return;
  e.respondWith(
    fetch(e.request)
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(cacheName).then((c) => c.put(e.request, copy));
        }
        return resp;
      })
      .catch(async () => (await caches.match(e.request, { ignoreSearch: true })) ||
        (await caches.match("./")) || Response.error()),
  );
});
