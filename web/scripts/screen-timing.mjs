// How fast a screen is usable on a mid-range phone: the figure behind the web app's "usable
// within 1 s of navigation" goal. A measurement, not a test (this machine is shared and noisy):
// `cargo xtask bench` runs it and docs/performance.md keeps the results.
//
// The phone profile is Lighthouse's mobile one: the CPU slowed 4×, and a network with 150 ms
// round trips, 1.6 Mbit/s down and 750 kbit/s up (DevTools throttling, applied to every
// request of the page, the app's files and its Socket.IO connection alike). For each run:
//   - cold load: a fresh browser context (empty cache, no service worker) opens `/`; the time
//     until Needs you shows its cards and the app says it is live;
//   - navigation: from there, a tap on Board, Fleet, then a session; the time from each tap to
//     that screen's content.
// Prints each figure's median and worst over the runs, and a JSON line for the record.

import { WAIT_MS, launch, live, phone, startServer } from "../e2e/harness.mjs";

const RUNS = Number(process.env.RUNS ?? 5);
const CPU_SLOWDOWN = 4;
const NETWORK = {
  offline: false,
  latency: 150,
  downloadThroughput: (1.6 * 1024 * 1024) / 8,
  uploadThroughput: (750 * 1024) / 8,
};

async function seed(server) {
  const project = await server.ok("POST", "/api/projects", { name: "timing" });
  for (let i = 0; i < 30; i++) {
    await server.ok("POST", "/api/tasks", { projectId: project.id, title: `Task ${i}` });
  }
  const tasks = await server.ok("GET", `/api/tasks?projectId=${project.id}`);
  for (let i = 0; i < 12; i++) {
    const session = await server.ok("POST", "/api/sessions", {
      projectId: project.id,
      taskIds: [tasks[i].id],
      name: `Agent ${i}`,
      status: "working",
    });
    if (i < 4) {
      const hook = await server.cli(["session", "needs-input", "--message", `Question ${i}?`], {
        MAESTRO_SESSION_ID: session.id,
        MAESTRO_PROJECT_ID: project.id,
      });
      if (hook.code !== 0) throw new Error(hook.stderr);
    }
  }
  return project;
}

async function timed(action, until) {
  const start = performance.now();
  await action();
  await until();
  return performance.now() - start;
}

function summary(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return { median: Math.round(sorted[Math.floor(sorted.length / 2)]), worst: Math.round(sorted.at(-1)) };
}

const server = await startServer();
const browser = await launch();
const figures = { coldLoad: [], board: [], fleet: [], session: [] };
try {
  await seed(server);
  for (let run = 0; run < RUNS; run++) {
    const context = await phone(browser, { serviceWorkers: "block" });
    const page = await context.newPage();
    const cdp = await context.newCDPSession(page);
    await cdp.send("Emulation.setCPUThrottlingRate", { rate: CPU_SLOWDOWN });
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", NETWORK);
    figures.coldLoad.push(
      await timed(
        () => page.goto(server.url + "/#/"),
        async () => {
          await page.locator("article.card-ask").first().waitFor({ timeout: WAIT_MS * 3 });
          await live(page);
        },
      ),
    );
    const nav = (name) => page.locator("nav").getByRole("link", { name });
    figures.board.push(
      await timed(() => nav("Board").click(), () => page.locator(".column .task-card").first().waitFor({ timeout: WAIT_MS })),
    );
    figures.fleet.push(
      await timed(() => nav("Fleet").click(), () => page.locator("a.row-link", { hasText: "Agent 11" }).first().waitFor({ timeout: WAIT_MS })),
    );
    figures.session.push(
      await timed(
        () => page.locator('a.row-link', { hasText: "Agent 11" }).first().click(),
        () => page.locator("h1.screen-title", { hasText: "Agent 11" }).waitFor({ timeout: WAIT_MS }),
      ),
    );
    await context.close();
  }
} finally {
  await browser.close();
  await server.stop();
}

const result = Object.fromEntries(Object.entries(figures).map(([k, v]) => [k, summary(v)]));
console.log(`screen timing on a mid-range phone profile (CPU ${CPU_SLOWDOWN}x slower, 150 ms RTT, 1.6/0.75 Mbit/s), ${RUNS} runs:`);
for (const [name, { median, worst }] of Object.entries(result)) {
  console.log(`  ${name.padEnd(9)} median ${String(median).padStart(5)} ms   worst ${String(worst).padStart(5)} ms`);
}
console.log(JSON.stringify({ runs: RUNS, cpuSlowdown: CPU_SLOWDOWN, network: NETWORK, ms: result }));
