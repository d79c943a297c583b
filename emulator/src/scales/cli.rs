//! The `devicehub-emulator scale ...` subcommand: starts a scale simulator, prints one JSON line
//! saying where it is, and serves until SIGINT, SIGTERM or the end of standard input, so that a
//! test that spawns it cannot leak it.
//!
//! The announcement line is an interface tests rely on:
//! `{"kind":"scale","protocol":"nci","pty":"/dev/pts/5","control":"http://127.0.0.1:PORT"}`

use std::net::SocketAddr;

use clap::{Args, Subcommand};
use serde::Serialize;

/// Scale simulators.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// A serial scale on a pseudo-terminal speaking MT-SICS or NCI.
    #[cfg(unix)]
    Serial(SerialArgs),
}

/// Options of `scale serial`.
#[cfg(unix)]
#[derive(Debug, Args)]
pub struct SerialArgs {
    /// The protocol the scale speaks.
    #[arg(long, value_enum)]
    pub protocol: super::serial::SerialProtocol,
    /// The initial gross load as displayed, e.g. 1.25.
    #[arg(long)]
    pub weight: Option<String>,
    /// The unit displayed (MT-SICS: g, kg, mg, lb, oz, ct; NCI: lb, kg, oz, g, lb-oz).
    #[arg(long)]
    pub unit: Option<String>,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Why the scale subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum ScaleCliError {
    #[error("starting the async runtime failed")]
    Runtime(#[source] std::io::Error),
    #[cfg(unix)]
    #[error("starting the scale simulator failed")]
    Start(#[from] super::serial::SerialScaleStartError),
    #[error("writing the announcement line to standard output failed")]
    Announce(#[source] std::io::Error),
    #[error("installing the signal handler failed")]
    Signal(#[source] std::io::Error),
}

/// The one line printed on start.
#[derive(Debug, Serialize)]
struct Announcement<'a> {
    kind: &'a str,
    protocol: &'a str,
    pty: String,
    control: String,
}

/// Runs a scale subcommand to completion on its own runtime (call it from a plain `main`).
pub fn run(command: ScaleCommand) -> Result<(), ScaleCliError> {
    let runtime = crate::command::runtime(Some(1)).map_err(ScaleCliError::Runtime)?;
    runtime.block_on(run_async(command))
}

/// Runs a scale subcommand inside an existing runtime.
pub async fn run_async(command: ScaleCommand) -> Result<(), ScaleCliError> {
    crate::command::log_to_stderr();
    match command {
        #[cfg(unix)]
        ScaleCommand::Serial(args) => {
            use super::serial::{SerialScaleConfig, SerialScaleSimulator};
            let scale = SerialScaleSimulator::start(SerialScaleConfig {
                protocol: args.protocol,
                control: args.control,
                initial: super::ScaleUpdate {
                    weight: args.weight,
                    unit: args.unit,
                    ..super::ScaleUpdate::default()
                },
            })
            .await?;
            crate::command::announce(&Announcement {
                kind: "scale",
                protocol: args.protocol.name(),
                pty: scale.pty_path().display().to_string(),
                control: scale.control_url(),
            })
            .map_err(ScaleCliError::Announce)?;
            crate::stop::wait_for_stop(args.ignore_stdin)
                .await
                .map_err(ScaleCliError::Signal)?;
            scale.shutdown().await;
            Ok(())
        }
    }
}
