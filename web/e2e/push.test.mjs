// Web Push from the phone's side: Settings subscribes with the server's VAPID key and stores the
// subscription (a paired device, cookie + CSRF header, scope `read`); a session that needs
// input then makes the server POST an encrypted push to a push endpoint of this test's own,
// which decrypts it here with node:crypto (RFC 8291 written out independently of the server's
// Rust crate); and the service worker shows a pushed notification.
//
// Headless Chromium cannot reach a real push service: `pushManager.subscribe()` fails with
// "AbortError: Registration failed - permission denied" even with the notifications permission
// granted. So the page's PushManager is replaced (before the app loads) by one that returns a
// PushSubscription-like object whose endpoint is our local endpoint and whose keys this test
// made; everything else — the Settings control, the key fetch, the POST with its CSRF header,
// the server's encryption and VAPID signature — is the real thing. The service worker's push
// handler gets a real push event through DevTools (`ServiceWorker.deliverPushMessage`). A click
// on a notification cannot be made there, so `notificationclick` is dispatched into the worker
// (`serviceWorker.evaluate`) with the notification the worker showed and the tapped button.

import assert from "node:assert/strict";
import { createECDH, createDecipheriv, hkdfSync, randomBytes } from "node:crypto";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;
let endpoint;

/** A push service of our own on 127.0.0.1: every request it receives, in order. */
function startEndpoint() {
  const received = [];
  const waiters = [];
  const http = createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      received.push({ path: req.url, headers: req.headers, body: Buffer.concat(chunks) });
      res.writeHead(201).end();
      for (const w of waiters.splice(0)) w();
    });
  });
  return new Promise((resolve) =>
    http.listen(0, "127.0.0.1", () => {
      const { port } = http.address();
      resolve({
        origin: `http://127.0.0.1:${port}`,
        received,
        /** Resolves to the n-th request (1-based) once it has arrived. */
        async nth(n) {
          const deadline = Date.now() + WAIT_MS;
          while (received.length < n) {
            if (Date.now() > deadline) throw new Error(`push ${n} did not arrive`);
            await new Promise((r) => {
              waiters.push(r);
              setTimeout(r, 200);
            });
          }
          return received[n - 1];
        },
        close: () => new Promise((r) => http.close(r)),
      });
    }),
  );
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** The page goes to the background as when the phone locks or switches apps. */
async function hide(page) {
  await page.evaluate(() => {
    Object.defineProperty(document, "visibilityState", { value: "hidden", configurable: true });
    Object.defineProperty(document, "hidden", { value: true, configurable: true });
    document.dispatchEvent(new Event("visibilitychange"));
  });
  // The app said so over its socket; the server has it once this device's status says so.
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const status = await page.evaluate(() => fetch("/api/push/settings").then((r) => r.json()));
    if (status.visible === false) return;
    if (Date.now() > deadline) throw new Error(`the server still counts the app as visible: ${JSON.stringify(status)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** RFC 8291 (aes128gcm, one record) with the subscriber's private key and auth secret. */
function decrypt(body, ecdh, auth) {
  const salt = body.subarray(0, 16);
  const idlen = body[20];
  const serverKey = body.subarray(21, 21 + idlen);
  const ciphertext = body.subarray(21 + idlen);
  const shared = ecdh.computeSecret(serverKey);
  const keyInfo = Buffer.concat([Buffer.from("WebPush: info\0"), ecdh.getPublicKey(), serverKey]);
  const ikm = Buffer.from(hkdfSync("sha256", shared, auth, keyInfo, 32));
  const cek = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: aes128gcm\0"), 16));
  const nonce = Buffer.from(hkdfSync("sha256", ikm, salt, Buffer.from("Content-Encoding: nonce\0"), 12));
  const decipher = createDecipheriv("aes-128-gcm", cek, nonce);
  decipher.setAuthTag(ciphertext.subarray(ciphertext.length - 16));
  const padded = Buffer.concat([decipher.update(ciphertext.subarray(0, ciphertext.length - 16)), decipher.final()]);
  // The last record ends with the delimiter 0x02, then zero padding.
  let end = padded.length - 1;
  while (end >= 0 && padded[end] === 0) end--;
  assert.equal(padded[end], 2, "last-record delimiter");
  return JSON.parse(padded.subarray(0, end).toString("utf8"));
}

before(async () => {
  server = await startServer({ PUSH_ALLOW_LOCAL_ENDPOINTS: "true" });
  browser = await launch();
  endpoint = await startEndpoint();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await endpoint?.close();
});

test("Settings subscribes this device; a needs-input is pushed to it, encrypted to its keys", async () => {
  const project = await server.ok("POST", "/api/projects", { name: "pushed" });
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Ask me" });
  const session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [task.id],
    name: "Agent Push",
    status: "working",
  });
  const { publicKey } = await server.ok("GET", "/api/push/vapid-public-key");

  // A phone through the tunnel (no local trust), paired with the weakest scope.
  const { context, page, errors, decrypt: open } = await fakePushPhone("read", "phone");
  const posts = [];
  page.on("request", (r) => {
    if (r.url().endsWith("/api/push/subscriptions")) posts.push({ method: r.method(), headers: r.headers() });
  });
  try {
    await page.evaluate(() => (location.hash = "#/settings"));
    await page.getByRole("button", { name: "Enable notifications" }).click();
    await page.getByRole("button", { name: "Turn off notifications" }).waitFor({ timeout: WAIT_MS });
    await page.locator('[data-testid="notifications"]', { hasText: "even with the app closed" }).waitFor();
    await shot(page, "settings-notifications-on");

    // It subscribed with the server's key and stored the subscription with the CSRF header.
    const keys = await page.evaluate(() => window.__subscribeKeys);
    assert.deepEqual(keys, [Array.from(Buffer.from(publicKey, "base64url"))]);
    assert.equal(posts.length, 1);
    assert.equal(posts[0].method, "POST");
    assert.ok(posts[0].headers["x-maestro-csrf"], "the cookie-authenticated write carries the CSRF header");

    // The app goes to the background (it tells the server so: a visible app gets no push).
    await hide(page);
    // The agent asks; the server pushes to the subscription.
    await server.cli(["session", "needs-input", "--message", "Ship it?"], {
      MAESTRO_SESSION_ID: session.id,
      MAESTRO_PROJECT_ID: project.id,
    });
    const push = await endpoint.nth(1);
    assert.equal(push.path, "/push/phone");
    assert.equal(push.headers["content-encoding"], "aes128gcm");
    assert.equal(push.headers.urgency, "high");
    assert.match(push.headers.authorization, new RegExp(`^vapid t=[\\w-]+\\.[\\w-]+\\.[\\w-]+, k=${publicKey}$`));
    assert.ok(!push.body.includes(Buffer.from("Ship it?")), "the body is not in clear");
    assert.deepEqual(open(push.body), {
      title: "Agent Push needs you",
      body: "Ship it?",
      sessionId: session.id,
      projectId: project.id,
      kind: "needs_input",
      // Opens the session's reply box.
      url: `/#/s/${session.id}?reply`,
      tag: `s:${session.id}`,
      count: 1,
    });

    // Turning it off deletes it on the server: the next notification goes nowhere. (Checked
    // by the server's answer to the same DELETE, which now finds nothing.)
    await page.getByRole("button", { name: "Turn off notifications" }).click();
    await page.getByRole("button", { name: "Enable notifications" }).waitFor({ timeout: WAIT_MS });
    assert.deepEqual(
      posts.map((p) => p.method),
      ["POST", "DELETE"],
    );
    const again = await server.ok("DELETE", "/api/push/subscriptions", { endpoint: `${endpoint.origin}/push/phone` });
    assert.deepEqual(again, { removed: false });
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("the service worker shows a pushed notification, one per session", async () => {
  const context = await phone(browser);
  await context.grantPermissions(["notifications"], { origin: server.url });
  const page = await context.newPage();
  try {
    await page.goto(`${server.url}/#/settings`);
    await live(page);
    await page.evaluate(() => navigator.serviceWorker.ready.then(() => undefined));
    const worker = await recordNotifications(context);
    const deliver = await pushDeliverer(context, page);
    const payload = {
      title: "Agent Q needs you",
      body: "Postgres or SQLite?",
      sessionId: "sess_push1",
      projectId: "proj_1",
      kind: "needs_input",
      url: "/#/s/sess_push1",
    };
    await deliver(payload);
    await deliver({ ...payload, title: "Agent Q failed", body: "The session failed.", kind: "session_failed" });
    await deliver({
      ...payload,
      sessionId: "sess_push2",
      url: "/#/s/sess_push2",
      title: "Agent R completed",
      body: "The session completed.",
      kind: "session_completed",
    });
    const shown = await shownAfter(worker, 3);
    const common = { icon: "/icon-192.png" };
    assert.deepEqual(shown, [
      {
        ...common,
        title: "Agent Q needs you",
        body: "Postgres or SQLite?",
        tag: "sess_push1",
        renotify: true,
        data: { url: "/#/s/sess_push1", sessionId: "sess_push1" },
      },
      // The same session's tag: the browser replaces its notification instead of adding one.
      {
        ...common,
        title: "Agent Q failed",
        body: "The session failed.",
        tag: "sess_push1",
        renotify: false,
        data: { url: "/#/s/sess_push1", sessionId: "sess_push1" },
      },
      {
        ...common,
        title: "Agent R completed",
        body: "The session completed.",
        tag: "sess_push2",
        renotify: false,
        data: { url: "/#/s/sess_push2", sessionId: "sess_push2" },
      },
    ]);
  } finally {
    await context.close();
  }
});

