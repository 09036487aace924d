use super::*;

#[test]
fn query_and_sids() {
    let q = query(Some("EIO=4&transport=polling&t=Nx1&sid=abc"));
    assert_eq!(
        (q.eio, q.transport, q.sid),
        (Some("4"), Some("polling"), Some("abc"))
    );
    let q = query(None);
    assert!(q.eio.is_none() && q.sid.is_none());
    let a = new_sid();
    assert_eq!(a.len(), 20);
    assert_ne!(a, new_sid());
    assert!(
        a.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
}

#[test]
fn frames_serve_both_transports() {
    let f = Frame::text("42/ui,[\"x\"]");
    assert_eq!(&f.payload()[..], b"42/ui,[\"x\"]");
    assert_eq!(f.bytes[0], 0x81);
}

#[test]
fn only_trust_headers_are_kept() {
    let mut h = HeaderMap::new();
    h.insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
    h.insert(header::USER_AGENT, "x".parse().unwrap());
    let kept = kept_headers(&h);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[header::ORIGIN], "http://localhost:5173");
}

/// Echoes messages, text and binary (what the conformance server does).
struct Echo;

impl Handler for Echo {
    fn on_message<'a>(
        &'a self,
        session: &'a Arc<Session>,
        text: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        session.send(&Frame::text(&format!("4{text}")));
        Box::pin(std::future::ready(()))
    }

    fn on_binary<'a>(
        &'a self,
        session: &'a Arc<Session>,
        data: Bytes,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        session.send(&Frame::binary(&data));
        Box::pin(std::future::ready(()))
    }

    fn on_close(&self, _: &Arc<Session>) {}
}

/// Takes only text, like Maestro's namespaces.
struct TextOnly;

impl Handler for TextOnly {
    fn on_message<'a>(
        &'a self,
        _: &'a Arc<Session>,
        _: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(std::future::ready(()))
    }

    fn on_close(&self, _: &Arc<Session>) {}
}

fn engine(handler: Arc<dyn Handler>, interval_ms: u64, timeout_ms: u64) -> Arc<Engine> {
    let config = EngineConfig {
        ping_interval: Duration::from_millis(interval_ms),
        ping_timeout: Duration::from_millis(timeout_ms),
        max_payload: 1_000_000,
        max_sessions: 1_000,
        max_sessions_per_address: 1_000,
        connect_timeout: None,
    };
    Engine::new(
        config,
        handler,
        TaskTracker::new(),
        CancellationToken::new(),
    )
}

