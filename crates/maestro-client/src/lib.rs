//! Typed async client for the Maestro HTTP API.
//!
//! One method per endpoint, taking and returning the types of `maestro-protocol`. Errors keep
//! the server's status and error body so callers (the CLI, tests) can tell a 404 from a 409.
//!
//! ```no_run
//! # async fn demo() -> Result<(), maestro_client::Error> {
//! let client = maestro_client::Client::new("http://localhost:3000")?;
//! let projects = client.list_projects().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use maestro_protocol::*;
pub use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What can go wrong talking to the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error status.
    #[error("HTTP {status}: {} ({})", body.message, body.code)]
    Api { status: StatusCode, body: ErrorBody },
    /// The server answered with an error status and a body that is not the error shape.
    #[error("HTTP {status}: {text}")]
    UnexpectedBody { status: StatusCode, text: String },
    /// The request never got an answer (connection refused, timeout, …).
    #[error("cannot reach the server: {0}")]
    Transport(#[from] reqwest::Error),
    /// The base URL is unusable.
    #[error("invalid server URL {0:?}")]
    BadUrl(String),
    /// The server wanted a credential, and the one this machine has for its own server (the
    /// owner token) was not sent: the server did not prove it is the one that wrote it.
    #[error(
        "{0} asked for a credential, and it did not prove it is the maestro server whose owner \
         token is on this machine, so the token was not sent (is another program on that port?)"
    )]
    NotOurServer(String),
}

impl Error {
    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } | Self::UnexpectedBody { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the server has no such route (a 404/405 that is not about a missing entity):
    /// the server predates the endpoint. Upstream answered unknown routes with an HTML page.
    pub fn is_route_missing(&self) -> bool {
        match self {
            Self::Api { status, body } => {
                let no_route = body.message.starts_with("no route for");
                *status == StatusCode::METHOD_NOT_ALLOWED
                    || (*status == StatusCode::NOT_FOUND && no_route)
            }
            Self::UnexpectedBody { status, .. } => {
                *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED
            }
            _ => false,
        }
    }

    /// The error `code` string, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A raw answer, for callers that check statuses and shapes themselves.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

/// Client for one server.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    /// Sent as `Authorization: Bearer <token>` when set.
    token: Option<String>,
    /// Sent instead when a request without `token` gets 401 (see [`Client::with_fallback_token`]).
    fallback_token: Option<Arc<Fallback>>,
    retry: RetryPolicy,
}

/// The owner token, and whether the server proved it holds it (asked once per client).
struct Fallback {
    token: String,
    proven: tokio::sync::OnceCell<bool>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "fallback_token",
                &self.fallback_token.as_ref().map(|_| "<redacted>"),
            )
            .field("retry", &self.retry)
            .finish()
    }
}

/// When a request is sent again after a failure.
///
/// Only requests that are safe to repeat are retried: `GET`s, and writes that carry an
/// idempotency key (the server answers a repeat with the first answer). A `POST`/`PATCH`
/// without a key is never retried, since the first attempt may have been applied before
/// the connection broke. Retried failures are network errors and 5xx answers; 4xx never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first one.
    pub retries: u32,
    /// Delay before the first retry; doubled before each further one.
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// No retries (the default of [`Client::new`]).
    pub const NONE: Self = Self {
        retries: 0,
        base_delay: Duration::ZERO,
    };

    fn delay(&self, attempt: u32) -> Duration {
        self.base_delay.saturating_mul(1u32 << attempt.min(16))
    }
}

/// A successful claim: who holds the task, the fencing token that proves it, and when the
/// lease runs out unless renewed.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimLease {
    pub holder: String,
    pub fencing_token: u64,
    pub expires_at: i64,
    /// Fields a newer server adds (task id, …).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// Query parameters of `GET /api/tasks`.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `Some("null")` lists root tasks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
}

/// Query parameters of `GET /api/sessions`.
#[derive(Debug, Default, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

