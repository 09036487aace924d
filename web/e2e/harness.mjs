// Shared by the end-to-end tests: the real `maestro` binary on port 0 with a fresh DATA_DIR
// (as tests/js/helpers.mjs starts it), Debian's Chromium driven by playwright-core at a phone
// viewport, and axe-core injected into pages.
//
// The binary is `$MAESTRO_BIN` (set by `cargo xtask test`), else the debug build under
// `$CARGO_TARGET_DIR` or `target/`. The browser is `$CHROMIUM` or /usr/bin/chromium.

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const WAIT_MS = 10_000;
const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
export const resultsDir = resolve(here, "..", "test-results");
const require = createRequire(import.meta.url);

function binary() {
  if (process.env.MAESTRO_BIN) return process.env.MAESTRO_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  const bin = join(target, "debug", "maestro");
  if (!existsSync(bin)) throw new Error(`no maestro binary at ${bin}: run \`cargo build -p maestro\` or set MAESTRO_BIN`);
  return bin;
}

/** Starts `maestro serve`; resolves to {url, call, ok, cli, stop}. */
export async function startServer(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "maestro-web-"));
  const dataDir = join(dir, "data");
  const baseEnv = {
    ...process.env,
    DATA_DIR: dataDir,
    SESSION_DIR: join(dir, "sessions"),
    SKILLS_DIR: join(dir, "skills"),
    LOG_LEVEL: "warn",
  };
  const child = spawn(binary(), ["serve"], {
    env: { ...baseEnv, PORT: "0", HOST: "127.0.0.1", ...env },
    stdio: ["ignore", "inherit", "inherit"],
  });
  let exited = null;
  child.on("exit", (code, signal) => (exited = { code, signal }));
  const urlFile = join(dataDir, "server-url");
  const deadline = Date.now() + WAIT_MS;
  while (!existsSync(urlFile)) {
    if (exited) throw new Error(`maestro exited during start-up: ${JSON.stringify(exited)}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`maestro did not write ${urlFile}`);
    }
    await sleep(20);
  }
  const url = readFileSync(urlFile, "utf8").trim().replace("//localhost:", "//127.0.0.1:");
  const server = {
    url,
    dataDir,
    /** The `maestro` binary, and the environment that points a CLI at this server. */
    binary: binary(),
    env: { ...baseEnv, MAESTRO_SERVER_URL: url, MAESTRO_API_URL: url },
    async call(method, path, body, headers = {}) {
      const res = await fetch(url + path, {
        method,
        headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON
      }
      return { status: res.status, body: parsed };
    },
    async ok(method, path, body, headers) {
      const { status, body: answer } = await server.call(method, path, body, headers);
      if (status < 200 || status > 299) throw new Error(`${method} ${path} -> ${status}: ${JSON.stringify(answer)}`);
      return answer;
    },
    /** Runs the `maestro` CLI against this server; resolves to {code, stdout, stderr}. */
    cli(args, extraEnv = {}) {
      return new Promise((resolvePromise) => {
        const p = spawn(binary(), args, {
          env: { ...baseEnv, MAESTRO_SERVER_URL: url, MAESTRO_API_URL: url, ...extraEnv },
          stdio: ["ignore", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        p.stdout.on("data", (d) => (stdout += d));
        p.stderr.on("data", (d) => (stderr += d));
        p.on("exit", (code) => resolvePromise({ code, stdout, stderr }));
      });
    },
    async stop() {
      if (!exited) {
        child.kill("SIGTERM");
        const until = Date.now() + WAIT_MS;
        while (!exited && Date.now() < until) await sleep(20);
        if (!exited) child.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return server;
}

export async function launch() {
  const executablePath = process.env.CHROMIUM ?? "/usr/bin/chromium";
  if (!existsSync(executablePath)) {
    throw new Error(`no Chromium at ${executablePath}: install Debian's chromium package (cargo xtask test does)`);
  }
  return chromium.launch({ executablePath, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
}

/** A phone-sized context (390×844, touch). `bypassCSP` lets axe-core be injected. */
export function phone(browser, options = {}) {
  return browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    bypassCSP: true,
    ...options,
  });
}

/** Serious and critical axe-core violations on the page, as readable strings. */
export async function axe(page) {
  await page.addScriptTag({ path: require.resolve("axe-core/axe.min.js") });
  const result = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const r = await axe.run(document, { resultTypes: ["violations"] });
    return r.violations.map((v) => ({
      id: v.id,
      impact: v.impact,
      help: v.help,
      nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5),
    }));
  });
  return result.filter((v) => v.impact === "serious" || v.impact === "critical");
}

/** Saves a full-page screenshot as web/test-results/<name>.png. */
export async function shot(page, name) {
  mkdirSync(resultsDir, { recursive: true });
  await page.screenshot({ path: join(resultsDir, `${name}.png`), fullPage: false });
}

/** Waits until the app says it is live. */
export async function live(page) {
  await page.locator('.conn[data-state="live"]').waitFor({ timeout: WAIT_MS });
}
