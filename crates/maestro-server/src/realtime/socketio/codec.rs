//! The Socket.IO packets on the wire (`<type>[<ns>,][<ack id>]<json>`): parsing a client's
//! packet, encoding the server's (`40` connect, `41` disconnect, `42` event, `43` ack, `44`
//! connect error), and reading an event's JSON payload.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Kind;
use crate::error::{Error, Result};

/// `42<ns>,["event",data]`; `None` (logged) if `data` cannot be encoded.
pub(super) fn event_packet<T: Serialize + ?Sized>(
    kind: Kind,
    event: &str,
    data: &T,
) -> Option<String> {
    match serde_json::to_string(&(event, data)) {
        Ok(args) => Some(format!("42{},{args}", kind.namespace())),
        Err(e) => {
            tracing::error!(error = %e, event, "cannot encode a socket.io event");
            None
        }
    }
}

/// `40<ns>,{"sid"}`: the namespace is connected.
pub(super) fn connect_packet(ns: &str, sid: &str) -> String {
    let reply = json!({ "sid": sid });
    format!("40{ns},{reply}")
}

/// `41<ns>,`: the server disconnects the namespace.
pub(super) fn disconnect_packet(ns: &str) -> String {
    format!("41{ns},")
}

/// `43<ns>,<id>[body]`: the ack of a client event.
pub(super) fn ack_packet(ns: &str, id: u64, body: Value) -> String {
    format!("43{ns},{id}{}", json!([body]))
}

/// `44<ns>,{"message"}`: the namespace refused the handshake (the client's `connect_error`).
pub(super) fn connect_error_packet(ns: &str, message: &str) -> String {
    let reply = json!({ "message": message });
    format!("44{ns},{reply}")
}

/// A Socket.IO packet from the client: `<type>[<ns>,][<ack id>]<json>`.
pub(super) struct Packet<'a> {
    pub(super) kind: u8,
    pub(super) ns: &'a str,
    pub(super) id: Option<u64>,
    pub(super) data: &'a str,
}

impl<'a> Packet<'a> {
    pub(super) fn parse(text: &'a str) -> Option<Self> {
        let kind = *text.as_bytes().first()?;
        if !kind.is_ascii_digit() {
            return None;
        }
        let mut rest = &text[1..];
        let ns = if rest.starts_with('/') {
            match rest.find(',') {
                Some(i) => {
                    let ns = &rest[..i];
                    rest = &rest[i + 1..];
                    ns
                }
                None => std::mem::take(&mut rest),
            }
        } else {
            "/"
        };
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let id = if digits > 0 {
            Some(rest[..digits].parse().ok()?)
        } else {
            None
        };
        Some(Self {
            kind,
            ns,
            id,
            data: &rest[digits..],
        })
    }
}

/// Reads a payload: absent means `{}`; anything but an object, or a field of the wrong type,
/// is a `VALIDATION_ERROR`.
pub(super) fn parse<T: DeserializeOwned>(data: Value) -> Result<T> {
    let data = match data {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => data,
        _ => return Err(Error::validation("Invalid payload: expected a JSON object")),
    };
    serde_json::from_value(data).map_err(|e| Error::validation(format!("Invalid payload: {e}")))
}

pub(super) fn to_object<T: Serialize>(value: &T) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_protocol::StopSession;

    #[test]
    fn packets_parse_as_socket_io_writes_them() {
        let p = Packet::parse("2/ui,12[\"subscribe\",{}]").unwrap();
        assert_eq!(
            (p.kind, p.ns, p.id, p.data),
            (b'2', "/ui", Some(12), "[\"subscribe\",{}]")
        );
        let p = Packet::parse("0/mobile,{\"projectId\":\"p\"}").unwrap();
        assert_eq!((p.kind, p.ns, p.id), (b'0', "/mobile", None));
        assert_eq!(p.data, "{\"projectId\":\"p\"}");
        let p = Packet::parse("1/ui").unwrap();
        assert_eq!((p.kind, p.ns, p.data), (b'1', "/ui", ""));
        let p = Packet::parse("2[\"x\"]").unwrap();
        assert_eq!(p.ns, "/");
        assert!(Packet::parse("").is_none());
        assert!(Packet::parse("x").is_none());
        assert!(Packet::parse("2/ui,99999999999999999999999[]").is_none());
    }

    #[test]
    fn payloads() {
        let r: StopSession = parse(Value::Null).unwrap();
        assert_eq!(r.session_id, None);
        assert_eq!(
            parse::<StopSession>(json!([1])).unwrap_err().code(),
            "VALIDATION_ERROR"
        );
        assert_eq!(
            parse::<StopSession>(json!({ "sessionId": 5 }))
                .unwrap_err()
                .code(),
            "VALIDATION_ERROR"
        );
    }
}