impl Client {
    /// A client for the server at `base` (e.g. `http://localhost:3000`, without `/api`).
    /// Only `http` and `https` URLs with a host, and without user info, a query or a fragment
    /// (`http://localhost:1@evil.example` names `evil.example`, and is refused).
    pub fn new(base: &str) -> Result<Self> {
        let base = parse_base(base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            http,
            base,
            token: None,
            fallback_token: None,
            retry: RetryPolicy::NONE,
        })
    }

    /// Sends `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// When a request sent without a token is refused with 401 (the server wants a credential
    /// even from this machine, `AUTH=required`), sends it once more with `token`. Safe for every
    /// method: a 401 comes from the server's gate, before anything could change.
    ///
    /// The token goes only to a server that first proves it holds it
    /// (`POST /api/auth/identity`); otherwise the request fails with [`Error::NotOurServer`].
    pub fn with_fallback_token(mut self, token: impl Into<String>) -> Self {
        self.fallback_token = Some(Arc::new(Fallback {
            token: token.into(),
            proven: tokio::sync::OnceCell::new(),
        }));
        self
    }

    /// Whether the server proves it holds `owner_token`: it answers a random challenge with
    /// the HMAC only the token's holder can compute.
    pub async fn proves_owner_token(&self, owner_token: &str) -> bool {
        let mut bytes = [0u8; 24];
        if getrandom::fill(&mut bytes).is_err() {
            return false;
        }
        let nonce: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let answer = self
            .http
            .post(format!("{}/api/auth/identity", self.base))
            .json(&IdentityChallenge {
                nonce: nonce.clone(),
            })
            .send()
            .await;
        let Ok(answer) = answer else { return false };
        if !answer.status().is_success() {
            return false;
        }
        match answer.json::<IdentityProof>().await {
            Ok(p) => p.proof == maestro_protocol::identity_proof(owner_token, &nonce),
            Err(_) => false,
        }
    }

    /// Retries safe requests (see [`RetryPolicy`]).
    pub fn with_retries(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// A request to `path` with the client's credentials.
    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => req.bearer_auth(token),
            None => req,
        }
    }

    /// Sends the request built by `build`, again after a network error or a 5xx when
    /// `retry` says the request is safe to repeat.
    async fn send_with_retry(
        &self,
        retry: bool,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let retries = if retry { self.retry.retries } else { 0 };
        let mut attempt = 0;
        loop {
            let outcome = build().send().await;
            let again = match &outcome {
                Ok(resp) => resp.status().is_server_error(),
                Err(e) => !e.is_builder(),
            };
            if let (Ok(resp), None, Some(fallback)) = (&outcome, &self.token, &self.fallback_token)
                && resp.status() == StatusCode::UNAUTHORIZED
            {
                let proven = fallback
                    .proven
                    .get_or_init(|| self.proves_owner_token(&fallback.token))
                    .await;
                if !*proven {
                    return Err(Error::NotOurServer(self.base.clone()));
                }
                return Ok(build().bearer_auth(&fallback.token).send().await?);
            }
            if !again || attempt >= retries {
                return Ok(outcome?);
            }
            tokio::time::sleep(self.retry.delay(attempt)).await;
            attempt += 1;
        }
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Sends any request and returns status + JSON body without interpreting them.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse> {
        let retry = method == Method::GET;
        let resp = self
            .send_with_retry(retry, || {
                let req = self.request(method.clone(), path);
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })
            .await?;
        let status = resp.status();
        let text = resp.text().await?;
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        Ok(RawResponse { status, body })
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Option<&(dyn ErasedQuery + Sync)>,
        body: Option<&B>,
    ) -> Result<T> {
        let retry = method == Method::GET;
        let resp = self
            .send_with_retry(retry, || {
                let mut req = self.request(method.clone(), path);
                if let Some(q) = query {
                    req = q.apply(req);
                }
                if let Some(b) = body {
                    req = req.json(b);
                }
                req
            })
            .await?;
        decode(resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::GET, path, None, None).await
    }

    async fn get_q<T: DeserializeOwned>(
        &self,
        path: &str,
        q: &(dyn ErasedQuery + Sync),
    ) -> Result<T> {
        self.call::<(), T>(Method::GET, path, Some(q), None).await
    }

    async fn send<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.call(method, path, None, Some(body)).await
    }

    async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call::<(), T>(Method::DELETE, path, None, None).await
    }

    // --- operations -----------------------------------------------------------------------

    pub async fn health(&self) -> Result<Health> {
        self.get("/health").await
    }

    pub async fn ready(&self) -> Result<Ready> {
        self.get("/ready").await
    }

    pub async fn ws_status(&self) -> Result<serde_json::Value> {
        self.get("/ws-status").await
    }

    // --- projects -------------------------------------------------------------------------

    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        self.get("/api/projects").await
    }

    pub async fn create_project(&self, req: &CreateProject) -> Result<Project> {
        self.send(Method::POST, "/api/projects", req).await
    }

    pub async fn get_project(&self, id: &str) -> Result<Project> {
        self.get(&format!("/api/projects/{}", enc(id))).await
    }

    pub async fn update_project(&self, id: &str, req: &UpdateProject) -> Result<Project> {
        self.send(Method::PUT, &format!("/api/projects/{}", enc(id)), req)
            .await
    }

    pub async fn delete_project(&self, id: &str) -> Result<Deleted> {
        self.delete(&format!("/api/projects/{}", enc(id))).await
    }

    // --- tasks ----------------------------------------------------------------------------

    pub async fn list_tasks(&self, q: &TaskQuery) -> Result<Vec<Task>> {
        self.get_q("/api/tasks", q).await
    }

    pub async fn create_task(&self, req: &CreateTask) -> Result<Task> {
        self.send(Method::POST, "/api/tasks", req).await
    }

    pub async fn get_task(&self, id: &str) -> Result<Task> {
        self.get(&format!("/api/tasks/{}", enc(id))).await
    }

    pub async fn update_task(&self, id: &str, req: &UpdateTask) -> Result<Task> {
        self.send(Method::PATCH, &format!("/api/tasks/{}", enc(id)), req)
            .await
    }

    pub async fn delete_task(&self, id: &str) -> Result<Deleted> {
        self.delete(&format!("/api/tasks/{}", enc(id))).await
    }

    pub async fn task_children(&self, id: &str) -> Result<Vec<Task>> {
        self.get(&format!("/api/tasks/{}/children", enc(id))).await
    }

    pub async fn task_timeline(
        &self,
        id: &str,
        req: &TaskTimelineRequest,
    ) -> Result<TaskTimelineResponse> {
        self.send(
            Method::POST,
            &format!("/api/tasks/{}/timeline", enc(id)),
            req,
        )
        .await
    }

    pub async fn task_docs(&self, id: &str) -> Result<Vec<TaskDocEntry>> {
        self.get(&format!("/api/tasks/{}/docs", enc(id))).await
    }

    // --- sessions -------------------------------------------------------------------------

    pub async fn list_sessions(&self, q: &SessionQuery) -> Result<Vec<Session>> {
        self.get_q("/api/sessions", q).await
    }

    pub async fn create_session(&self, req: &CreateSession) -> Result<Session> {
        self.send(Method::POST, "/api/sessions", req).await
    }

    pub async fn get_session(&self, id: &str) -> Result<Session> {
        self.get(&format!("/api/sessions/{}", enc(id))).await
    }

    pub async fn update_session(&self, id: &str, req: &UpdateSession) -> Result<Session> {
        self.send(Method::PATCH, &format!("/api/sessions/{}", enc(id)), req)
            .await
    }

    pub async fn delete_session(&self, id: &str) -> Result<Deleted> {
        self.delete(&format!("/api/sessions/{}", enc(id))).await
    }

    pub async fn append_session_event(
        &self,
        id: &str,
        req: &AppendSessionEvent,
    ) -> Result<Session> {
        self.send(
            Method::POST,
            &format!("/api/sessions/{}/events", enc(id)),
            req,
        )
        .await
    }

    pub async fn append_timeline(&self, id: &str, req: &AppendTimeline) -> Result<Session> {
        self.send(
            Method::POST,
            &format!("/api/sessions/{}/timeline", enc(id)),
            req,
        )
        .await
    }

    /// One page of a session's timeline: the entries before index `before` (default: the end),
    /// at most `limit` (default 100, at most 500), oldest first.
    pub async fn session_timeline(
        &self,
        id: &str,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<TimelinePage> {
        #[derive(Serialize)]
        struct Q {
            #[serde(skip_serializing_if = "Option::is_none")]
            before: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u64>,
        }
        let path = format!("/api/sessions/{}/timeline", enc(id));
        self.get_q(&path, &Q { before, limit }).await
    }

    /// One page of a session's transcript (`after` and `before` exclusive; neither: the newest
    /// entries), at most `limit` (default 100, at most 500), oldest first.
    pub async fn session_transcript(
        &self,
        id: &str,
        after: Option<u64>,
        before: Option<u64>,
        limit: Option<u64>,
    ) -> Result<maestro_protocol::TranscriptPage> {
        #[derive(Serialize)]
        struct Q {
            #[serde(skip_serializing_if = "Option::is_none")]
            after: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            before: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            limit: Option<u64>,
        }
        let path = format!("/api/sessions/{}/transcript", enc(id));
        self.get_q(
            &path,
            &Q {
                after,
                before,
                limit,
            },
        )
        .await
    }

    /// Adds entries a host read from the session's transcript file (scope `runner`).
    pub async fn upload_transcript(
        &self,
        id: &str,
        req: &maestro_protocol::TranscriptUpload,
    ) -> Result<maestro_protocol::TranscriptPage> {
        self.send(
            Method::POST,
            &format!("/api/sessions/{}/transcript", enc(id)),
            req,
        )
        .await
    }

    pub async fn add_session_doc(&self, id: &str, req: &AddDoc) -> Result<Session> {
        self.send(
            Method::POST,
            &format!("/api/sessions/{}/docs", enc(id)),
            req,
        )
        .await
    }

    pub async fn session_docs(&self, id: &str) -> Result<Vec<DocEntry>> {
        self.get(&format!("/api/sessions/{}/docs", enc(id))).await
    }

    pub async fn link_task(&self, session_id: &str, task_id: &str) -> Result<Session> {
        let path = format!("/api/sessions/{}/tasks/{}", enc(session_id), enc(task_id));
        self.send(Method::POST, &path, &serde_json::json!({})).await
    }

    pub async fn unlink_task(&self, session_id: &str, task_id: &str) -> Result<Session> {
        let path = format!("/api/sessions/{}/tasks/{}", enc(session_id), enc(task_id));
        self.delete(&path).await
    }

    pub async fn show_modal(&self, session_id: &str, req: &ShowModal) -> Result<ModalShown> {
        let path = format!("/api/sessions/{}/modal", enc(session_id));
        self.send(Method::POST, &path, req).await
    }

    pub async fn modal_action(
        &self,
        session_id: &str,
        modal_id: &str,
        req: &ModalAction,
    ) -> Result<ModalAck> {
        let path = format!(
            "/api/sessions/{}/modal/{}/actions",
            enc(session_id),
            enc(modal_id)
        );
        self.send(Method::POST, &path, req).await
    }

    pub async fn modal_close(&self, session_id: &str, modal_id: &str) -> Result<ModalAck> {
        let path = format!(
            "/api/sessions/{}/modal/{}/close",
            enc(session_id),
            enc(modal_id)
        );
        self.send(Method::POST, &path, &serde_json::json!({})).await
    }
}

