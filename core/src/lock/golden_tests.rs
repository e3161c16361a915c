//! Golden bytes: commands and snapshots live on disk and cross the wire
//! (postcard), so their encoding must never change by accident. The hex
//! below was captured from the code before the command variants became
//! structs; any change to it is a format change and needs a new version.

use super::*;
use crate::raft::LogIndex;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn fence(token: u64) -> Option<Fence> {
    Some(Fence {
        lock: "L".into(),
        fencing_token: token,
    })
}

/// One envelope per command variant, with every optional field set somewhere.
fn every_command() -> Vec<Envelope> {
    let commands = vec![
        Command::OpenSession(OpenSession {
            ttl_ms: 10_000,
            name: "worker-7".into(),
        }),
        Command::Keepalive(Keepalive { session_id: 300 }),
        Command::CloseSession(CloseSession { session_id: 301 }),
        Command::ExpireSessions(ExpireSessions {
            session_ids: vec![1, 2, 1 << 40],
        }),
        Command::Acquire(Acquire {
            lock: "jobs/nightly".into(),
            owner: Owner::Session(7),
            mode: Mode::Shared,
            wait_ms: 5_000,
        }),
        Command::Acquire(Acquire {
            lock: "a".into(),
            owner: Owner::Ephemeral { ttl_ms: 30_000 },
            mode: Mode::Exclusive,
            wait_ms: 0,
        }),
        Command::Release(Release {
            lock: "L".into(),
            session_id: 9,
            fencing_token: Some(42),
        }),
        Command::Release(Release {
            lock: "L".into(),
            session_id: 9,
            fencing_token: None,
        }),
        Command::Withdraw(Withdraw {
            lock: "L".into(),
            session_id: 9,
        }),
        Command::ExpireWaiters,
        Command::KvPut(KvWrite {
            key: "k".into(),
            value: "v".into(),
            fence: fence(42),
        }),
        Command::KvAppend(KvWrite {
            key: "k".into(),
            value: "tail".into(),
            fence: None,
        }),
        Command::StackPush(StackPush {
            stack: "s".into(),
            value: "x".into(),
            fence: fence(43),
        }),
        Command::StackPop(StackPop {
            stack: "s".into(),
            fence: None,
        }),
        Command::StackDelete(StackDelete {
            stack: "s".into(),
            fence: fence(44),
        }),
    ];
    commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| Envelope {
            now_ms: 1_700_000_000_000 + i as u64,
            idempotency: (i % 2 == 0).then(|| Idempotency {
                key: format!("c-{i}"),
                fingerprint: 0xdead_beef_0000 + i as u64,
                acked_below: (i % 4 == 0).then_some(i as u64),
            }),
            command,
        })
        .collect()
}

const COMMANDS_HEX: [&str; 15] = [
    "80d095ffbc310103632d308080bcf7dbd537010000904e08776f726b65722d37",
    "81d095ffbc310001ac02",
    "82d095ffbc310103632d328280bcf7dbd5370002ad02",
    "83d095ffbc310003030102808080808020",
    "84d095ffbc310103632d348480bcf7dbd5370104040c6a6f62732f6e696768746c790007018827",
    "85d095ffbc310004016101b0ea010000",
    "86d095ffbc310103632d368680bcf7dbd5370005014c09012a",
    "87d095ffbc310005014c0900",
    "88d095ffbc310103632d388880bcf7dbd537010806014c09",
    "89d095ffbc310007",
    "8ad095ffbc310104632d31308a80bcf7dbd5370008016b017601014c2a",
    "8bd095ffbc310009016b047461696c00",
    "8cd095ffbc310104632d31328c80bcf7dbd537010c0a0173017801014c2b",
    "8dd095ffbc31000b017300",
    "8ed095ffbc310104632d31348e80bcf7dbd537000c017301014c2c",
];

#[test]
fn every_command_encodes_to_its_golden_bytes() {
    let envelopes = every_command();
    assert_eq!(envelopes.len(), COMMANDS_HEX.len());
    for (envelope, golden) in envelopes.iter().zip(COMMANDS_HEX) {
        let bytes = envelope.to_bytes();
        assert_eq!(hex(&bytes), golden, "{envelope:?}");
        assert_eq!(Envelope::from_bytes(&unhex(golden)).as_ref(), Ok(envelope));
    }
}

