//! Claude Code's transcript: one JSON object per line, the file its hooks name in
//! `transcript_path`. A conversation line has `type` `user` or `assistant`, a `timestamp` and a
//! `message` in the Anthropic Messages shape: `content` is a string or a list of blocks
//! (`text`, `thinking`, `tool_use` with `id`/`name`/`input`, `tool_result` with
//! `tool_use_id`/`content`/`is_error`), and an assistant message carries `usage`
//! (`input_tokens`, `output_tokens`, `cache_read_input_tokens`, …). Other line types
//! (`summary`, `system`, snapshots) become `other` entries.
//!
//! Edits (`Edit`, `MultiEdit`, `Write`) become `edit` entries with a diff built from the
//! tool's input. Thinking blocks are left out: they are the model's scratchpad, often redacted.

use maestro_protocol::{TokenUsage, TranscriptEntry, TranscriptKind};
use serde_json::Value;

use super::{content_text, other, replacement_diff, time_of, tool_call, tool_result};

/// The entries of one Claude Code transcript line.
pub fn parse(v: &Value) -> Vec<TranscriptEntry> {
    let at = time_of(v, "timestamp");
    let kind = v.get("type").and_then(Value::as_str).unwrap_or("");
    let message = v.get("message");
    let content = message.and_then(|m| m.get("content"));
    let mut out = Vec::new();
    match (kind, content) {
        ("user" | "assistant", Some(Value::String(text))) => {
            out.push(message_entry(kind, text.clone()));
        }
        ("user" | "assistant", Some(Value::Array(blocks))) => {
            for block in blocks {
                if let Some(e) = block_entry(kind, block) {
                    out.push(e);
                }
            }
        }
        _ => return vec![other(if kind.is_empty() { "unknown" } else { kind }, v, at)],
    }
    if kind == "assistant"
        && let Some(usage) = message.and_then(|m| m.get("usage"))
    {
        let tokens = usage_of(usage);
        match out.iter_mut().rev().find(|e| e.tokens.is_none()) {
            Some(last) => last.tokens = Some(tokens),
            None => {
                let mut e = TranscriptEntry::new(TranscriptKind::Tokens);
                e.tokens = Some(tokens);
                out.push(e);
            }
        }
    }
    for e in &mut out {
        e.at = at;
    }
    out
}

fn message_entry(kind: &str, text: String) -> TranscriptEntry {
    let mut e = TranscriptEntry::new(if kind == "user" {
        TranscriptKind::User
    } else {
        TranscriptKind::Assistant
    });
    e.text = Some(text);
    e
}

/// One content block; `None` for blocks with nothing to show (thinking, empty text).
fn block_entry(kind: &str, block: &Value) -> Option<TranscriptEntry> {
    let text = |k: &str| block.get(k).and_then(Value::as_str);
    match text("type").unwrap_or("") {
        "text" => text("text")
            .filter(|t| !t.trim().is_empty())
            .map(|t| message_entry(kind, t.to_owned())),
        "thinking" | "redacted_thinking" => None,
        "tool_use" => {
            let name = text("name").unwrap_or("tool");
            let input = block.get("input").cloned().unwrap_or(Value::Null);
            Some(
                edit_entry(name, text("id"), &input)
                    .unwrap_or_else(|| tool_call(name, text("id"), &input)),
            )
        }
        "tool_result" => {
            let output = block
                .get("content")
                .and_then(content_text)
                .unwrap_or_default();
            let is_error = block.get("is_error").and_then(Value::as_bool);
            Some(tool_result(text("tool_use_id"), output, is_error))
        }
        "image" => {
            let mut e = message_entry(kind, "[image]".to_owned());
            e.label = Some("image".to_owned());
            Some(e)
        }
        other_kind => Some(other(
            if other_kind.is_empty() {
                "block"
            } else {
                other_kind
            },
            block,
            None,
        )),
    }
}

/// `Edit`, `MultiEdit` and `Write` as an edit entry with its diff.
fn edit_entry(tool: &str, call_id: Option<&str>, input: &Value) -> Option<TranscriptEntry> {
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let path = field(input, "file_path")?;
    let diff = match tool {
        "Edit" => replacement_diff(&field(input, "old_string")?, &field(input, "new_string")?),
        "MultiEdit" => input
            .get("edits")?
            .as_array()?
            .iter()
            .map(|edit| {
                replacement_diff(
                    &field(edit, "old_string").unwrap_or_default(),
                    &field(edit, "new_string").unwrap_or_default(),
                )
            })
            .collect(),
        "Write" => replacement_diff("", &field(input, "content")?),
        _ => return None,
    };
    let mut e = TranscriptEntry::new(TranscriptKind::Edit);
    e.tool = Some(tool.to_owned());
    e.call_id = call_id.map(str::to_owned);
    e.summary = Some(super::short(&path));
    e.path = Some(path);
    e.diff = Some(diff);
    Some(e)
}

fn usage_of(usage: &Value) -> TokenUsage {
    let n = |k: &str| usage.get(k).and_then(Value::as_u64);
    TokenUsage {
        input: n("input_tokens"),
        output: n("output_tokens"),
        cached: n("cache_read_input_tokens"),
        total: None,
    }
}