impl Client {
    // --- team members ---------------------------------------------------------------------

    pub async fn list_team_members(&self, project_id: &str) -> Result<Vec<TeamMember>> {
        self.get_q("/api/team-members", &[("projectId", project_id)])
            .await
    }

    pub async fn get_team_member(&self, id: &str, project_id: &str) -> Result<TeamMember> {
        let path = format!("/api/team-members/{}", enc(id));
        self.get_q(&path, &[("projectId", project_id)]).await
    }

    pub async fn create_team_member(&self, req: &CreateTeamMember) -> Result<TeamMember> {
        self.send(Method::POST, "/api/team-members", req).await
    }

    pub async fn update_team_member(&self, id: &str, req: &UpdateTeamMember) -> Result<TeamMember> {
        let path = format!("/api/team-members/{}", enc(id));
        self.send(Method::PATCH, &path, req).await
    }

    pub async fn delete_team_member(&self, id: &str, project_id: &str) -> Result<Deleted> {
        let path = format!("/api/team-members/{}", enc(id));
        self.call::<(), Deleted>(
            Method::DELETE,
            &path,
            Some(&[("projectId", project_id)]),
            None,
        )
        .await
    }

    /// `action` is `archive`, `unarchive` or `reset`.
    pub async fn team_member_action(
        &self,
        id: &str,
        action: &str,
        project_id: &str,
    ) -> Result<TeamMember> {
        let path = format!("/api/team-members/{}/{action}", enc(id));
        let body = ProjectRef {
            project_id: Some(project_id.to_owned()),
        };
        self.send(Method::POST, &path, &body).await
    }

