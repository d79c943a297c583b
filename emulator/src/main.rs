//! The `devicehub-emulator` command line: parses arguments and hands over to the library.

use clap::{Parser, Subcommand};

/// A local AWS IoT Core-compatible cloud and simulated devices for DeviceHub.
#[derive(Debug, Parser)]
#[command(name = "devicehub-emulator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulated printers that decode what they receive into labels.
    #[command(subcommand)]
    Printer(devicehub_emulator::printers::cli::PrinterCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Printer(command) => Ok(devicehub_emulator::printers::cli::run(command)?),
    }
}
