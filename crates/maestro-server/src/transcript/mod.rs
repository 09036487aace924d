//! Agents' own transcripts, read into Maestro's bounded, structured view
//! ([`TranscriptEntry`]).
//!
//! The one place that knows the agents' transcript formats, used on both sides: the host of an
//! agent (`maestro run`, a runner) follows the file with [`follow::Follower`], parses each line
//! with [`parse_line`] and uploads the entries; the server caps what it receives with
//! [`clamp`] again (a host is a client like any other) and stores it
//! (`domain::transcript`).
//!
//! Layout: [`claude`] and [`codex`] read one line of their tool's format; [`parse_line`] tells
//! them apart per line, so a file that mixes formats, or a format that grows new entry types,
//! still reads: whatever is not understood becomes an `other` entry, never an error. A line
//! that is not a JSON object is counted as malformed and skipped. [`follow`] tails a file
//! that is still being written.

pub mod claude;
pub mod codex;
pub mod follow;

use maestro_protocol::{Millis, TranscriptEntry, TranscriptKind, one_line};
use serde_json::Value;

/// Longest message text kept (user and assistant entries), in characters.
pub const TEXT_MAX: usize = 8_000;
/// Longest tool input kept (pretty-printed JSON), in characters.
pub const INPUT_MAX: usize = 2_000;
/// Lines of a tool's result kept.
pub const OUTPUT_LINES: usize = 8;
/// Longest tool result kept, in characters (after cutting to [`OUTPUT_LINES`]).
pub const OUTPUT_MAX: usize = 1_500;
/// Lines of an edit's diff kept.
pub const DIFF_LINES: usize = 400;
/// Longest diff kept, in characters.
pub const DIFF_MAX: usize = 16_000;
/// Longest `other` text (the entry's compact JSON), in characters.
pub const OTHER_MAX: usize = 300;
/// Longest short field (tool name, call id, path, label, summary), in characters.
pub const SHORT_MAX: usize = 300;

/// Entries kept from one line (a message with more content blocks loses the rest).
pub const LINE_ENTRIES_MAX: usize = 100;

/// What one line of a transcript file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// Entries in the order the line has them (possibly none: a line of a known kind that
    /// carries nothing to show, such as a model's hidden reasoning).
    Entries(Vec<TranscriptEntry>),
    /// Not a JSON object.
    Malformed,
}

/// Reads one line of an agent's transcript (without its newline).
pub fn parse_line(line: &[u8]) -> Line {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(line) else {
        return Line::Malformed;
    };
    let v = Value::Object(obj);
    let mut entries = if codex::is_rollout_line(&v) {
        codex::parse(&v)
    } else {
        claude::parse(&v)
    };
    entries.truncate(LINE_ENTRIES_MAX);
    for e in &mut entries {
        clamp(e);
    }
    Line::Entries(entries)
}

/// An `other` entry for `v`, labelled `label`: its compact JSON, cut.
pub(crate) fn other(label: &str, v: &Value, at: Option<Millis>) -> TranscriptEntry {
    let mut e = TranscriptEntry::new(TranscriptKind::Other);
    e.label = Some(label.to_owned());
    e.text = Some(v.to_string());
    e.at = at;
    e
}

/// Cuts every text field of `e` to its limit, marking it `truncated` when anything was cut.
/// Idempotent, so the server can apply it to what hosts send.
pub fn clamp(e: &mut TranscriptEntry) {
    let mut cut = false;
    let text_max = if e.kind == TranscriptKind::Other {
        OTHER_MAX
    } else {
        TEXT_MAX
    };
    cut |= cut_chars(&mut e.text, text_max);
    cut |= cut_chars(&mut e.input, INPUT_MAX);
    cut |= cut_lines(&mut e.output, OUTPUT_LINES, OUTPUT_MAX);
    cut |= cut_lines(&mut e.diff, DIFF_LINES, DIFF_MAX);
    for short in [
        &mut e.tool,
        &mut e.call_id,
        &mut e.path,
        &mut e.label,
        &mut e.summary,
    ] {
        cut |= cut_chars(short, SHORT_MAX);
    }
    e.truncated |= cut;
}

/// Cuts `s` to `max` characters (the last one an ellipsis); true when it did.
fn cut_chars(s: &mut Option<String>, max: usize) -> bool {
    let Some(text) = s else { return false };
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((at, _)) if text.chars().count() > max => {
            text.truncate(at);
            text.push('…');
            true
        }
        _ => false,
    }
}

/// Keeps the first `lines` lines of `s`, then cuts to `max` characters; true when it cut.
fn cut_lines(s: &mut Option<String>, lines: usize, max: usize) -> bool {
    let Some(text) = s else { return false };
    let mut cut = false;
    if let Some((at, _)) = text.match_indices('\n').nth(lines.saturating_sub(1))
        && at + 1 < text.len()
        && !is_more_marker(&text[at + 1..])
    {
        let rest = text[at + 1..].lines().count();
        text.truncate(at + 1);
        text.push_str(&format!("… {rest} more lines"));
        cut = true;
    }
    cut_chars(s, max) || cut
}

/// The line [`cut_lines`] leaves in place of what it cut, so cutting again changes nothing.
fn is_more_marker(rest: &str) -> bool {
    !rest.contains('\n') && rest.starts_with("… ") && rest.ends_with(" more lines")
}

