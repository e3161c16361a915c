//! The command line: client commands over deadbolt-client.