/// Applies `steps` (now_ms, keyed, acked_below, command) at indexes 1..;
/// a keyed step's key is `c-<index>`.
fn state_after(steps: &[(u64, bool, Option<u64>, Command)]) -> LockStateMachine {
    let mut sm = LockStateMachine::new();
    for (i, (now_ms, keyed, acked_below, command)) in steps.iter().enumerate() {
        let index = i as LogIndex + 1;
        let envelope = Envelope {
            now_ms: *now_ms,
            idempotency: keyed.then(|| Idempotency {
                key: format!("c-{index}"),
                fingerprint: index * 7,
                acked_below: *acked_below,
            }),
            command: command.clone(),
        };
        sm.apply(index, &envelope);
        sm.check_invariants().expect("invariants hold");
    }
    sm
}

fn acquire(lock: &str, owner: Owner, mode: Mode, wait_ms: u64) -> Command {
    Command::Acquire(Acquire {
        lock: lock.into(),
        owner,
        mode,
        wait_ms,
    })
}

fn open(name: &str) -> Command {
    Command::OpenSession(OpenSession {
        ttl_ms: 10_000,
        name: name.into(),
    })
}

fn kv(key: &str, value: &str, fence: Option<Fence>) -> KvWrite {
    KvWrite {
        key: key.into(),
        value: value.into(),
        fence,
    }
}

fn push(value: &str) -> Command {
    Command::StackPush(StackPush {
        stack: "st".into(),
        value: value.into(),
        fence: None,
    })
}

fn keepalive(session_id: SessionId) -> Command {
    Command::Keepalive(Keepalive { session_id })
}

/// Sessions (named, ephemeral, expired), an exclusive lock with keyed
/// waiters, a shared lock with two holders, fenced KV, stacks, idempotency
/// entries owned and windowed, and (with `marks`) an acknowledged mark.
fn rich_state(marks: bool) -> LockStateMachine {
    let s = Owner::Session;
    let ephemeral = Owner::Ephemeral { ttl_ms: 30_000 };
    let fenced = Some(Fence {
        lock: "L".into(),
        fencing_token: 4,
    });
    let expire = Command::ExpireSessions(ExpireSessions {
        session_ids: vec![14],
    });
    let mut steps = vec![
        (1_000, true, None, open("a")),                               // 1
        (1_000, false, None, open("b")),                              // 2
        (1_100, true, None, open("")),                                // 3
        (1_200, true, None, acquire("L", s(1), Mode::Exclusive, 0)),  // 4
        (1_300, true, None, acquire("L", s(2), Mode::Shared, 9_000)), // 5
        (1_300, true, None, acquire("L", s(3), Mode::Exclusive, 500)),
        (1_400, false, None, acquire("R", s(2), Mode::Shared, 0)),
        (1_400, true, None, acquire("R", s(3), Mode::Shared, 0)),
        (
            1_500,
            true,
            None,
            acquire("eph/x", ephemeral, Mode::Exclusive, 0),
        ),
        (1_600, true, None, Command::KvPut(kv("k", "v", fenced))), // 10
        (1_700, false, None, Command::KvAppend(kv("k2", "w", None))),
        (1_800, true, None, push("x")),
        (1_900, false, None, push("y")),
        (2_000, true, None, open("gone")), // 14
        (2_100, false, None, expire),
        (2_200, true, None, keepalive(2)),
    ];
    if marks {
        steps.push((2_300, true, Some(3), keepalive(1)));
    }
    state_after(&steps)
}

