//! The `devicehub-emulator` command line: parses arguments and hands over to the library.

use clap::{Parser, Subcommand};
use devicehub_emulator::cloud::cli as cloud;

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
    /// Simulated scales: serial scales on a pseudo-terminal.
    #[command(subcommand)]
    Scale(devicehub_emulator::scales::cli::ScaleCommand),
    /// Simulated scanners: a text scanner on a pseudo-terminal.
    #[command(subcommand)]
    Scanner(devicehub_emulator::scanners::cli::ScannerCommand),
    /// Run the local cloud: broker, device shadow, jobs, fleet provisioning and the HTTP API.
    Serve(cloud::ServeArgs),
    /// Create an activation code for fleet provisioning.
    ActivationCode(cloud::ActivationCodeArgs),
    /// Issue a claim certificate for fleet provisioning into a directory.
    ClaimCertificate(cloud::ClaimCertificateArgs),
    /// Register things directly.
    #[command(subcommand)]
    Thing(cloud::ThingCommand),
    /// Send print and scale jobs to things and follow them.
    #[command(subcommand)]
    Job(cloud::JobCommand),
    /// List things with their connection state and last heartbeat.
    Things(cloud::ThingsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Printer(command) => Ok(devicehub_emulator::printers::cli::run(command)?),
        Command::Scale(command) => Ok(devicehub_emulator::scales::cli::run(command)?),
        Command::Scanner(command) => Ok(devicehub_emulator::scanners::cli::run(command)?),
        Command::Serve(args) => Ok(cloud::serve(args)?),
        Command::ActivationCode(args) => Ok(cloud::activation_code(args)?),
        Command::ClaimCertificate(args) => Ok(cloud::claim_certificate(args)?),
        Command::Thing(command) => Ok(cloud::thing(command)?),
        Command::Job(command) => Ok(cloud::job(command)?),
        Command::Things(args) => Ok(cloud::things(args)?),
    }
}
