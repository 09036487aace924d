//! `maestro token`, `maestro pair` and `maestro devices` against a real server, and the CLI on
//! a server that wants a credential from this machine too (`AUTH=required`).

use crate::support;

use serde_json::Value;
use support::Server;

/// A request as tunnel traffic arrives (from loopback, with cloudflared's header).
async fn remote_get(server: &Server, path: &str, token: Option<&str>) -> u16 {
    let mut req = reqwest::Client::new()
        .get(format!("{}{path}", server.url))
        .header("cf-connecting-ip", "203.0.113.5");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked() {
    let server = Server::start().await;
    let created = server
        .cli()
        .run(&[
            "token", "create", "--scope", "read", "--name", "ci", "--json",
        ])
        .ok()
        .data();
    let token = created["token"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["scope"], "read");
    assert_eq!(
        remote_get(&server, "/api/projects", Some(&token)).await,
        200
    );

    let human = server.cli().run(&["token", "list"]).ok();
    assert!(
        human.stdout.contains(&id) && human.stdout.contains("ci"),
        "{human:?}"
    );
    assert!(!human.stdout.contains(&token), "the secret is never listed");
    let listed = server.cli().run(&["token", "list", "--json"]).ok().data();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"ci") && names.iter().any(|n| n.starts_with("owner (")));

    server.cli().run(&["token", "revoke", &id]).ok();
    assert_eq!(
        remote_get(&server, "/api/projects", Some(&token)).await,
        401
    );
    let again = server
        .cli()
        .run(&["token", "revoke", &id, "--json"])
        .code(1);
    assert_eq!(again.error_code(), "resource_not_found");
    // Bad input is a usage error.
    server
        .cli()
        .run(&["token", "create", "--scope", "root", "--name", "x"])
        .code(2);
}

#[tokio::test]
async fn pair_prints_a_url_a_qr_code_and_a_short_code() {
    let server = Server::start().await;
    let out = server.cli().run(&["pair", "--name", "Pixel 8"]).ok();
    assert!(out.stdout.contains("/pair#c="), "{out:?}");
    assert!(
        out.stdout.contains('▀') || out.stdout.contains('▄') || out.stdout.contains('█'),
        "a QR code in half blocks: {out:?}"
    );
    assert!(out.stdout.contains("only works on this machine"), "{out:?}");

    let pairing = server
        .cli()
        .run(&["pair", "--scope", "read", "--json"])
        .ok()
        .data();
    let short = pairing["shortCode"].as_str().unwrap();
    let paired: Value = reqwest::Client::new()
        .post(format!("{}/api/auth/pair", server.url))
        .json(&serde_json::json!({ "code": short, "deviceName": "Tablet", "returnToken": true }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paired["scope"], "read", "{paired}");

    let devices = server.cli().run(&["devices", "list", "--json"]).ok().data();
    assert_eq!(devices.as_array().unwrap().len(), 1);
    assert_eq!(devices[0]["name"], "Tablet");
    let token = paired["token"].as_str().unwrap();
    assert_eq!(remote_get(&server, "/api/projects", Some(token)).await, 200);
    let id = devices[0]["id"].as_str().unwrap();
    server.cli().run(&["devices", "revoke", id]).ok();
    assert_eq!(remote_get(&server, "/api/projects", Some(token)).await, 401);
    let human = server.cli().run(&["devices", "list"]).ok();
    assert!(human.stdout.contains("No paired devices"), "{human:?}");
}

#[tokio::test]
async fn with_auth_required_the_local_cli_uses_the_owner_token() {
    let server = Server::start_with_env(&[("AUTH", "required")]).await;
    assert_eq!(
        reqwest::get(format!("{}/api/projects", server.url))
            .await
            .unwrap()
            .status(),
        401
    );
    // Without the data directory the CLI has no credential: refused, and it says so.
    let refused = server.cli().run(&["project", "list", "--json"]).code(1);
    assert_eq!(refused.error_code(), "unauthorized", "{refused:?}");
    assert!(
        refused.json()["suggestion"]
            .as_str()
            .unwrap()
            .contains("owner-token")
    );
    // With it, the owner token is used after the 401, for reads and writes alike.
    let data_dir = server.dir.path().to_str().unwrap().to_owned();
    server
        .cli()
        .env("DATA_DIR", &data_dir)
        .run(&["project", "create", "p", "--dir", "/tmp", "--json"])
        .ok();
    let list = server
        .cli()
        .env("DATA_DIR", &data_dir)
        .run(&["project", "list", "--json"])
        .ok()
        .data();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // An explicit token wins over the owner token, and a wrong one is not papered over.
    server
        .cli()
        .env("DATA_DIR", &data_dir)
        .env("MAESTRO_TOKEN", "tok_1_x.wrong")
        .run(&["project", "list", "--json"])
        .code(1);
}

/// Something else answers on the port (the server is down, another program took it) and asks
/// for a credential: the CLI does not hand it this machine's owner token, because it cannot
/// prove it is the server that wrote it, and says so.
#[tokio::test]
async fn the_owner_token_is_not_sent_to_an_impostor() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                log.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                // Asks for a credential, and "proves" nothing it could not have made up.
                let body = r#"{"error":true,"code":"UNAUTHORIZED","message":"credential needed","proof":"00"}"#;
                let answer = format!(
                    "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let secret = "tok_owner.s3cret-owner-token-value";
    std::fs::write(data.join("owner-token"), secret).unwrap();
    let out = tokio::task::spawn_blocking({
        let (url, data, home) = (url.clone(), data.clone(), home.path().to_owned());
        move || {
            support::Cli::new(Some(&url), &home)
                .env("DATA_DIR", data.to_str().unwrap())
                .run(&["project", "list", "--json"])
                .code(1)
        }
    })
    .await
    .unwrap();
    assert_eq!(out.error_code(), "not_our_server", "{out:?}");
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|r| !r.contains("s3cret")),
        "the owner token reached the impostor: {requests:?}"
    );
}

/// A server URL with user info names another host than it seems to: refused before anything
/// is sent.
#[tokio::test]
async fn a_server_url_with_user_info_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let home = home.path().to_owned();
        move || {
            support::Cli::new(Some("http://localhost:1@evil.example"), &home)
                .run(&["project", "list", "--json"])
                .code(2)
        }
    })
    .await
    .unwrap();
    assert_eq!(out.error_code(), "invalid_argument", "{out:?}");
    assert!(
        out.stdout.contains("user info") || out.stderr.contains("user info"),
        "{out:?}"
    );
}

/// With `AUTH=required`, the CLI's WebSocket (the legacy event stream of `maestro session
/// watch`, as `maestro run` uses it for replies) carries the owner token too: a WebSocket cannot
/// retry after a 401.
#[tokio::test]
async fn with_auth_required_watch_streams_with_the_owner_token() {
    let server = Server::start_with_env(&[("AUTH", "required")]).await;
    let data_dir = server.dir.path().to_str().unwrap().to_owned();
    let cli = || server.cli().env("DATA_DIR", &data_dir);
    let p = cli()
        .run(&["project", "create", "p", "--dir", "/tmp", "--json"])
        .ok()
        .data();
    let sid = "sess_authwatch".to_owned();
    cli()
        .project(p["id"].as_str().unwrap())
        .session(&sid)
        .run(&["session", "register"])
        .ok();
    cli().session(&sid).run(&["session", "complete"]).ok();
    // The session is over: watch connects, reads the status and returns at once.
    let out = cli()
        .run(&["session", "watch", &sid, "--timeout", "20000"])
        .ok();
    assert!(
        out.stdout.contains("All watched sessions have finished."),
        "{out:?}"
    );
}
