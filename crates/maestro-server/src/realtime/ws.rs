//! The server's side of the WebSocket wire format (RFC 6455), for the Engine.IO transport.
//!
//! Why not a WebSocket library: a frame the server sends is never masked, so the bytes of one
//! event's frame are the same for every socket. The fan-out builds them once and hands the
//! same `Bytes` to thousands of sockets, written straight to each TCP socket; a library's
//! per-connection sink would encode (and buffer) them once per socket. What a server needs is
//! small: the handshake's accept key, frame headers, and a decoder for the client's masked
//! frames with fragmentation, control frames and a size cap.

use bytes::{Buf, BufMut, Bytes, BytesMut};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes used by the server.
pub const CLOSE_NORMAL: u16 = 1000;
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_PROTOCOL: u16 = 1002;
pub const CLOSE_UNSUPPORTED: u16 = 1003;
pub const CLOSE_INVALID_DATA: u16 = 1007;
pub const CLOSE_TOO_BIG: u16 = 1009;

/// The `Sec-WebSocket-Accept` value for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)
}

/// Length of the header of an unmasked frame with `len` payload bytes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Writes the header of a final, unmasked frame.
pub fn put_header(out: &mut impl BufMut, opcode: u8, len: usize) {
    out.put_u8(0x80 | opcode);
    match len {
        0..=125 => out.put_u8(len as u8),
        126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(len as u64);
        }
    }
}

/// A whole, final, unmasked frame.
pub fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(header_len(payload.len()) + payload.len());
    put_header(&mut out, opcode, payload.len());
    out.put_slice(payload);
    out.freeze()
}

/// A close frame with `code` (and no reason).
pub fn close_frame(code: u16) -> Bytes {
    frame(OP_CLOSE, &code.to_be_bytes())
}

/// A message (or control frame) from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Why the client's bytes cannot be read: the connection closes with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

impl Violation {
    fn protocol(reason: &'static str) -> Self {
        Self {
            code: CLOSE_PROTOCOL,
            reason,
        }
    }
}

/// Decodes the client's frames, reassembling fragmented messages, with a cap on a message's
/// size.
pub struct Decoder {
    max_message: usize,
    /// A fragmented message in progress: its opcode and the payload so far.
    partial: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// Takes the next complete message (or control frame) off the front of `buf`; `Ok(None)`
    /// means more bytes are needed, and `need` says how many in all, when known.
    pub fn next(
        &mut self,
        buf: &mut BytesMut,
        need: &mut usize,
    ) -> Result<Option<Incoming>, Violation> {
        loop {
            let Some(head) = parse_header(buf)? else {
                *need = 14;
                return Ok(None);
            };
            let is_control = head.opcode & 0x8 != 0;
            if is_control && (!head.fin || head.len > 125) {
                return Err(Violation::protocol("fragmented or long control frame"));
            }
            let so_far = self.partial.as_ref().map_or(0, |(_, p)| p.len());
            if !is_control && head.len.saturating_add(so_far as u64) > self.max_message as u64 {
                return Err(Violation {
                    code: CLOSE_TOO_BIG,
                    reason: "message too big",
                });
            }
            let total = head.header + head.len as usize;
            if buf.len() < total {
                *need = total;
                return Ok(None);
            }
            buf.advance(head.header);
            let mut payload = buf.split_to(head.len as usize);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= head.mask[i % 4];
            }
            match head.opcode {
                OP_PING => return Ok(Some(Incoming::Ping(payload.to_vec()))),
                OP_PONG => return Ok(Some(Incoming::Pong)),
                OP_CLOSE => return Ok(Some(Incoming::Close)),
                OP_TEXT | OP_BINARY => {
                    if self.partial.is_some() {
                        return Err(Violation::protocol("new message inside a fragmented one"));
                    }
                    if head.fin {
                        return finish(head.opcode, payload.to_vec()).map(Some);
                    }
                    self.partial = Some((head.opcode, payload.to_vec()));
                }
                OP_CONTINUATION => {
                    let Some((opcode, mut data)) = self.partial.take() else {
                        return Err(Violation::protocol("continuation without a message"));
                    };
                    data.extend_from_slice(&payload);
                    if head.fin {
                        return finish(opcode, data).map(Some);
                    }
                    self.partial = Some((opcode, data));
                }
                _ => return Err(Violation::protocol("unknown opcode")),
            }
        }
    }
}

fn finish(opcode: u8, data: Vec<u8>) -> Result<Incoming, Violation> {
    if opcode == OP_BINARY {
        return Ok(Incoming::Binary(data));
    }
    String::from_utf8(data)
        .map(Incoming::Text)
        .map_err(|_| Violation {
            code: CLOSE_INVALID_DATA,
            reason: "text is not UTF-8",
        })
}

