//! One Copilot transcript line, read as what a person sees in a conversation (pure).
//!
//! Unknown event types and unknown or mistyped fields are expected (Copilot adds types every
//! few releases): they become [`Entry::Other`] or are ignored, never an error. A line that is not
//! a JSON object becomes [`Entry::Unparsed`].

use serde_json::{Map, Value};

/// Which filter group a line belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// Prompts, answers and reasoning.
    Conversation,
    /// Tool calls and their results.
    Tool,
    /// `session.*`, turns, system prompts, model and mode changes.
    Lifecycle,
    /// `hook.start` / `hook.end`.
    Hook,
    /// Errors, failures and aborts.
    Error,
}

impl Category {
    /// The CSS class and filter name.
    pub fn name(self) -> &'static str {
        match self {
            Category::Conversation => "conversation",
            Category::Tool => "tool",
            Category::Lifecycle => "lifecycle",
            Category::Hook => "hook",
            Category::Error => "error",
        }
    }
}

/// A tool call an assistant message asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRequest {
    pub call_id: String,
    pub name: String,
    pub arguments: String,
}

/// What a line says.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    User {
        content: String,
    },
    Assistant {
        content: String,
        reasoning: Option<String>,
        tool_requests: Vec<ToolRequest>,
        output_tokens: Option<f64>,
    },
    Reasoning {
        content: String,
    },
    ToolStart {
        call_id: String,
        name: String,
        arguments: String,
        server: Option<String>,
    },
    ToolComplete {
        call_id: String,
        success: Option<bool>,
        result: String,
        detail: Option<String>,
        error: Option<String>,
    },
    /// A system prompt (long; shown collapsed).
    System {
        content: String,
    },
    Hook {
        hook_type: String,
        end: bool,
        success: Option<bool>,
        error: Option<String>,
    },
    Subagent {
        event: String,
        name: String,
    },
    Error {
        kind: String,
        message: String,
    },
    /// Any other event: its type and a one-line summary.
    Other {
        kind: String,
        summary: String,
    },
    /// Not a JSON object.
    Unparsed,
}

/// A parsed line: the entry and the envelope facts every entry has.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub kind: Option<String>,
    pub timestamp: Option<String>,
    /// Set on a sub-agent's lines (`agentId`, or `data.parentToolCallId`).
    pub agent: Option<String>,
    pub entry: Entry,
}

impl Parsed {
    /// The filter group of this line.
    pub fn category(&self) -> Category {
        match &self.entry {
            Entry::User { .. } | Entry::Assistant { .. } | Entry::Reasoning { .. } => Category::Conversation,
            Entry::ToolStart { .. } => Category::Tool,
            Entry::ToolComplete { success, .. } => {
                if *success == Some(false) {
                    Category::Error
                } else {
                    Category::Tool
                }
            }
            Entry::Hook { .. } => Category::Hook,
            Entry::Error { .. } => Category::Error,
            Entry::Subagent { .. } => Category::Tool,
            Entry::System { .. } | Entry::Other { .. } | Entry::Unparsed => Category::Lifecycle,
        }
    }
}

fn text(data: &Map<String, Value>, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A JSON value as a person reads it: strings as they are, anything else pretty-printed;
/// strings that hold JSON (older builds) are pretty-printed too.
pub fn readable(value: &Value) -> String {
    match value {
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ (Value::Object(_) | Value::Array(_))) => {
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| s.clone())
            }
            _ => s.clone(),
        },
        Value::Null => String::new(),
        other => serde_json::to_string_pretty(other).unwrap_or_default(),
    }
}

fn error_message(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::Object(o) => Some(
            o.get("message")
                .map(readable)
                .unwrap_or_else(|| readable(&Value::Object(o.clone()))),
        ),
        other => Some(readable(other)),
    }
}

