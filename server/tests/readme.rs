//! Runs the README's commands against real `deadbolt` processes, read from
//! the README itself (the code blocks after `<!-- readme-test: NAME -->`),
//! so the page cannot drift from the code.
//!
//! Substitutions, all mechanical: `127.0.0.1:PORT` becomes an ephemeral
//! port (tests never take fixed ports), `cargo run --release --bin deadbolt
//! --` and `export PATH=...target/release...` become the binary under test.
//! Nothing else is substituted: the README prints no id a reader must
//! change. The `prerequisites` block (installs a toolchain from the network)
//! and the `tests` block (the test suite itself) are checked for shape only:
//! they name the justfile recipe and cargo alias that exist.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const STARTUP: Duration = Duration::from_secs(20);

/// The code block following each `<!-- readme-test: NAME -->` marker.
fn readme_blocks() -> BTreeMap<String, Vec<String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&path).expect("README.md at the repository root");
    let mut blocks = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- readme-test:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let fence = lines.next().expect("a code block after the marker");
        assert!(
            fence.starts_with("```"),
            "marker {name} not followed by a code block"
        );
        let body: Vec<String> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .map(str::to_owned)
            .collect();
        blocks.insert(name.trim().to_owned(), body);
    }
    for expected in [
        "prerequisites",
        "serve",
        "curl",
        "cli",
        "cluster",
        "operate",
        "tests",
    ] {
        assert!(
            blocks.contains_key(expected),
            "README lost its {expected} block"
        );
    }
    blocks
}

