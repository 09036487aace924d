//! Unified diff text → hunks with line numbers, the form the phone shows.
//!
//! A diff is kept as text where it is stored (compact, what git prints) and parsed when it is
//! asked for; parsing is linear in the text and needs no git.

use maestro_protocol::{ChangedFile, DiffLine, FileDiff, Hunk, LineKind, RawDiff};

use super::git::{MAX_DIFF_BYTES, MAX_DIFF_LINES, MAX_FILE_BYTES};

/// The file's diff as the phone gets it: `raw` parsed, with a note when it is cut or absent.
pub fn file_diff(session_id: &str, file: &ChangedFile, raw: &RawDiff) -> FileDiff {
    let (hunks, binary_marker) = parse(&raw.patch);
    let binary = file.binary || binary_marker;
    let note = if binary {
        Some("Binary file: not shown.".to_owned())
    } else if file.too_large {
        Some(format!(
            "File larger than {} MiB: not shown.",
            MAX_FILE_BYTES / (1024 * 1024)
        ))
    } else if raw.truncated {
        Some(format!(
            "Diff cut at {MAX_DIFF_LINES} lines or {} KiB; the rest is not shown.",
            MAX_DIFF_BYTES / 1024
        ))
    } else {
        None
    };
    FileDiff {
        session_id: session_id.to_owned(),
        path: file.path.clone(),
        old_path: file.old_path.clone(),
        status: file.status,
        binary,
        too_large: file.too_large,
        truncated: raw.truncated,
        note,
        additions: file.additions,
        deletions: file.deletions,
        hunks,
    }
}

/// The hunks of unified diff text (headers before the first `@@` are skipped), and whether git
/// called the file binary.
pub fn parse(text: &str) -> (Vec<Hunk>, bool) {
    let mut hunks: Vec<Hunk> = Vec::new();
    let mut binary = false;
    let (mut old, mut new) = (0u64, 0u64);
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("@@ ").and_then(hunk_header) {
            old = h.old_start;
            new = h.new_start;
            hunks.push(Hunk {
                header: line.to_owned(),
                ..h
            });
            continue;
        }
        let Some(hunk) = hunks.last_mut() else {
            if line.starts_with("Binary files ") || line == "GIT binary patch" {
                binary = true;
            }
            continue;
        };
        let (kind, rest) = match line.as_bytes().first() {
            Some(b'+') => (LineKind::Add, &line[1..]),
            Some(b'-') => (LineKind::Del, &line[1..]),
            Some(b' ') => (LineKind::Context, &line[1..]),
            // An empty context line (some tools strip the space).
            None => (LineKind::Context, ""),
            // `\ No newline at end of file`, or anything else: not a line of the file.
            _ => continue,
        };
        let (o, n) = match kind {
            LineKind::Add => {
                new += 1;
                (None, Some(new - 1))
            }
            LineKind::Del => {
                old += 1;
                (Some(old - 1), None)
            }
            LineKind::Context => {
                old += 1;
                new += 1;
                (Some(old - 1), Some(new - 1))
            }
        };
        hunk.lines.push(DiffLine {
            kind,
            old: o,
            new: n,
            text: rest.to_owned(),
        });
    }
    (hunks, binary)
}

/// `-1,4 +1,6 @@ context` → the hunk's ranges (a missing count is 1).
fn hunk_header(header: &str) -> Option<Hunk> {
    let (ranges, _) = header.split_once(" @@")?;
    let (old, new) = ranges.split_once(' ')?;
    let range = |r: &str| -> Option<(u64, u64)> {
        match r.split_once(',') {
            Some((start, len)) => Some((start.parse().ok()?, len.parse().ok()?)),
            None => Some((r.parse().ok()?, 1)),
        }
    };
    let (old_start, old_lines) = range(old.strip_prefix('-')?)?;
    let (new_start, new_lines) = range(new.strip_prefix('+')?)?;
    Some(Hunk {
        header: String::new(),
        old_start,
        old_lines,
        new_start,
        new_lines,
        lines: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_get_line_numbers() {
        let text = "diff --git a/x b/x\nindex 1..2 100644\n--- a/x\n+++ b/x\n@@ -1,3 +1,4 @@ fn main()\n a\n-b\n+B\n+C\n c\n@@ -10 +11 @@\n-x\n+y\n\\ No newline at end of file\n";
        let (hunks, binary) = parse(text);
        assert!(!binary);
        assert_eq!(hunks.len(), 2);
        let h = &hunks[0];
        assert_eq!(h.header, "@@ -1,3 +1,4 @@ fn main()");
        assert_eq!(
            (h.old_start, h.old_lines, h.new_start, h.new_lines),
            (1, 3, 1, 4)
        );
        let nums: Vec<(LineKind, Option<u64>, Option<u64>, &str)> = h
            .lines
            .iter()
            .map(|l| (l.kind, l.old, l.new, l.text.as_str()))
            .collect();
        assert_eq!(
            nums,
            vec![
                (LineKind::Context, Some(1), Some(1), "a"),
                (LineKind::Del, Some(2), None, "b"),
                (LineKind::Add, None, Some(2), "B"),
                (LineKind::Add, None, Some(3), "C"),
                (LineKind::Context, Some(3), Some(4), "c"),
            ]
        );
        assert_eq!(hunks[1].old_lines, 1);
        assert_eq!(hunks[1].lines.len(), 2);
        assert_eq!(hunks[1].lines[1].new, Some(11));
    }

    #[test]
    fn binary_is_recognised() {
        let (hunks, binary) = parse("diff --git a/i b/i\nBinary files a/i and b/i differ\n");
        assert!(hunks.is_empty());
        assert!(binary);
    }
}
