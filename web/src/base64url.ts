// base64url (RFC 4648 §5) as the server writes keys: unpadded, `-` and `_`.

/** base64url (padding optional) → bytes, e.g. the VAPID key for `applicationServerKey`. */
export function fromBase64Url(text: string): Uint8Array<ArrayBuffer> {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}
