//! The `deadbolt` binary. The server, API and CLI are not built yet
//! (see ARCHITECTURE.md); until then it says so instead of pretending.

fn main() -> std::process::ExitCode {
    eprintln!("deadbolt: the server and CLI are not implemented yet; see ARCHITECTURE.md");
    std::process::ExitCode::from(1)
}