/// Version 3 (each session's last renewal; issue 13, bug 6).
const SNAPSHOT_HEX: &str = concat!(
    "0311fc1104010161904e00020162904e000300904e000900b0ea010101b4100e03014c0100010104",
    "b009020201bc500103632d350300880e0103632d3601520101020207f80a0308f80a00056570682f",
    "780100010909dc0b0002016b01760104026b32017700010273740201780179000b04632d31304609",
    "010104000180dc2404632d3132540a010001c8dd2404632d313462000e904e010e01f4df2404632d",
    "31367001904e01020004632d31377701904e01010003632d33150003904e01030003632d341c0401",
    "000401010003632d35230502010101020003632d362a0503000201030003632d3838040301080103",
    "0003632d393f0409000901090001016303fc1104fc119811f80adc0b0bc00c880ed00f9811fc11cc",
    "08b009940a940af80adc0bc0843d00a76053d9",
);
/// Version 3, frozen: written before the idempotency bound.
const SNAPSHOT_V3_HEX: &str = concat!(
    "0211fc1104010161904e00020162904e000300904e000900b0ea010101b4100e03014c0100010104",
    "b009020201bc500103632d350300880e0103632d3601520101020207f80a0308f80a00056570682f",
    "780100010909dc0b0002016b01760104026b32017700010273740201780179000b04632d31304609",
    "010104000180dc2404632d3132540a010001c8dd2404632d313462000e904e010e01f4df2404632d",
    "31367001904e01020004632d31377701904e01010003632d33150003904e01030003632d341c0401",
    "000401010003632d35230502010101020003632d362a0503000201030003632d3838040301080103",
    "0003632d393f0409000901090001016303fc1104fc119811f80adc0b988f8797",
);
/// Version 2, frozen: written before the renewal times.
const SNAPSHOT_V2_HEX: &str = concat!(
    "0111fc1104010161904e00020162904e000300904e000900b0ea010101b4100e03014c0100010104",
    "b009020201bc500103632d350300880e0103632d3601520101020207f80a0308f80a00056570682f",
    "780100010909dc0b0002016b01760104026b32017700010273740201780179000b04632d31304609",
    "010104000180dc2404632d3132540a010001c8dd2404632d313462000e904e010e01f4df2404632d",
    "31367001904e01020004632d31377701904e01010003632d33150003904e01030003632d341c0401",
    "000401010003632d35230502010101020003632d362a0503000201030003632d3838040301080103",
    "0003632d393f0409000901090001016303fc1133f51db2",
);
const SNAPSHOT_V1_HEX: &str = concat!(
    "0010981104010161904e00020162904e000300904e000900b0ea010101b4100e03014c0100010104",
    "b009020201bc500103632d350300880e0103632d3601520101020207f80a0308f80a00056570682f",
    "780100010909dc0b0002016b01760104026b32017700010273740201780179000b03632d31070001",
    "904e01010004632d31304609010104000180dc2404632d3132540a010001c8dd2404632d31346200",
    "0e904e010e01f4df2404632d31367001904e01020003632d33150003904e01030003632d341c0401",
    "000401010003632d35230502010101020003632d362a0503000201030003632d3838040301080103",
    "0003632d393f04090009010900d7efd152",
);

#[test]
fn a_rich_snapshot_encodes_to_its_golden_bytes() {
    let sm = rich_state(true);
    let bytes = sm.snapshot();
    assert_eq!(hex(&bytes), SNAPSHOT_HEX);
    assert_eq!(LockStateMachine::restore(&unhex(SNAPSHOT_HEX)), Ok(sm));
}

/// Versions 1 and 2 do not know when sessions were last renewed: they
/// restore as renewed at the snapshot's state time.
#[test]
fn versions_1_and_2_still_restore() {
    let sm = rich_state(false)
        .with_leases_renewed_at_its_clock()
        .with_idempotency_ages_approximated();
    assert_eq!(LockStateMachine::restore(&unhex(SNAPSHOT_V1_HEX)), Ok(sm));
    let sm = rich_state(true)
        .with_leases_renewed_at_its_clock()
        .with_idempotency_ages_approximated();
    assert_eq!(LockStateMachine::restore(&unhex(SNAPSHOT_V2_HEX)), Ok(sm));
}

/// Versions before 4 carry no idempotency bound nor ages: they restore
/// with the default bound and ages taken from the windows.
#[test]
fn version_3_still_restores() {
    let sm = rich_state(true).with_idempotency_ages_approximated();
    assert_eq!(LockStateMachine::restore(&unhex(SNAPSHOT_V3_HEX)), Ok(sm));
}

/// Prints the golden values with `DEADBOLT_GOLDEN=1 cargo test -p
/// deadbolt-core golden -- --nocapture`, for a deliberate format change.
#[test]
fn print_golden_values_on_request() {
    if std::env::var_os("DEADBOLT_GOLDEN").is_none() {
        return;
    }
    for envelope in every_command() {
        println!("    \"{}\",", hex(&envelope.to_bytes()));
    }
    // Older versions are frozen history: only the newest is printed.
    println!("SNAPSHOT {}", hex(&rich_state(true).snapshot()));
}
