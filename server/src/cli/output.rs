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
        eprintln!(
            "{}",
            serde_json::json!({"error": {"code": code, "message": format!("{error:#}")}})
        );
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

pub(super) fn grant(grant: &AcquireResponse, json: bool) {
    if json {
        print_json(grant);
    } else {
        println!(
            "acquired {} ({}) session {} fencing token {}",
            grant.lock,
            mode(grant.mode),
            grant.session_id,
            grant.fencing_token
        );
    }
}

fn mode(mode: deadbolt_client::api::LockMode) -> &'static str {
    match mode {
        deadbolt_client::api::LockMode::Exclusive => "exclusive",
        deadbolt_client::api::LockMode::Shared => "shared",
    }
}

fn lock_lines(state: &LockState) {
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
            "  holder  session {}{} token {} since {} ms",
            h.session_id,
            h.session_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default(),
            h.fencing_token,
            h.acquired_at_ms
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

pub(super) fn lock_state(state: &LockState, json: bool) {
    if json {
        print_json(state);
    } else {
        lock_lines(state);
    }
}

pub(super) fn lock_list(list: &ListLocksResponse, json: bool) {
    if json {
        print_json(list);
        return;
    }
    if list.locks.is_empty() {
        println!("no locks held or waited for");
    }
    for state in &list.locks {
        lock_lines(state);
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
