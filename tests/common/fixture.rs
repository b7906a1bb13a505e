//! A Copilot CLI session written by the project for its own tests, so that the suite needs
//! nothing beside the checkout.
//!
//! It has the shape of a real `events.jsonl` (the event types, their order and their sizes follow
//! a typical two-prompt Copilot session): 55 lines and about 160 KB, two large system messages,
//! tool results of several kilobytes, multi-byte text (CJK, emoji), JSON escapes, two secrets for
//! redaction to find, and `session.shutdown` as its last line. Its shutdown carries the same
//! per-model totals as the VibeCodingTracker research sample (6 requests, 186,809 input, 2,848
//! output, 151,738 cache-read and 1,024 reasoning tokens on `claude-sonnet-4.6`), so the figures
//! the tests check read the same whether a test runs on this fixture or on the real sample.
//!
//! Everything is generated from a fixed seed: the same bytes on every run and every machine.

use serde_json::{json, Value};

/// Lines in [`session`]; the shutdown is the last one.
pub const SESSION_LINES: usize = 55;

/// A small deterministic generator (xorshift64*), so the text varies without a dependency.
struct Words(u64);

const VOCABULARY: &[&str] = &[
    "the",
    "session",
    "writes",
    "each",
    "event",
    "to",
    "its",
    "log",
    "and",
    "a",
    "hook",
    "reads",
    "transcript",
    "line",
    "after",
    "server",
    "stores",
    "once",
    "token",
    "usage",
    "model",
    "cache",
    "request",
    "file",
    "function",
    "returns",
    "error",
    "test",
    "build",
    "crate",
    "module",
    "state",
    "machine",
    "delivery",
    "retry",
    "budget",
    "watermark",
    "batch",
    "redaction",
    "secret",
    "path",
    "整理",
    "設定檔",
    "測試",
    "🚀",
    "✅",
    "naïve",
    "Grüße",
    "\"quoted\"",
    "back\\slash",
    "tab\there",
];

impl Words {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// About `bytes` bytes of prose, in lines of ten words.
    fn prose(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 64);
        let mut n = 0;
        while out.len() < bytes {
            let word = VOCABULARY[(self.next() % VOCABULARY.len() as u64) as usize];
            out.push_str(word);
            n += 1;
            out.push(if n % 10 == 0 { '\n' } else { ' ' });
        }
        out
    }

    /// About `bytes` bytes of code-like text.
    fn code(&mut self, bytes: usize) -> String {
        let mut out = String::with_capacity(bytes + 64);
        let mut n = 0u64;
        while out.len() < bytes {
            n += 1;
            let v = self.next() % 1000;
            out.push_str(&format!(
                "{n:>4}\tfn step_{v}(state: &State) -> Result<Vec<u8>, String> {{ Ok(format!(\"{{}}\", {v})) }}\n"
            ));
        }
        out
    }
}

struct Writer {
    lines: Vec<String>,
    words: Words,
    parent: Option<String>,
    clock_ms: u64,
}

impl Writer {
    fn event(&mut self, kind: &str, data: Value) {
        let n = self.lines.len() as u64 + 1;
        let id = format!("f1c0ffee-0000-4000-8000-{n:012}");
        self.clock_ms += 1_000 + self.words.next() % 4_000;
        // Copilot writes `type` first; json! would sort the keys.
        let line = format!(
            "{{\"type\":{},\"data\":{},\"id\":{},\"timestamp\":{},\"parentId\":{}}}",
            json!(kind),
            data,
            json!(id),
            json!(timestamp(self.clock_ms)),
            json!(self.parent),
        );
        self.parent = Some(id);
        self.lines.push(line);
    }

    fn tool_start(&mut self, call: &str, tool: &str, arguments: Value) {
        self.event(
            "tool.execution_start",
            json!({"toolCallId": call, "toolName": tool, "arguments": arguments}),
        );
    }

    fn tool_complete(&mut self, call: &str, result: String) {
        self.event(
            "tool.execution_complete",
            json!({
                "toolCallId": call,
                "model": "claude-sonnet-4.6",
                "interactionId": "fixture-interaction",
                "success": true,
                "result": {"content": result},
                "toolTelemetry": {},
            }),
        );
    }