struct Header {
    fin: bool,
    opcode: u8,
    mask: [u8; 4],
    /// Bytes of the header (including the mask key).
    header: usize,
    len: u64,
}

fn parse_header(buf: &[u8]) -> Result<Option<Header>, Violation> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(Violation::protocol("reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(Violation::protocol("client frames must be masked"));
    }
    let mut at = 2;
    let len = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            at = 4;
            u64::from(u16::from_be_bytes([buf[2], buf[3]]))
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            at = 10;
            let mut b = [0; 8];
            b.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mut mask = [0; 4];
    mask.copy_from_slice(&buf[at..at + 4]);
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        mask,
        header: at + 4,
        len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as browsers send them.
    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Incoming>, Violation> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        let mut need = 0;
        while let Some(m) = d.next(&mut buf, &mut need)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn headers_for_every_length_class() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 200_000] {
            let f = frame(OP_TEXT, &vec![b'a'; len]);
            assert_eq!(f.len(), header_len(len) + len, "length {len}");
            assert_eq!(f[0], 0x81);
        }
        assert_eq!(&frame(OP_TEXT, b"hi")[..], b"\x81\x02hi");
        assert_eq!(&close_frame(1000)[..], b"\x88\x02\x03\xe8");
    }

    #[test]
    fn decodes_masked_messages_split_anywhere() {
        let mut bytes = client_frame(true, OP_TEXT, b"42/ui,[\"x\"]");
        bytes.extend(client_frame(true, OP_PING, b"p"));
        bytes.extend(client_frame(false, OP_TEXT, "héllo ".as_bytes()));
        bytes.extend(client_frame(true, OP_PONG, b""));
        bytes.extend(client_frame(true, OP_CONTINUATION, &vec![b'w'; 300]));
        bytes.extend(client_frame(true, OP_CLOSE, &[3, 232]));
        let want = vec![
            Incoming::Text("42/ui,[\"x\"]".into()),
            Incoming::Ping(b"p".to_vec()),
            Incoming::Pong,
            Incoming::Text(format!("héllo {}", "w".repeat(300))),
            Incoming::Close,
        ];
        assert_eq!(decode_all(&bytes, 1 << 20).unwrap(), want);
        // Byte by byte, as a slow network would deliver them.
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut need = 0;
        for b in &bytes {
            buf.put_u8(*b);
            while let Some(m) = d.next(&mut buf, &mut need).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, want);
        assert!(buf.is_empty());
    }

    #[test]
    fn long_lengths_and_binary() {
        let big = vec![7u8; 70_000];
        let got = decode_all(&client_frame(true, OP_BINARY, &big), 1 << 20).unwrap();
        assert_eq!(got, vec![Incoming::Binary(big)]);
    }

    #[test]
    fn refuses_what_the_rfc_forbids() {
        let code = |bytes: &[u8]| decode_all(bytes, 100).unwrap_err().code;
        assert_eq!(
            code(&client_frame(true, OP_TEXT, &[b'x'; 101])),
            CLOSE_TOO_BIG
        );
        let mut two = client_frame(false, OP_TEXT, &[b'x'; 60]);
        two.extend(client_frame(true, OP_CONTINUATION, &[b'x'; 60]));
        assert_eq!(code(&two), CLOSE_TOO_BIG, "the cap is per message");
        assert_eq!(code(&[0x81, 0x02, b'h', b'i']), CLOSE_PROTOCOL, "unmasked");
        assert_eq!(code(&client_frame(false, OP_PING, b"")), CLOSE_PROTOCOL);
        assert_eq!(
            code(&client_frame(true, OP_CONTINUATION, b"")),
            CLOSE_PROTOCOL
        );
        assert_eq!(code(&client_frame(true, 0x3, b"")), CLOSE_PROTOCOL);
        assert_eq!(
            code(&client_frame(true, OP_TEXT, &[0xff])),
            CLOSE_INVALID_DATA
        );
        let mut rsv = client_frame(true, OP_TEXT, b"a");
        rsv[0] |= 0x40;
        assert_eq!(code(&rsv), CLOSE_PROTOCOL, "no extension was agreed");
    }

    #[test]
    fn an_oversized_header_is_refused_before_its_payload_arrives() {
        let mut d = Decoder::new(1000);
        let mut buf = BytesMut::from(&client_frame(true, OP_TEXT, &[b'x'; 5000])[..8]);
        let mut need = 0;
        assert_eq!(d.next(&mut buf, &mut need).unwrap_err().code, CLOSE_TOO_BIG);
    }
}

