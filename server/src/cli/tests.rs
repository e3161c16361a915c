//! Argument parsing: global flags before or after the subcommand, the
//! environment, `lock`'s trailing command, and usage errors (exit 2).

use clap::Parser;

use super::*;

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("deadbolt").chain(args.iter().copied()))
}

#[test]
fn global_flags_go_before_or_after_the_subcommand() {
    for args in [
        &[
            "--endpoints",
            "http://a:1,http://b:2",
            "--json",
            "status",
            "L",
        ][..],
        &[
            "status",
            "L",
            "--endpoints",
            "http://a:1,http://b:2",
            "--json",
        ][..],
        &["--json", "status", "--endpoints=http://a:1,http://b:2", "L"][..],
    ] {
        let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        assert_eq!(
            cli.global.endpoints,
            ["http://a:1", "http://b:2"],
            "{args:?}"
        );
        assert!(cli.global.json, "{args:?}");
        assert!(matches!(cli.command, Command::Status(NameArg { ref name }) if name == "L"));
    }
    let cli = parse(&["cluster", "status", "--json", "--log-format", "json"]).unwrap();
    assert!(cli.global.json);
    assert_eq!(cli.global.log_format, Some(LogFormat::Json));
    assert!(matches!(
        cli.command,
        Command::Cluster(ClusterCommand::Status)
    ));
}

#[test]
fn endpoints_default_and_environment() {
    // The only test that reads or writes DEADBOLT_ENDPOINTS, so parallel
    // tests cannot see it change.
    std::env::remove_var("DEADBOLT_ENDPOINTS");
    let cli = parse(&["list"]).unwrap();
    assert_eq!(cli.global.endpoints, [ENDPOINTS_DEFAULT]);
    std::env::set_var("DEADBOLT_ENDPOINTS", "http://x:1,http://y:2");
    let from_env = parse(&["list"]).map(|c| c.global.endpoints);
    let flag_wins = parse(&["list", "--endpoints", "http://z:3"]).map(|c| c.global.endpoints);
    std::env::remove_var("DEADBOLT_ENDPOINTS");
    assert_eq!(from_env.unwrap(), ["http://x:1", "http://y:2"]);
    assert_eq!(flag_wins.unwrap(), ["http://z:3"]);
}

#[test]
fn lock_takes_the_command_after_the_separator() {
    let cli = parse(&[
        "lock",
        "jobs/nightly",
        "--shared",
        "--ttl-ms",
        "20000",
        "--wait-ms",
        "5",
        "--json",
        "--",
        "sh",
        "-c",
        "echo --shared",
    ])
    .unwrap();
    let Command::Lock(args) = cli.command else {
        panic!("not lock")
    };
    assert_eq!(args.name, "jobs/nightly");
    assert!(args.shared);
    assert_eq!(args.ttl_ms, 20000);
    assert_eq!(args.wait_ms, Some(5));
    assert_eq!(args.command, ["sh", "-c", "echo --shared"]);
    assert!(cli.global.json);

    let cli = parse(&["lock", "L", "--", "true"]).unwrap();
    let Command::Lock(args) = cli.command else {
        panic!("not lock")
    };
    assert_eq!(
        args.wait_ms, None,
        "lock waits unless --wait-ms says otherwise"
    );
    assert_eq!(args.ttl_ms, deadbolt_client::api::SESSION_TTL_MS_DEFAULT);

    // No command is a usage error.
    let e = parse(&["lock", "L"]).unwrap_err();
    assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
}

#[test]
fn client_commands_parse() {
    let cli = parse(&["acquire", "L", "--session-id", "42", "--wait-ms", "100"]).unwrap();
    let Command::Acquire(a) = cli.command else {
        panic!()
    };
    assert_eq!(
        (a.session_id.as_deref(), a.wait_ms, a.shared),
        (Some("42"), 100, false)
    );
    let cli = parse(&["release", "L", "--session-id", "42", "--fencing-token", "7"]).unwrap();
    let Command::Release(r) = cli.command else {
        panic!()
    };
    assert_eq!(r.fencing_token, Some(7));
    let cli = parse(&["validate", "L", "--fencing-token", "7"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Validate(ValidateArgs {
            fencing_token: 7,
            ..
        })
    ));
    let cli = parse(&["list", "--prefix", "jobs/", "--limit", "10"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::List(ListArgs {
            limit: Some(10),
            ..
        })
    ));
    let cli = parse(&[
        "cluster",
        "add",
        "--id",
        "4",
        "--peer-addr",
        "h:1",
        "--api-addr",
        "h:2",
    ])
    .unwrap();
    assert!(matches!(
        cli.command,
        Command::Cluster(ClusterCommand::Add { id: 4, .. })
    ));
    let cli = parse(&["cluster", "remove", "4"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Cluster(ClusterCommand::Remove { id: 4 })
    ));
    let cli = parse(&["cluster", "transfer", "2"]).unwrap();
    assert!(matches!(
        cli.command,
        Command::Cluster(ClusterCommand::Transfer { id: 2 })
    ));
}