/// Replaces every `127.0.0.1:PORT` with an ephemeral address, the same
/// port always mapping to the same address.
fn remap_ports(text: &str, map: &mut BTreeMap<String, String>) -> String {
    const HOST: &str = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at]);
        let after = &rest[at + HOST.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let original = format!("{HOST}{}", &after[..digits]);
        let fresh = map.entry(original).or_insert_with(free_addr);
        out.push_str(fresh);
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

fn shell(script: &str, cwd: &Path) -> Command {
    let mut command = Command::new("sh");
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    command
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .env("PATH", path)
        .env_remove("DEADBOLT_ENDPOINTS");
    command
}

fn run_shell(script: &str, cwd: &Path) -> (i32, String, String) {
    let output = shell(script, cwd).output().expect("run sh");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn wait_ready(url: &str, proc: &Proc) {
    let client = deadbolt_client::Client::new([url]).expect("client");
    eventually(
        &format!("{url} ready\n{}", proc.logs()),
        STARTUP,
        || async { client.ready(0).await.ok() },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_node_walkthrough_works_as_written() {
    let blocks = readme_blocks();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = BTreeMap::new();

    // `cargo run --release --bin deadbolt -- serve`: the binary under test,
    // run from a fresh directory, on ephemeral ports (through the
    // documented DEADBOLT_* variables, so the command line stays as written).
    let serve = blocks["serve"].join("\n");
    let serve_args = serve
        .strip_prefix("cargo run --release --bin deadbolt -- ")
        .expect("the serve block runs the binary through cargo");
    let api = remap_ports("127.0.0.1:7070", &mut ports);
    let peer = remap_ports("127.0.0.1:7071", &mut ports);
    let mut command = Command::new(bin());
    command
        .args(serve_args.split_whitespace())
        .current_dir(dir.path())
        .env("DEADBOLT_LISTEN_API", &api)
        .env("DEADBOLT_LISTEN_PEER", &peer);
    let server = Proc::spawn("serve", command, dir.path());
    let url = format!("http://{api}");
    wait_ready(&url, &server).await;
    // The banner is printed once start-up returns, which can be a moment
    // after the API already answers.
    let banner = eventually("the serve banner", STARTUP, || async {
        let banner = server.output();
        (banner.contains(&url) && banner.contains("deadbolt-data")).then_some(banner)
    })
    .await;
    assert!(banner.contains("serving"), "{banner}");
    assert!(dir.path().join("deadbolt-data").is_dir());

    // curl: the block as one script (its lines share `$grant`).
    let script = remap_ports(&blocks["curl"].join("\n"), &mut ports);
    let (code, out, err) = run_shell(&script, dir.path());
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let grant: serde_json::Value = serde_json::from_str(lines[0]).expect("grant JSON");
    assert!(grant["fencing_token"].as_u64().is_some(), "{out}");
    let state: serde_json::Value = serde_json::from_str(lines[1]).expect("state JSON");
    assert_eq!(state["state"], "held", "{out}");
    assert_eq!(state["holders"][0]["fencing_token"], grant["fencing_token"]);
    assert_eq!(lines[2], "{}", "{out}");

    // CLI: the block as one script (its lines share `$grant`), the binary
    // under test first on PATH. It prints no id a reader must change.
    let cli_lines = &blocks["cli"];
    assert!(
        cli_lines[0].starts_with("export PATH=") && cli_lines[0].contains("target/release"),
        "the CLI block starts by putting the binary on PATH"
    );
    let script = format!(
        "set -e\nexport DEADBOLT_ENDPOINTS={url}\n{}",
        remap_ports(&cli_lines[1..].join("\n"), &mut ports)
    );
    let (code, out, err) = run_shell(&script, dir.path());
    assert_eq!(code, 0, "{script}\n{out}{err}");
    assert!(out.contains("holding demo with fencing token "), "{out}");
    let grant = out
        .lines()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .unwrap_or_else(|| panic!("acquire --json printed the grant: {out}"));
    assert_eq!(grant["lock"], "demo", "{out}");
    assert!(out.contains("demo: held"), "{out}");
    assert!(
        out.contains("UTC (") && out.contains(" ago)"),
        "a time and an age: {out}"
    );
    assert!(out.contains("released demo"), "{out}");
    let (_, out, _) = cli(&url, &["status", "demo", "--json"]);
    assert!(
        out.contains(r#""state":"free""#),
        "released at the end: {out}"
    );

    // SIGINT (Ctrl-C) stops it cleanly.
    let mut server = server;
    server.signal(nix::sys::signal::Signal::SIGINT);
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", server.logs());
}

/// The README points only at files the repository has, and the license it
/// names is there in full.
#[test]
fn the_readme_names_only_files_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let named: Vec<&str> = text
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| {
            !code.contains(' ')
                && (code.ends_with(".md") || *code == "LICENSE" || code.ends_with(".rs"))
        })
        .collect();
    assert!(named.contains(&"LICENSE"), "{named:?}");
    for file in named {
        assert!(
            root.join(file).is_file(),
            "README names {file}, not in the repository"
        );
    }
    let license = std::fs::read_to_string(root.join("LICENSE")).expect("LICENSE");
    assert!(
        license.contains("Apache License") && license.contains("Version 2.0, January 2004"),
        "LICENSE is the Apache-2.0 text Cargo.toml declares"
    );
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    assert!(manifest.contains(r#"license = "Apache-2.0""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_recipe_works_as_written() {
    let blocks = readme_blocks();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = BTreeMap::new();
    let mut nodes = Vec::new();
    for line in &blocks["cluster"] {
        let line = remap_ports(line, &mut ports);
        if let Some(background) = line.strip_suffix('&') {
            let name = format!("node-{}", nodes.len() + 1);
            let script = format!("exec {}", background.trim());
            let mut command = shell(&script, dir.path());
            command.env("RUST_LOG", "info");
            nodes.push(Proc::spawn(&name, command, dir.path()));
            continue;
        }
        // A foreground command (`cluster status`): retried until the
        // leader answers with every founder reachable.
        let out = eventually(&format!("{line} succeeds"), STARTUP, || {
            let (code, out, _) = run_shell(&line, dir.path());
            let ok = code == 0 && out.contains("quorum: ok (3 of 3 voters reachable");
            async move { ok.then_some(out) }
        })
        .await;
        // One row per founder: id, role, voter "yes", reachable "yes", ...
        let voters = out
            .lines()
            .filter(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.get(2..4) == Some(&["yes", "yes"][..])
            })
            .count();
        assert_eq!(voters, 3, "{out}");
    }
    assert_eq!(nodes.len(), 4, "three founders and one joiner");
    let endpoints: Vec<String> = ["127.0.0.1:7070", "127.0.0.1:7100"]
        .iter()
        .map(|a| format!("http://{}", ports[*a]))
        .collect();
    let client = deadbolt_client::Client::new(endpoints).expect("client");
    eventually("node 4 is a voter", Duration::from_secs(30), || async {
        let status = client.cluster_status().await.ok()?;
        status
            .members
            .iter()
            .any(|m| m.id == 4 && m.voter)
            .then_some(())
    })
    .await;
    for node in &mut nodes {
        node.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for node in &mut nodes {
        let status = node.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "{status:?}\n{}", node.logs());
    }
}

/// The node id a `deadbolt serve` line starts.
fn node_id_of(line: &str) -> u64 {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--node-id")
        .expect("--node-id");
    words[at + 1].parse().expect("a node id")
}

/// "Operating a cluster": from the cluster recipe's three founders, replace
/// node 3, back up, force the survivor into a one-voter cluster, and
/// restore the backup into a new cluster; what was written before the
/// backup is in both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operating_recipe_works_as_written() {
    let blocks = readme_blocks();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = BTreeMap::new();
    // (node id, process) in start order.
    let mut nodes: Vec<(u64, Proc)> = Vec::new();
    let spawn = |line: &str, nodes: &mut Vec<(u64, Proc)>| {
        let script = format!("exec {}", line.trim());
        let mut command = shell(&script, dir.path());
        command.env("RUST_LOG", "info");
        let id = node_id_of(line);
        let name = format!("node-{id}-{}", nodes.len());
        nodes.push((id, Proc::spawn(&name, command, dir.path())));
    };
    let founders = blocks["cluster"]
        .iter()
        .filter(|l| l.contains("--initial-cluster") && l.ends_with('&'));
    for line in founders {
        let line = remap_ports(line, &mut ports);
        spawn(line.strip_suffix('&').expect("background"), &mut nodes);
    }
    assert_eq!(nodes.len(), 3, "the cluster recipe's founders");
    let url = |port: &str, ports: &BTreeMap<String, String>| {
        format!("http://{}", ports[&format!("127.0.0.1:{port}")])
    };
    let first = deadbolt_client::Client::new([url("7070", &ports)]).expect("client");
    let founder_urls: Vec<String> = ["7070", "7080", "7090"]
        .iter()
        .map(|p| url(p, &ports))
        .collect();
    // Only the leader answers with the quorum summary.
    eventually("the founders' quorum", STARTUP, || async {
        for founder in &founder_urls {
            let client = deadbolt_client::Client::new([founder.as_str()]).ok()?;
            let Ok(status) = client.cluster_status().await else {
                continue;
            };
            if status
                .quorum
                .is_some_and(|q| q.ok && q.reachable_voters == 3)
            {
                return Some(());
            }
        }
        None
    })
    .await;
    let kept = deadbolt_client::api::KvWriteRequest {
        value: "kept".into(),
        lock: None,
        fencing_token: None,
    };
    first
        .kv_put("readme/before-backup", &kept)
        .await
        .expect("put");

    // What each `cluster status` line waits for: node 4 joined and
    // promoted, then the forced survivor alone.
    let mut quorums = ["quorum: ok (3 of 3 voters", "quorum: ok (1 of 1 voters"].into_iter();
    for line in &blocks["operate"] {
        let line = remap_ports(line, &mut ports);
        if let Some(ids) = line.strip_prefix("# stop nodes ") {
            let ids: Vec<u64> = ids
                .split_whitespace()
                .map(|i| i.parse().expect("id"))
                .collect();
            for (id, node) in nodes.iter_mut().filter(|(id, _)| ids.contains(id)) {
                if node.try_wait().is_none() {
                    node.signal(nix::sys::signal::Signal::SIGTERM);
                    node.wait_exit(Duration::from_secs(15)).await;
                }
                assert!(node.try_wait().is_some(), "node {id} stopped");
            }
            continue;
        }
        if let Some(background) = line.strip_suffix('&') {
            spawn(background, &mut nodes);
            continue;
        }
        let expected = if line.contains("cluster status") {
            quorums.next().expect("a quorum to wait for")
        } else {
            ""
        };
        let out = eventually(&format!("{line} succeeds"), STARTUP, || {
            let (code, out, _) = run_shell(&line, dir.path());
            let ok = code == 0 && out.contains(expected);
            async move { ok.then_some(out) }
        })
        .await;
        if line.contains(" remove 3") {
            // The removed node learns it and exits 1.
            let (_, third) = nodes.iter_mut().find(|(id, _)| *id == 3).expect("node 3");
            let status = third.wait_exit(STARTUP).await;
            assert_eq!(status.code(), Some(1), "{}", third.logs());
        }
        if line.contains(" restore ") {
            assert!(out.contains("deadbolt serve"), "{out}");
        }
    }

    // The forced survivor and the restored cluster both hold the write.
    for port in ["7070", "7200"] {
        let client = deadbolt_client::Client::new([url(port, &ports)]).expect("client");
        let value = eventually(&format!("the write on {port}"), STARTUP, || async {
            client.kv_get("readme/before-backup").await.ok()
        })
        .await;
        assert_eq!(value.value, "kept");
    }
    let restored = deadbolt_client::Client::new([url("7200", &ports)]).expect("client");
    let status = restored.cluster_status().await.expect("status");
    assert!(
        status.cluster_id.starts_with("dbr-"),
        "{}",
        status.cluster_id
    );
    for (_, node) in &mut nodes {
        if node.try_wait().is_none() {
            node.signal(nix::sys::signal::Signal::SIGTERM);
            let status = node.wait_exit(Duration::from_secs(15)).await;
            assert!(status.success(), "{status:?}\n{}", node.logs());
        }
    }
}

#[test]
fn the_install_and_test_blocks_name_what_exists() {
    let blocks = readme_blocks();
    let prerequisites = blocks["prerequisites"].join("\n");
    assert!(
        prerequisites.contains("rustup") && prerequisites.contains("cargo install just --locked")
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let justfile = std::fs::read_to_string(root.join("justfile")).expect("justfile");
    let tests = &blocks["tests"];
    assert_eq!(tests[0], "just test");
    let recipe: Vec<&str> = justfile
        .lines()
        .skip_while(|l| *l != "test:")
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .map(str::trim)
        .collect();
    assert_eq!(
        tests[1],
        recipe.join(" && "),
        "the plain-cargo line is what `just test` runs"
    );
    let aliases = std::fs::read_to_string(root.join(".cargo/config.toml")).expect("cargo config");
    assert!(aliases.contains("\nsim = "), "`cargo sim` is an alias");
    assert!(
        aliases.contains("\nsim-node = "),
        "`cargo sim-node` is an alias"
    );
}
