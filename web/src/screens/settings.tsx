// This device (name, scope), sign out, notifications (on/off, which kinds, quiet hours, last
// delivery, a test), theme; the pairing landing; the signed-out screen.

import { signal } from "@preact/signals";
import { useEffect, useState } from "preact/hooks";

import { guessDeviceName, logout, me, pair } from "../auth";
import { connection, stats } from "../live";
import { ago, clock } from "../format";
import type { NotifyKinds, NotifySettings } from "../generated/protocol";
import {
  disablePush,
  enablePush,
  loadNotifySettings,
  notifyStatus,
  pushError,
  pushState,
  pushSupported,
  refreshPush,
  changeNotifySettings,
  sendTestNotification,
} from "../push";
import { minuteToTime, timeToMinute } from "../quiet-hours";

export type Theme = "system" | "light" | "dark";

export const theme = signal<Theme>((localStorage.getItem("maestro.theme") as Theme) || "system");

export function applyTheme(t: Theme): void {
  theme.value = t;
  localStorage.setItem("maestro.theme", t);
  if (t === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
  const dark = t === "dark" || (t === "system" && matchMedia("(prefers-color-scheme: dark)").matches);
  document.querySelector('meta[name="theme-color"]')?.setAttribute("content", dark ? "#111418" : "#f6f7f9");
}

export function Settings() {
  const m = me.value;
  const [busy, setBusy] = useState(false);
  return (
    <div class="screen">
      <h1 class="screen-title">Settings</h1>
      <section class="section" aria-labelledby="dev-title">
        <h2 class="section-title" id="dev-title">
          This device
        </h2>
        <dl class="facts">
          <dt>Name</dt>
          <dd>{m?.name ?? (m?.kind === "local" ? "This computer (local)" : "—")}</dd>
          <dt>Signed in as</dt>
          <dd>{m?.kind === "device" ? "paired device" : m?.kind === "token" ? "API token" : "local"}</dd>
          <dt>Scope</dt>
          <dd data-testid="scope">{m?.scope ?? "—"}</dd>
          <dt>Connection</dt>
          <dd>
            {connection.value.state} · {stats.syncs} sync{stats.syncs === 1 ? "" : "s"}
          </dd>
        </dl>
        {m && m.kind !== "local" && (
          <button
            class="btn btn-danger-ghost"
            type="button"
            disabled={busy}
            onClick={async () => {
              setBusy(true);
              await logout().catch(() => undefined);
              setBusy(false);
            }}
          >
            Sign out this device
          </button>
        )}
      </section>
      <Notifications />
      <section class="section" aria-labelledby="theme-title">
        <h2 class="section-title" id="theme-title">
          Theme
        </h2>
        <div class="segmented" role="radiogroup" aria-labelledby="theme-title">
          {(["system", "light", "dark"] as Theme[]).map((t) => (
            <button
              key={t}
              type="button"
              role="radio"
              class="seg"
              aria-checked={theme.value === t}
              onClick={() => applyTheme(t)}
            >
              {t === "system" ? "System" : t === "light" ? "Light" : "Dark"}
            </button>
          ))}
        </div>
      </section>
      <p class="meta">
        Agents' help page: <a class="link" href="/agents">/agents</a> · API: <a class="link" href="/api/docs">/api/docs</a>
      </p>
    </div>
  );
}

/** `/pair#c=<code>`: exchanges the one-time code for this device's cookie. */
export function Pair({ code, onDone }: { code: string; onDone: () => void }) {
  const [name, setName] = useState(guessDeviceName());
  const [state, setState] = useState<"ready" | "busy" | "error">("ready");
  const [error, setError] = useState("");
  useEffect(() => {
    // The code must not linger in the address bar or history.
    history.replaceState(null, "", "/pair");
  }, []);
  return (
    <main class="screen narrow" id="main">
      <h1 class="screen-title">Pair this phone</h1>
      <p>This gives this browser its own key to your Maestro server. You can revoke it at any time.</p>
      <form
        class="form"
        onSubmit={async (e) => {
          e.preventDefault();
          setState("busy");
          try {
            await pair(code, name.trim() || guessDeviceName());
            history.replaceState(null, "", "/#/");
            onDone();
          } catch (err) {
            setError((err as Error).message);
            setState("error");
          }
        }}
      >
        <label class="label" for="device-name">
          Name this device
        </label>
        <input id="device-name" value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} />
        <button class="btn btn-primary" type="submit" disabled={state === "busy" || state === "error"}>
          {state === "busy" ? "Pairing…" : "Pair"}
        </button>
      </form>
      {state === "error" && (
        <div class="card card-bad" role="alert">
          <p>
            <strong>Pairing failed:</strong> {error}
          </p>
          <p>
            A pairing code works once and for two minutes. On your computer run <code>maestro pair</code> and scan the
            new code.
          </p>
        </div>
      )}
    </main>
  );
}

