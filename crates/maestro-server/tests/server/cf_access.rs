//! Cloudflare Access assertions against a local JWKS server, with RSA keys made here.
//!
//! The JWKS server counts the requests it answers, so the tests can see that refused
//! algorithms never cause a key lookup and that forged `kid`s cannot flood the key endpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use maestro_server::auth::access::{AccessError, AccessVerifier};
use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};

const TEAM: &str = "maestro-test";
const ISS: &str = "https://maestro-test.cloudflareaccess.com";
const AUD: &str = "4714c1358e65fe4b408ad6d432a5f878f08194bdb4752441fd56faefa9b2b6f2";

/// Keys are slow to make in a debug build: three, once per test binary, in parallel.
struct Keys {
    current: rsa::PrivateKey,
    next: rsa::PrivateKey,
    foreign: rsa::PrivateKey,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let make = || rsa::PrivateKey::new(&mut getrandom04::SysRng, 2048).expect("RSA key");
        std::thread::scope(|s| {
            let a = s.spawn(make);
            let b = s.spawn(make);
            let foreign = make();
            Keys {
                current: a.join().unwrap(),
                next: b.join().unwrap(),
                foreign,
            }
        })
    })
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unsigned_int(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// The JWKS entry Cloudflare publishes for `key`.
fn jwk(kid: &str, key: &rsa::PrivateKey) -> Value {
    let public = key.to_public_key();
    json!({
        "kid": kid,
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "e": b64(unsigned_int(&public.e().to_be_bytes())),
        "n": b64(unsigned_int(&public.n().as_ref().to_be_bytes())),
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims as Access sends them, valid now.
fn claims() -> Value {
    let now = now();
    json!({
        "aud": [AUD],
        "email": "dev@example.com",
        "exp": now + 300,
        "iat": now,
        "nbf": now - 5,
        "iss": ISS,
        "type": "app",
        "identity_nonce": "6ei69kawdKzMIAPF",
        "sub": "7335d417-61da-459d-899c-0a01c76a2f94",
        "country": "FR",
    })
}

fn sign(key: &rsa::PrivateKey, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let der = key.to_pkcs1_der().expect("PKCS#1 DER");
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_rsa_der(der.as_bytes()))
        .expect("signing")
}

/// A JWKS endpoint whose key set the test can change, counting the requests it answers.
struct Jwks {
    url: String,
    keys: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
}

impl Jwks {
    async fn start(keys: Vec<Value>) -> Self {
        let state = (
            Arc::new(Mutex::new(json!({ "keys": keys }))),
            Arc::new(AtomicUsize::new(0)),
        );
        async fn certs(
            State((keys, hits)): State<(Arc<Mutex<Value>>, Arc<AtomicUsize>)>,
        ) -> axum::Json<Value> {
            hits.fetch_add(1, Ordering::SeqCst);
            axum::Json(keys.lock().unwrap().clone())
        }
        let app = Router::new()
            .route("/cdn-cgi/access/certs", get(certs))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}/cdn-cgi/access/certs"),
            keys: state.0,
            hits: state.1,
        }
    }

    fn verifier(&self) -> AccessVerifier {
        AccessVerifier::with_certs_url(TEAM, AUD, &self.url)
    }

    fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().unwrap() = json!({ "keys": keys });
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn refused(verifier: &AccessVerifier, token: &str) -> &'static str {
    match verifier.verify(token).await {
        Ok(id) => panic!("accepted: {id:?}"),
        Err(e) => e.reason(),
    }
}

#[tokio::test]
async fn a_valid_assertion_is_accepted_and_names_the_user() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let verifier = jwks.verifier();
    let id = verifier
        .verify(&sign(&k.current, "k1", &claims()))
        .await
        .unwrap();
    assert_eq!(id.email.as_deref(), Some("dev@example.com"));
    assert_eq!(id.sub, "7335d417-61da-459d-899c-0a01c76a2f94");

    // `aud` as a plain string, and a service token (no email, empty sub), are accepted too.
    let mut service = claims();
    service["aud"] = json!(AUD);
    service["sub"] = json!("");
    service.as_object_mut().unwrap().remove("email");
    let id = verifier
        .verify(&sign(&k.current, "k1", &service))
        .await
        .unwrap();
    assert_eq!(id.email, None);
    assert_eq!(id.sub, "");
    assert_eq!(jwks.hits(), 1, "keys are cached");
}

#[tokio::test]
async fn expiry_and_not_before_hold_with_a_minute_of_leeway() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let verifier = jwks.verifier();
    let with = |field: &str, value: u64| {
        let mut c = claims();
        c[field] = json!(value);
        sign(&k.current, "k1", &c)
    };
    assert_eq!(
        refused(&verifier, &with("exp", now() - 120)).await,
        "expired"
    );
    assert_eq!(
        refused(&verifier, &with("nbf", now() + 600)).await,
        "not_yet_valid"
    );
    // Within the leeway: a clock a little behind or ahead is not a failure.
    verifier.verify(&with("exp", now() - 20)).await.unwrap();
    verifier.verify(&with("nbf", now() + 20)).await.unwrap();

    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(&verifier, &sign(&k.current, "k1", &no_exp)).await,
        "missing_claim"
    );
}

