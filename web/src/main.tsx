// Start-up: theme, pairing (when opened at /pair#c=…), who we are, then live data.

import { render } from "preact";

import { App } from "./app";
import { loadMe, unreachable } from "./auth";
import { startLive } from "./live";
import { loadNotifySettings } from "./push";
import { Pair, applyTheme, theme } from "./screens/settings";
import "./styles.css";

applyTheme(theme.value);
matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => applyTheme(theme.value));

const root = document.getElementById("app")!;

// The app shell's cache (public/sw.js), so the installed app opens without a network.
if ("serviceWorker" in navigator) {
  void navigator.serviceWorker.register("/sw.js").catch(() => undefined);
}

async function start(): Promise<void> {
  render(<App />, root);
  // Until the server answers who we are, retry (it may be restarting, or the phone offline).
  for (let delay = 1_000; ; delay = Math.min(delay * 2, 10_000)) {
    try {
      await loadMe();
      unreachable.value = false;
      break;
    } catch {
      unreachable.value = true;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  await startLive().catch(() => undefined);
  // Quiet hours are in this device's time: tell the server when its UTC offset changed
  // (travel, daylight saving), whether or not Settings is ever opened.
  void loadNotifySettings().catch(() => undefined);
}

const code = location.pathname === "/pair" ? new URLSearchParams(location.hash.slice(1)).get("c") : null;
if (code) {
  render(<Pair code={code} onDone={() => void start()} />, root);
} else {
  if (location.pathname !== "/") history.replaceState(null, "", "/" + location.hash);
  void start();
}
