//! Structured logs: `RUST_LOG` filters (default `info`, with the storage
//! library's chatter at `warn`), human-readable lines by default, one JSON
//! object per line with `--log-format json`.

use std::io::{IsTerminal as _, Write};
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (human or json)")),
        }
    }
}

/// Directives added to the default filter: fjall and its LSM tree log every
/// flush and ingestion at INFO (three lines at each start), which says
/// nothing to an operator. `RUST_LOG` replaces the whole default.
const QUIET_DEPENDENCIES: &str = "fjall=warn,lsm_tree=warn";

/// The filter used when `RUST_LOG` is not set.
fn default_filter_text(level: &str) -> String {
    format!("{level},{QUIET_DEPENDENCIES}")
}

/// Installs the global subscriber, writing to stderr so that `--json`
/// output on stdout stays machine-readable. A second call is a no-op.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_filter_text(default_level)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for a terminal: redirected logs stay greppable.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Human => builder.with_writer(std::io::stderr).try_init(),
        LogFormat::Json => builder
            .json()
            .with_writer(|| JsonLines(std::io::stderr()))
            .try_init(),
    };
}

/// Writes JSON log lines without the `log.*` fields that the `log` bridge
/// adds to dependencies' records (`log.file` is a path into the build
/// machine's cargo registry; `log.target` repeats `target`). The human
/// format drops them by itself; the JSON one does not.
struct JsonLines<W>(W);

impl<W: Write> Write for JsonLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The formatter hands over one whole line per write.
        match strip_log_metadata(buf) {
            Some(line) => self.0.write_all(&line)?,
            None => self.0.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The line without `fields."log.*"`, or None if it has none (or is not a
/// JSON object: then it is written as it came).
fn strip_log_metadata(line: &[u8]) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let fields = value.get_mut("fields")?.as_object_mut()?;
    let before = fields.len();
    fields.retain(|name, _| !name.starts_with("log."));
    if fields.len() == before {
        return None;
    }
    let mut out = serde_json::to_vec(&value).ok()?;
    out.push(b'\n');
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_lose_the_dependency_source_paths() {
        let line = br#"{"level":"WARN","fields":{"message":"m","log.target":"fjall::db","log.file":"/root/.cargo/registry/src/x/fjall/src/db.rs","log.line":853},"target":"fjall::db"}
"#;
        let out = strip_log_metadata(line).expect("had log fields");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(!text.contains("log.") && !text.contains(".cargo"), "{text}");
        assert!(
            text.contains(r#""message":"m""#) && text.ends_with('\n'),
            "{text}"
        );
        let own = br#"{"level":"INFO","fields":{"message":"node started"},"target":"deadbolt"}"#;
        assert_eq!(strip_log_metadata(own), None);
    }

    #[test]
    fn the_storage_library_is_quiet_by_default() {
        let filter = default_filter_text("info");
        assert!(filter.starts_with("info,"), "{filter}");
        assert!(filter.contains("fjall=warn") && filter.contains("lsm_tree=warn"));
        EnvFilter::try_new(&filter).expect("a valid filter");
    }
}