/**
 * A phone paired with `scope` through the tunnel (no local trust), named `name`, live on the
 * app, whose PushManager subscribes to our endpoint at `/push/<name>` with keys this test holds
 * (`window.__subscribeKeys` records the server keys it was given).
 */
async function fakePushPhone(scope, name) {
  const ecdh = createECDH("prime256v1");
  ecdh.generateKeys();
  const auth = randomBytes(16);
  const fake = {
    endpoint: `${endpoint.origin}/push/${name}`,
    keys: { p256dh: b64url(ecdh.getPublicKey()), auth: b64url(auth) },
  };
  const pairing = await server.ok("POST", "/api/auth/pairings", { scope });
  const context = await phone(browser, { extraHTTPHeaders: { "X-Forwarded-For": "203.0.113.9" } });
  await context.grantPermissions(["notifications"], { origin: server.url });
  await context.addInitScript((sub) => {
    let current = null;
    window.__subscribeKeys = [];
    PushManager.prototype.subscribe = async function (options) {
      window.__subscribeKeys.push(Array.from(new Uint8Array(options.applicationServerKey)));
      current = {
        endpoint: sub.endpoint,
        options: { applicationServerKey: new Uint8Array(options.applicationServerKey).buffer },
        toJSON: () => ({ endpoint: sub.endpoint, expirationTime: null, keys: sub.keys }),
        unsubscribe: async () => {
          current = null;
          return true;
        },
      };
      return current;
    };
    PushManager.prototype.getSubscription = async () => current;
  }, fake);
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(`${server.url}/pair#c=${pairing.code}`);
  await page.getByLabel("Name this device").fill(name);
  await page.getByRole("button", { name: "Pair" }).click();
  await live(page);
  return { context, page, errors, decrypt: (body) => decrypt(body, ecdh, auth) };
}

