import { describe, expect, it } from "vitest";

import { minuteToTime, timeToMinute, utcOffsetMinutes } from "./quiet-hours";

describe("quiet hours times", () => {
  it("round-trips minutes of the day through the time input's HH:MM", () => {
    expect(minuteToTime(0)).toBe("00:00");
    expect(minuteToTime(22 * 60 + 30)).toBe("22:30");
    expect(minuteToTime(1439)).toBe("23:59");
    for (const m of [0, 7 * 60, 1439]) expect(timeToMinute(minuteToTime(m))).toBe(m);
    expect(timeToMinute("7:05")).toBe(425);
  });

  it("refuses what is not a time of day", () => {
    for (const bad of ["", "24:00", "12:60", "noon", "12"]) expect(timeToMinute(bad)).toBeNull();
  });

  it("gives the offset east of UTC, the opposite sign of getTimezoneOffset", () => {
    const d = new Date();
    expect(utcOffsetMinutes(d)).toBe(-d.getTimezoneOffset() || 0);
    expect(Object.is(utcOffsetMinutes(new Date(0)), -0)).toBe(false);
  });
});
