//! Bounds on what a client can hold open: the connection cap, the header-read timeout
//! (slowloris), and the legacy WebSocket's message size. Each test fails on a server without
//! the bound (it hangs until the wait runs out).

use crate::common;

use std::time::Duration;

use common::{TestServer, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server kept the connection open: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn a_client_that_trickles_its_headers_is_cut_off() {
    let server = TestServer::start_with(|c| c.header_read_timeout_secs = 1).await;
    let mut slow = TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    // One header byte every 200 ms: never a complete head, never idle long.
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            if slow.write_all(b"X").await.is_err() {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        slow
    });
    let mut slow = trickle.await.unwrap();
    let answer = read_to_close(&mut slow, WAIT).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "cut off without an answer, or with 408: {text}"
    );
    // Everyone else is served.
    assert_eq!(server.api().health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let server = TestServer::start_with(|c| c.max_connections = Some(2)).await;
    // The test server's own client (keep-alive) may hold one of the two permits; hold the
    // other with a raw connection, then one more.
    let idle_a = TcpStream::connect(server.addr()).await.unwrap();
    let idle_b = TcpStream::connect(server.addr()).await.unwrap();
    let waiting = tokio::spawn({
        let addr = server.addr();
        async move {
            common::raw_http(addr, "GET", "/health", None, Vec::new())
                .await
                .status
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "served beyond the cap");
    drop(idle_a);
    drop(idle_b);
    let status = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("served once a connection closed")
        .unwrap();
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_legacy_websocket_frame_over_the_body_limit_is_refused_without_reading_it() {
    let server = TestServer::start().await;
    let mut ws = TcpStream::connect(server.addr()).await.unwrap();
    ws.write_all(
        b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ws.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // A masked binary frame announcing 2 MiB (over MAX_BODY_BYTES, far under the WebSocket
    // library's own 64 MiB default), then only its first kilobyte.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(2u64 * 1024 * 1024).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    frame.extend_from_slice(&[0u8; 1024]);
    ws.write_all(&frame).await.unwrap();
    let answer = read_to_close(&mut ws, WAIT).await;
    // A close frame (opcode 8) with status 1009 "message too big", or a plain close.
    if !answer.is_empty() {
        assert_eq!(answer[0] & 0x0f, 8, "a close frame: {answer:?}");
        if answer.len() >= 4 {
            assert_eq!(u16::from_be_bytes([answer[2], answer[3]]), 1009);
        }
    }
    // The server is fine.
    assert_eq!(server.api().health().await.unwrap().status, "ok");
}

#[tokio::test]
async fn socketio_handshakes_beyond_the_session_cap_are_refused_before_any_upgrade() {
    let server = TestServer::start_with(|c| c.max_socketio_sessions = 2).await;
    let addr = server.addr();
    let handshake = || {
        common::raw_http(
            addr,
            "GET",
            "/socket.io/?EIO=4&transport=polling",
            None,
            Vec::new(),
        )
    };
    assert_eq!(handshake().await.status, 200);
    assert_eq!(handshake().await.status, 200);
    let refused = handshake().await;
    assert_eq!(
        refused.status,
        503,
        "{:?}",
        String::from_utf8_lossy(&refused.body)
    );
    // A WebSocket handshake is refused before the upgrade: no 101 for a session it cannot open.
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
    )
    .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 503),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}