export function SignedOut() {
  return (
    <main class="screen narrow" id="main">
      <h1 class="screen-title">Signed out</h1>
      <p>This device is not signed in to Maestro (it was signed out or revoked).</p>
      <p>To pair it again, run this on the computer where Maestro runs, then scan the QR code it prints:</p>
      <pre>
        <code>maestro pair</code>
      </pre>
    </main>
  );
}

function Notifications() {
  const canNotify = "Notification" in window && "serviceWorker" in navigator;
  const [permission, setPermission] = useState(canNotify ? Notification.permission : "denied");
  useEffect(() => {
    void refreshPush().catch(() => undefined);
    void loadNotifySettings().catch(() => undefined);
  }, []);
  const push = pushState.value;
  const toggle = async () => {
    if (push === "on") await disablePush();
    else if (pushSupported()) await enablePush();
    else await Notification.requestPermission();
    setPermission(Notification.permission);
  };
  let text: string;
  if (!canNotify) text = "This browser cannot show notifications.";
  else if (permission === "denied") text = "Blocked in this browser's site settings.";
  else if (push === "on")
    text =
      "On: this device is told when an agent needs you or asks to run a tool, fails or finishes, even with the app closed.";
  else if (permission === "granted")
    text =
      "On: while this app is open in the background, you are told when an agent needs you, fails or finishes." +
      (pushSupported() ? " Enable notifications to be told with the app closed too." : "");
  else text = "Off.";
  const showButton = canNotify && permission !== "denied" && (pushSupported() || permission !== "granted");
  return (
    <section class="section" aria-labelledby="notify-title">
      <h2 class="section-title" id="notify-title">
        Notifications
      </h2>
      <p class="meta" data-testid="notifications" data-push={push}>
        {text}
      </p>
      {showButton && (
        <button class="btn" type="button" disabled={push === "busy"} onClick={() => void toggle()}>
          {push === "busy"
            ? "Working…"
            : push === "on"
              ? "Turn off notifications"
              : pushSupported()
                ? "Enable notifications"
                : "Allow notifications"}
        </button>
      )}
      {pushError.value && (
        <p class="meta" role="alert">
          {pushError.value}
        </p>
      )}
      {push === "on" && <NotifyChoices />}
    </section>
  );
}

const KINDS: [keyof NotifyKinds, string, string][] = [
  ["approvals", "Approvals", "An agent asks to run a tool; Allow and Deny right on the notification"],
  ["needsInput", "Needs input", "An agent asks you a question"],
  ["failed", "Failed", "A session failed"],
  ["completed", "Completed", "A session finished"],
  ["machineOffline", "Machine offline", "A machine running agents stops answering, and when it is back"],
];

