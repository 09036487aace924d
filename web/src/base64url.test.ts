import { describe, expect, it } from "vitest";

import { fromBase64Url } from "./base64url";

describe("fromBase64Url", () => {
  it("decodes unpadded base64url, as the server sends the VAPID key", () => {
    // 0xfb 0xff 0xbf: '+' and '/' in base64, '-' and '_' in base64url.
    expect(Array.from(fromBase64Url("-_-_"))).toEqual([0xfb, 0xff, 0xbf]);
    expect(Array.from(fromBase64Url("AQ"))).toEqual([1]);
    expect(Array.from(fromBase64Url("AQI"))).toEqual([1, 2]);
    expect(fromBase64Url("B" + "A".repeat(86)).length).toBe(65);
  });
});
