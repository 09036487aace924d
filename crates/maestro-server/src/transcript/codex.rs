//! Codex's rollout file (`$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*.jsonl`, also the
//! `transcript_path` of its hooks): one JSON object per line, `{timestamp, type, payload}`.
//!
//! - `response_item` is what went to or came from the model: `message` (`role`, `content`
//!   blocks `input_text`/`output_text`), `function_call` (`name`, `arguments` as a JSON string,
//!   `call_id`), `function_call_output` (`call_id`, `output`), `custom_tool_call` /
//!   `custom_tool_call_output` (freeform tools such as `apply_patch`, whose `input` is the
//!   patch), `local_shell_call`, `reasoning` (left out, like Claude's thinking);
//! - `event_msg` is what the UI saw: `token_count` (`info.total_token_usage`,
//!   `info.last_token_usage`) becomes a `tokens` entry; `user_message` and `agent_message`
//!   repeat the `response_item` messages and are left out; others become `other`;
//! - `session_meta`, `turn_context`, `compacted` and unknown types become `other`.

use maestro_protocol::{TokenUsage, TranscriptEntry, TranscriptKind};
use serde_json::Value;

use super::{content_text, other, time_of, tool_call, tool_result};

/// The line types of a rollout file.
const ROLLOUT_TYPES: &[&str] = &[
    "session_meta",
    "response_item",
    "event_msg",
    "turn_context",
    "compacted",
];

/// Whether `v` is a line of a Codex rollout file.
pub fn is_rollout_line(v: &Value) -> bool {
    v.get("payload").is_some()
        && v.get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| ROLLOUT_TYPES.contains(&t))
}

/// The entries of one rollout line.
pub fn parse(v: &Value) -> Vec<TranscriptEntry> {
    let at = time_of(v, "timestamp");
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let payload = &v["payload"];
    let ptype = payload.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = match kind {
        "response_item" => response_item(ptype, payload),
        "event_msg" => event_msg(ptype, payload),
        _ => vec![other(kind, payload, None)],
    };
    for e in &mut out {
        e.at = at;
    }
    out
}

fn response_item(ptype: &str, p: &Value) -> Vec<TranscriptEntry> {
    let text = |k: &str| p.get(k).and_then(Value::as_str);
    let entry = match ptype {
        "message" => {
            let role = text("role").unwrap_or("");
            let kind = match role {
                "user" => TranscriptKind::User,
                "assistant" => TranscriptKind::Assistant,
                // `developer` and `system` messages are instructions, not the conversation.
                _ => return vec![other(&format!("message:{role}"), p, None)],
            };
            let Some(body) = p.get("content").and_then(content_text) else {
                return Vec::new();
            };
            let mut e = TranscriptEntry::new(kind);
            e.text = Some(body);
            e
        }
        "reasoning" => return Vec::new(),
        "function_call" => {
            let name = text("name").unwrap_or("tool");
            // `arguments` is JSON in a string; kept as it is when it does not parse.
            let args = match p.get("arguments") {
                Some(Value::String(s)) => {
                    serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                }
                Some(v) => v.clone(),
                None => Value::Null,
            };
            tool_call(name, text("call_id"), &args)
        }
        "custom_tool_call" => {
            let name = text("name").unwrap_or("tool");
            let input = text("input").unwrap_or("");
            if name == "apply_patch" {
                patch_entry(text("call_id"), input)
            } else {
                tool_call(name, text("call_id"), &Value::String(input.to_owned()))
            }
        }
        "local_shell_call" => {
            let command = p
                .get("action")
                .and_then(|a| a.get("command"))
                .cloned()
                .unwrap_or(Value::Null);
            let id = text("call_id").or_else(|| text("id"));
            tool_call("shell", id, &serde_json::json!({ "command": command }))
        }
        "function_call_output" | "custom_tool_call_output" => {
            let (output, success) = output_of(p.get("output"));
            tool_result(text("call_id"), output, success.map(|ok| !ok))
        }
        "" => other("response_item", p, None),
        t => other(t, p, None),
    };
    vec![entry]
}

/// A tool's output: a string (sometimes itself JSON `{"output", "metadata": {"exit_code"}}`)
/// or `{"content", "success"}`; with whether it succeeded, when it says.
fn output_of(v: Option<&Value>) -> (String, Option<bool>) {
    let exit_ok = |o: &Value| {
        o.pointer("/metadata/exit_code")
            .and_then(Value::as_i64)
            .map(|c| c == 0)
    };
    match v {
        Some(Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(o @ Value::Object(_)) if o.get("output").is_some() => (
                o["output"].as_str().unwrap_or_default().to_owned(),
                exit_ok(&o),
            ),
            _ => (s.clone(), None),
        },
        Some(o @ Value::Object(_)) => (
            o.get("content")
                .and_then(content_text)
                .unwrap_or_else(|| o.to_string()),
            o.get("success").and_then(Value::as_bool),
        ),
        Some(other) => (other.to_string(), None),
        None => (String::new(), None),
    }
}

/// An `apply_patch` call: the patch is shown as the diff, the first file it touches as the path.
fn patch_entry(call_id: Option<&str>, patch: &str) -> TranscriptEntry {
    let path = patch.lines().find_map(|l| {
        ["*** Update File: ", "*** Add File: ", "*** Delete File: "]
            .iter()
            .find_map(|p| l.strip_prefix(p))
            .map(|p| p.trim().to_owned())
    });
    let diff: String = patch
        .lines()
        .filter(|l| !matches!(*l, "*** Begin Patch" | "*** End Patch"))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut e = TranscriptEntry::new(TranscriptKind::Edit);
    e.tool = Some("apply_patch".to_owned());
    e.call_id = call_id.map(str::to_owned);
    e.summary = path.as_deref().map(super::short);
    e.path = path;
    e.diff = Some(diff);
    e
}

fn event_msg(ptype: &str, p: &Value) -> Vec<TranscriptEntry> {
    match ptype {
        // The same messages arrive as response items.
        "user_message" | "agent_message" | "agent_reasoning" | "agent_reasoning_raw_content" => {
            Vec::new()
        }
        "token_count" => {
            let Some(info) = p.get("info").filter(|i| !i.is_null()) else {
                return Vec::new();
            };
            let last = info.get("last_token_usage").unwrap_or(&Value::Null);
            let total = info.get("total_token_usage").unwrap_or(&Value::Null);
            let n = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
            let mut e = TranscriptEntry::new(TranscriptKind::Tokens);
            e.tokens = Some(TokenUsage {
                input: n(last, "input_tokens"),
                output: n(last, "output_tokens"),
                cached: n(last, "cached_input_tokens"),
                total: n(total, "total_tokens"),
            });
            vec![e]
        }
        "" => vec![other("event_msg", p, None)],
        t => vec![other(t, p, None)],
    }
}