    // --- mail -----------------------------------------------------------------------------

    pub async fn send_mail(&self, req: &SendMail) -> Result<SentMail> {
        self.send(Method::POST, "/api/mail", req).await
    }

    /// Inbox of `session_id`; `query` holds extra parameters (`projectId`, `type`, `since`,
    /// `unread`).
    pub async fn inbox(
        &self,
        session_id: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<MailMessage>> {
        let path = format!("/api/mail/inbox/{}", enc(session_id));
        self.get_q(&path, &query).await
    }

    /// Long-poll for mail; `query` holds `projectId`, `timeout`, `since`. A `GET` never moves
    /// the read cursor (`ack=true` is refused): see [`Self::wait_and_ack_mail`].
    pub async fn wait_mail(
        &self,
        session_id: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<MailMessage>> {
        let path = format!("/api/mail/wait/{}", enc(session_id));
        self.get_q(&path, &query).await
    }

    /// `POST /api/mail/wait/:id`: long-poll for unread mail and move the read cursor past it
    /// (each message is received once). `wait_mail` (a `GET`) never acknowledges.
    pub async fn wait_and_ack_mail(
        &self,
        session_id: &str,
        req: &WaitMail,
    ) -> Result<Vec<MailMessage>> {
        let path = format!("/api/mail/wait/{}", enc(session_id));
        self.send(Method::POST, &path, req).await
    }

    pub async fn ack_mail(&self, session_id: &str, req: &AckMail) -> Result<MailCursor> {
        let path = format!("/api/mail/inbox/{}/ack", enc(session_id));
        self.send(Method::POST, &path, req).await
    }

    pub async fn get_mail(&self, id: &str) -> Result<MailMessage> {
        self.get(&format!("/api/mail/{}", enc(id))).await
    }

    pub async fn delete_mail(&self, id: &str) -> Result<MailDeleted> {
        self.delete(&format!("/api/mail/{}", enc(id))).await
    }

    // --- approvals -------------------------------------------------------------------------

    /// Asks for a tool approval in `session_id`; a repeated `requestId` returns what the first
    /// request made.
    pub async fn create_approval(
        &self,
        session_id: &str,
        req: &maestro_protocol::CreateApproval,
    ) -> Result<maestro_protocol::Approval> {
        let path = format!("/api/sessions/{}/approvals", enc(session_id));
        self.send(Method::POST, &path, req).await
    }

    /// The approvals of `session_id`, oldest first; only the pending ones when `pending`.
    pub async fn session_approvals(
        &self,
        session_id: &str,
        pending: bool,
    ) -> Result<Vec<maestro_protocol::Approval>> {
        let path = format!("/api/sessions/{}/approvals", enc(session_id));
        if pending {
            self.get_q(&path, &[("status", "pending")]).await
        } else {
            self.get(&path).await
        }
    }

    /// Long-polls approval `id` for up to `timeout_ms` (at most 120,000).
    pub async fn wait_approval(
        &self,
        id: &str,
        timeout_ms: u64,
    ) -> Result<maestro_protocol::Approval> {
        let path = format!("/api/approvals/{}/wait", enc(id));
        self.get_q(&path, &[("timeout", timeout_ms.to_string())])
            .await
    }

    pub async fn decide_approval(
        &self,
        id: &str,
        req: &maestro_protocol::DecideApproval,
    ) -> Result<maestro_protocol::Approval> {
        let path = format!("/api/approvals/{}/decision", enc(id));
        self.send(Method::POST, &path, req).await
    }

    /// Withdraws a pending approval.
    pub async fn cancel_approval(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<maestro_protocol::Approval> {
        let path = format!("/api/approvals/{}/cancel", enc(id));
        self.send(
            Method::POST,
            &path,
            &serde_json::json!({ "reason": reason }),
        )
        .await
    }

    // --- credentials -----------------------------------------------------------------------

    /// Creates an API token; the answer is the only time its secret is shown.
    pub async fn create_token(
        &self,
        req: &maestro_protocol::CreateToken,
    ) -> Result<maestro_protocol::TokenCreated> {
        self.send(Method::POST, "/api/auth/tokens", req).await
    }

    pub async fn list_tokens(&self) -> Result<Vec<maestro_protocol::TokenInfo>> {
        self.get("/api/auth/tokens").await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<maestro_protocol::Revoked> {
        self.delete(&format!("/api/auth/tokens/{}", enc(id))).await
    }

    pub async fn list_devices(&self) -> Result<Vec<maestro_protocol::DeviceInfo>> {
        self.get("/api/auth/devices").await
    }

    pub async fn revoke_device(&self, id: &str) -> Result<maestro_protocol::Revoked> {
        self.delete(&format!("/api/auth/devices/{}", enc(id))).await
    }

    /// Makes a single-use pairing code for a phone.
    pub async fn create_pairing(
        &self,
        req: &maestro_protocol::CreatePairing,
    ) -> Result<maestro_protocol::PairingCreated> {
        self.send(Method::POST, "/api/auth/pairings", req).await
    }

    /// Who the server takes this client for.
    pub async fn me(&self) -> Result<maestro_protocol::Me> {
        self.get("/api/auth/me").await
    }

    // --- spawn ----------------------------------------------------------------------------

    /// Spawns a session; with `idempotency_key`, a retry returns the first answer.
    pub async fn spawn(
        &self,
        req: &SpawnRequest,
        idempotency_key: Option<&str>,
    ) -> Result<SpawnResponse> {
        let resp = self
            .send_with_retry(idempotency_key.is_some(), || {
                let builder = self.request(Method::POST, "/api/sessions/spawn").json(req);
                match idempotency_key {
                    Some(key) => builder.header("Idempotency-Key", key),
                    None => builder,
                }
            })
            .await?;
        decode(resp).await
    }
}

impl Client {
    // --- claims and liveness --------------------------------------------------------------

    /// `POST /api/tasks/:id/claim`: takes the task's lease for `session_id`. A task held by
    /// another session answers 409 (`Error::Api`, the holder in `details`).
    pub async fn claim_task(
        &self,
        task_id: &str,
        session_id: &str,
        ttl_ms: u64,
    ) -> Result<ClaimLease> {
        let path = format!("/api/tasks/{}/claim", enc(task_id));
        let body = serde_json::json!({ "sessionId": session_id, "ttlMs": ttl_ms });
        self.send(Method::POST, &path, &body).await
    }

    /// `POST /api/tasks/:id/claim/renew`: extends a lease the caller still holds.
    pub async fn renew_claim(
        &self,
        task_id: &str,
        session_id: &str,
        fencing_token: u64,
        ttl_ms: u64,
    ) -> Result<ClaimLease> {
        let path = format!("/api/tasks/{}/claim/renew", enc(task_id));
        let body = serde_json::json!({
            "sessionId": session_id,
            "fencingToken": fencing_token,
            "ttlMs": ttl_ms,
        });
        self.send(Method::POST, &path, &body).await
    }

    /// `POST /api/tasks/:id/claim/release`: gives a lease up.
    pub async fn release_claim(
        &self,
        task_id: &str,
        session_id: &str,
        fencing_token: u64,
    ) -> Result<serde_json::Value> {
        let path = format!("/api/tasks/{}/claim/release", enc(task_id));
        let body = serde_json::json!({ "sessionId": session_id, "fencingToken": fencing_token });
        self.send(Method::POST, &path, &body).await
    }

    /// `POST /api/sessions/:id/heartbeat`: the session's agent is alive. Never retried here:
    /// the next beat is the retry.
    pub async fn heartbeat(&self, session_id: &str) -> Result<serde_json::Value> {
        let path = format!("/api/sessions/{}/heartbeat", enc(session_id));
        self.send(Method::POST, &path, &serde_json::json!({})).await
    }

    // --- runners --------------------------------------------------------------------------

    /// The bearer token this client sends, if any (WebSockets need it in their handshake).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The credential for this client's WebSockets (the legacy event stream, a terminal
    /// uplink), which cannot retry after a 401: the token, else the owner token once the server
    /// proved it holds it, else none.
    pub async fn socket_credential(&self) -> Option<String> {
        if let Some(token) = &self.token {
            return Some(token.clone());
        }
        let fallback = self.fallback_token.as_ref()?;
        let proven = fallback
            .proven
            .get_or_init(|| self.proves_owner_token(&fallback.token))
            .await;
        proven.then(|| fallback.token.clone())
    }

    pub async fn list_runners(&self) -> Result<Vec<Runner>> {
        self.get("/api/runners").await
    }

    pub async fn register_runner(&self, req: &RegisterRunner) -> Result<Runner> {
        self.send(Method::POST, "/api/runners", req).await
    }

    /// One beat for the runner and the sessions it hosts. Never retried: the next beat is.
    pub async fn runner_heartbeat(&self, id: &str, session_ids: &[String]) -> Result<Runner> {
        let path = format!("/api/runners/{}/heartbeat", enc(id));
        let body = RunnerHeartbeat {
            session_ids: session_ids.to_vec(),
        };
        self.send(Method::POST, &path, &body).await
    }

    /// Long-poll for launches (at most `timeout_ms`).
    pub async fn claim_launches(&self, id: &str, timeout_ms: u64) -> Result<Claimed> {
        let path = format!("/api/runners/{}/claim?timeout={timeout_ms}", enc(id));
        self.send(Method::POST, &path, &serde_json::json!({})).await
    }

    pub async fn report_launch(&self, runner_id: &str, report: &LaunchReport) -> Result<Session> {
        let path = format!("/api/runners/{}/launched", enc(runner_id));
        self.send(Method::POST, &path, report).await
    }

    /// `POST /api/sessions/:id/stop`.
    pub async fn stop_session(&self, id: &str, grace_ms: Option<u64>) -> Result<Session> {
        let path = format!("/api/sessions/{}/stop", enc(id));
        self.send(Method::POST, &path, &StopRequest { grace_ms })
            .await
    }

    /// `POST /api/sessions/:id/resume`.
    pub async fn resume_session(&self, id: &str) -> Result<Session> {
        let path = format!("/api/sessions/{}/resume", enc(id));
        self.send(Method::POST, &path, &serde_json::json!({})).await
    }

    /// `GET /api/sessions/:id/changes`.
    pub async fn session_changes(&self, id: &str) -> Result<Changes> {
        self.get(&format!("/api/sessions/{}/changes", enc(id)))
            .await
    }

    /// `GET /api/sessions/:id/diff?path=`.
    pub async fn session_diff(&self, id: &str, path: &str) -> Result<FileDiff> {
        self.get(&format!(
            "/api/sessions/{}/diff?path={}",
            enc(id),
            enc(path)
        ))
        .await
    }

    /// `PUT /api/sessions/:id/changes`: a host reports the session's work tree.
    pub async fn report_changes(&self, id: &str, report: &ChangesReport) -> Result<ChangeStats> {
        let path = format!("/api/sessions/{}/changes", enc(id));
        self.send(Method::PUT, &path, report).await
    }

    /// `GET /api/sessions/:id/review/comments`.
    pub async fn review_comments(&self, id: &str) -> Result<Vec<ReviewComment>> {
        self.get(&format!("/api/sessions/{}/review/comments", enc(id)))
            .await
    }

    /// `POST /api/sessions/:id/review/comments`.
    pub async fn add_review_comment(
        &self,
        id: &str,
        req: &AddReviewComment,
    ) -> Result<ReviewComment> {
        let path = format!("/api/sessions/{}/review/comments", enc(id));
        self.send(Method::POST, &path, req).await
    }

    /// `POST /api/sessions/:id/review/send`.
    pub async fn send_review(&self, id: &str, req: &SendReview) -> Result<ReviewSent> {
        let path = format!("/api/sessions/{}/review/send", enc(id));
        self.send(Method::POST, &path, req).await
    }
}

/// The typed body of a success, or the server's error.
async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp.json().await?);
    }
    let text = resp.text().await?;
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => Err(Error::Api { status, body }),
        Err(_) => Err(Error::UnexpectedBody { status, text }),
    }
}

