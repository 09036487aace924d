import { signal } from "@preact/signals";

/** The current time, ticking every second, for "12 s ago" labels. */
export const now = signal(Date.now());
setInterval(() => (now.value = Date.now()), 1_000);
