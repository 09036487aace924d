// Small display helpers.

/** "12 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function ago(ms: number | undefined | null, now = Date.now()): string {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}

/** "14:05" in the device's time zone. */
export function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function statusLabel(status: string): string {
  return status.replace(/_/g, " ");
}

/** A mail body as text: `message`, else `text`, else the JSON. */
export function mailText(body: unknown): string {
  if (typeof body === "string") return body;
  if (body && typeof body === "object") {
    const b = body as Record<string, unknown>;
    if (typeof b.message === "string") return b.message;
    if (typeof b.text === "string") return b.text;
    if (typeof b.content === "string") return b.content;
    if (Object.keys(b).length === 0) return "";
  }
  return JSON.stringify(body);
}
