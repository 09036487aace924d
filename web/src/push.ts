// Web Push: the phone is told when an agent needs it, fails or completes, asks to run a tool,
// or a machine goes offline, even with the app closed. The browser subscribes to its push
// service with the server's VAPID key; the server keeps the subscription (tied to this device,
// deleted when the device is revoked) and sends encrypted notifications to it, which
// `public/sw.js` shows. What this device is sent (kinds, quiet hours) is kept on the server
// per device.

import { signal } from "@preact/signals";

import { api } from "./api";
import { fromBase64Url } from "./base64url";
import { utcOffsetMinutes } from "./quiet-hours";
import type {
  NotifySettings,
  NotifyStatus,
  PushSubscribe,
  PushTestResult,
  PushUnsubscribe,
  PushUnsubscribed,
  VapidPublicKey,
} from "./generated/protocol";

export type PushState = "unsupported" | "denied" | "off" | "on" | "busy";

export const pushState = signal<PushState>(pushSupported() ? "off" : "unsupported");
export const pushError = signal("");

export function pushSupported(): boolean {
  return (
    typeof window !== "undefined" &&
    "Notification" in window &&
    "serviceWorker" in navigator &&
    "PushManager" in window
  );
}

/** What the server needs of a subscription: `PushSubscription.toJSON()` has exactly this. */
export interface SubscriptionLike {
  toJSON(): { endpoint?: string; keys?: Record<string, string> };
}

/** Stores a browser subscription on the server, for this device. */
export async function saveSubscription(sub: SubscriptionLike): Promise<void> {
  const { endpoint, keys } = sub.toJSON();
  const body: PushSubscribe = { endpoint: endpoint ?? "", keys: { p256dh: keys?.p256dh ?? "", auth: keys?.auth ?? "" } };
  await api("POST", "/api/push/subscriptions", body);
}

function sameKey(a: ArrayBuffer | null | undefined, b: Uint8Array): boolean {
  if (!a || a.byteLength !== b.length) return false;
  const x = new Uint8Array(a);
  return x.every((v, i) => v === b[i]);
}

/** Reads the current state (on start and when Settings opens). */
export async function refreshPush(): Promise<void> {
  if (!pushSupported()) return;
  if (Notification.permission === "denied") {
    pushState.value = "denied";
    return;
  }
  const reg = await navigator.serviceWorker.ready;
  const sub = await reg.pushManager.getSubscription();
  pushState.value = sub && Notification.permission === "granted" ? "on" : "off";
}

/** Asks permission, subscribes with the server's key and registers the subscription. */
export async function enablePush(): Promise<void> {
  pushError.value = "";
  pushState.value = "busy";
  try {
    const permission = await Notification.requestPermission();
    if (permission !== "granted") {
      pushState.value = permission === "denied" ? "denied" : "off";
      return;
    }
    const { publicKey } = await api<VapidPublicKey>("GET", "/api/push/vapid-public-key");
    const key = fromBase64Url(publicKey);
    const reg = await navigator.serviceWorker.ready;
    let sub = await reg.pushManager.getSubscription();
    if (sub && !sameKey(sub.options.applicationServerKey, key)) {
      // Made for another server key: it cannot receive this server's pushes.
      await sub.unsubscribe();
      sub = null;
    }
    sub ??= await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    await saveSubscription(sub);
    pushState.value = "on";
  } catch (err) {
    pushError.value = (err as Error).message || "Notifications could not be turned on.";
    pushState.value = "off";
  }
}

/** Unregisters the subscription on the server and in the browser. */
export async function disablePush(): Promise<void> {
  pushError.value = "";
  pushState.value = "busy";
  try {
    const reg = await navigator.serviceWorker.ready;
    const sub = await reg.pushManager.getSubscription();
    if (sub) {
      const body: PushUnsubscribe = { endpoint: sub.endpoint };
      await api<PushUnsubscribed>("DELETE", "/api/push/subscriptions", body);
      await sub.unsubscribe();
    }
    pushState.value = "off";
  } catch (err) {
    pushError.value = (err as Error).message || "Notifications could not be turned off.";
    pushState.value = "on";
  }
}

/** This device's notification settings as the server keeps them, and its last delivery. */
export const notifyStatus = signal<NotifyStatus | null>(null);

/** Reads this device's settings as the server keeps them. */
async function readNotifySettings(): Promise<NotifyStatus> {
  const status = await api<NotifyStatus>("GET", "/api/push/settings");
  notifyStatus.value = status;
  return status;
}

/** Reads this device's settings; tells the server a new UTC offset (travel, DST). */
export async function loadNotifySettings(): Promise<void> {
  const status = await readNotifySettings();
  if (status.settings.utcOffsetMinutes !== utcOffsetMinutes()) await saveNotifySettings(status.settings);
}

function showSettings(settings: NotifySettings): void {
  const cur = notifyStatus.value;
  notifyStatus.value = { lastDeliveryAt: null, subscriptions: 0, visible: true, ...cur, settings };
}

/** The saves not answered yet, and the last of them (each waits for the one before). */
let unanswered = 0;
let lastSave: Promise<unknown> = Promise.resolve();

/**
 * Replaces this device's settings (with the current UTC offset). The change shows at once and
 * the saves go out one after the other, so two quick changes both stick: the second is built
 * on the first and never reaches the server before it. When the last save is answered, what
 * the server kept is shown; when it fails, the settings are read again (shown as the server
 * has them) and the error thrown.
 */
export function saveNotifySettings(settings: NotifySettings): Promise<void> {
  const next: NotifySettings = { ...settings, utcOffsetMinutes: utcOffsetMinutes() };
  showSettings(next);
  unanswered += 1;
  const save = lastSave.then(async () => {
    try {
      const saved = await api<NotifySettings>("PUT", "/api/push/settings", next);
      if (unanswered === 1) showSettings(saved);
    } catch (err) {
      // Only read: a save from here would wait for this one, which waits for it.
      if (unanswered === 1) await readNotifySettings().catch(() => undefined);
      throw err;
    } finally {
      unanswered -= 1;
    }
  });
  lastSave = save.catch(() => undefined);
  return save;
}

/** Saves a change to the settings as they are now (not as an older render saw them). */
export function changeNotifySettings(change: (settings: NotifySettings) => NotifySettings): Promise<void> {
  const cur = notifyStatus.value;
  if (!cur) return Promise.resolve();
  return saveNotifySettings(change(cur.settings));
}

/** Asks the server for a test notification to this device; how many browsers took it. */
export async function sendTestNotification(): Promise<PushTestResult> {
  const result = await api<PushTestResult>("POST", "/api/push/test");
  await loadNotifySettings().catch(() => undefined);
  return result;
}