#[tokio::test]
async fn another_application_or_team_is_refused() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let verifier = jwks.verifier();

    let mut c = claims();
    c["aud"] = json!(["another-application-tag"]);
    assert_eq!(
        refused(&verifier, &sign(&k.current, "k1", &c)).await,
        "bad_audience"
    );

    let mut c = claims();
    c["iss"] = json!("https://other-team.cloudflareaccess.com");
    assert_eq!(
        refused(&verifier, &sign(&k.current, "k1", &c)).await,
        "bad_issuer"
    );

    // The same JWKS configured for another application refuses a token for this one.
    let other = AccessVerifier::with_certs_url(TEAM, "another-application-tag", &jwks.url);
    assert_eq!(
        refused(&other, &sign(&k.current, "k1", &claims())).await,
        "bad_audience"
    );
}

#[tokio::test]
async fn a_token_signed_by_a_key_the_team_does_not_publish_is_refused() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let verifier = jwks.verifier();
    // Claiming the published kid: the signature does not verify.
    assert_eq!(
        refused(&verifier, &sign(&k.foreign, "k1", &claims())).await,
        "bad_signature"
    );
    // Under its own kid: no such key.
    assert_eq!(
        refused(&verifier, &sign(&k.foreign, "attacker", &claims())).await,
        "unknown_key"
    );
    // A tampered payload under a genuine signature.
    let token = sign(&k.current, "k1", &claims());
    let mut parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["email"] = json!("admin@example.com");
    let forged_payload = b64(c.to_string().as_bytes());
    parts[1] = &forged_payload;
    assert_eq!(refused(&verifier, &parts.join(".")).await, "bad_signature");
}

#[tokio::test]
async fn none_and_hs256_are_refused_before_any_key_lookup() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let verifier = jwks.verifier();

    // `alg: none`, with and without a signature part.
    let header = b64(br#"{"alg":"none","kid":"k1","typ":"JWT"}"#);
    let payload = b64(claims().to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        assert_eq!(refused(&verifier, &token).await, "bad_algorithm");
    }

    // HS256 keyed with the public key's bytes: a verifier that let the token choose the
    // algorithm would check this HMAC with the RSA public key as the secret, and accept it.
    let public = k.current.to_public_key();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    for secret in [
        public.to_pkcs1_der().unwrap().as_bytes().to_vec(),
        jwk("k1", &k.current).to_string().into_bytes(),
    ] {
        let token = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        assert_eq!(refused(&verifier, &token).await, "bad_algorithm");
    }
    assert_eq!(
        jwks.hits(),
        0,
        "a refused algorithm must not cause a key fetch"
    );
}

#[tokio::test]
async fn a_rotated_key_is_picked_up_and_forged_kids_cannot_flood_the_key_endpoint() {
    let k = keys();
    // Every token is signed before the clock matters: signing is slow in a debug build, and
    // the phases below must each fit well inside the refetch interval.
    let token = sign(&k.current, "k1", &claims());
    let rotated = sign(&k.next, "k2", &claims());
    let forged: Vec<String> = (0..50)
        .map(|i| sign(&k.foreign, &format!("forged-{i}"), &claims()))
        .collect();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let interval = Duration::from_millis(2500);
    let verifier = jwks.verifier().with_refetch_interval(interval);

    // Concurrent first requests share one fetch.
    let results = futures_util::future::join_all((0..20).map(|_| verifier.verify(&token))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(jwks.hits(), 1);

    // Cloudflare rotates: the next key is published and starts signing.
    jwks.set_keys(vec![jwk("k2", &k.next)]);
    // Right after a fetch the new kid is not looked up yet…
    assert_eq!(refused(&verifier, &rotated).await, "unknown_key");
    assert_eq!(jwks.hits(), 1);
    // …and a burst of forged kids does not reach the endpoint either.
    let results = futures_util::future::join_all(forged.iter().map(|t| verifier.verify(t))).await;
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(AccessError::UnknownKey)))
    );
    assert_eq!(jwks.hits(), 1, "forged kids refetched the keys");

    // Once the interval has passed, the next unknown kid refetches once, and the new key works.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    verifier.verify(&rotated).await.unwrap();
    assert_eq!(jwks.hits(), 2);
    // The withdrawn key is gone with the old key set.
    assert_eq!(refused(&verifier, &token).await, "unknown_key");

    // A burst after the interval costs exactly one more fetch, however many kids it forges.
    tokio::time::sleep(interval + Duration::from_millis(50)).await;
    let results = futures_util::future::join_all(forged.iter().map(|t| verifier.verify(t))).await;
    assert!(results.iter().all(Result::is_err));
    assert_eq!(jwks.hits(), 3);
}

