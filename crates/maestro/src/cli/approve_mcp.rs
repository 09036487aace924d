//! `maestro approve --tool claude-code --mcp`: the phone as Claude Code's
//! `--permission-prompt-tool`, for headless agents.
//!
//! `claude -p` never calls a `PermissionRequest` hook; it can instead ask an MCP tool whether a
//! tool call may run. This is that MCP server, on stdio (newline-delimited JSON-RPC 2.0): one
//! tool, `approve`, whose arguments are Claude Code's (`tool_name`, `input`, `tool_use_id`)
//! and whose answer is the JSON text Claude Code reads: `{"behavior":"allow","updatedInput":…}`
//! or `{"behavior":"deny","message":…}`. Each call is an approval on the server, decided on the
//! phone like a hook's. Nobody sits at a headless agent's terminal, so "ask" (no session, no
//! server, nobody decided in time with `--fallback ask`) is answered deny.
//!
//! ```text
//! claude -p "…" --mcp-config '{"mcpServers":{"maestro":{"command":"maestro",
//!   "args":["approve","--tool","claude-code","--mcp"]}}}' \
//!   --permission-prompt-tool mcp__maestro__approve
//! ```

use maestro_protocol::summarize;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::agent_tools::{PermissionRequest, Verdict};
use super::approve::{ApproveArgs, ask};
use super::context::Context;

/// The tool's name; Claude Code calls it `mcp__<server name>__approve`.
pub const TOOL: &str = "approve";
/// Longest request line read (a tool input is at most what the server accepts, 256 KiB).
const MAX_LINE: usize = 1024 * 1024;

/// Serves MCP on stdin/stdout until stdin closes; returns the exit code.
pub async fn serve(ctx: &Context, args: &ApproveArgs) -> i32 {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => return 0,
            Err(e) => {
                eprintln!("maestro approve --mcp: {e}");
                return 1;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = if line.len() > MAX_LINE {
            Some(error(Value::Null, -32600, "request too large"))
        } else {
            match serde_json::from_str::<Value>(&line) {
                Ok(msg) => handle(ctx, args, &msg).await,
                Err(e) => Some(error(Value::Null, -32700, &format!("parse error: {e}"))),
            }
        };
        if let Some(reply) = reply {
            let mut text = reply.to_string();
            text.push('\n');
            if out.write_all(text.as_bytes()).await.is_err() || out.flush().await.is_err() {
                return 1;
            }
        }
    }
}

fn result(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

/// The answer to one message (none for a notification).
async fn handle(ctx: &Context, args: &ApproveArgs, msg: &Value) -> Option<Value> {
    let method = msg["method"].as_str().unwrap_or("");
    let id = msg.get("id").cloned()?;
    Some(match method {
        "initialize" => result(
            id,
            json!({
                "protocolVersion": msg["params"]["protocolVersion"]
                    .as_str()
                    .unwrap_or("2025-06-18"),
                "capabilities": { "tools": {} },
                "serverInfo": { "name": "maestro", "version": env!("CARGO_PKG_VERSION") },
            }),
        ),
        "ping" => result(id, json!({})),
        "tools/list" => result(id, json!({ "tools": [tool_schema()] })),
        "tools/call" if msg["params"]["name"] == TOOL => {
            let answer = call(ctx, args, &msg["params"]["arguments"]).await;
            result(
                id,
                json!({ "content": [{ "type": "text", "text": answer.to_string() }] }),
            )
        }
        "tools/call" => error(id, -32602, "unknown tool"),
        _ => error(id, -32601, "method not found"),
    })
}

fn tool_schema() -> Value {
    json!({
        "name": TOOL,
        "description": "Ask the human on Maestro (phone, desktop) whether a tool call may run.",
        "inputSchema": {
            "type": "object",
            "properties": {
                "tool_name": { "type": "string" },
                "input": { "type": "object" },
                "tool_use_id": { "type": "string" },
            },
            "required": ["tool_name", "input"],
        },
    })
}

/// Claude Code's answer for one permission question.
async fn call(ctx: &Context, args: &ApproveArgs, arguments: &Value) -> Value {
    let Some(tool_name) = arguments["tool_name"].as_str().filter(|s| !s.is_empty()) else {
        return deny("Maestro: the permission request named no tool");
    };
    let input = arguments.get("input").cloned().unwrap_or(json!({}));
    let request = PermissionRequest {
        summary: summarize(tool_name, &input),
        tool_name: tool_name.to_owned(),
        input: input.clone(),
        agent_session: None,
        cwd: None,
    };
    match ask(ctx, args, &request).await {
        Verdict::Allow => json!({ "behavior": "allow", "updatedInput": input }),
        Verdict::Deny { reason } => deny(&reason),
        Verdict::Ask => {
            deny("Maestro: nobody answered, and a headless agent has no terminal to ask")
        }
    }
}

fn deny(message: &str) -> Value {
    json!({ "behavior": "deny", "message": message })
}