    fn assistant(&mut self, id: &str, bytes: usize, tools: &[&str]) {
        let content = self.words.prose(bytes);
        let requests: Vec<Value> = tools
            .iter()
            .map(|t| json!({"toolCallId": t, "name": "view", "type": "function"}))
            .collect();
        self.event(
            "assistant.message",
            json!({
                "messageId": id,
                "content": content,
                "toolRequests": requests,
                "interactionId": "fixture-interaction",
                "outputTokens": 120,
            }),
        );
    }
}

/// `2026-04-23T17:MM:SS.mmmZ`-style times from an offset in milliseconds.
fn timestamp(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "2026-04-23T{:02}:{:02}:{:02}.{:03}Z",
        17 + s / 3600 % 6,
        s / 60 % 60,
        s % 60,
        ms % 1000
    )
}

/// The fixture session: 55 lines, `session.shutdown` last, every line ending in `\n`.
pub fn session() -> Vec<u8> {
    let mut w = Writer {
        lines: Vec::new(),
        words: Words(0x6b63_6170_6669_7874),
        parent: None,
        clock_ms: 0,
    };
    w.event(
        "session.start",
        json!({
            "sessionId": "f1c0ffee-0000-4000-8000-000000000000",
            "version": 1,
            "producer": "copilot-agent",
            "copilotVersion": "1.0.31",
            "startTime": "2026-04-23T17:00:00.000Z",
            "context": {"cwd": "/home/dev/project", "gitRoot": "/home/dev/project", "branch": "main"},
        }),
    );
    w.event(
        "session.mode_changed",
        json!({"previousMode": "interactive", "newMode": "autopilot"}),
    );
    w.event("session.model_change", json!({"newModel": "claude-sonnet-4.6"}));
    w.event(
        "session.model_change",
        json!({"previousModel": "claude-sonnet-4.6", "newModel": "claude-sonnet-4.6", "previousReasoningEffort": null, "reasoningEffort": "medium"}),
    );
    w.event(
        "session.info",
        json!({"infoType": "mcp", "message": "Connected to 1 MCP server"}),
    );
    let system = w.words.prose(38_000);
    w.event("system.message", json!({"role": "system", "content": system}));
    let prompt = w.words.prose(600);
    w.event(
        "user.message",
        json!({"content": prompt, "attachments": [], "agentMode": "interactive", "interactionId": "fixture-interaction"}),
    );

    // Turn 0: four tools, one of them reads a file that holds two secrets.
    w.event(
        "assistant.turn_start",
        json!({"turnId": "0", "interactionId": "fixture-interaction"}),
    );
    w.assistant("m-0", 3_000, &["t-1", "t-2", "t-3", "t-4"]);
    for (call, path) in [
        ("t-1", "README.md"),
        ("t-2", "src/main.rs"),
        ("t-3", "Cargo.toml"),
        ("t-4", ".env"),
    ] {
        w.tool_start(call, "view", json!({"path": path}));
    }
    let code = w.words.code(1_400);
    let readme = w.words.prose(300);
    w.tool_complete("t-1", readme);
    w.tool_complete("t-2", code);
    let big = w.words.code(6_000);
    w.tool_complete("t-3", big);
    let env_file = format!(
        "GITHUB_TOKEN=ghp_{}\nDATABASE_URL=postgres://app:s3cr3t-Passw0rd@db.internal:5432/app\n{}",
        "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        w.words.code(14_500)
    );
    w.tool_complete("t-4", env_file);
    w.event("assistant.turn_end", json!({"turnId": "0"}));

    // Turn 1: three tools.
    w.event(
        "assistant.turn_start",
        json!({"turnId": "1", "interactionId": "fixture-interaction"}),
    );
    w.assistant("m-1", 1_000, &["t-5", "t-6", "t-7"]);
    for call in ["t-5", "t-6", "t-7"] {
        w.tool_start(call, "grep", json!({"pattern": "fn step_", "path": "src"}));
    }
    for (call, bytes) in [("t-5", 1_000), ("t-6", 1_000), ("t-7", 7_500)] {
        let out = w.words.code(bytes);
        w.tool_complete(call, out);
    }
    w.event("assistant.turn_end", json!({"turnId": "1"}));

    // Turn 2: tools started and completed in pairs.
    w.event(
        "assistant.turn_start",
        json!({"turnId": "2", "interactionId": "fixture-interaction"}),
    );
    w.assistant("m-2", 800, &["t-8", "t-9"]);
    w.tool_start("t-8", "bash", json!({"command": "cargo test --locked"}));
    w.tool_start("t-9", "view", json!({"path": "tests/common/mod.rs"}));
    let out = w.words.prose(800);
    w.tool_complete("t-8", out);
    let out = w.words.code(4_800);
    w.tool_complete("t-9", out);
    for call in ["t-10", "t-11"] {
        w.tool_start(call, "view", json!({"path": "docs/notes.md"}));
        let out = w.words.prose(250);
        w.tool_complete(call, out);
    }
    w.event("assistant.turn_end", json!({"turnId": "2"}));

    // Turn 3: one tool; turn 4: the answer.
    w.event(
        "assistant.turn_start",
        json!({"turnId": "3", "interactionId": "fixture-interaction"}),
    );
    w.assistant("m-3", 1_800, &["t-12"]);
    w.tool_start("t-12", "view", json!({"path": "src/lib.rs"}));
    let out = w.words.code(7_400);
    w.tool_complete("t-12", out);
    w.event("assistant.turn_end", json!({"turnId": "3"}));
    w.event(
        "assistant.turn_start",
        json!({"turnId": "4", "interactionId": "fixture-interaction"}),
    );
    w.assistant("m-4", 7_700, &[]);
    w.event("assistant.turn_end", json!({"turnId": "4"}));

    // The second prompt: the system message again, one more turn, the task summary.
    let system = w.words.prose(38_000);
    w.event("system.message", json!({"role": "system", "content": system}));
    let prompt = w.words.prose(900);
    w.event(
        "user.message",
        json!({"content": prompt, "attachments": [], "agentMode": "interactive", "interactionId": "fixture-interaction-2"}),
    );
    w.event(
        "assistant.turn_start",
        json!({"turnId": "0", "interactionId": "fixture-interaction-2"}),
    );
    w.assistant("m-5", 4_500, &["t-13"]);
    w.tool_start("t-13", "bash", json!({"command": "cargo doc --no-deps"}));
    let out = w.words.prose(1_300);
    w.tool_complete("t-13", out);
    let summary = w.words.prose(600);
    w.event(
        "session.task_complete",
        json!({"summary": summary, "success": true}),
    );
    w.event("assistant.turn_end", json!({"turnId": "0"}));
    w.event(
        "session.shutdown",
        json!({
            "shutdownType": "routine",
            "totalPremiumRequests": 2,
            "totalApiDurationMs": 60_470,
            "sessionStartTime": 1_776_964_088_893u64,
            "codeChanges": {"linesAdded": 0, "linesRemoved": 0, "filesModified": []},
            "modelMetrics": {"claude-sonnet-4.6": {
                "requests": {"count": 6, "cost": 2},
                "usage": {"inputTokens": 186_809, "outputTokens": 2_848, "cacheReadTokens": 151_738, "cacheWriteTokens": 0, "reasoningTokens": 1_024}
            }},
            "currentModel": "claude-sonnet-4.6",
        }),
    );
    assert_eq!(w.lines.len(), SESSION_LINES, "the fixture's shape changed");
    let mut out = w.lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}