/// Reads one stored line.
pub fn parse(line: &str) -> Parsed {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(line) else {
        return Parsed {
            kind: None,
            timestamp: None,
            agent: None,
            entry: Entry::Unparsed,
        };
    };
    let empty = Map::new();
    let data = event.get("data").and_then(Value::as_object).unwrap_or(&empty);
    let kind = text(&event, "type");
    let agent = text(&event, "agentId").or_else(|| text(data, "parentToolCallId"));
    let entry = entry_of(kind.as_deref().unwrap_or(""), data);
    Parsed {
        kind,
        timestamp: text(&event, "timestamp"),
        agent,
        entry,
    }
}

fn entry_of(kind: &str, data: &Map<String, Value>) -> Entry {
    let s = |key: &str| text(data, key).unwrap_or_default();
    match kind {
        "user.message" => Entry::User {
            content: s("content"),
        },
        "assistant.message" => Entry::Assistant {
            content: s("content"),
            reasoning: text(data, "reasoningText").filter(|r| !r.is_empty()),
            tool_requests: tool_requests(data.get("toolRequests")),
            output_tokens: data.get("outputTokens").and_then(Value::as_f64),
        },
        "assistant.reasoning" => Entry::Reasoning {
            content: s("content"),
        },
        "tool.execution_start" => Entry::ToolStart {
            call_id: s("toolCallId"),
            name: text(data, "toolName")
                .or_else(|| text(data, "name"))
                .unwrap_or_else(|| "tool".into()),
            arguments: data.get("arguments").map(readable).unwrap_or_default(),
            server: text(data, "mcpServerName"),
        },
        "tool.execution_complete" => {
            let (result, detail) = match data.get("result") {
                Some(Value::Object(r)) => {
                    let content = r.get("content").map(readable).unwrap_or_default();
                    let detail = r.get("detailedContent").map(readable).filter(|d| *d != content);
                    (content, detail)
                }
                Some(other) => (readable(other), None),
                None => (String::new(), None),
            };
            Entry::ToolComplete {
                call_id: s("toolCallId"),
                success: data.get("success").and_then(Value::as_bool),
                result,
                detail: detail.filter(|d| !d.is_empty()),
                error: error_message(data.get("error")),
            }
        }
        "system.message" => Entry::System {
            content: s("content"),
        },
        "hook.start" | "hook.end" => Entry::Hook {
            hook_type: s("hookType"),
            end: kind == "hook.end",
            success: data.get("success").and_then(Value::as_bool),
            error: error_message(data.get("error")),
        },
        "subagent.started"
        | "subagent.completed"
        | "subagent.failed"
        | "subagent.selected"
        | "subagent.deselected" => Entry::Subagent {
            event: kind.trim_start_matches("subagent.").to_string(),
            name: text(data, "agentDisplayName")
                .or_else(|| text(data, "agentName"))
                .unwrap_or_default(),
        },
        "session.error" | "model.call_failure" => Entry::Error {
            kind: text(data, "errorType").unwrap_or_else(|| kind.to_string()),
            message: s("message"),
        },
        "abort" => Entry::Error {
            kind: "abort".into(),
            message: s("reason"),
        },
        _ => Entry::Other {
            kind: if kind.is_empty() {
                "(no type)".into()
            } else {
                kind.to_string()
            },
            summary: summary_of(kind, data),
        },
    }
}

fn tool_requests(v: Option<&Value>) -> Vec<ToolRequest> {
    let list = match v {
        Some(Value::Array(a)) => a.clone(),
        // Some builds stored the list as a JSON string.
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => Vec::new(),
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|r| ToolRequest {
            call_id: text(r, "toolCallId").unwrap_or_default(),
            name: text(r, "name").unwrap_or_else(|| "tool".into()),
            arguments: r.get("arguments").map(readable).unwrap_or_default(),
        })
        .collect()
}

