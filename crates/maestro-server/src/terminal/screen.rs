//! What the server keeps of a terminal: the last bytes of output (a ring) and the screen they
//! drew, parsed with `vt100`, from which a late or lagging viewer gets terminal output that
//! redraws it. Viewers read live output from the ring, each at its own position: the output
//! is held once however many watch.
//!
//! Memory, bounded by construction:
//! - the ring holds at most `TERMINAL_SCROLLBACK_BYTES` (256 KiB by default; never less than
//!   [`MIN_RING_BYTES`]), allocated as it fills;
//! - the parser holds 32 bytes per cell of its grid, and as much again for the alternate grid
//!   once a full-screen program has used it; its own scrollback is off (the ring is the
//!   history). Sizes are clamped to [`MAX_COLS`] × [`MAX_ROWS`] and [`MAX_CELLS`] cells, so a
//!   screen costs at most 2 × 32 B × 16,384 = 1 MiB. A usual 120 × 40 terminal costs 150 KiB
//!   (300 KiB with the alternate grid): with the default ring, 406 KiB per terminal (556 KiB for
//!   a full-screen program).
//!
//! A host that reports a larger terminal than the caps still has all its output relayed as is;
//! only the snapshots are drawn on the clamped screen.

use std::num::NonZeroU16;

/// Widest screen parsed.
pub const MAX_COLS: u16 = 500;
/// Tallest screen parsed.
pub const MAX_ROWS: u16 = 200;
/// Most cells parsed (rows are cut to fit): 200 × 80, 256 × 64…
pub const MAX_CELLS: usize = 16_384;
/// The size before a host said hello.
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;

/// The last `cap` bytes written, in one allocation that never exceeds `cap`.
#[derive(Debug)]
pub struct Ring {
    buf: Vec<u8>,
    /// Where the oldest byte is, once the ring is full.
    start: usize,
    cap: usize,
}

impl Ring {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            cap,
        }
    }

    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.cap == 0 {
            return;
        }
        if bytes.len() >= self.cap {
            bytes = &bytes[bytes.len() - self.cap..];
            self.buf.clear();
            self.buf.reserve_exact(self.cap);
            self.buf.extend_from_slice(bytes);
            self.start = 0;
            return;
        }
        // Fill up to the cap first.
        let room = self.cap - self.buf.len();
        if room > 0 {
            let n = room.min(bytes.len());
            if self.buf.capacity() < self.buf.len() + n {
                // Grow geometrically, but never past the cap.
                let want = (self.buf.len() + n)
                    .max(self.buf.capacity() * 2)
                    .min(self.cap);
                self.buf.reserve_exact(want - self.buf.len());
            }
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        // Then overwrite the oldest bytes.
        while !bytes.is_empty() {
            let n = (self.cap - self.start).min(bytes.len());
            self.buf[self.start..self.start + n].copy_from_slice(&bytes[..n]);
            self.start = (self.start + n) % self.cap;
            bytes = &bytes[n..];
        }
    }

    /// Up to `max` bytes held, starting `skip` bytes after the oldest.
    pub fn copy_range(&self, skip: usize, max: usize) -> Vec<u8> {
        let len = self.buf.len();
        let n = max.min(len.saturating_sub(skip));
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        // Where the wanted bytes begin in `buf` (`start` is 0 until the ring is full).
        let from = (self.start + skip) % len;
        let first = n.min(len - from);
        out.extend_from_slice(&self.buf[from..from + first]);
        out.extend_from_slice(&self.buf[..n - first]);
        out
    }

    /// Forgets the bytes held (keeping the allocation).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// The bytes held, oldest first.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.buf.len());
        out.extend_from_slice(&self.buf[self.start..]);
        out.extend_from_slice(&self.buf[..self.start]);
        out
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Bytes allocated.
    pub fn allocated(&self) -> usize {
        self.buf.capacity()
    }
}

/// The least output the ring keeps, whatever `TERMINAL_SCROLLBACK_BYTES` says: viewers read
/// live output from the ring, and one that falls further behind starts afresh from the screen.
pub const MIN_RING_BYTES: usize = 64 * 1024;