/// Properties of the Socket.IO packet parser: every packet socket.io-client's encoder can
/// write parses back to its parts; binary packets (with attachments), which the hub refuses,
/// parse as what they are; and no text makes it panic.
#[cfg(test)]
mod packet_props {
    use super::*;
    use proptest::collection::vec;
    use proptest::prelude::*;

    fn text(chars: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        vec(any::<char>(), chars).prop_map(|c| c.into_iter().collect())
    }

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text(0..12).prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::Array),
                vec((text(0..6), inner), 0..4)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// What the encoder puts after the namespace: an array (events, acks) or an object
    /// (connect), never a bare scalar.
    fn payload() -> impl Strategy<Value = Option<Value>> {
        proptest::option::of(prop_oneof![
            vec(json(), 0..4).prop_map(Value::Array),
            vec((text(0..6), json()), 0..3)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ])
    }

    /// `/` or `/<name>` (a name has no comma: the comma ends it).
    fn namespace() -> impl Strategy<Value = String> {
        let name = vec(
            prop::sample::select(vec!['a', 'z', '-', '_', ':', '/', 'é', '0']),
            0..8,
        );
        prop_oneof![
            Just("/".to_owned()),
            name.prop_map(|c| format!("/{}", c.into_iter().collect::<String>())),
        ]
    }

    /// socket.io-parser's encoding: `<type>[<n>-][<ns>,][<id>][<json>]`.
    fn encode(
        kind: u8,
        attachments: Option<u8>,
        ns: &str,
        id: Option<u64>,
        data: &Option<Value>,
    ) -> String {
        let mut out = kind.to_string();
        if let Some(n) = attachments {
            out.push_str(&format!("{n}-"));
        }
        if ns != "/" {
            out.push_str(ns);
            out.push(',');
        }
        if let Some(id) = id {
            out.push_str(&id.to_string());
        }
        if let Some(data) = data {
            out.push_str(&data.to_string());
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn parses_what_the_client_encodes(
            kind in 0u8..=4,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
        ) {
            let packet = encode(kind, None, &ns, id, &data);
            let parsed = Packet::parse(&packet).expect("a packet");
            prop_assert_eq!(parsed.kind, b'0' + kind);
            prop_assert_eq!(parsed.ns, ns.as_str());
            prop_assert_eq!(parsed.id, id);
            let want = data.map(|d| d.to_string()).unwrap_or_default();
            prop_assert_eq!(parsed.data, want.as_str());
        }

        /// Binary events and acks parse as types 5 and 6, which the hub refuses (closing the
        /// connection): Maestro's payloads are JSON.
        #[test]
        fn binary_packets_parse_as_binary(
            kind in 5u8..=6,
            attachments in 0u8..=20,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
        ) {
            let packet = encode(kind, Some(attachments), &ns, id, &data);
            let parsed = Packet::parse(&packet).expect("a packet");
            prop_assert_eq!(parsed.kind, b'0' + kind);
        }

        #[test]
        fn any_text_parses_or_is_refused(
            prefix in text(0..4),
            kind in 0u8..=9,
            ns in namespace(),
            id in proptest::option::of(any::<u64>()),
            data in payload(),
            noise in text(0..24),
        ) {
            for t in [
                format!("{prefix}{}", encode(kind, None, &ns, id, &data)),
                noise.clone(),
                format!("{kind}{noise}"),
                format!("{kind}/{noise}"),
            ] {
                if let Some(p) = Packet::parse(&t) {
                    prop_assert!(p.kind.is_ascii_digit());
                    prop_assert!(p.ns == "/" || t[1..].starts_with(p.ns));
                    prop_assert!(t.ends_with(p.data));
                }
            }
        }
    }
}
