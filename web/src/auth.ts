// Who this device is and what it may do (GET /api/auth/me), pairing and signing out.

import { computed, signal } from "@preact/signals";

import { api, ApiError, setCsrf, signedOut } from "./api";
import type { Me, PairRequest, Paired, Scope } from "./types";

export const me = signal<Me | null>(null);
/** Set while start-up cannot reach the server (it retries). */
export const unreachable = signal(false);

// `runner` stands apart (a runner machine's token, not a person's device): it reads nothing the
// app shows.
const RANK: Record<Scope, number> = { runner: -1, read: 0, respond: 1, operate: 2, admin: 3 };

/** Whether this device's scope includes `scope` (scopes include each other). */
export function can(scope: Scope): boolean {
  const m = me.value;
  return m !== null && RANK[m.scope] >= RANK[scope];
}

export const scopeLabel = computed(() => me.value?.scope ?? "…");

/**
 * Reads who we are. A server without the auth routes yet (404) trusts loopback pages fully,
 * so the app behaves as a local admin there.
 */
export async function loadMe(): Promise<void> {
  try {
    const m = await api<Me>("GET", "/api/auth/me");
    me.value = m;
    setCsrf(m.csrf);
    signedOut.value = false;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      me.value = { kind: "local", scope: "admin" };
    } else if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      signedOut.value = true;
    } else {
      throw e;
    }
  }
}

/** Exchanges a one-time pairing code; the server sets the device cookie. */
export async function pair(code: string, deviceName: string): Promise<Paired> {
  const p = await api<Paired>("POST", "/api/auth/pair", { code, deviceName } satisfies PairRequest);
  setCsrf(p.csrf);
  me.value = { kind: "device", scope: p.scope, id: p.deviceId, name: p.deviceName, csrf: p.csrf };
  signedOut.value = false;
  return p;
}

export async function logout(): Promise<void> {
  try {
    await api("POST", "/api/auth/logout", {});
  } finally {
    setCsrf(null);
    me.value = null;
    signedOut.value = true;
  }
}

/** A default device name from the browser, e.g. "Android phone". */
export function guessDeviceName(): string {
  const ua = navigator.userAgent;
  if (/iPhone/.test(ua)) return "iPhone";
  if (/iPad/.test(ua)) return "iPad";
  if (/Android/.test(ua)) return "Android phone";
  if (/Mac OS X/.test(ua)) return "Mac browser";
  if (/Windows/.test(ua)) return "Windows browser";
  return "Browser";
}
