//! Issue 18, "a day in the life of an operator": the rough edges a new
//! operator met, each checked through the real binary against a real node
//! (exit codes, what is printed, what the logs say).

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const STARTUP: Duration = Duration::from_secs(20);

/// One node started as an operator would (no RUST_LOG), ready to answer.
async fn one_node(root: &std::path::Path) -> (NodeSpec, Proc) {
    let spec = NodeSpec::new(1, root);
    let mut command = serve_command(1, &spec.data_dir, &spec.api, &spec.peer, &[]);
    command.env_remove("RUST_LOG");
    let node = Proc::spawn("node-1", command, root);
    let client = deadbolt_client::Client::new([spec.url()]).expect("client");
    eventually(&format!("node ready\n{}", node.logs()), STARTUP, || async {
        client.ready(0).await.ok()
    })
    .await;
    (spec, node)
}

fn stderr_of(proc: &Proc) -> String {
    std::fs::read_to_string(&proc.stderr).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_say_what_they_mean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, node) = one_node(dir.path()).await;
    let url = spec.url();

    // acquire says how long the lock is held, since nothing renews it.
    let (code, out, err) = cli(&url, &["acquire", "day"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("held until released, at most 30 s"),
        "acquire states its hold time: {out}"
    );
    let token: u64 = out
        .split_whitespace()
        .last()
        .and_then(|_| out.split("fencing token ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("a token in {out}"));

    // status: a time and an age, not ms since the epoch.
    let (code, out, _) = cli(&url, &["status", "day"]);
    assert_eq!(code, 0);
    assert!(out.contains(" UTC (") && out.contains(" ago)"), "{out}");
    assert!(!out.contains(" ms\n"), "{out}");

    // validate: 0 for a valid token, 3 for an invalid one.
    let token_text = token.to_string();
    let (code, out, _) = cli(&url, &["validate", "day", "--fencing-token", &token_text]);
    assert_eq!(code, 0, "{out}");
    let stale = (token + 1000).to_string();
    let (code, out, _) = cli(&url, &["validate", "day", "--fencing-token", &stale]);
    assert_eq!(code, 3, "an invalid token exits 3: {out}");

    // The JSON lock_held error lists the holders, as the human one does.
    let (code, _, err) = cli(&url, &["--json", "acquire", "day"]);
    assert_eq!(code, 3, "{err}");
    let error: serde_json::Value = serde_json::from_str(err.trim()).expect("JSON error");
    assert_eq!(error["error"]["code"], "lock_held", "{err}");
    assert_eq!(
        error["error"]["details"]["holders"][0]["fencing_token"], token,
        "{err}"
    );

    // lock --json prints the grant as JSON before the command's output.
    let (code, out, err) = cli(&url, &["--json", "lock", "json-lock", "--", "echo", "ran"]);
    assert_eq!(code, 0, "{out}{err}");
    let first = out.lines().next().unwrap_or_default();
    let grant: serde_json::Value = serde_json::from_str(first).expect("a JSON grant first");
    assert_eq!(grant["lock"], "json-lock", "{out}");
    assert!(grant["fencing_token"].as_u64().is_some(), "{out}");
    assert_eq!(out.lines().nth(1), Some("ran"), "{out}");

    // A command that cannot run exits as a shell's would.
    let (code, _, err) = cli(&url, &["lock", "nf", "--", "/nonexistent/command"]);
    assert_eq!(code, 127, "not found: {err}");
    let not_executable = dir.path().join("plain-file");
    std::fs::write(&not_executable, "not a program").expect("write");
    let path = not_executable.to_str().expect("utf-8 path");
    let (code, _, err) = cli(&url, &["lock", "nx", "--", path]);
    assert_eq!(code, 126, "not executable: {err}");

    // No message is printed twice.
    let (code, _, err) = cli(&url, &["status", "bad name"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("0x20").count(), 1, "{err}");
    let closed = format!("http://{}", free_addr());
    let (code, _, err) = cli(&closed, &["status", "x"]);
    assert_eq!(code, 1);
    assert_eq!(err.matches("Connection refused").count(), 1, "{err}");

    // The storage library's INFO lines stay out of the default logs.
    let logs = stderr_of(&node);
    assert!(logs.contains("node started"), "{logs}");
    assert!(!logs.contains("ingestion"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_body_field_is_a_400_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, _node) = one_node(dir.path()).await;
    let body = r#"{"sesion_id": "999"}"#;
    let (status, _, json) = http_request(&spec.api, "POST", "/v1/locks/x/acquire", &[], body).await;
    assert_eq!(status, 400, "{json}");
    assert_eq!(json["error"]["details"]["field"], "sesion_id", "{json}");
    // Nothing was acquired with a throwaway session in its place.
    let (_, _, state) = http_request(&spec.api, "GET", "/v1/locks/x", &[], "").await;
    assert_eq!(state["state"], "free", "{state}");
    // The acquire answer is still a valid release body (README, curl).
    let (status, _, grant) =
        http_request(&spec.api, "POST", "/v1/locks/x/acquire", &[], "{}").await;
    assert_eq!(status, 200, "{grant}");
    let (status, _, answer) = http_request(
        &spec.api,
        "POST",
        "/v1/locks/x/release",
        &[],
        &grant.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_names_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, first) = one_node(dir.path()).await;
    let other = NodeSpec::new(1, dir.path());
    let output = serve_command(1, &spec.data_dir, &other.api, &other.peer, &[])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run a second server");
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    let expected = format!(
        "data dir in use by another deadbolt process (pid {})",
        first.pid()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("founder"), "no founder-list warning: {err}");
    assert!(!err.contains("Locked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

/// `deadbolt ARGS` with `env`, no node needed: (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let output = Command::new(bin())
        .args(args)
        .envs(env.iter().copied())
        .env_remove("DEADBOLT_ENDPOINTS")
        .stdin(Stdio::null())
        .output()
        .expect("run the binary");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    for value in ["abc", "0"] {
        let (code, _, err) = run(&["serve"], &[("DEADBOLT_NODE_ID", value)]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("DEADBOLT_NODE_ID"), "{value}: {err}");
        assert!(!err.contains("--node-id"), "{value}: {err}");
    }
    // A flag is still named as the flag.
    let (code, _, err) = run(&["serve", "--node-id", "abc"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--node-id"), "{err}");
}

#[test]
fn serve_help_shows_defaults_and_no_client_flags() {
    let (code, out, err) = run(&["serve", "--help"], &[]);
    assert_eq!(code, 0, "{err}");
    for default in [
        "127.0.0.1:7070",
        "127.0.0.1:7071",
        "deadbolt-data",
        "[default: 1]",
    ] {
        assert!(out.contains(default), "{default} missing:\n{out}");
    }
    for client_only in ["--endpoints", "--json"] {
        assert!(!out.contains(client_only), "{client_only} listed:\n{out}");
    }
    assert!(out.contains("--log-format"), "{out}");
    // Still accepted, as before.
    let (code, _, err) = run(&["serve", "--json", "--node-id", "0"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("node ids start at 1"), "{err}");
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "_deadbolt()"),
        ("zsh", "#compdef deadbolt"),
        ("fish", "complete -c deadbolt"),
    ] {
        let (code, out, err) = run(&["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(
            out.contains("acquire") && out.contains("fencing-token"),
            "{shell}"
        );
    }
    let (code, _, _) = run(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2);
}

/// The doubled messages (`invalid name ...: name has byte 0x20 ...: name
/// has byte 0x20 ...`) came from one pattern: an error whose message shows
/// its cause (`{0}`, `{source}`) and that also returns the cause from
/// `source()` (`#[from]`, `#[source]`, a field named `source`), printed by
/// a chain printer (anyhow's `{:#}`). This finds the pattern in every
/// crate's sources, so a new error type cannot bring it back.
#[test]
fn no_error_type_shows_its_cause_twice() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut offenders = Vec::new();
    for krate in ["api", "core", "runtime", "server", "client", "sim"] {
        for file in rust_files(&root.join(krate).join("src")) {
            let text = std::fs::read_to_string(&file).expect("read source");
            for found in doubled_causes(&text) {
                offenders.push(format!("{}: {found}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
    // The check itself finds the pattern.
    let sample = "#[error(\"storage: {0}\")]\n    Storage(#[from] StorageError),\n";
    assert_eq!(doubled_causes(sample).len(), 1);
    let sample = "#[error(\"bad {name:?}: {source}\")]\n    Bad {\n        name: String,\n        source: E,\n    },\n";
    assert_eq!(doubled_causes(sample).len(), 1);
    let fine = "#[error(\"storage: {0}\")]\n    Storage(StorageError),\n#[error(transparent)]\n    T(#[from] E),\n";
    assert!(doubled_causes(fine).is_empty());
}

fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The `#[error("...")]` messages in `text` that show a cause the variant
/// also returns from `source()`.
fn doubled_causes(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(start) = line.find("#[error(\"") else {
            continue;
        };
        let message = &line[start..];
        // The variant: the lines after the attribute, to its closing.
        let mut variant = String::new();
        for next in lines.iter().skip(at + 1) {
            let next = next.trim();
            if next.starts_with("#[error") {
                break;
            }
            variant.push_str(next);
            variant.push('\n');
            if next.ends_with("),") || next == "}," || next.ends_with("},") {
                break;
            }
        }
        let tuple_source = variant.contains("(#[from]") || variant.contains("(#[source]");
        let shows_tuple = message.contains("{0}") || message.contains("{0:");
        let named_source = variant.contains("source:") || variant.contains("#[source]");
        let shows_named = message.contains("{source}") || message.contains("{source:");
        if (tuple_source && shows_tuple) || (named_source && shows_named) {
            found.push(format!("line {}: {}", at + 1, line.trim()));
        }
    }
    found
}
