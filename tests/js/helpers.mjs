// Shared by the interop tests: start the real `maestro` binary, call its REST API, and follow
// Socket.IO connections made with the official `socket.io-client`.
//
// The binary is `$MAESTRO_BIN` (set by `cargo xtask test`), else the debug build under
// `$CARGO_TARGET_DIR` or `target/` (build it with `cargo build -p maestro`). Every server gets
// its own temporary DATA_DIR and port 0; its URL is read from `$DATA_DIR/server-url`, the file
// the CLI discovers servers by.

import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";

import { io } from "socket.io-client";

/** Upper bound on any single wait. */
export const WAIT_MS = 10_000;

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");

export function binary() {
  if (process.env.MAESTRO_BIN) return process.env.MAESTRO_BIN;
  const target = process.env.CARGO_TARGET_DIR ?? join(repo, "target");
  const bin = join(target, "debug", process.platform === "win32" ? "maestro.exe" : "maestro");
  if (!existsSync(bin)) {
    throw new Error(`no maestro binary at ${bin}: run \`cargo build -p maestro\` or set MAESTRO_BIN`);
  }
  return bin;
}

/**
 * Starts `maestro serve` on port 0 with a fresh data directory. `env` adds or overrides
 * environment variables (e.g. `{ JOURNAL_CAPACITY: "50" }`).
 */
export async function startServer(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "maestro-js-"));
  const dataDir = join(dir, "data");
  const child = spawn(binary(), ["serve"], {
    env: {
      ...process.env,
      PORT: "0",
      HOST: "127.0.0.1",
      DATA_DIR: dataDir,
      SESSION_DIR: join(dir, "sessions"),
      SKILLS_DIR: join(dir, "skills"),
      LOG_LEVEL: "warn",
      RUNNER: "off",
      ...env,
    },
    stdio: ["ignore", "inherit", "inherit"],
  });
  let exited = null;
  child.on("exit", (code, signal) => {
    exited = { code, signal };
  });

  const urlFile = join(dataDir, "server-url");
  const deadline = Date.now() + WAIT_MS;
  while (!existsSync(urlFile)) {
    if (exited) throw new Error(`maestro exited during start-up: ${JSON.stringify(exited)}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`maestro did not write ${urlFile} within ${WAIT_MS} ms`);
    }
    await sleep(20);
  }
  // The file says `http://localhost:<port>`; the server listens on IPv4 loopback only.
  const url = readFileSync(urlFile, "utf8").trim().replace("//localhost:", "//127.0.0.1:");
  const server = {
    url,
    dataDir,
    sockets: [],
    /** A REST call; resolves to `{status, body}` (body parsed as JSON when it is JSON). */
    async call(method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: body === undefined ? {} : { "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      let parsed = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // not JSON: keep the text
      }
      return { status: res.status, body: parsed };
    },
    /** A REST call that must succeed (2xx); resolves to the body. */
    async ok(method, path, body) {
      const { status, body: answer } = await server.call(method, path, body);
      if (status < 200 || status > 299) {
        throw new Error(`${method} ${path} -> ${status}: ${JSON.stringify(answer)}`);
      }
      return answer;
    },
    /**
     * Stops the server (SIGTERM, then SIGKILL) and removes its directory; resolves to how it
     * exited (`{code, signal}`).
     */
    async stop() {
      for (const s of server.sockets) s.close();
      if (!exited) {
        child.kill("SIGTERM");
        const until = Date.now() + WAIT_MS;
        while (!exited && Date.now() < until) await sleep(20);
        if (!exited) child.kill("SIGKILL");
      }
      rmSync(dir, { recursive: true, force: true });
      return exited;
    },
  };
  return server;
}

/**
 * A Socket.IO connection that records every event it receives, in order. `options` go to
 * `io()` (`auth`, `transports`, `extraHeaders`, …); reconnection is off so a test decides when
 * to reconnect.
 */
export function connect(server, namespace, options = {}) {
  const socket = io(server.url + namespace, {
    forceNew: true,
    reconnection: false,
    transports: ["websocket"],
    ...options,
  });
  const client = new Client(socket);
  server.sockets.push(socket);
  return client;
}

export class Client {
  constructor(socket) {
    this.socket = socket;
    this.events = [];
    this.waiters = [];
    socket.onAny((name, payload) => {
      this.events.push({ name, payload });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Resolves once connected; rejects with the `connect_error`. */
  connected() {
    return new Promise((resolve, reject) => {
      if (this.socket.connected) return resolve(this);
      const timer = setTimeout(() => reject(new Error("no connect within the wait")), WAIT_MS);
      this.socket.once("connect", () => {
        clearTimeout(timer);
        resolve(this);
      });
      this.socket.once("connect_error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  /** Emits `event` with `payload` and resolves to the ack. */
  call(event, payload) {
    const s = this.socket.timeout(WAIT_MS);
    return payload === undefined ? s.emitWithAck(event) : s.emitWithAck(event, payload);
  }

  /** The next received event (in arrival order). */
  async next() {
    const deadline = Date.now() + WAIT_MS;
    while (this.events.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no event within ${WAIT_MS} ms`);
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return this.events.shift();
  }

  /** Reads events and checks they are `names`, in order; resolves to them. */
  async expect(...names) {
    const got = [];
    for (const name of names) {
      const e = await this.next();
      if (e.name !== name) {
        throw new Error(
          `expected ${JSON.stringify(names)}; #${got.length} was ${e.name}: ${JSON.stringify(e.payload)}`,
        );
      }
      got.push(e.payload);
    }
    return got;
  }

  /** Resolves when nothing arrives for `ms`; rejects with what did. */
  async quiet(ms = 300) {
    await sleep(ms);
    if (this.events.length > 0) {
      throw new Error(`expected no event, got ${JSON.stringify(this.events[0])}`);
    }
  }

  close() {
    this.socket.close();
  }
}

/** Runs `tasks` (functions returning promises) `width` at a time. */
export async function inParallel(tasks, width = 8) {
  const results = new Array(tasks.length);
  let next = 0;
  async function worker() {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await tasks[i]();
    }
  }
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, worker));
  return results;
}
