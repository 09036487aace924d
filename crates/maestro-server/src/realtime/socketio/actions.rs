//! Client events (`subscribe`, `mail:send`, `session:reply-input`, `session:spawn`,
//! `session:stop`, `approval:decide`, `client:visibility`, …): the scope each needs, the namespace's rules, the
//! [`Domain`](crate::domain::Domain) call, and the ack `{ok: true, …}` or `{ok: false, error}`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use maestro_protocol::{
    ApprovalDecideAction, ClientVisibility, DecideApproval, ReplyInput, Scope, SendMail,
    SessionSubscription, SpawnRequest, StopSession,
};
use serde_json::{Value, json};

use super::Kind;
use super::codec::{ack_packet, parse, to_object};
use super::hub::{Conn, Hub};
use super::replay::{events_replay, state_sync};
use crate::domain::check_id;
use crate::error::{Error, Result};
use crate::realtime::engine::Frame;

/// Most session ids one `subscribe` may name.
const MAX_SUBSCRIBE: usize = 1_000;

/// Every client event and the scope it needs, declared together: an event without a scope
/// does not compile, and a name that is not here is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Subscribe,
    Unsubscribe,
    StateSync,
    EventsReplay,
    MailSend,
    ReplyInput,
    ApprovalDecide,
    Spawn,
    Stop,
    ClientVisibility,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Self::Subscribe,
        Self::Unsubscribe,
        Self::StateSync,
        Self::EventsReplay,
        Self::MailSend,
        Self::ReplyInput,
        Self::ApprovalDecide,
        Self::Spawn,
        Self::Stop,
        Self::ClientVisibility,
    ];

    /// The event's name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Unsubscribe => "unsubscribe",
            Self::StateSync => "state:sync",
            Self::EventsReplay => "events:replay",
            Self::MailSend => "mail:send",
            Self::ReplyInput => "session:reply-input",
            Self::ApprovalDecide => "approval:decide",
            Self::Spawn => "session:spawn",
            Self::Stop => "session:stop",
            Self::ClientVisibility => "client:visibility",
        }
    }

    /// What the connection's credential must allow: reading and choosing what to receive
    /// need `read`; answering agents and mail `respond`; starting and stopping them `operate`.
    pub fn scope(self) -> Scope {
        match self {
            // Saying whether the app is on screen changes only the device's own record.
            Self::Subscribe
            | Self::Unsubscribe
            | Self::StateSync
            | Self::EventsReplay
            | Self::ClientVisibility => Scope::Read,
            Self::MailSend | Self::ReplyInput | Self::ApprovalDecide => Scope::Respond,
            Self::Spawn | Self::Stop => Scope::Operate,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl Hub {
    /// `2<ns>,[<id>]["event", payload]`: runs the client event and acks its result.
    pub(super) async fn on_event(&self, conn: &Arc<Conn>, ack: Option<u64>, data: &str) {
        let args: Vec<Value> = match serde_json::from_str(data) {
            Ok(args) => args,
            Err(_) => {
                tracing::debug!(socket.id = %conn.sid, "malformed socket.io event; closing");
                conn.session.close();
                return;
            }
        };
        let mut args = args.into_iter();
        let Some(Value::String(name)) = args.next() else {
            tracing::debug!(socket.id = %conn.sid, "socket.io event without a name; closing");
            conn.session.close();
            return;
        };
        // No argument at all reads as an empty payload.
        let payload = args.next().unwrap_or(Value::Null);
        let result = self.run_event(conn, &name, payload).await;
        if let Some(id) = ack {
            send_ack(conn, id, result);
        } else if let Err(e) = result
            && e.status().is_server_error()
        {
            tracing::error!(error = %e, event = name, "socket.io client event failed");
        }
    }

    async fn run_event(&self, conn: &Arc<Conn>, name: &str, data: Value) -> Result<Value> {
        let Some(action) = Action::parse(name) else {
            return Err(Error::not_found("Event", name));
        };
        let need = action.scope();
        if !conn.principal.allows(need) {
            return Err(Error::Forbidden(format!(
                "{name} needs scope '{need}'; this connection has '{}'",
                conn.principal.scope
            )));
        }
        match action {
            Action::Subscribe => subscribe(conn, data),
            Action::Unsubscribe => unsubscribe(conn, data),
            Action::StateSync => state_sync(self, conn, data),
            Action::EventsReplay => events_replay(self, conn, data).await,
            Action::MailSend => {
                let req: SendMail = parse(data)?;
                conn.check_project(&req.project_id)?;
                let sent = self.domain.send_mail(req).await?;
                Ok(json!({ "mail": sent }))
            }
            Action::ReplyInput => {
                let req: ReplyInput = parse(data)?;
                if let Some(id) = &req.session_id {
                    check_session_project(self, conn, id)?;
                }
                to_object(&self.domain.reply_input(req).await?)
            }
            Action::Spawn => session_spawn(self, conn, data).await,
            Action::ApprovalDecide => {
                let req: ApprovalDecideAction = parse(data)?;
                let approval = self.domain.get_approval(&req.approval_id)?;
                conn.check_project(&approval.project_id)?;
                let decide = DecideApproval {
                    decision: req.decision,
                    reason: req.reason,
                    request_id: req.request_id,
                };
                let decided = self
                    .domain
                    .decide_approval(req.approval_id, decide, conn.principal.label())
                    .await?;
                Ok(json!({ "approval": decided }))
            }
            Action::ClientVisibility => {
                let req: ClientVisibility = parse(data)?;
                let device = crate::push::actions::device_of(&conn.principal);
                crate::push::devices::set_visible(&self.domain, device, req.visible).await?;
                Ok(json!({}))
            }
            Action::Stop => {
                let req: StopSession = parse(data)?;
                let Some(id) = req.session_id else {
                    return Err(Error::validation("sessionId is required"));
                };
                check_session_project(self, conn, &id)?;
                let session = self.domain.stop_session(id, None).await?;
                Ok(json!({ "session": session }))
            }
        }
    }
}

/// Acks `{ok: true, …result}` or `{ok: false, error: {code, message, details?}}`.
fn send_ack(conn: &Conn, id: u64, result: Result<Value>) {
    let body = match result {
        Ok(Value::Object(mut fields)) => {
            fields.insert("ok".into(), Value::Bool(true));
            Value::Object(fields)
        }
        Ok(other) => json!({ "ok": true, "result": other }),
        Err(e) => {
            if e.status().is_server_error() {
                tracing::error!(error = %e, "socket.io client event failed");
            }
            let body = e.body();
            let mut error = json!({ "code": body.code, "message": body.message });
            if let Some(details) = body.details {
                error["details"] = details;
            }
            json!({ "ok": false, "error": error })
        }
    };
    let packet = ack_packet(conn.kind.namespace(), id, body);
    conn.session.send(&Frame::text(&packet));
}

fn check_session_project(hub: &Hub, conn: &Conn, session_id: &str) -> Result<()> {
    if conn.kind == Kind::Mobile {
        let session = hub.domain.get_session(session_id)?;
        conn.check_project(&session.project_id)?;
    }
    Ok(())
}

fn session_ids(req: SessionSubscription) -> Result<Option<Vec<String>>> {
    if let Some(ids) = &req.session_ids {
        if ids.len() > MAX_SUBSCRIBE {
            return Err(Error::validation(format!(
                "at most {MAX_SUBSCRIBE} sessionIds at once"
            )));
        }
        for id in ids {
            check_id("sessionIds", id)?;
        }
    }
    Ok(req.session_ids)
}

fn subscription(conn: &Conn) -> Value {
    match conn.state.lock().expect("conn lock").sessions.as_ref() {
        Some(ids) => json!({ "sessionIds": ids.iter().collect::<BTreeSet<_>>() }),
        None => json!({ "sessionIds": null }),
    }
}

/// `subscribe {sessionIds}`: from now on, events about sessions reach this socket only for
/// subscribed sessions (adds to earlier subscriptions).
fn subscribe(conn: &Conn, data: Value) -> Result<Value> {
    let Some(ids) = session_ids(parse(data)?)? else {
        return Err(Error::validation("sessionIds is required"));
    };
    {
        let mut state = conn.state.lock().expect("conn lock");
        let set = state.sessions.get_or_insert_with(HashSet::new);
        for id in ids {
            set.insert(id);
        }
    }
    Ok(subscription(conn))
}

/// `unsubscribe {sessionIds?}`: drops those sessions; without `sessionIds`, drops the filter
/// (every event again).
fn unsubscribe(conn: &Conn, data: Value) -> Result<Value> {
    let ids = session_ids(parse(data)?)?;
    {
        let mut state = conn.state.lock().expect("conn lock");
        match ids {
            Some(ids) => {
                if let Some(set) = state.sessions.as_mut() {
                    for id in &ids {
                        set.remove(id);
                    }
                }
            }
            None => state.sessions = None,
        }
    }
    Ok(subscription(conn))
}

/// `session:spawn`: the body of `POST /api/sessions/spawn` (errors keep its snake_case codes),
/// plus an optional `idempotencyKey` (the `Idempotency-Key` header's role).
async fn session_spawn(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let mut data = data;
    let key = match data
        .as_object_mut()
        .and_then(|o| o.remove("idempotencyKey"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) => Some(k),
        Some(_) => return Err(Error::validation("idempotencyKey must be a string")),
    };
    let mut req: SpawnRequest = parse(data)?;
    match &req.project_id {
        Some(p) => conn.check_project(p)?,
        // On `/mobile` the connection's project is implied.
        None if conn.kind == Kind::Mobile => req.project_id = conn.project.clone(),
        None => {}
    }
    to_object(&hub.domain.spawn_session(req, key).await?)
}

#[cfg(test)]
mod tests {
    use super::Action;

    #[test]
    fn every_action_has_one_name_and_a_scope() {
        let mut names = std::collections::HashSet::new();
        for action in Action::ALL {
            assert!(names.insert(action.name()), "{} twice", action.name());
            assert_eq!(Action::parse(action.name()), Some(action));
            let _ = action.scope();
        }
        assert_eq!(Action::parse("session:delete"), None);
    }
}
