//! The embedded web app at `/`: the page, the history fallback for a browser's navigation, and
//! that nothing of the API or Socket.IO is shadowed by it. Works whether `web/dist` holds the
//! built app or `build.rs`'s placeholder.

use crate::common;

use common::TestServer;

async fn get(server: &TestServer, path: &str, accept: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(format!("{}{path}", server.base_url()))
        .header("accept", accept)
        .send()
        .await
        .expect("request")
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn the_app_is_served_at_the_root_and_for_its_own_paths() {
    let server = TestServer::start().await;
    let html = "text/html,application/xhtml+xml,*/*;q=0.8";

    let index = get(&server, "/", html).await;
    assert_eq!(index.status(), 200);
    assert!(header(&index, "content-type").starts_with("text/html"));
    assert_eq!(header(&index, "cache-control"), "no-cache");
    assert!(header(&index, "content-security-policy").contains("default-src 'self'"));
    let page = index.text().await.unwrap();
    assert!(page.contains("<title>Maestro</title>"), "{page}");

    // A browser opening an app path (the pairing link, a reload on a deep link) gets the app.
    let pair = get(&server, "/pair", html).await;
    assert_eq!(pair.status(), 200);
    assert_eq!(pair.text().await.unwrap(), page);

    // Not for a client that wants JSON, nor under /api: those keep the API's JSON 404.
    let json = get(&server, "/pair", "application/json").await;
    assert_eq!(json.status(), 404);
    assert_eq!(header(&json, "content-type"), "application/json");
    let api = get(&server, "/api/nope", html).await;
    assert_eq!(api.status(), 404);
    assert_eq!(
        api.json::<serde_json::Value>().await.unwrap()["code"],
        "NOT_FOUND"
    );

    // The agents' help page moved to /agents.
    let agents = get(&server, "/agents", html).await;
    assert_eq!(agents.status(), 200);
    assert!(agents.text().await.unwrap().contains("href=\"/api/docs\""));

    // Every hashed asset the page loads is cached for a year.
    for src in page
        .split('"')
        .filter(|s| s.starts_with("/assets/"))
        .collect::<Vec<_>>()
    {
        let asset = get(&server, src, "*/*").await;
        assert_eq!(asset.status(), 200, "{src}");
        assert_eq!(
            header(&asset, "cache-control"),
            "public, max-age=31536000, immutable",
            "{src}"
        );
    }
    server.stop().await;
}
