// Pairing a phone that reaches the server the way tunnel traffic does (a proxy header, so no
// local trust): the pairing link pairs it once, a second browser with the same link is
// refused, scopes hide what the device may not do, and a revoked device is shown signed out.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { WAIT_MS, axe, launch, live, phone, shot, startServer } from "./harness.mjs";

let server;
let browser;

before(async () => {
  server = await startServer();
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

/** A browser context whose requests look like they came through the tunnel. */
function remote() {
  return phone(browser, { extraHTTPHeaders: { "X-Forwarded-For": "203.0.113.9" } });
}

test("a pairing link pairs one phone, is refused to a second, and revocation signs it out", async () => {
  const project = await server.ok("POST", "/api/projects", { name: "paired" });
  const task = await server.ok("POST", "/api/tasks", { projectId: project.id, title: "Visible when paired" });
  const pairing = await server.ok("POST", "/api/auth/pairings", { scope: "respond" });
  const link = `${server.url}/pair#c=${pairing.code}`;

  // Before pairing, the remote browser is not trusted.
  const stranger = await remote();
  const refused = await stranger.request.get(`${server.url}/api/projects`);
  assert.equal(refused.status(), 401);
  await stranger.close();

  const context = await remote();
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await page.goto(link);
  await page.getByRole("heading", { name: "Pair this phone" }).waitFor();
  // The code leaves the address bar at once.
  assert.ok(!page.url().includes(pairing.code), page.url());
  assert.deepEqual(await axe(page), []);
  await page.locator("#device-name").fill("Test phone");
  await page.getByRole("button", { name: "Pair" }).click();
  await live(page);
  const cookies = await context.cookies();
  const device = cookies.find((c) => c.name === "maestro_device");
  assert.ok(device?.httpOnly, JSON.stringify(cookies.map((c) => c.name)));

  // Paired with `respond`: it sees the board but not the operate-only actions.
  await page.evaluate((id) => (location.hash = `#/board/${id}`), project.id);
  await page.locator(".task-card", { hasText: "Visible when paired" }).waitFor({ timeout: WAIT_MS });
  assert.equal(await page.getByRole("link", { name: "New task" }).count(), 0);
  // A cookie-authenticated write (REST, with the CSRF header): a directive to a session.
  const session = await server.ok("POST", "/api/sessions", {
    projectId: project.id,
    taskIds: [task.id],
    name: "Remote agent",
    status: "working",
  });
  await page.evaluate((id) => (location.hash = `#/s/${id}`), session.id);
  await page.locator("#directive").fill("Use the staging database");
  await page.getByRole("button", { name: "Send directive" }).click();
  await page.getByRole("status").filter({ hasText: "Directive sent." }).waitFor({ timeout: WAIT_MS });
  const inbox = await server.ok("GET", `/api/mail/inbox/${session.id}?projectId=${project.id}`);
  assert.ok(JSON.stringify(inbox).includes("Use the staging database"), JSON.stringify(inbox));
  assert.equal(await page.getByRole("button", { name: "Stop…" }).count(), 0, "stop needs operate");
  await page.evaluate(() => (location.hash = "#/settings"));
  await page.locator('[data-testid="scope"]', { hasText: "respond" }).waitFor();
  await page.locator(".facts", { hasText: "Test phone" }).waitFor();

  // The same link in a second browser: refused, with how to get a new one.
  const second = await remote();
  const other = await second.newPage();
  await other.goto(link);
  await other.getByRole("button", { name: "Pair" }).click();
  await other.getByRole("alert").filter({ hasText: "maestro pair" }).waitFor({ timeout: WAIT_MS });
  await shot(other, "pair-refused-light");
  await second.close();

  // Revoked from the computer: the open app notices (its socket is closed and refused).
  const devices = await server.ok("GET", "/api/auth/devices");
  const mine = devices.find((d) => d.name === "Test phone");
  assert.ok(mine, JSON.stringify(devices));
  await server.ok("DELETE", `/api/auth/devices/${mine.id}`);
  await page.getByRole("heading", { name: "Signed out" }).waitFor({ timeout: WAIT_MS });
  assert.ok((await page.locator("main").textContent()).includes("maestro pair"));
  assert.deepEqual(await axe(page), []);
  await shot(page, "signed-out-light");
  assert.deepEqual(errors, []);
  await context.close();
});

test("signing out from settings revokes the device", async () => {
  const pairing = await server.ok("POST", "/api/auth/pairings", { scope: "operate" });
  const context = await remote();
  const page = await context.newPage();
  await page.goto(`${server.url}/pair#c=${pairing.code}`);
  await page.locator("#device-name").fill("Leaving phone");
  await page.getByRole("button", { name: "Pair" }).click();
  await live(page);
  await page.evaluate(() => (location.hash = "#/settings"));
  await page.locator('[data-testid="scope"]', { hasText: "operate" }).waitFor();
  await shot(page, "settings-paired-light");
  await page.getByRole("button", { name: "Sign out this device" }).click();
  await page.getByRole("heading", { name: "Signed out" }).waitFor({ timeout: WAIT_MS });
  const devices = await server.ok("GET", "/api/auth/devices");
  assert.equal(devices.filter((d) => d.name === "Leaving phone").length, 0, JSON.stringify(devices));
  // A reload stays signed out: the cookie is gone.
  await page.goto(server.url + "/");
  await page.getByRole("heading", { name: "Signed out" }).waitFor({ timeout: WAIT_MS });
  await context.close();
});