/** [`fakePushPhone`] with notifications turned on in Settings. */
async function subscribedPhone(scope, name) {
  const phoneParts = await fakePushPhone(scope, name);
  const { page } = phoneParts;
  await page.evaluate(() => (location.hash = "#/settings"));
  await page.getByRole("button", { name: "Enable notifications" }).click();
  await page.getByRole("button", { name: "Turn off notifications" }).waitFor({ timeout: WAIT_MS });
  return phoneParts;
}

/**
 * The worker's `showNotification` calls from now on. Headless Chromium has no notification
 * centre (what `getNotifications()` lists comes and goes), so the calls are recorded (and still
 * made).
 */
async function recordNotifications(context) {
  const worker = context.serviceWorkers()[0] ?? (await context.waitForEvent("serviceworker"));
  await worker.evaluate(() => {
    self.__shown = [];
    const show = self.registration.showNotification.bind(self.registration);
    self.registration.showNotification = (title, options) => {
      self.__shown.push({ title, ...options });
      return show(title, options);
    };
  });
  return worker;
}

/** A function that delivers a payload to the page's service worker as a real push event (DevTools). */
async function pushDeliverer(context, page) {
  const cdp = await context.newCDPSession(page);
  const registrations = new Map();
  const seen = new Promise((resolve) =>
    cdp.on("ServiceWorker.workerRegistrationUpdated", (e) => {
      for (const r of e.registrations) if (!r.isDeleted) registrations.set(r.scopeURL, r.registrationId);
      if (registrations.has(`${server.url}/`)) resolve();
    }),
  );
  await cdp.send("ServiceWorker.enable");
  await seen;
  const registrationId = registrations.get(`${server.url}/`);
  return (payload) =>
    cdp.send("ServiceWorker.deliverPushMessage", {
      origin: server.url,
      registrationId,
      data: JSON.stringify(payload),
    });
}

