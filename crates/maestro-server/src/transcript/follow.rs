//! Following a transcript file while its agent appends to it.
//!
//! The agent never waits on us: we only read its file, by polling ([`Follower::poll`] reads what
//! was appended since the last call). Only whole lines are parsed; a last line without its
//! newline yet is kept until the rest arrives. Memory is bounded: a poll reads at most
//! `max_bytes`, and a line longer than [`LINE_MAX`] is skipped (counted as malformed) instead
//! of being buffered. A file that shrinks or is replaced (another inode) is read again from
//! its start.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use maestro_protocol::TranscriptEntry;

use super::{Line, parse_line};

/// The longest line read; longer ones (a tool that returned megabytes) are skipped.
pub const LINE_MAX: usize = 4 * 1024 * 1024;

/// What one poll read: the entries of whole lines in the file's bytes `[start, end)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Batch {
    pub start: u64,
    pub end: u64,
    pub entries: Vec<TranscriptEntry>,
    /// Lines that were not JSON objects, or too long.
    pub malformed: u64,
}

/// Reads a growing transcript file, a poll at a time.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    /// End of the last whole line consumed.
    offset: u64,
    /// Bytes after `offset` read so far, without a newline yet.
    partial: Vec<u8>,
    /// Inside a line longer than [`LINE_MAX`]: how many of its bytes were read (and dropped).
    skipped: Option<u64>,
    /// The file's (device, inode), to notice it being replaced.
    identity: Option<(u64, u64)>,
}

impl Follower {
    /// Follows `path` from byte `offset` (the end of a line already read, or 0).
    pub fn new(path: impl Into<PathBuf>, offset: u64) -> Self {
        Self {
            path: path.into(),
            offset,
            partial: Vec::new(),
            skipped: None,
            identity: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the next batch starts.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes read after `offset` that do not end a line yet.
    fn pending(&self) -> u64 {
        self.skipped.unwrap_or(self.partial.len() as u64)
    }

    /// Reads what was appended (at most `max_bytes`, and lines up to the first that brings the
    /// batch to `max_entries`; the rest is read by the next poll); `None` when no whole line
    /// was added. A missing file is not an error (the agent may not have written it yet).
    pub fn poll(&mut self, max_bytes: usize, max_entries: usize) -> std::io::Result<Option<Batch>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let identity = (meta.dev(), meta.ino());
        if self.identity.is_some_and(|id| id != identity)
            || meta.len() < self.offset + self.pending()
        {
            // Replaced or truncated: start again.
            self.offset = 0;
            self.partial.clear();
            self.skipped = None;
        }
        self.identity = Some(identity);
        let read_from = self.offset + self.pending();
        if meta.len() <= read_from {
            return Ok(None);
        }
        file.seek(SeekFrom::Start(read_from))?;
        let mut fresh = Vec::new();
        file.take(max_bytes as u64).read_to_end(&mut fresh)?;
        let mut batch = Batch {
            start: self.offset,
            end: self.offset,
            ..Batch::default()
        };
        let mut rest: &[u8] = &fresh;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let (piece, after) = (&rest[..nl], &rest[nl + 1..]);
            self.offset += self.pending() + piece.len() as u64 + 1;
            if self.skipped.take().is_some() || self.partial.len() + piece.len() > LINE_MAX {
                self.partial.clear();
                batch.malformed += 1;
            } else {
                self.partial.extend_from_slice(piece);
                let line = std::mem::take(&mut self.partial);
                let line = line.strip_suffix(b"\r").unwrap_or(&line);
                if !line.iter().all(u8::is_ascii_whitespace) {
                    match parse_line(line) {
                        Line::Entries(entries) => batch.entries.extend(entries),
                        Line::Malformed => batch.malformed += 1,
                    }
                }
            }
            rest = after;
            if batch.entries.len() >= max_entries {
                // The next poll reads on from this line's end.
                rest = &[];
                break;
            }
        }
        if let Some(skipped) = &mut self.skipped {
            *skipped += rest.len() as u64;
        } else if self.partial.len() + rest.len() > LINE_MAX {
            self.skipped = Some((self.partial.len() + rest.len()) as u64);
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(rest);
        }
        batch.end = self.offset;
        Ok((batch.end > batch.start).then_some(batch))
    }
}