/// The parsed screen, the output ring, and how many bytes of output there have been.
pub struct Screen {
    parser: vt100::Parser,
    /// The size the host reported (the parser's may be clamped).
    cols: u16,
    rows: u16,
    /// The last output, which viewers read from: [`Screen::oldest`] up to [`Screen::pos`].
    ring: Ring,
    /// How much of the ring [`Screen::scrollback`] returns.
    scrollback: usize,
    /// Output bytes since the terminal was made: where the next output starts (mirrors on
    /// other servers use it to notice lost messages).
    pos: u64,
}

impl Screen {
    pub fn new(scrollback_bytes: usize) -> Self {
        Self {
            parser: parser(DEFAULT_COLS, DEFAULT_ROWS),
            cols: DEFAULT_COLS,
            rows: DEFAULT_ROWS,
            ring: Ring::new(scrollback_bytes.max(MIN_RING_BYTES)),
            scrollback: scrollback_bytes,
            pos: 0,
        }
    }

    /// A blank screen of this size (a host's hello; its full screen follows as output).
    pub fn reset(&mut self, cols: u16, rows: u16) {
        self.parser = parser(cols, rows);
        (self.cols, self.rows) = (cols.max(1), rows.max(1));
    }

    /// Output: parsed, kept in the ring, counted.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.parser.process(bytes);
        self.ring.push(bytes);
        self.pos += bytes.len() as u64;
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        let (r, c) = clamp(cols, rows);
        self.parser.set_size(r, c);
        (self.cols, self.rows) = (cols.max(1), rows.max(1));
    }

    /// `(cols, rows)` as the host reported them.
    pub fn size(&self) -> (u16, u16) {
        (self.cols, self.rows)
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The position of the oldest output byte still in the ring.
    pub fn oldest(&self) -> u64 {
        self.pos - self.ring.len() as u64
    }

    /// Up to `max` bytes of output from position `from` on, or `None` when they have left
    /// the ring (`from` before [`Screen::oldest`]).
    pub fn output_from(&self, from: u64, max: usize) -> Option<Vec<u8>> {
        let skip = from.checked_sub(self.oldest())?;
        Some(self.ring.copy_range(usize::try_from(skip).ok()?, max))
    }

    /// Takes over a screen drawn elsewhere (a mirror's copy of another server's): `snapshot`
    /// is drawn on a blank screen and output continues at `pos`.
    pub fn replace(&mut self, cols: u16, rows: u16, snapshot: &[u8], pos: u64) {
        self.reset(cols, rows);
        self.parser.process(snapshot);
        if pos != self.pos {
            // The output held no longer ends where the next begins.
            self.ring.clear();
            self.pos = pos;
        }
    }

    /// Terminal output that draws the current screen on any terminal of this size: clear,
    /// contents with their attributes, input modes, cursor position and visibility.
    pub fn snapshot(&self) -> Vec<u8> {
        self.parser.screen().state_formatted().into_bytes()
    }

    /// The last output bytes (at most `TERMINAL_SCROLLBACK_BYTES`), oldest first.
    pub fn scrollback(&self) -> Vec<u8> {
        let mut all = self.ring.to_vec();
        all.drain(..all.len().saturating_sub(self.scrollback));
        all
    }
}

/// Rows and columns for the parser, within the caps.
fn clamp(cols: u16, rows: u16) -> (NonZeroU16, NonZeroU16) {
    let cols = cols.clamp(1, MAX_COLS);
    let most_rows = (MAX_CELLS / usize::from(cols)).min(usize::from(MAX_ROWS)) as u16;
    let rows = rows.clamp(1, most_rows);
    (
        NonZeroU16::new(rows).expect("at least one row"),
        NonZeroU16::new(cols).expect("at least one column"),
    )
}