#[tokio::test]
async fn an_unreachable_key_endpoint_is_reported_as_such() {
    let k = keys();
    // A port nothing listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/cdn-cgi/access/certs",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let verifier = AccessVerifier::with_certs_url(TEAM, AUD, &url);
    let token = sign(&k.current, "k1", &claims());
    assert_eq!(refused(&verifier, &token).await, "certs_unavailable");
    // Throttled: the next request does not retry at once, and still says why.
    assert_eq!(refused(&verifier, &token).await, "certs_unavailable");
}

#[test]
fn the_default_endpoint_is_the_teams() {
    let verifier = AccessVerifier::new(TEAM, AUD);
    let debug = format!("{verifier:?}");
    assert!(
        debug.contains("https://maestro-test.cloudflareaccess.com/cdn-cgi/access/certs"),
        "{debug}"
    );
}

/// The server with Access configured: proxied requests need a valid assertion *and* a
/// credential; requests from this machine need neither.
#[tokio::test]
async fn the_server_requires_an_access_assertion_on_proxied_requests_only() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = maestro_server::Config::for_dir(dir.path());
    config.cf_access_team = Some(TEAM.into());
    config.cf_access_aud = Some(AUD.into());
    config.cf_access_certs_url = Some(jwks.url.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(maestro_server::run(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();

    let local = http
        .get(format!("{base}/api/projects"))
        .send()
        .await
        .unwrap();
    assert_eq!(local.status(), 200, "local requests need no assertion");
    let created: Value = http
        .post(format!("{base}/api/auth/tokens"))
        .json(&json!({ "scope": "read", "name": "phone" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().expect("a token").to_owned();

    let proxied = |jwt: Option<&str>, bearer: bool| {
        let mut req = http
            .get(format!("{base}/api/projects"))
            .header("cf-connecting-ip", "203.0.113.7");
        if let Some(jwt) = jwt {
            req = req.header("cf-access-jwt-assertion", jwt);
        }
        if bearer {
            req = req.bearer_auth(&token);
        }
        req.send()
    };
    let valid = sign(&k.current, "k1", &claims());
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let expired = sign(&k.current, "k1", &expired);

    assert_eq!(proxied(None, true).await.unwrap().status(), 403);
    assert_eq!(proxied(Some(&expired), true).await.unwrap().status(), 403);
    assert_eq!(
        proxied(Some(&sign(&k.foreign, "k1", &claims())), true)
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        proxied(Some(&valid), false).await.unwrap().status(),
        401,
        "Access is an outer gate, not a credential"
    );
    assert_eq!(proxied(Some(&valid), true).await.unwrap().status(), 200);

    shutdown.cancel();
    server.await.unwrap().unwrap();
}

/// `AUTH=required` with Cloudflare Access (advised where a header-less forwarder such as
/// `ssh -R` makes remote clients look local): a client on this machine with the owner token is
/// not sent to Access, which only guards the tunnel; without a credential it is refused, and
/// proxied requests still need both the assertion and a credential.
#[tokio::test]
async fn with_auth_required_local_clients_use_the_owner_token_and_skip_access() {
    let k = keys();
    let jwks = Jwks::start(vec![jwk("k1", &k.current)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = maestro_server::Config::for_dir(dir.path());
    config.auth = maestro_server::config::AuthMode::Required;
    config.cf_access_team = Some(TEAM.into());
    config.cf_access_aud = Some(AUD.into());
    config.cf_access_certs_url = Some(jwks.url.clone());
    let owner_file = config.data_dir.join("owner-token");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(maestro_server::run(config, listener, shutdown.clone()));
    let http = reqwest::Client::new();
    let owner = loop {
        match std::fs::read_to_string(&owner_file) {
            Ok(t) if !t.trim().is_empty() => break t.trim().to_owned(),
            _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    let get = |bearer: Option<&str>, proxied: Option<&str>| {
        let mut req = http.get(format!("{base}/api/projects"));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(jwt) = proxied {
            req = req
                .header("cf-connecting-ip", "203.0.113.7")
                .header("cf-access-jwt-assertion", jwt);
        }
        req.send()
    };
    assert_eq!(get(None, None).await.unwrap().status(), 401);
    assert_eq!(get(Some(&owner), None).await.unwrap().status(), 200);
    let valid = sign(&k.current, "k1", &claims());
    assert_eq!(get(None, Some(&valid)).await.unwrap().status(), 401);
    assert_eq!(get(Some(&owner), Some(&valid)).await.unwrap().status(), 200);
    assert_eq!(
        get(Some(&owner), Some("not-a-jwt")).await.unwrap().status(),
        403
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
}
