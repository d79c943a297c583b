//! The `devicehub-emulator scanner ...` subcommand: starts a scanner simulator, prints one JSON
//! line saying where it is, and serves until SIGINT, SIGTERM or the end of standard input, so
//! that a test that spawns it cannot leak it.
//!
//! The announcement line is an interface tests rely on:
//! `{"kind":"scanner","pty":"/dev/pts/5","control":"http://127.0.0.1:PORT"}`

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use serde::Serialize;

/// Scanner simulators.
#[derive(Debug, Subcommand)]
pub enum ScannerCommand {
    /// A text scanner on a pseudo-terminal that sends address blocks (CR LF lines).
    #[cfg(unix)]
    Serial(SerialArgs),
}

/// Options of `scanner serial`.
#[derive(Debug, Args)]
pub struct SerialArgs {
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Why the scanner subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum ScannerCliError {
    #[error("starting the async runtime failed")]
    Runtime(#[source] std::io::Error),
    #[cfg(unix)]
    #[error("starting the scanner simulator failed")]
    Start(#[from] crate::pty::PtyStartError),
    #[error("writing the announcement line to standard output failed")]
    Announce(#[source] std::io::Error),
    #[error("waiting for the stop signal failed")]
    Stop(#[source] std::io::Error),
}

#[derive(Debug, Serialize)]
struct Announcement<'a> {
    kind: &'a str,
    pty: String,
    control: String,
}

/// Runs a scanner subcommand to completion on its own runtime (call it from a plain `main`).
pub fn run(command: ScannerCommand) -> Result<(), ScannerCliError> {
    let runtime = crate::command::runtime(Some(1)).map_err(ScannerCliError::Runtime)?;
    runtime.block_on(run_async(command))
}

/// Runs a scanner subcommand inside an existing runtime.
pub async fn run_async(command: ScannerCommand) -> Result<(), ScannerCliError> {
    crate::command::log_to_stderr();
    match command {
        #[cfg(unix)]
        ScannerCommand::Serial(args) => {
            let scanner = super::serial::SerialScannerSimulator::start(args.control).await?;
            crate::command::announce(&Announcement {
                kind: "scanner",
                pty: scanner.pty_path().display().to_string(),
                control: scanner.control_url(),
            })
            .map_err(ScannerCliError::Announce)?;
            crate::stop::wait_for_stop(args.ignore_stdin)
                .await
                .map_err(ScannerCliError::Stop)?;
            scanner.shutdown().await;
            Ok(())
        }
    }
}
