//! A tool's settings file as a document Maestro can merge into and take back out of: JSON
//! with its key order kept (Claude Code, Gemini CLI) or TOML with its layout kept (Codex), and
//! the rule that recognises Maestro's own entries (a `maestro` executable running a hook
//! subcommand). Knows nothing of which events a tool has; see `tools.rs`.

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Value, json};

use super::super::agent_tools::AgentTool;
use super::tools::HookSpec;

// ---------------------------------------------------------------------------------------
// Recognising Maestro's entries.

/// Splits a command line the way a POSIX shell would for simple words and quotes.
pub(super) fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    cur.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                cur.push(n);
                            }
                        }
                        c => cur.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

/// `s` as one shell word.
pub(super) fn shell_quote(s: &str) -> String {
    let safe = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+:@,=%".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Whether a hook command is one Maestro installs: a `maestro` executable running a hook
/// subcommand.
pub(super) fn is_ours(command: &str) -> bool {
    let words = shell_words(command);
    let Some((prog, rest)) = words.split_first() else {
        return false;
    };
    let name = Path::new(prog)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if name != "maestro" && name != "maestro.exe" {
        return false;
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match rest.as_slice() {
        [
            "session",
            "register" | "resume-working" | "needs-input" | "complete",
        ] => true,
        ["approve", args @ ..] => args.contains(&"--tool"),
        _ => false,
    }
}

/// One installed Maestro hook, as found in a file (compared to decide idempotence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Found {
    pub(super) event: String,
    matcher: Option<String>,
    command: String,
    timeout: Option<i64>,
}

pub(super) fn wanted(specs: &[HookSpec]) -> Vec<Found> {
    let mut v: Vec<Found> = specs
        .iter()
        .map(|s| Found {
            event: s.event.to_owned(),
            matcher: s.matcher.map(str::to_owned),
            command: s.command.clone(),
            timeout: Some(s.timeout as i64),
        })
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------
// A settings document, JSON or TOML.

#[derive(Clone)]
pub(super) enum Doc {
    Json(J),
    Toml(toml_edit::DocumentMut),
}

pub(super) fn is_toml(tool: AgentTool) -> bool {
    tool == AgentTool::Codex
}

impl Doc {
    pub(super) fn parse(tool: AgentTool, text: &str) -> Result<Doc, String> {
        if is_toml(tool) {
            return text
                .parse::<toml_edit::DocumentMut>()
                .map(Doc::Toml)
                .map_err(|e| e.to_string().trim_end().to_owned());
        }
        if text.trim().is_empty() {
            return Ok(Doc::Json(J::Obj(Vec::new())));
        }
        let j: J = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if !matches!(j, J::Obj(_)) {
            return Err("the top level is not a JSON object".into());
        }
        Ok(Doc::Json(j))
    }

    pub(super) fn render(&self) -> String {
        match self {
            Doc::Json(j) => {
                let mut s = serde_json::to_string_pretty(j).expect("JSON serialises");
                s.push('\n');
                s
            }
            Doc::Toml(d) => d.to_string(),
        }
    }

    /// Structural content, key order ignored, empty hook containers dropped.
    pub(super) fn canonical(&self) -> Value {
        let mut v = match self {
            Doc::Json(j) => j.to_value(),
            Doc::Toml(d) => toml_table_value(d.as_table()),
        };
        if let Some(root) = v.as_object_mut()
            && let Some(Value::Object(h)) = root.get_mut("hooks")
        {
            h.retain(|_, e| !matches!(e, Value::Array(a) if a.is_empty()));
            if h.is_empty() {
                root.remove("hooks");
            }
        }
        v
    }

    pub(super) fn found(&self) -> Vec<Found> {
        let mut out = match self {
            Doc::Json(j) => json_found(j),
            Doc::Toml(d) => toml_found(d),
        };
        out.sort();
        out
    }

    /// Removes Maestro's hooks, and the groups, events and `hooks` table they leave empty.
    pub(super) fn strip(&mut self) {
        match self {
            Doc::Json(j) => json_strip(j),
            Doc::Toml(d) => toml_strip(d),
        }
    }

    pub(super) fn add(&mut self, specs: &[HookSpec]) -> Result<(), String> {
        match self {
            Doc::Json(j) => json_add(j, specs),
            Doc::Toml(d) => toml_add(d, specs),
        }
    }
}

// JSON with key order kept (serde_json's own map sorts keys unless a feature is on).

/// A JSON value whose objects keep their keys in file order.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn to_value(&self) -> Value {
        match self {
            J::Null => Value::Null,
            J::Bool(b) => Value::Bool(*b),
            J::Num(n) => Value::Number(n.clone()),
            J::Str(s) => Value::String(s.clone()),
            J::Arr(a) => Value::Array(a.iter().map(J::to_value).collect()),
            J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect()),
        }
    }

    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(o) => o.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for J {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Num(n) => n.serialize(s),
            J::Str(v) => s.serialize_str(v),
            J::Arr(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            J::Obj(o) => {
                let mut map = s.serialize_map(Some(o.len()))?;
                for (k, v) in o {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_none<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, b: bool) -> Result<J, E> {
                Ok(J::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<J, E> {
                Ok(J::Num(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<J, E> {
                serde_json::Number::from_f64(n)
                    .map(J::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, s: &str) -> Result<J, E> {
                Ok(J::Str(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<J, E> {
                Ok(J::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = a.next_element()? {
                    v.push(e);
                }
                Ok(J::Arr(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut v = Vec::new();
                while let Some((k, e)) = a.next_entry::<String, J>()? {
                    v.push((k, e));
                }
                Ok(J::Obj(v))
            }
        }
        d.deserialize_any(V)
    }
}

pub(super) fn json_found(root: &J) -> Vec<Found> {
    let mut out = Vec::new();
    let Some(J::Obj(events)) = root.get("hooks") else {
        return out;
    };
    for (event, groups) in events {
        let J::Arr(groups) = groups else { continue };
        for g in groups {
            let matcher = g.get("matcher").and_then(J::as_str).map(str::to_owned);
            let Some(J::Arr(handlers)) = g.get("hooks") else {
                continue;
            };
            for h in handlers {
                let Some(cmd) = h.get("command").and_then(J::as_str) else {
                    continue;
                };
                if is_ours(cmd) {
                    out.push(Found {
                        event: event.clone(),
                        matcher: matcher.clone(),
                        command: cmd.to_owned(),
                        timeout: match h.get("timeout") {
                            Some(J::Num(n)) => n.as_i64(),
                            _ => None,
                        },
                    });
                }
            }
        }
    }
    out
}

pub(super) fn json_handler_is_ours(h: &J) -> bool {
    h.get("command").and_then(J::as_str).is_some_and(is_ours)
}

pub(super) fn json_strip(root: &mut J) {
    let J::Obj(top) = root else { return };
    let Some(pos) = top.iter().position(|(k, _)| k == "hooks") else {
        return;
    };
    let J::Obj(events) = &mut top[pos].1 else {
        return;
    };
    let mut touched_any = false;
    events.retain_mut(|(_, groups)| {
        let J::Arr(groups) = groups else { return true };
        let mut touched = false;
        groups.retain_mut(|g| {
            let J::Obj(fields) = g else { return true };
            let Some((_, J::Arr(handlers))) = fields.iter_mut().find(|(k, _)| k == "hooks") else {
                return true;
            };
            let before = handlers.len();
            handlers.retain(|h| !json_handler_is_ours(h));
            if handlers.len() == before {
                return true;
            }
            touched = true;
            !handlers.is_empty()
        });
        touched_any |= touched;
        !(touched && groups.is_empty())
    });
    if touched_any && events.is_empty() {
        top.remove(pos);
    }
}

pub(super) fn json_add(root: &mut J, specs: &[HookSpec]) -> Result<(), String> {
    let J::Obj(top) = root else {
        return Err("the top level is not a JSON object".into());
    };
    if !top.iter().any(|(k, _)| k == "hooks") {
        top.push(("hooks".into(), J::Obj(Vec::new())));
    }
    let Some((_, J::Obj(events))) = top.iter_mut().find(|(k, _)| k == "hooks") else {
        return Err("\"hooks\" is not an object".into());
    };
    for s in specs {
        if !events.iter().any(|(k, _)| k == s.event) {
            events.push((s.event.to_owned(), J::Arr(Vec::new())));
        }
        let Some((_, J::Arr(groups))) = events.iter_mut().find(|(k, _)| k == s.event) else {
            return Err(format!("\"hooks.{}\" is not an array", s.event));
        };
        let mut handler = vec![
            ("type".to_owned(), J::Str("command".into())),
            ("command".to_owned(), J::Str(s.command.clone())),
            ("timeout".to_owned(), J::Num(s.timeout.into())),
        ];
        if let Some(n) = s.name {
            handler.insert(0, ("name".to_owned(), J::Str(n.into())));
        }
        let mut group = Vec::new();
        if let Some(m) = s.matcher {
            group.push(("matcher".to_owned(), J::Str(m.into())));
        }
        group.push(("hooks".to_owned(), J::Arr(vec![J::Obj(handler)])));
        groups.push(J::Obj(group));
    }
    Ok(())
}

// TOML (Codex): `[[hooks.<Event>]]` groups with `[[hooks.<Event>.hooks]]` handlers, or the
// same written as inline arrays.

pub(super) fn toml_value(v: &toml_edit::Value) -> Value {
    use toml_edit::Value as T;
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => json!(*i.value()),
        T::Float(f) => json!(*f.value()),
        T::Boolean(b) => json!(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(a.iter().map(toml_value).collect()),
        T::InlineTable(t) => Value::Object(
            t.iter()
                .map(|(k, v)| (k.to_owned(), toml_value(v)))
                .collect(),
        ),
    }
}

pub(super) fn toml_item(i: &toml_edit::Item) -> Value {
    match i {
        toml_edit::Item::None => Value::Null,
        toml_edit::Item::Value(v) => toml_value(v),
        toml_edit::Item::Table(t) => toml_table_value(t),
        toml_edit::Item::ArrayOfTables(a) => Value::Array(a.iter().map(toml_table_value).collect()),
    }
}

pub(super) fn toml_table_value(t: &toml_edit::Table) -> Value {
    Value::Object(
        t.iter()
            .map(|(k, v)| (k.to_owned(), toml_item(v)))
            .collect(),
    )
}

pub(super) fn toml_found(d: &toml_edit::DocumentMut) -> Vec<Found> {
    // The canonical JSON view has the same shape as Claude's; reuse the JSON walk.
    let v = toml_table_value(d.as_table());
    let j: J = serde_json::from_value(v).unwrap_or(J::Null);
    json_found(&j)
}

pub(super) fn toml_handler_is_ours(t: &dyn toml_edit::TableLike) -> bool {
    t.get("command")
        .and_then(|c| c.as_str())
        .is_some_and(is_ours)
}

/// Removes our handlers from one group; returns (touched, now empty).
pub(super) fn toml_strip_group(g: &mut dyn toml_edit::TableLike) -> (bool, bool) {
    match g.get_mut("hooks") {
        Some(toml_edit::Item::ArrayOfTables(a)) => {
            let before = a.len();
            a.retain(|t| !toml_handler_is_ours(t));
            (a.len() != before, a.is_empty())
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(a))) => {
            let before = a.len();
            a.retain(|v| !v.as_inline_table().is_some_and(|t| toml_handler_is_ours(t)));
            (a.len() != before, a.is_empty())
        }
        _ => (false, false),
    }
}

pub(super) fn toml_strip(d: &mut toml_edit::DocumentMut) {
    let Some(hooks) = d.get_mut("hooks").and_then(|h| h.as_table_like_mut()) else {
        return;
    };
    let events: Vec<String> = hooks.iter().map(|(k, _)| k.to_owned()).collect();
    let mut touched_any = false;
    for event in events {
        let Some(item) = hooks.get_mut(&event) else {
            continue;
        };
        let (touched, empty) = match item {
            toml_edit::Item::ArrayOfTables(groups) => {
                let mut drop = Vec::new();
                let mut touched = false;
                for g in groups.iter_mut() {
                    let (tc, e) = toml_strip_group(g);
                    touched |= tc;
                    drop.push(tc && e);
                }
                let mut i = 0;
                groups.retain(|_| {
                    let keep = !drop[i];
                    i += 1;
                    keep
                });
                (touched, groups.is_empty())
            }
            toml_edit::Item::Value(toml_edit::Value::Array(groups)) => {
                let mut drop = Vec::new();
                let mut touched = false;
                for g in groups.iter_mut() {
                    match g.as_inline_table_mut() {
                        Some(t) => {
                            let (tc, e) = toml_strip_group(t);
                            touched |= tc;
                            drop.push(tc && e);
                        }
                        None => drop.push(false),
                    }
                }
                let mut i = 0;
                groups.retain(|_| {
                    let keep = !drop[i];
                    i += 1;
                    keep
                });
                (touched, groups.is_empty())
            }
            _ => (false, false),
        };
        if touched {
            touched_any = true;
            if empty {
                hooks.remove(&event);
            }
        }
    }
    if touched_any && hooks.is_empty() {
        d.remove("hooks");
    }
}

pub(super) fn toml_add(d: &mut toml_edit::DocumentMut, specs: &[HookSpec]) -> Result<(), String> {
    use toml_edit::{ArrayOfTables, InlineTable, Item, Table, value};
    if d.get("hooks").is_none() {
        let mut t = Table::new();
        t.set_implicit(true);
        d.insert("hooks", Item::Table(t));
    }
    let Some(hooks) = d.get_mut("hooks").and_then(Item::as_table_mut) else {
        return Err("`hooks` is not a table".into());
    };
    for s in specs {
        match hooks.get_mut(s.event) {
            None => {
                hooks.insert(s.event, Item::ArrayOfTables(ArrayOfTables::new()));
            }
            Some(Item::ArrayOfTables(_)) | Some(Item::Value(toml_edit::Value::Array(_))) => {}
            Some(_) => return Err(format!("`hooks.{}` is not an array of tables", s.event)),
        }
        match hooks.get_mut(s.event) {
            Some(Item::ArrayOfTables(groups)) => {
                let mut handler = Table::new();
                handler.insert("type", value("command"));
                handler.insert("command", value(s.command.as_str()));
                handler.insert("timeout", value(s.timeout as i64));
                let mut handlers = ArrayOfTables::new();
                handlers.push(handler);
                let mut group = Table::new();
                if let Some(m) = s.matcher {
                    group.insert("matcher", value(m));
                }
                group.insert("hooks", Item::ArrayOfTables(handlers));
                groups.push(group);
            }
            Some(Item::Value(toml_edit::Value::Array(groups))) => {
                let mut handler = InlineTable::new();
                handler.insert("type", "command".into());
                handler.insert("command", s.command.as_str().into());
                handler.insert("timeout", (s.timeout as i64).into());
                let mut handlers = toml_edit::Array::new();
                handlers.push(handler);
                let mut group = InlineTable::new();
                if let Some(m) = s.matcher {
                    group.insert("matcher", m.into());
                }
                group.insert("hooks", handlers.into());
                groups.push(group);
            }
            _ => unreachable!("checked above"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tools::specs;
    use super::*;
    use crate::cli::approve::Fallback;

    #[test]
    fn shell_words_and_quoting_round_trip() {
        for p in [
            "/usr/bin/maestro",
            "/home/a b/maestro",
            "/tmp/it's/maestro",
            "C:/x/maestro.exe",
        ] {
            let cmd = format!("{} session register", shell_quote(p));
            assert_eq!(shell_words(&cmd), vec![p, "session", "register"], "{cmd}");
            assert!(is_ours(&cmd), "{cmd}");
        }
        assert_eq!(shell_words(r#"a "b c" d\ e"#), vec!["a", "b c", "d e"]);
    }

    #[test]
    fn recognises_only_our_commands() {
        assert!(is_ours("maestro session needs-input"));
        assert!(is_ours("/x/maestro approve --tool codex --fallback ask"));
        assert!(!is_ours("maestro session list"));
        assert!(!is_ours("notify-send maestro session register"));
        assert!(!is_ours("/x/maestro-old session register"));
        assert!(!is_ours("maestro session register && rm -rf /"));
        assert!(!is_ours(""));
    }

    #[test]
    fn json_keeps_key_order() {
        let text = r#"{"z": 1, "a": {"y": [1, 2.5, "s"], "b": null}, "m": true}"#;
        let j: J = serde_json::from_str(text).unwrap();
        let out = serde_json::to_string(&j).unwrap();
        assert_eq!(out, r#"{"z":1,"a":{"y":[1,2.5,"s"],"b":null},"m":true}"#);
    }

    #[test]
    fn toml_install_then_strip_is_structurally_the_original() {
        let orig = "model = \"o3\"\n\n[[hooks.Stop]]\n[[hooks.Stop.hooks]]\ntype = \"command\"\ncommand = \"say done\"\n";
        let mut d = Doc::parse(AgentTool::Codex, orig).unwrap();
        d.strip();
        d.add(&specs(AgentTool::Codex, Fallback::Ask, "/bin/maestro"))
            .unwrap();
        let text = d.render();
        assert!(text.starts_with(orig), "{text}");
        let again = Doc::parse(AgentTool::Codex, &text).unwrap();
        assert_eq!(again.found().len(), 6);
        let mut stripped = again.clone();
        stripped.strip();
        assert_eq!(
            stripped.canonical(),
            Doc::parse(AgentTool::Codex, orig).unwrap().canonical()
        );
    }
}