#[test]
fn bench_flags() {
    let cli = parse(&[
        "bench",
        "--workload",
        "contended",
        "-c",
        "1,16,64",
        "--duration",
        "3",
        "--json",
    ])
    .unwrap();
    let Command::Bench(b) = cli.command else {
        panic!()
    };
    assert_eq!(b.workload, Workload::Contended);
    assert_eq!(b.concurrency, [1, 16, 64]);
    assert_eq!(b.duration, Duration::from_secs(3));
    assert!(cli.global.json);
    let cli = parse(&["bench"]).unwrap();
    let Command::Bench(b) = cli.command else {
        panic!()
    };
    assert_eq!(
        (b.workload, b.concurrency.as_slice(), b.duration),
        (
            Workload::Uncontended,
            &[1, 16, 64, 256][..],
            Duration::from_secs(10)
        )
    );
    for bad in [
        &["bench", "--workload", "chaotic"][..],
        &["bench", "--duration", "0"],
        &["bench", "-c", "x"],
    ] {
        assert_eq!(
            parse(bad).unwrap_err().exit_code(),
            i32::from(EXIT_USAGE),
            "{bad:?}"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    for bad in [
        &["frobnicate"][..],
        &["status"],
        &["release", "L"],
        &["validate", "L"],
        &["--log-format", "xml", "list"],
    ] {
        assert_eq!(
            parse(bad).unwrap_err().exit_code(),
            i32::from(EXIT_USAGE),
            "{bad:?}"
        );
    }
}

#[test]
fn serve_still_parses_its_flags() {
    let cli = parse(&[
        "serve",
        "--node-id",
        "2",
        "--listen-api",
        "127.0.0.1:9000",
        "--json",
    ])
    .unwrap();
    let Command::Serve(s) = cli.command else {
        panic!()
    };
    assert_eq!(s.node_id, Some(2));
    assert_eq!(s.listen_api.as_deref(), Some("127.0.0.1:9000"));
}

#[test]
fn errors_map_to_exit_codes() {
    let held: anyhow::Error = deadbolt_client::Error::LockHeld { holders: vec![] }.into();
    assert_eq!(exit_code_of(&held), EXIT_LOCK_HELD);
    let lost: anyhow::Error = deadbolt_client::Error::LeaseLost.into();
    assert_eq!(exit_code_of(&lost), EXIT_LEASE_LOST);
    let expired: anyhow::Error = deadbolt_client::Error::SessionExpired {
        message: String::new(),
    }
    .into();
    assert_eq!(exit_code_of(&expired), EXIT_LEASE_LOST);
    let other: anyhow::Error = deadbolt_client::Error::StackEmpty.into();
    assert_eq!(exit_code_of(&other), EXIT_ERROR);
    let context = anyhow::Error::from(deadbolt_client::Error::LockHeld { holders: vec![] })
        .context("acquiring L");
    assert_eq!(exit_code_of(&context), EXIT_LOCK_HELD);
}

/// Every flag and argument of every command says what it is for.
#[test]
fn every_flag_has_help() {
    use clap::CommandFactory as _;
    fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            check(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    let mut command = Cli::command();
    command.build();
    check(&command, "deadbolt", &mut missing);
    assert!(missing.is_empty(), "flags without help: {missing:?}");
}

#[test]
fn release_takes_a_grant_or_a_session() {
    let cli = parse(&[
        "release",
        "L",
        "--grant",
        r#"{"lock":"L","mode":"exclusive","session_id":"5","fencing_token":9}"#,
    ])
    .unwrap();
    let Command::Release(args) = cli.command else {
        panic!("not release")
    };
    let (session, token) = release_target(&args).expect("a grant");
    assert_eq!((session.0, token), (5, Some(9)));
    let cli = parse(&[
        "release",
        "M",
        "--grant",
        r#"{"lock":"L","mode":"exclusive","session_id":"5","fencing_token":9}"#,
    ])
    .unwrap();
    let Command::Release(args) = cli.command else {
        panic!("not release")
    };
    assert!(release_target(&args).is_err(), "a grant of another lock");
    assert!(
        parse(&["release", "L"]).is_err(),
        "neither is a usage error"
    );
    assert!(parse(&["release", "L", "--grant", "{}", "--session-id", "1"]).is_err());
}
