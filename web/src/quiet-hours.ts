// Quiet hours are minutes of the day in the device's own time; the server learns the device's
// UTC offset from the app (sent with the settings, again when it changes).

/** The browser's offset from UTC in minutes, east positive (`-getTimezoneOffset()`). */
export function utcOffsetMinutes(now = new Date()): number {
  // `|| 0`: UTC would otherwise be -0.
  return -now.getTimezoneOffset() || 0;
}

/** `"22:30"` for minute 1350 of the day. */
export function minuteToTime(minute: number): string {
  const h = Math.floor(minute / 60);
  const m = minute % 60;
  return `${String(h).padStart(2, "0")}:${String(m).padStart(2, "0")}`;
}

/** Minute of the day of a time input's `HH:MM`, or `null`. */
export function timeToMinute(time: string): number | null {
  const m = /^(\d{1,2}):(\d{2})$/.exec(time.trim());
  if (!m) return null;
  const h = Number(m[1]);
  const min = Number(m[2]);
  if (h > 23 || min > 59) return null;
  return h * 60 + min;
}