/// Properties of the decoder over generated input: whatever bytes a client sends, however the
/// network splits them, the decoder yields exactly the messages an encoder made, or refuses
/// them with a close code; it never panics, and never asks for more room than one message may
/// take (`need`, which the reader reserves, stays within the cap, or a control frame's 125
/// bytes, plus a frame header).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// The longest header: 2 bytes, a 64-bit length and the mask key.
    const MAX_HEADER: usize = 14;

    /// Cases per property: a few seconds in all on a slow machine.
    fn config() -> ProptestConfig {
        ProptestConfig {
            cases: 96,
            ..ProptestConfig::default()
        }
    }

    /// A client frame, masked with `mask`; `width` 0 writes the shortest length field, 1 at
    /// least 16 bits, 2 the 64-bit one (the RFC asks for the shortest; a reader may take any).
    fn frame_bytes(fin: bool, opcode: u8, payload: &[u8], mask: [u8; 4], width: u8) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let n = payload.len();
        match (width, n) {
            (0, 0..=125) => out.push(0x80 | n as u8),
            (0 | 1, 0..=0xFFFF) => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    /// One message as the client sends it: cut into fragments, with control frames between
    /// (or after) them.
    #[derive(Debug, Clone)]
    struct Message {
        binary: bool,
        data: Vec<u8>,
        cuts: Vec<Index>,
        controls: Vec<(Index, u8, Vec<u8>)>,
        mask: [u8; 4],
        width: u8,
    }

    fn data() -> impl Strategy<Value = (bool, Vec<u8>)> {
        prop_oneof![
            4 => vec(any::<char>(), 0..120)
                .prop_map(|c| (false, c.into_iter().collect::<String>().into_bytes())),
            3 => vec(any::<u8>(), 0..300).prop_map(|b| (true, b)),
            // The 16- and 64-bit length classes.
            1 => (any::<bool>(), 126usize..70_000).prop_map(|(binary, n)| (binary, vec![b'm'; n])),
        ]
    }

    fn message() -> impl Strategy<Value = Message> {
        let control = (
            any::<Index>(),
            prop_oneof![Just(OP_PING), Just(OP_PONG), Just(OP_CLOSE)],
            vec(any::<u8>(), 0..=125),
        );
        (
            data(),
            vec(any::<Index>(), 0..4),
            vec(control, 0..3),
            any::<[u8; 4]>(),
            0u8..3,
        )
            .prop_map(|((binary, data), cuts, controls, mask, width)| Message {
                binary,
                data,
                cuts,
                controls,
                mask,
                width,
            })
    }

    /// The bytes on the wire, and what the decoder must make of them.
    fn encode(messages: &[Message]) -> (Vec<u8>, Vec<Incoming>) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for m in messages {
            let mut at: Vec<usize> = m.cuts.iter().map(|i| i.index(m.data.len() + 1)).collect();
            at.sort_unstable();
            at.push(m.data.len());
            let mut start = 0;
            let fragments = at.len();
            for (n, end) in at.into_iter().enumerate() {
                let opcode = match (n, m.binary) {
                    (0, false) => OP_TEXT,
                    (0, true) => OP_BINARY,
                    _ => OP_CONTINUATION,
                };
                let last = n + 1 == fragments;
                wire.extend(frame_bytes(
                    last,
                    opcode,
                    &m.data[start..end],
                    m.mask,
                    m.width,
                ));
                start = end;
                if last {
                    want.push(if m.binary {
                        Incoming::Binary(m.data.clone())
                    } else {
                        Incoming::Text(String::from_utf8(m.data.clone()).unwrap())
                    });
                }
                for (_, opcode, payload) in m.controls.iter().filter(|c| c.0.index(fragments) == n)
                {
                    wire.extend(frame_bytes(true, *opcode, payload, m.mask, 0));
                    want.push(match *opcode {
                        OP_PING => Incoming::Ping(payload.clone()),
                        OP_PONG => Incoming::Pong,
                        _ => Incoming::Close,
                    });
                }
            }
        }
        (wire, want)
    }

    /// Feeds `wire` to a decoder in chunks of the sizes in `cuts` (then the rest at once),
    /// decoding after each, as the reader does; checks the bounds on the way. Stops at the
    /// first refusal.
    fn feed(wire: &[u8], cuts: &[usize], max: usize) -> Result<Vec<Incoming>, Violation> {
        let mut decoder = Decoder::new(max);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut at = 0;
        let mut sizes = cuts.iter().copied().chain(std::iter::once(usize::MAX));
        while at < wire.len() {
            let take = sizes.next().unwrap_or(usize::MAX).min(wire.len() - at);
            buf.extend_from_slice(&wire[at..at + take]);
            at += take;
            loop {
                let mut need = 0;
                let next = decoder.next(&mut buf, &mut need);
                // A control frame may carry 125 bytes whatever the cap.
                let most = max.max(125) + MAX_HEADER;
                assert!(need <= most, "asks for {need} bytes, cap {max}");
                let partial = decoder.partial.as_ref().map_or(0, |(_, p)| p.len());
                assert!(partial <= max, "holds {partial} bytes, cap {max}");
                match next {
                    Ok(Some(m)) => {
                        if let Incoming::Text(t) = &m {
                            assert!(t.len() <= max);
                        }
                        if let Incoming::Binary(b) = &m {
                            assert!(b.len() <= max);
                        }
                        got.push(m);
                    }
                    Ok(None) => break,
                    Err(v) => {
                        assert!(
                            [CLOSE_PROTOCOL, CLOSE_INVALID_DATA, CLOSE_TOO_BIG].contains(&v.code),
                            "{v:?}"
                        );
                        return Err(v);
                    }
                }
            }
        }
        Ok(got)
    }

    /// Valid frames with some bytes changed (header bits, lengths, masks, payload), or noise.
    fn damaged_wire() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            3 => (vec(message(), 1..4), vec((any::<Index>(), any::<u8>()), 1..4)).prop_map(
                |(messages, flips)| {
                    let (mut wire, _) = encode(&messages);
                    for (i, x) in flips {
                        let i = i.index(wire.len().min(64));
                        wire[i] ^= x;
                    }
                    wire
                }
            ),
            1 => vec(any::<u8>(), 0..200),
        ]
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn decodes_exactly_what_the_client_encoded_however_split(
            messages in vec(message(), 1..5),
            cuts in vec(1usize..40, 0..40),
        ) {
            let (wire, want) = encode(&messages);
            prop_assert_eq!(feed(&wire, &cuts, 1 << 17), Ok(want));
        }

        #[test]
        fn any_bytes_decode_alike_however_split_within_bounds(
            wire in damaged_wire(),
            cuts in vec(1usize..24, 0..64),
            max in 0usize..400,
        ) {
            prop_assert_eq!(feed(&wire, &[], max), feed(&wire, &cuts, max));
        }

        #[test]
        fn text_that_is_not_utf8_is_refused(
            bytes in vec(any::<u8>(), 1..200).prop_filter("not UTF-8", |b| std::str::from_utf8(b).is_err()),
            cuts in vec(any::<Index>(), 0..3),
            mask in any::<[u8; 4]>(),
        ) {
            let m = Message { binary: false, data: bytes, cuts, controls: Vec::new(), mask, width: 0 };
            let mut wire = Vec::new();
            let mut at: Vec<usize> = m.cuts.iter().map(|i| i.index(m.data.len() + 1)).collect();
            at.sort_unstable();
            at.push(m.data.len());
            let mut start = 0;
            for (n, end) in at.iter().enumerate() {
                let opcode = if n == 0 { OP_TEXT } else { OP_CONTINUATION };
                wire.extend(frame_bytes(n + 1 == at.len(), opcode, &m.data[start..*end], mask, 0));
                start = *end;
            }
            prop_assert_eq!(feed(&wire, &[], 1 << 10).unwrap_err().code, CLOSE_INVALID_DATA);
        }

        /// A length field beyond the cap, up to 2^64 - 1, is refused once the header is in,
        /// before any payload arrives and without reserving room for it.
        #[test]
        fn oversized_lengths_are_refused_from_the_header(
            len in 1_025u64..=u64::MAX,
            opcode in prop_oneof![Just(OP_TEXT), Just(OP_BINARY)],
            mask in any::<[u8; 4]>(),
        ) {
            let mut wire = vec![0x80 | opcode, 0x80 | 127];
            wire.extend_from_slice(&len.to_be_bytes());
            wire.extend_from_slice(&mask);
            prop_assert_eq!(feed(&wire, &[1, 1, 1, 1, 1], 1 << 10).unwrap_err().code, CLOSE_TOO_BIG);
        }

        /// Unmasked frames, reserved bits and reserved opcodes: a protocol error.
        #[test]
        fn forbidden_headers_are_protocol_errors(
            case in 0u8..3,
            opcode in prop_oneof![3u8..=7, 0xBu8..=0xF],
            rsv in 1u8..=7,
            payload in vec(any::<u8>(), 0..100),
            mask in any::<[u8; 4]>(),
        ) {
            let mut wire = frame_bytes(true, OP_TEXT, &payload, mask, 0);
            match case {
                0 => {
                    // Unmasked: the mask bit off (the payload is then read as it is).
                    wire[1] &= 0x7F;
                }
                1 => wire[0] |= rsv << 4,
                _ => wire[0] = 0x80 | opcode,
            }
            prop_assert_eq!(feed(&wire, &[1], 1 << 10).unwrap_err().code, CLOSE_PROTOCOL);
        }
    }
}
