//! What the emulator's commands share: logs on standard error, a runtime of their own, and the
//! one JSON line a simulator command prints when it is ready.

use std::io::Write;

use serde::Serialize;

/// Sends logs to standard error at the level `RUST_LOG` asks for (`info` by default): standard
/// output carries only the announcement line. A subscriber installed by the caller is kept.
pub(crate) fn log_to_stderr() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// A multi-threaded runtime with `workers` worker threads, or one per core.
pub(crate) fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}

/// Writes `announcement` as one JSON line on standard output and flushes it: the line a test or
/// the sandbox reads to learn where a simulator listens.
pub(crate) fn announce(announcement: &impl Serialize) -> std::io::Result<()> {
    let line = serde_json::to_string(announcement)?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    stdout.flush()
}