/// Percent-encodes one path segment, so an odd id reaches the server as one segment (where it
/// is rejected) instead of changing the path.
///
/// `.` is encoded too. A segment of only `.` or `..` is a dot segment to URL parsers even when
/// percent-encoded (`%2E%2E` resolves like `..`; WHATWG URL, which `reqwest` follows), so for
/// those the `%` is encoded once more: the server receives the segment `%2E` or `%2E%2E`, one
/// segment that is not a valid id (400), instead of a request to another route.
fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if matches!(segment, "." | "..") {
        out = out.replace('%', "%25");
    }
    out
}

/// Object-safe query serialisation.
trait ErasedQuery {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder;
}

impl<T: Serialize> ErasedQuery for T {
    fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.query(self)
    }
}

/// The server's base URL, checked and without a trailing `/`.
fn parse_base(base: &str) -> Result<String> {
    let given = base.trim();
    let bad = |why: &str| Error::BadUrl(format!("{given}: {why}"));
    let url = url::Url::parse(given).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(bad("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("user info (`name@`) is not allowed in a server URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a server URL has no query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// The WebSocket base of a server URL: `http` → `ws`, `https` → `wss`, host, port and path
/// kept, without a trailing `/`. A URL that does not parse is returned as it was (the request
/// made with it then fails with the parse error).
pub fn websocket_base(server: &str) -> String {
    let Ok(mut url) = url::Url::parse(server.trim()) else {
        return server.trim().trim_end_matches('/').to_owned();
    };
    let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
    // Only fails for schemes that cannot change to a special one; http(s) always can.
    let _ = url.set_scheme(scheme);
    url.as_str().trim_end_matches('/').to_owned()
}