fn parser(cols: u16, rows: u16) -> vt100::Parser {
    let (r, c) = clamp(cols, rows);
    vt100::Parser::new(r, c, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_bytes_in_one_bounded_allocation() {
        let mut ring = Ring::new(8);
        ring.push(b"abc");
        assert_eq!(ring.to_vec(), b"abc");
        ring.push(b"defgh");
        assert_eq!(ring.to_vec(), b"abcdefgh");
        ring.push(b"ij");
        assert_eq!(ring.to_vec(), b"cdefghij");
        ring.push(b"klmnopq");
        assert_eq!(ring.to_vec(), b"jklmnopq");
        ring.push(b"0123456789");
        assert_eq!(ring.to_vec(), b"23456789");
        ring.push(b"x");
        assert_eq!(ring.to_vec(), b"3456789x");
        assert!(ring.allocated() <= 8, "allocated {}", ring.allocated());
        let mut none = Ring::new(0);
        none.push(b"abc");
        assert!(none.is_empty());
    }

    #[test]
    fn the_ring_matches_a_naive_model() {
        let mut ring = Ring::new(100);
        let mut all = Vec::new();
        for i in 0..500usize {
            let chunk: Vec<u8> = (0..(i * 7) % 37).map(|j| (i + j) as u8).collect();
            ring.push(&chunk);
            all.extend_from_slice(&chunk);
            let tail = &all[all.len().saturating_sub(100)..];
            assert_eq!(ring.to_vec(), tail, "after push {i}");
            assert!(ring.allocated() <= 100);
        }
    }

    #[test]
    fn output_is_read_from_any_position_still_in_the_ring() {
        let mut screen = Screen::new(0);
        let cap = MIN_RING_BYTES;
        let mut all = Vec::new();
        for i in 0..400usize {
            let chunk: Vec<u8> = (0..(i * 977) % 4099).map(|j| (i * 31 + j) as u8).collect();
            screen.feed(&chunk);
            all.extend_from_slice(&chunk);
            assert_eq!(screen.pos(), all.len() as u64);
            let oldest = all.len().saturating_sub(cap);
            assert_eq!(screen.oldest(), oldest as u64, "after chunk {i}");
            for from in [oldest, oldest + 1, (oldest + all.len()) / 2, all.len()] {
                let from = from.min(all.len());
                for max in [1, 1000, 16 * 1024, usize::MAX] {
                    let got = screen.output_from(from as u64, max).unwrap();
                    let want = &all[from..all.len().min(from.saturating_add(max))];
                    assert!(got == want, "chunk {i}, from {from}, max {max}");
                }
            }
            if oldest > 0 {
                assert_eq!(screen.output_from(oldest as u64 - 1, 10), None);
            }
        }
        // The ring keeps at least `MIN_RING_BYTES` for viewers; the scrollback is what was
        // asked for.
        assert!(screen.scrollback().is_empty());
    }

    #[test]
    fn a_replaced_screen_that_moved_on_forgets_the_output_before() {
        let mut screen = Screen::new(1024);
        screen.feed(b"abc");
        screen.replace(80, 24, b"drawn elsewhere", 3);
        assert_eq!(screen.output_from(0, 10).as_deref(), Some(&b"abc"[..]));
        screen.replace(80, 24, b"drawn elsewhere", 10);
        assert_eq!((screen.pos(), screen.oldest()), (10, 10));
        assert_eq!(screen.output_from(3, 10), None);
        screen.feed(b"de");
        assert_eq!(screen.output_from(10, 10).as_deref(), Some(&b"de"[..]));
    }

    #[test]
    fn a_snapshot_redraws_the_screen() {
        let mut screen = Screen::new(1024);
        screen.reset(40, 10);
        let output = b"\x1b[1;31mred\x1b[0m plain\r\nsecond line\x1b[5;7Hmoved\x1b[2;3H";
        screen.feed(output);
        let mut direct = vt100::Parser::new(
            NonZeroU16::new(10).unwrap(),
            NonZeroU16::new(40).unwrap(),
            0,
        );
        direct.process(output);
        let mut redrawn = vt100::Parser::new(
            NonZeroU16::new(10).unwrap(),
            NonZeroU16::new(40).unwrap(),
            0,
        );
        redrawn.process(b"garbage that the snapshot clears");
        redrawn.process(&screen.snapshot());
        assert_eq!(redrawn.screen().contents(), direct.screen().contents());
        assert_eq!(
            redrawn.screen().contents_formatted(),
            direct.screen().contents_formatted()
        );
        assert_eq!(
            redrawn.screen().cursor_position(),
            direct.screen().cursor_position()
        );
        assert_eq!(screen.pos(), output.len() as u64);
        assert_eq!(screen.scrollback(), output);
    }

    #[test]
    fn sizes_are_clamped() {
        assert_eq!(clamp(0, 0), (NonZeroU16::MIN, NonZeroU16::MIN));
        let (r, c) = clamp(u16::MAX, u16::MAX);
        assert_eq!(c.get(), MAX_COLS);
        assert!(usize::from(r.get()) * usize::from(c.get()) <= MAX_CELLS);
        assert_eq!(
            clamp(120, 40),
            (NonZeroU16::new(40).unwrap(), NonZeroU16::new(120).unwrap())
        );
    }
}