/// A different, shorter session (12 lines, ending with a shutdown): what a transcript rewritten
/// in place looks like.
pub fn short_session() -> Vec<u8> {
    let mut w = Writer {
        lines: Vec::new(),
        words: Words(0x7368_6f72_7421),
        parent: None,
        clock_ms: 0,
    };
    w.event(
        "session.start",
        json!({"sessionId": "f1c0ffee-0000-4000-8000-0000000000aa", "version": 1, "producer": "copilot-agent"}),
    );
    w.event("session.model_change", json!({"newModel": "gpt-5-mini"}));
    for turn in 0..3 {
        let prompt = w.words.prose(200);
        w.event(
            "user.message",
            json!({"content": prompt, "interactionId": format!("i-{turn}")}),
        );
        w.event("assistant.turn_start", json!({"turnId": turn.to_string()}));
        w.assistant(&format!("m-{turn}"), 400, &[]);
    }
    w.event(
        "session.shutdown",
        json!({"shutdownType": "routine", "totalPremiumRequests": 0, "modelMetrics": {"gpt-5-mini": {
            "requests": {"count": 3, "cost": 0},
            "usage": {"inputTokens": 9_000, "outputTokens": 700, "cacheReadTokens": 0, "cacheWriteTokens": 0}
        }}}),
    );
    let mut out = w.lines.join("\n").into_bytes();
    out.push(b'\n');
    out
}
