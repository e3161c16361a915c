//! What the client commands print: one line or a small table for humans,
//! one JSON value per line with `--json`. Errors go to stderr.

use deadbolt_client::api::{
    AcquireResponse, ListLocksResponse, LockState, LockStatus, ValidateResponse,
};
use serde::Serialize;

pub(super) fn print_json(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("deadbolt: cannot print JSON: {e}"),
    }
}

pub(super) fn print_error(error: &anyhow::Error, json: bool) {
    if json {
        let code = error
            .downcast_ref::<deadbolt_client::Error>()
            .and_then(|e| e.code())
            .map(|c| c.as_str())
            .unwrap_or("error");
        let mut body = serde_json::json!({"code": code, "message": format!("{error:#}")});
        // Who holds it, as the human output lists it (the server's envelope
        // carries them under `details.holders`).
        if let Some(deadbolt_client::Error::LockHeld { holders }) =
            error.downcast_ref::<deadbolt_client::Error>()
        {
            body["details"] = serde_json::json!({ "holders": holders });
        }
        eprintln!("{}", serde_json::json!({ "error": body }));
    } else {
        eprintln!("deadbolt: {error:#}");
        // Who holds it is what a person asks next.
        if let Some(deadbolt_client::Error::LockHeld { holders }) =
            error.downcast_ref::<deadbolt_client::Error>()
        {
            for holder in holders {
                eprintln!(
                    "  holder  session {} token {}",
                    holder.session_id, holder.fencing_token
                );
            }
        }
    }
}

pub(super) fn done(message: &str, json: bool) {
    if json {
        println!("{{}}");
    } else {
        println!("{message}");
    }
}

/// The grant; `ttl_ms` is the lease of a session nobody keeps alive (an
/// acquire without `--session-id`), which bounds how long the lock is held.
pub(super) fn grant(grant: &AcquireResponse, ttl_ms: Option<u64>, json: bool) {
    if json {
        print_json(grant);
        return;
    }
    println!(
        "acquired {} ({}) session {} fencing token {}",
        grant.lock,
        mode(grant.mode),
        grant.session_id,
        grant.fencing_token
    );
    if let Some(ttl_ms) = ttl_ms {
        println!(
            "held until released, at most {} (nothing renews its session after this command)",
            duration_text(ttl_ms)
        );
    }
}

/// Now, by this machine's clock, in ms since the epoch: only to show ages
/// of server timestamps, never to decide anything.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `30 s`, `1.5 s`, `250 ms`, `2 min 5 s`.
fn duration_text(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 if ms % 1_000 == 0 => format!("{} s", ms / 1_000),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1_000.0),
        _ if ms < 3_600_000 => format!("{} min {} s", ms / 60_000, ms % 60_000 / 1_000),
        _ => format!("{} h {} min", ms / 3_600_000, ms % 3_600_000 / 60_000),
    }
}

/// A server timestamp as a person reads it: the UTC time and its age by
/// this machine's clock, `2026-12-03 20:01:02 UTC (12 s ago)`.
pub(super) fn time_and_age(at_ms: u64, now_ms: u64) -> String {
    let age = if now_ms >= at_ms + 1_000 {
        format!("{} ago", duration_text((now_ms - at_ms) / 1_000 * 1_000))
    } else if now_ms >= at_ms {
        "under 1 s ago".to_owned()
    } else {
        // The leader's clock is ahead of this one: say so, not "-3 s ago".
        format!("{} ahead of this clock", duration_text(at_ms - now_ms))
    };
    format!("{} ({age})", utc_text(at_ms))
}

/// `YYYY-MM-DD HH:MM:SS UTC` from ms since the epoch (civil-from-days, H.
/// Hinnant's algorithm, to avoid a date crate for one format).
fn utc_text(ms: u64) -> String {
    let secs = ms / 1_000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let of_day = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3_600,
        of_day % 3_600 / 60,
        of_day % 60
    )
}

fn mode(mode: deadbolt_client::api::LockMode) -> &'static str {
    match mode {
        deadbolt_client::api::LockMode::Exclusive => "exclusive",
        deadbolt_client::api::LockMode::Shared => "shared",
    }
}

fn lock_lines(state: &LockState, now_ms: u64) {
    match state.state {
        LockStatus::Free => println!("{}: free", state.lock),
        LockStatus::Held => println!(
            "{}: held ({})",
            state.lock,
            state.mode.map(mode).unwrap_or("?")
        ),
    }
    for h in &state.holders {
        println!(
            "  holder  session {}{} token {} since {}",
            h.session_id,
            h.session_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            h.fencing_token,
            time_and_age(h.acquired_at_ms, now_ms)
        );
    }
    for (i, w) in state.waiters.iter().enumerate() {
        println!(
            "  waiter  #{} session {} ({})",
            i + 1,
            w.session_id,
            mode(w.mode)
        );
    }
}

pub(super) fn lock_state(state: &LockState, now_ms: u64, json: bool) {
    if json {
        print_json(state);
    } else {
        lock_lines(state, now_ms);
    }
}

pub(super) fn lock_list(list: &ListLocksResponse, now_ms: u64, json: bool) {
    if json {
        print_json(list);
        return;
    }
    if list.locks.is_empty() {
        println!("no locks held or waited for");
    }
    for state in &list.locks {
        lock_lines(state, now_ms);
    }
    if let Some(next) = &list.next {
        println!("more: --after {next}");
    }
}

pub(super) fn validity(name: &str, token: u64, answer: &ValidateResponse, json: bool) {
    if json {
        print_json(answer);
    } else if answer.valid {
        println!("token {token} holds {name}");
    } else {
        match answer.current_token {
            Some(current) => {
                println!("token {token} does not hold {name} (current token {current})")
            }
            None => println!("token {token} does not hold {name} (free)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_a_date_and_an_age() {
        // 2026-12-03 20:01:02.500 UTC.
        let at = 1_796_328_062_500;
        assert_eq!(utc_text(at), "2026-12-03 20:01:02 UTC");
        assert_eq!(
            time_and_age(at, at + 12_400),
            "2026-12-03 20:01:02 UTC (12 s ago)"
        );
        assert_eq!(
            time_and_age(at, at + 125_000),
            "2026-12-03 20:01:02 UTC (2 min 5 s ago)"
        );
        assert!(time_and_age(at + 3_000, at).ends_with("(3 s ahead of this clock)"));
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_text(951_782_400_000), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn durations_read_plainly() {
        assert_eq!(duration_text(30_000), "30 s");
        assert_eq!(duration_text(1_500), "1.5 s");
        assert_eq!(duration_text(250), "250 ms");
        assert_eq!(duration_text(7_200_000), "2 h 0 min");
    }
}