async function shownAfter(worker, n) {
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    const shown = await worker.evaluate(() => self.__shown);
    if (shown.length >= n) return shown;
    if (Date.now() > deadline) throw new Error(`${shown.length} notifications shown, expected ${n}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test("Allow on an approval notification decides it from the service worker, without opening a window", async () => {
  const project = await server.ok("POST", "/api/projects", { name: "acting" });
  const session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [],
    name: "Agent Act",
    status: "working",
  });
  const { context, page, errors, decrypt: open } = await subscribedPhone("respond", "pocket");
  try {
    await hide(page);
    const before = endpoint.received.length;
    // The agent's hook asks, then waits for the answer.
    const approval = await server.ok("POST", `/api/sessions/${session.id}/approvals`, {
      agentTool: "claude-code",
      toolName: "Bash",
      input: { command: "rm -rf build/" },
    });
    const hook = server.ok("GET", `/api/approvals/${approval.id}/wait?timeout=60000`);
    const push = await endpoint.nth(before + 1);
    assert.equal(push.path, "/push/pocket");
    const payload = open(push.body);
    assert.equal(payload.kind, "approval");
    assert.equal(payload.approvalId, approval.id);
    assert.deepEqual(
      payload.actions.map((a) => [a.action, a.title]),
      [
        ["allow", "Allow"],
        ["deny", "Deny"],
      ],
    );

    // The worker shows it with the two buttons (their tokens stay in its data).
    const worker = await recordNotifications(context);
    await (await pushDeliverer(context, page))(payload);
    const [shown] = await shownAfter(worker, 1);
    assert.deepEqual(shown.actions, [
      { action: "allow", title: "Allow" },
      { action: "deny", title: "Deny" },
    ]);
    assert.equal(shown.tag, `s:${session.id}`);
    assert.equal(shown.data.approvalId, approval.id);

    // Tap Allow: the worker posts the token itself; no window is opened or focused.
    const pagesBefore = context.pages().length;
    await worker.evaluate(async (n) => {
      self.__opened = [];
      self.clients.openWindow = async (url) => {
        self.__opened.push(url);
        return null;
      };
      const event = new ExtendableEvent("notificationclick");
      let done = Promise.resolve();
      Object.defineProperty(event, "waitUntil", { value: (p) => (done = p) });
      Object.defineProperty(event, "action", { value: "allow" });
      Object.defineProperty(event, "notification", { value: { data: n.data, tag: n.tag, close() {} } });
      self.dispatchEvent(event);
      await done;
    }, shown);
    const decided = await hook;
    assert.equal(decided.status, "allowed");
    assert.equal(decided.decision, "allow", "the waiting hook gets allow");
    assert.equal(decided.decidedBy, "pocket");
    assert.deepEqual(await worker.evaluate(() => self.__opened), []);
    assert.equal(context.pages().length, pagesBefore);
    const after = await shownAfter(worker, 2);
    assert.equal(after[1].title, "Allowed.");
    assert.equal(after[1].tag, `s:${session.id}`, "it replaces the approval's notification");
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});

test("Settings → Notifications: kinds, quiet hours, last delivery and a test, light and dark", async () => {
  const { context, page, errors } = await subscribedPhone("read", "viewer");
  try {
    const choices = page.getByTestId("notify-choices");
    await choices.waitFor({ timeout: WAIT_MS });
    await page.getByTestId("last-delivery").filter({ hasText: "never" }).waitFor();
    // Turning a kind off and quiet hours on is stored for this device on the server.
    await page.getByRole("checkbox", { name: /^Completed/ }).uncheck();
    await page.getByRole("checkbox", { name: /^Quiet hours/ }).check();
    await page.getByLabel("From").waitFor();
    const stored = async () => (await page.evaluate(() => fetch("/api/push/settings").then((r) => r.json()))).settings;
    const deadline = Date.now() + WAIT_MS;
    let settings = await stored();
    while (!(settings.quietHours && settings.kinds.completed === false)) {
      if (Date.now() > deadline) throw new Error(JSON.stringify(settings));
      await new Promise((r) => setTimeout(r, 50));
      settings = await stored();
    }
    assert.deepEqual(settings.quietHours, { start: 22 * 60, end: 7 * 60, approvalsStillNotify: true });
    assert.equal(settings.utcOffsetMinutes, await page.evaluate(() => -new Date().getTimezoneOffset() || 0));

    // A test notification reaches this device's subscription; the last delivery shows it.
    const before = endpoint.received.length;
    await page.getByRole("button", { name: "Send a test notification" }).click();
    await page.getByTestId("test-result").filter({ hasText: "Sent to 1 browser" }).waitFor({ timeout: WAIT_MS });
    assert.equal((await endpoint.nth(before + 1)).path, "/push/viewer");
    await page.getByTestId("last-delivery").filter({ hasNotText: "never" }).waitFor({ timeout: WAIT_MS });

    await page.getByRole("radio", { name: "Light" }).click();
    await choices.scrollIntoViewIfNeeded();
    await page.locator("#notify-title").evaluate((el) => el.scrollIntoView({ block: "start" }));
    await shot(page, "settings-notification-choices-light");
    await page.getByRole("radio", { name: "Dark" }).click();
    await page.locator("#notify-title").evaluate((el) => el.scrollIntoView({ block: "start" }));
    await shot(page, "settings-notification-choices-dark");
    const violations = await axe(page);
    assert.deepEqual(violations, []);
    assert.deepEqual(errors, []);
  } finally {
    await context.close();
  }
});
