// REST calls. Same-origin only: on a paired phone the browser sends the HttpOnly device cookie
// by itself, so the app never sees a token; writes are JSON and carry the CSRF header when
// the server gave us one (GET /api/auth/me, POST /api/auth/pair).

import { signal } from "@preact/signals";

/** Set when the server says this device is not (or no longer) signed in. */
export const signedOut = signal(false);

let csrf: string | null = sessionStorage.getItem("maestro.csrf");

export function setCsrf(value: string | undefined | null): void {
  csrf = value ?? null;
  if (csrf) sessionStorage.setItem("maestro.csrf", csrf);
  else sessionStorage.removeItem("maestro.csrf");
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** The error's `details`, when the server sent some (e.g. the approval that won a race). */
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<T> {
  const h: Record<string, string> = { accept: "application/json", ...headers };
  if (method !== "GET") {
    h["content-type"] = "application/json";
    if (csrf) h["x-maestro-csrf"] = csrf;
  }
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers: h,
      credentials: "same-origin",
      body: body === undefined ? (method === "GET" ? undefined : "{}") : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "NETWORK", "The server cannot be reached.");
  }
  const text = await res.text();
  let parsed: any = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!res.ok) {
    const code = parsed?.code ?? `HTTP_${res.status}`;
    if (res.status === 401 && path !== "/api/auth/pair") signedOut.value = true;
    throw new ApiError(res.status, code, parsed?.message ?? `${method} ${path}: ${res.status}`, parsed?.details);
  }
  return parsed as T;
}

/** A random key for idempotent requests (a double tap sends the same one). */
export function idempotencyKey(): string {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