/// One line about a lifecycle event, from the fields that say what happened.
fn summary_of(kind: &str, data: &Map<String, Value>) -> String {
    let s = |key: &str| text(data, key);
    let parts: Vec<Option<String>> = match kind {
        "session.start" => vec![
            s("copilotVersion").map(|v| format!("Copilot {v}")),
            data.get("context")
                .and_then(Value::as_object)
                .and_then(|c| text(c, "repository").or_else(|| text(c, "cwd"))),
            s("selectedModel"),
        ],
        "session.model_change" => vec![s("newModel").map(|m| format!("model {m}")), s("cause")],
        "session.mode_changed" => vec![s("newMode").map(|m| format!("mode {m}"))],
        "session.shutdown" => vec![s("shutdownType"), s("errorReason")],
        "session.task_complete" => vec![s("summary")],
        "assistant.turn_start" | "assistant.turn_end" => vec![s("turnId").map(|t| format!("turn {t}"))],
        _ => vec![
            s("message"),
            s("summary"),
            s("reason"),
            s("infoType"),
            s("warningType"),
        ],
    };
    let joined = parts.into_iter().flatten().collect::<Vec<_>>().join(" · ");
    super::format::truncate(&joined, 300).0.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_lines_parse() {
        let p =
            parse(r#"{"type":"user.message","data":{"content":"hi"},"timestamp":"2026-01-01T00:00:00Z"}"#);
        assert_eq!(p.entry, Entry::User { content: "hi".into() });
        assert_eq!(p.category(), Category::Conversation);
        assert_eq!(p.timestamp.as_deref(), Some("2026-01-01T00:00:00Z"));
        let p = parse(
            r#"{"type":"assistant.message","data":{"content":"ok","reasoningText":"think","outputTokens":7,"toolRequests":[{"toolCallId":"c1","name":"bash","arguments":{"command":"ls"}}],"parentToolCallId":"p1"}}"#,
        );
        let Entry::Assistant {
            reasoning,
            tool_requests,
            output_tokens,
            ..
        } = &p.entry
        else {
            panic!("{p:?}")
        };
        assert_eq!(reasoning.as_deref(), Some("think"));
        assert_eq!(tool_requests[0].name, "bash");
        assert!(tool_requests[0].arguments.contains("\"command\": \"ls\""));
        assert_eq!(*output_tokens, Some(7.0));
        assert_eq!(p.agent.as_deref(), Some("p1"));
    }

    #[test]
    fn tools_hooks_and_errors_parse_in_old_and_new_shapes() {
        let p = parse(
            r#"{"type":"tool.execution_start","data":{"toolCallId":"c","name":"view","arguments":"{\"path\":\"/x\"}"}}"#,
        );
        assert!(
            matches!(&p.entry, Entry::ToolStart { name, arguments, .. } if name == "view" && arguments.contains("\"path\""))
        );
        let p = parse(
            r#"{"type":"tool.execution_complete","data":{"toolCallId":"c","success":false,"result":"plain","error":{"message":"boom"}}}"#,
        );
        assert!(
            matches!(&p.entry, Entry::ToolComplete { result, error: Some(e), .. } if result == "plain" && e == "boom")
        );
        assert_eq!(p.category(), Category::Error);
        let p = parse(r#"{"type":"hook.end","data":{"hookType":"sessionEnd","success":true}}"#);
        assert_eq!(p.category(), Category::Hook);
        let p = parse(r#"{"type":"session.error","data":{"errorType":"rate_limit","message":"slow down"}}"#);
        assert!(matches!(&p.entry, Entry::Error { kind, .. } if kind == "rate_limit"));
    }

    #[test]
    fn odd_lines_never_fail() {
        for line in [
            "",
            "not json",
            "[1,2]",
            "{}",
            r#"{"type":5,"data":"x"}"#,
            r#"{"type":"user.message","data":{"content":{"nested":true}}}"#,
        ] {
            let _ = parse(line).category();
        }
        assert_eq!(parse("nope").entry, Entry::Unparsed);
        let p = parse(
            r#"{"type":"session.model_change","data":{"newModel":"gpt","cause":"rate_limit_auto_switch"}}"#,
        );
        assert_eq!(
            p.entry,
            Entry::Other {
                kind: "session.model_change".into(),
                summary: "model gpt · rate_limit_auto_switch".into()
            }
        );
    }
}