/// A tool call entry: `tool`, its input (pretty JSON) and a one-line summary.
pub(crate) fn tool_call(tool: &str, call_id: Option<&str>, input: &Value) -> TranscriptEntry {
    let mut e = TranscriptEntry::new(TranscriptKind::ToolCall);
    e.tool = Some(tool.to_owned());
    e.call_id = call_id.map(str::to_owned);
    e.summary = Some(maestro_protocol::summarize(tool, input));
    e.input = match input {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        v => serde_json::to_string_pretty(v).ok(),
    };
    e
}

/// A tool result entry for call `call_id`.
pub(crate) fn tool_result(
    call_id: Option<&str>,
    output: String,
    is_error: Option<bool>,
) -> TranscriptEntry {
    let mut e = TranscriptEntry::new(TranscriptKind::ToolResult);
    e.call_id = call_id.map(str::to_owned);
    e.output = Some(output);
    e.is_error = is_error;
    e
}

/// A unified diff of one replacement: the lines `old` and `new` do not share, with up to
/// three lines of context either side, as one hunk. Line numbers count from the start of the
/// replaced text (the agent's edit does not say where in the file it is).
pub fn replacement_diff(old: &str, new: &str) -> String {
    const CONTEXT: usize = 3;
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let from = prefix.saturating_sub(CONTEXT);
    let a_end = (a.len() - suffix + CONTEXT).min(a.len());
    let b_end = (b.len() - suffix + CONTEXT).min(b.len());
    let mut out = format!(
        "@@ -{},{} +{},{} @@\n",
        from + 1,
        a_end - from,
        from + 1,
        b_end - from
    );
    for line in &a[from..prefix] {
        out.push_str(&format!(" {line}\n"));
    }
    for line in &a[prefix..a.len() - suffix] {
        out.push_str(&format!("-{line}\n"));
    }
    for line in &b[prefix..b.len() - suffix] {
        out.push_str(&format!("+{line}\n"));
    }
    for line in &a[a.len() - suffix..a_end] {
        out.push_str(&format!(" {line}\n"));
    }
    out
}

/// The text of a content value: a string, or the `text` of its blocks joined by newlines.
pub(crate) fn content_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => {
            let parts: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            (!parts.is_empty()).then(|| parts.join("\n"))
        }
        _ => None,
    }
}

/// An RFC 3339 timestamp (`2026-05-01T10:00:00.123Z`, `…+02:00`) in epoch milliseconds.
pub fn parse_time(s: &str) -> Option<Millis> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        std::str::from_utf8(b.get(r)?).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = std::str::from_utf8(&b[start..i]).ok()?;
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        ms = digits.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let m = oh * 60 + om;
            if *sign == b'+' { m } else { -m }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// `v[key]` as a timestamp.
pub(crate) fn time_of(v: &Value, key: &str) -> Option<Millis> {
    v.get(key).and_then(Value::as_str).and_then(parse_time)
}

/// One line, ellipsised, for labels built from free text.
pub(crate) fn short(text: &str) -> String {
    one_line(text, SHORT_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time("2026-05-01T10:00:00.123Z"),
            Some(1_777_629_600_123)
        );
        assert_eq!(
            parse_time("2026-05-01T12:00:00.123456+02:00"),
            Some(1_777_629_600_123)
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("2026-13-01T00:00:00Z"), None);
    }

    #[test]
    fn clamp_cuts_and_marks() {
        let mut e = TranscriptEntry::new(TranscriptKind::ToolResult);
        e.output = Some((1..=20).map(|i| format!("line {i}\n")).collect());
        clamp(&mut e);
        let out = e.output.clone().unwrap();
        assert!(out.starts_with("line 1\n"), "{out}");
        assert!(
            out.contains("line 8\n") && !out.contains("line 9\n"),
            "{out}"
        );
        assert!(out.ends_with("… 12 more lines"), "{out}");
        assert!(e.truncated);
        let again = e.clone();
        clamp(&mut e);
        assert_eq!(e, again, "clamping twice changes nothing");

        let mut small = TranscriptEntry::new(TranscriptKind::Assistant);
        small.text = Some("héllo".into());
        clamp(&mut small);
        assert!(!small.truncated);
        let mut big = TranscriptEntry::new(TranscriptKind::Other);
        big.text = Some("é".repeat(OTHER_MAX + 5));
        clamp(&mut big);
        assert_eq!(big.text.as_ref().unwrap().chars().count(), OTHER_MAX);
        assert!(big.truncated);
    }

    #[test]
    fn replacement_diffs_keep_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\nh\n";
        let new = "a\nb\nc\nd\nE\nf\ng\nh\n";
        assert_eq!(
            replacement_diff(old, new),
            "@@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n"
        );
        assert_eq!(replacement_diff("", "new\n"), "@@ -1,0 +1,1 @@\n+new\n");
    }

    #[test]
    fn lines_that_are_not_objects_are_malformed() {
        assert_eq!(parse_line(b"{\"type\":"), Line::Malformed);
        assert_eq!(parse_line(b"[1,2]"), Line::Malformed);
        assert_eq!(parse_line(b""), Line::Malformed);
        assert!(matches!(parse_line(b"{}"), Line::Entries(_)));
    }
}
