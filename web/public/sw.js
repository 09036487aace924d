// The app shell's service worker: an installed app (or a reload in a tunnel with no signal)
// opens from cache, then shows that it is offline, instead of the browser's error page.
//
// Only the shell: the page (`/`), the hashed assets it loads, the manifest and the icon. The
// API and Socket.IO are never cached — live data comes from the server or not at all.
// Pages are network-first (a new deploy is picked up at once); hashed assets cache-first
// (their names change when their content does). Each new shell replaces the old assets.

const CACHE = "maestro-shell-v1";
const SHELL = ["/", "/manifest.webmanifest", "/icon.svg", "/icon-192.png"];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

/** Keeps only the assets the current page references. */
async function prune(cache, html) {
  const wanted = new Set([...html.matchAll(/\/assets\/[^"']+/g)].map((m) => m[0]));
  for (const req of await cache.keys()) {
    const path = new URL(req.url).pathname;
    if (path.startsWith("/assets/") && !wanted.has(path)) await cache.delete(req);
  }
}

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET") return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname.startsWith("/socket.io")) return;

  if (req.mode === "navigate") {
    event.respondWith(
      fetch(req)
        .then(async (res) => {
          if (res.ok && (res.headers.get("content-type") ?? "").startsWith("text/html")) {
            const cache = await caches.open(CACHE);
            await cache.put("/", res.clone());
            await prune(cache, await res.clone().text());
          }
          return res;
        })
        .catch(async () => (await caches.match("/")) ?? Response.error()),
    );
    return;
  }

  if (url.pathname.startsWith("/assets/") || SHELL.includes(url.pathname)) {
    event.respondWith(
      caches.match(req).then(
        (hit) =>
          hit ??
          fetch(req).then(async (res) => {
            if (res.ok) await (await caches.open(CACHE)).put(req, res.clone());
            return res;
          }),
      ),
    );
  }
});

// Web Push (src/push.ts): the server's encrypted notification, decrypted by the browser, is
// `{title, body, sessionId, projectId, kind, url, tag, count, approvalId?, actions?}`. Shown at
// once (a push must show something). `tag` is one per session (or machine): a later
// notification of the same session replaces the earlier one, and the server folds a burst into
// one that says how many things happened (`count`).
self.addEventListener("push", (event) => {
  let p = {};
  try {
    p = event.data ? event.data.json() : {};
  } catch {
    p = { body: event.data ? event.data.text() : "" };
  }
  const tag = p.tag || p.sessionId || "maestro";
  // Allow / Deny on an approval, for a device that may decide: each button's single-use
  // token stays in the notification's data, the button shows only its title. Platforms
  // without actions (iOS) show none, and a tap opens the approval card.
  const actions = Array.isArray(p.actions) ? p.actions : [];
  const tokens = Object.fromEntries(actions.map((a) => [a.action, a.token]));
  const options = {
    body: p.body || "",
    tag,
    // Urgent kinds alert again even when they replace a notification of the same session.
    renotify: p.kind === "needs_input" || p.kind === "approval",
    icon: "/icon-192.png",
    data: { url: p.url || "/", sessionId: p.sessionId },
  };
  if (actions.length > 0) {
    options.actions = actions.map((a) => ({ action: a.action, title: a.title }));
    options.data.tokens = tokens;
    options.data.approvalId = p.approvalId;
  }
  event.waitUntil(self.registration.showNotification(p.title || "Maestro", options));
});

/** Posts an action's token (the device's cookie goes with it); what happened, in words. */
async function act(token) {
  let res;
  try {
    res = await fetch("/api/push/actions", {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    return { ok: false, text: "Maestro could not be reached. Open the app to decide." };
  }
  const body = await res.json().catch(() => ({}));
  if (res.ok) return { ok: true, text: body.status === "denied" ? "Denied." : "Allowed." };
  if (body.code === "APPROVAL_DECIDED") {
    const a = body.details || {};
    const how = a.status === "cancelled" ? "was withdrawn" : `was ${a.status} by ${a.decidedBy || "someone"}`;
    return { ok: false, text: `Already decided: it ${how}.` };
  }
  return { ok: false, text: body.message || `Refused (${res.status}). Open the app to decide.` };
}

// A tap on a notification opens its `url` in the app, reusing an open window: a session's
// reply box for a question, Needs you (`/#/`) for a tool approval. A tap on Allow or Deny
// decides without opening anything: the worker posts the button's token, then replaces the
// notification with a short one saying what happened (or who decided first).
self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const data = event.notification.data || {};
  const token = event.action && data.tokens ? data.tokens[event.action] : undefined;
  if (token) {
    event.waitUntil(
      act(token).then((r) =>
        self.registration.showNotification(r.ok ? r.text : "Not decided", {
          body: r.ok ? "" : r.text,
          tag: event.notification.tag,
          icon: "/icon-192.png",
          data: { url: data.url || "/" },
        }),
      ),
    );
    return;
  }
  const url = data.url ?? "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      const open = windows[0];
      if (open) return open.navigate(url).then((w) => (w ?? open).focus());
      return self.clients.openWindow(url);
    }),
  );
});