/** What this device is told, kept on the server for this device; its last delivery; a test. */
function NotifyChoices() {
  const status = notifyStatus.value;
  const [error, setError] = useState("");
  const [test, setTest] = useState<"idle" | "busy" | string>("idle");
  if (!status) return null;
  const s = status.settings;
  // Each change applies to the settings as they are when it is made, so quick changes in a row
  // all stick.
  const save = async (change: (cur: NotifySettings) => NotifySettings) => {
    setError("");
    try {
      await changeNotifySettings(change);
    } catch (err) {
      setError((err as Error).message || "The settings could not be saved.");
    }
  };
  const quiet = s.quietHours;
  const setTime = (which: "start" | "end", value: string) => {
    const minute = timeToMinute(value);
    if (minute !== null)
      void save((cur) => (cur.quietHours ? { ...cur, quietHours: { ...cur.quietHours, [which]: minute } } : cur));
  };
  return (
    <div class="notify-choices" data-testid="notify-choices">
      <fieldset class="choices">
        <legend class="label">Tell this device when</legend>
        {KINDS.map(([kind, label, hint]) => (
          <label class="check" key={kind}>
            <input
              type="checkbox"
              checked={s.kinds[kind]}
              onChange={(e) => {
                const on = e.currentTarget.checked;
                void save((cur) => ({ ...cur, kinds: { ...cur.kinds, [kind]: on } }));
              }}
            />
            <span>
              {label}
              <span class="meta check-hint">{hint}</span>
            </span>
          </label>
        ))}
      </fieldset>
      <fieldset class="choices">
        <legend class="label">Quiet hours</legend>
        <label class="check">
          <input
            type="checkbox"
            checked={!!quiet}
            onChange={(e) => {
              const on = e.currentTarget.checked;
              void save((cur) => ({
                ...cur,
                quietHours: on ? { start: 22 * 60, end: 7 * 60, approvalsStillNotify: true } : null,
              }));
            }}
          />
          <span>
            Quiet hours
            <span class="meta check-hint">No notifications between these times (this device's time)</span>
          </span>
        </label>
        {quiet && (
          <>
            <div class="quiet-hours">
              <label class="field">
                <span class="label">From</span>
                <input type="time" value={minuteToTime(quiet.start)} onChange={(e) => setTime("start", e.currentTarget.value)} />
              </label>
              <label class="field">
                <span class="label">To</span>
                <input type="time" value={minuteToTime(quiet.end)} onChange={(e) => setTime("end", e.currentTarget.value)} />
              </label>
            </div>
            <label class="check">
              <input
                type="checkbox"
                checked={quiet.approvalsStillNotify}
                onChange={(e) => {
                  const on = e.currentTarget.checked;
                  void save((cur) =>
                    cur.quietHours ? { ...cur, quietHours: { ...cur.quietHours, approvalsStillNotify: on } } : cur,
                  );
                }}
              />
              <span>
                Approvals still notify
                <span class="meta check-hint">An agent waiting to run a tool is told during quiet hours too</span>
              </span>
            </label>
          </>
        )}
      </fieldset>
      <dl class="facts">
        <dt>Last delivery</dt>
        <dd data-testid="last-delivery">
          {status.lastDeliveryAt ? `${clock(status.lastDeliveryAt)} (${ago(status.lastDeliveryAt)})` : "never"}
        </dd>
      </dl>
      <button
        class="btn"
        type="button"
        disabled={test === "busy"}
        onClick={async () => {
          setTest("busy");
          try {
            const r = await sendTestNotification();
            setTest(
              r.sent > 0
                ? `Sent to ${r.sent} browser${r.sent === 1 ? "" : "s"} of this device.`
                : "No browser of this device took it: turn notifications off and on again.",
            );
          } catch (err) {
            setTest((err as Error).message || "The test could not be sent.");
          }
        }}
      >
        {test === "busy" ? "Sending…" : "Send a test notification"}
      </button>
      {test !== "idle" && test !== "busy" && (
        <p class="meta" role="status" data-testid="test-result">
          {test}
        </p>
      )}
      {error && (
        <p class="meta" role="alert">
          {error}
        </p>
      )}
    </div>
  );
}