/// One polling request straight to the engine: status and body.
async fn polling(
    engine: &Arc<Engine>,
    sid: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut uri = "/socket.io/?EIO=4&transport=polling".to_owned();
    if let Some(sid) = sid {
        uri.push_str(&format!("&sid={sid}"));
    }
    let req = Request::builder()
        .method(if body.is_some() { "POST" } else { "GET" })
        .uri(uri)
        .body(Body::from(body.unwrap_or("").to_owned()))
        .unwrap();
    let res = engine.clone().serve(req, None).await;
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn open(engine: &Arc<Engine>) -> String {
    let (status, body) = polling(engine, None, None).await;
    assert_eq!(status, StatusCode::OK);
    let open: serde_json::Value = serde_json::from_str(&body[1..]).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_malformed_polling_payload_is_refused_and_ends_the_session() {
    let engine = engine(Arc::new(Echo), 25_000, 20_000);
    let sid = open(&engine).await;
    assert_eq!(
        polling(&engine, Some(&sid), Some("4hi")).await,
        (StatusCode::OK, "ok".into())
    );
    assert_eq!(polling(&engine, Some(&sid), None).await.1, "4hi");
    let (status, _) = polling(&engine, Some(&sid), Some("abc")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = polling(&engine, Some(&sid), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(engine.sessions(), 0);
}

#[tokio::test]
async fn a_client_close_ends_a_waiting_poll_with_a_noop() {
    let engine = engine(Arc::new(Echo), 25_000, 20_000);
    let sid = open(&engine).await;
    let waiting = {
        let (engine, sid) = (engine.clone(), sid.clone());
        tokio::spawn(async move { polling(&engine, Some(&sid), None).await })
    };
    // The `GET` is waiting once it has marked the session.
    while !engine.lookup(&sid).unwrap().out.lock().unwrap().polling {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        polling(&engine, Some(&sid), Some("1")).await.0,
        StatusCode::OK
    );
    assert_eq!(waiting.await.unwrap(), (StatusCode::OK, "6".into()));
    assert_eq!(
        polling(&engine, Some(&sid), None).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// The client sends its last `GET` alongside the `POST` that closes; when the `POST`
/// arrives first, the `GET` still gets its noop, and only later ones are refused.
#[tokio::test]
async fn a_get_that_arrives_after_the_client_closed_gets_a_noop_once() {
    let engine = engine(Arc::new(Echo), 25_000, 20_000);
    let sid = open(&engine).await;
    assert_eq!(
        polling(&engine, Some(&sid), Some("1")).await.0,
        StatusCode::OK
    );
    assert_eq!(engine.sessions(), 0);
    assert_eq!(
        polling(&engine, Some(&sid), None).await,
        (StatusCode::OK, "6".into())
    );
    assert_eq!(
        polling(&engine, Some(&sid), None).await.0,
        StatusCode::BAD_REQUEST
    );
    // A POST to the closed session is still refused.
    assert_eq!(
        polling(&engine, Some(&sid), Some("4late")).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn a_session_that_joins_nothing_within_the_connect_timeout_is_closed() {
    let engine = Engine::new(
        EngineConfig {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_payload: 1_000_000,
            max_sessions: 1_000,
            max_sessions_per_address: 1_000,
            connect_timeout: Some(Duration::from_millis(100)),
        },
        Arc::new(Echo),
        TaskTracker::new(),
        CancellationToken::new(),
    );
    tokio::spawn(engine.clone().heartbeat());
    let idle = open(&engine).await;
    let joined = open(&engine).await;
    engine.lookup(&joined).unwrap().mark_joined();
    // Waits for the heartbeat rather than for a fixed time: the idle one goes, and the
    // joined one is still there after it went.
    while engine.lookup(&idle).is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(engine.lookup(&joined).is_some());
    assert_eq!(
        polling(&engine, Some(&idle), None).await.0,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn binary_messages_over_polling_reach_a_handler_that_takes_them() {
    let engine = engine(Arc::new(Echo), 25_000, 20_000);
    let sid = open(&engine).await;
    let (status, _) = polling(&engine, Some(&sid), Some("4hello\x1ebAQIDBA==")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        polling(&engine, Some(&sid), None).await.1,
        "4hello\x1ebAQIDBA=="
    );
    // Not base64: not a packet.
    let (status, _) = polling(&engine, Some(&sid), Some("b!!")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(engine.sessions(), 0);
}

#[tokio::test]
async fn binary_messages_close_the_session_by_default() {
    let engine = engine(Arc::new(TextOnly), 25_000, 20_000);
    let sid = open(&engine).await;
    polling(&engine, Some(&sid), Some("bAQIDBA==")).await;
    assert_eq!(
        polling(&engine, Some(&sid), None).await.0,
        StatusCode::BAD_REQUEST
    );
}

/// With a short interval and timeout (the conformance suites use 300 ms and 200 ms), every
/// session's first ping leaves within the interval, and a client that does not answer is
/// gone once the timeout has passed too. The heartbeat used to look every 250 ms whatever
/// the configuration, so pings left up to 250 ms late: after the client, which waits
/// `ping_interval + ping_timeout`, had given up.
#[tokio::test]
async fn pings_leave_within_the_interval_and_silence_ends_the_session() {
    let engine = engine(Arc::new(Echo), 300, 200);
    tokio::spawn(engine.clone().heartbeat());
    let mut polls = Vec::new();
    for _ in 0..16 {
        let sid = open(&engine).await;
        let opened = Instant::now();
        let engine = engine.clone();
        polls.push(tokio::spawn(async move {
            let first = polling(&engine, Some(&sid), None).await;
            (sid, opened, opened.elapsed(), first)
        }));
    }
    let mut sids = Vec::new();
    for poll in polls {
        let (sid, opened, after, first) = poll.await.unwrap();
        assert_eq!(first, (StatusCode::OK, "2".into()));
        assert!(
            after <= Duration::from_millis(300 + 30),
            "first ping after {after:?}"
        );
        sids.push((sid, opened));
    }
    // Nobody answers.
    for (sid, opened) in sids {
        let gone = opened + Duration::from_millis(300 + 200 + 30);
        tokio::time::sleep_until(gone.into()).await;
        let (status, body) = polling(&engine, Some(&sid), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    }
}

/// A packet as the client's encoder writes it into a polling payload, and what the echo
/// handler answers (`None`: nothing).
fn packet() -> impl proptest::strategy::Strategy<Value = (String, Option<String>)> {
    use proptest::prelude::*;
    let text = proptest::collection::vec(any::<char>(), 0..40)
        .prop_map(|c| c.into_iter().filter(|c| *c != '\x1e').collect::<String>());
    prop_oneof![
        text.clone()
            .prop_map(|t| (format!("4{t}"), Some(format!("4{t}")))),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            let packet = format!("b{}", BASE64.encode(&b));
            (packet.clone(), Some(packet))
        }),
        text.prop_map(|t| (format!("2{t}"), Some(format!("3{t}")))),
        Just(("6".to_owned(), None)),
    ]
}

/// Polling payloads: what the client's encoder writes comes back from the echo handler
/// packet for packet; any other body is taken (200) or refused (400, and the session is
/// gone), never a panic.
#[test]
fn polling_payloads_parse_or_are_refused() {
    use proptest::prelude::*;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(packets in proptest::collection::vec(packet(), 1..8))| {
        let body: Vec<&str> = packets.iter().map(|(p, _)| p.as_str()).collect();
        let want: Vec<&str> = packets.iter().filter_map(|(_, r)| r.as_deref()).collect();
        let (status, echoed) = runtime.block_on(async {
            let engine = engine(Arc::new(Echo), 25_000, 20_000);
            let sid = open(&engine).await;
            let (status, _) = polling(&engine, Some(&sid), Some(&body.join("\x1e"))).await;
            let echoed = if want.is_empty() {
                String::new()
            } else {
                polling(&engine, Some(&sid), None).await.1
            };
            (status, echoed)
        });
        prop_assert_eq!(status, StatusCode::OK);
        prop_assert_eq!(echoed, want.join("\x1e"));
    });
    proptest!(config, |(
        packets in proptest::collection::vec(packet(), 0..6),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 0..4),
        noise in proptest::collection::vec(any::<u8>(), 0..64),
    )| {
        let body: Vec<&str> = packets.iter().map(|(p, _)| p.as_str()).collect();
        let mut body = body.join("\x1e").into_bytes();
        for (i, x) in flips {
            if !body.is_empty() {
                let i = i.index(body.len());
                body[i] ^= x;
            }
        }
        body.extend(noise);
        let (status, found) = runtime.block_on(async {
            let engine = engine(Arc::new(Echo), 25_000, 20_000);
            let sid = open(&engine).await;
            let req = Request::builder()
                .method("POST")
                .uri(format!("/socket.io/?EIO=4&transport=polling&sid={sid}"))
                .body(Body::from(body))
                .unwrap();
            let status = engine.clone().serve(req, None).await.status();
            (status, engine.lookup(&sid).is_some())
        });
        prop_assert!(status == StatusCode::OK || status == StatusCode::BAD_REQUEST, "{}", status);
        if status == StatusCode::BAD_REQUEST {
            prop_assert!(!found, "a refused payload ends the session");
        }
    });
}
