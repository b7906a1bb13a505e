//! The agent seam holds: outside `src/agent/copilot/`, nothing in `src/` names Copilot, except
//! the registration of the agent and the places listed below, each with its reason. A second
//! agent is a new folder; this test keeps the first one from leaking back across the tree.

use std::path::{Path, PathBuf};

const AGENT_FOLDER: &str = "src/agent/copilot/";

/// Files that may name the agent, and why.
const ALLOWED_FILES: &[(&str, &str)] = &[
    (
        "src/cli/demo_session.jsonl",
        "a recorded session in the default agent's own format (data the demo plays)",
    ),
    // The server stores and displays whatever vendor a batch names; these mentions are stored
    // data values, test fixtures and the reading of the transcript format it renders. The
    // server is its own seam (issue 9/14), left as it is here.
    (
        "src/server/web/entry.rs",
        "renders the transcript format (its version field)",
    ),
    ("src/server/web/model.rs", "doc example of a stored vendor value"),
    (
        "src/server/storage/mod.rs",
        "doc example of a stored vendor value",
    ),
    ("src/server/web/memory.rs", "a stored vendor value in test data"),
    ("src/server/web/query.rs", "a stored vendor value in test data"),
    (
        "src/server/web/pages/usage.rs",
        "user-facing text about where usage comes from",
    ),
    (
        "src/server/web/pages/session.rs",
        "user-facing text about where usage comes from",
    ),
    (
        "src/server/usage.rs",
        "doc on how the usage lines changed across the agent's versions",
    ),
    (
        "src/server/storage/sled_import.rs",
        "the vendor of every session an old store held",
    ),
];

/// Lines of `src/agent/mod.rs` that register the agent (the one place that lists agents).
fn is_registration(file: &str, line: &str) -> bool {
    file == "src/agent/mod.rs" && (line.trim() == "pub mod copilot;" || line.contains("copilot::"))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn nothing_outside_the_agent_folder_names_it() {
    // The checkout being tested, as cargo says when it runs the test; the path compiled in is
    // only a fallback (a binary built in another checkout of the same sources can be reused).
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let root = root.as_path();
    let mut all = Vec::new();
    files(&root.join("src"), &mut all);
    assert!(all.len() > 50, "src/ was not found: {all:?}");
    let mut offenders = Vec::new();
    for path in &all {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with(AGENT_FOLDER) || ALLOWED_FILES.iter().any(|(f, _)| *f == rel) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if line.to_lowercase().contains("copilot") && !is_registration(&rel, line) {
                offenders.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "the agent is named outside {AGENT_FOLDER} (move it behind src/agent's trait, or list \
         the file here with its reason):\n{}",
        offenders.join("\n")
    );
}
