//! The `devicehub-emulator printer ...` subcommand: starts one printer simulator, prints one
//! JSON line saying where it listens, and serves until SIGINT, SIGTERM or the end of standard
//! input, so that a test that spawns it cannot leak it.
//!
//! The announcement line is an interface other tests rely on:
//! `{"family":"zebra","language":"zpl","print":"127.0.0.1:PORT","control":"http://127.0.0.1:PORT"}`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::brother::{BrotherConfig, BrotherModel, BrotherSimulator};
use super::tspl::{TsplConfig, TsplSimulator};
use super::zebra::{ZebraConfig, ZebraLanguage, ZebraSimulator};
use super::StartError;

/// Printer simulators.
#[derive(Debug, Subcommand)]
pub enum PrinterCommand {
    /// A Zebra label printer speaking ZPL II or EPL2 on a raw TCP print port.
    Zebra(ZebraArgs),
    /// A TSPL/TSPL2 label printer (TSC, Rollo and compatibles) on a raw TCP print port.
    Tspl(TsplArgs),
    /// A Brother QL label printer speaking the QL raster protocol on a raw TCP print port.
    #[command(name = "brother-ql")]
    BrotherQl(BrotherArgs),
    /// A DYMO LabelWriter (450 series raster or 550 series) on a raw TCP print port.
    Dymo(DymoArgs),
    /// An ESC/POS raster printer (an Epson TM-L100) on a raw TCP print port.
    Escpos(EscPosArgs),
}

/// Options of `printer escpos`.
#[derive(Debug, Args)]
pub struct EscPosArgs {
    /// Print head width in dots (default: 576, 72 mm at 203 dpi).
    #[arg(long)]
    pub width_dots: Option<u32>,
    /// The print port's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write every printed label to this directory as label-NNNN.png.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Options of `printer dymo`.
#[derive(Debug, Args)]
pub struct DymoArgs {
    /// The LabelWriter model: 450, 450turbo and 4xl speak the raster protocol, 550 and 5xl
    /// the 550 series protocol.
    #[arg(long, value_enum, default_value = "450")]
    pub model: super::dymo::DymoModel,
    /// The print port's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write every printed label to this directory as label-NNNN.png.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Options of `printer brother-ql`.
#[derive(Debug, Args)]
pub struct BrotherArgs {
    /// The model played: its head width, compression support and status codes.
    #[arg(long, value_enum, default_value = "ql-820nwb")]
    pub model: BrotherModel,
    /// The loaded DK roll: continuous tape by width in mm (12, 29, 38, 50, 54, 62, 102) or
    /// die-cut labels as WIDTHxLENGTH (17x54, 17x87, 23x23, 29x42, 29x90, 38x90, 39x48, 52x29,
    /// 62x29, 62x100, 102x51, 102x152).
    #[arg(long, default_value = "62")]
    pub media: String,
    /// Answer nothing on the print port, as a QL does on its network port; by default the
    /// simulator answers status requests and reports printed pages like a QL over USB.
    #[arg(long)]
    pub silent: bool,
    /// The print port's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write every printed label to this directory as label-NNNN.png.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Options of `printer zebra`.
#[derive(Debug, Args)]
pub struct ZebraArgs {
    /// The printer language.
    #[arg(long, value_enum, default_value = "zpl")]
    pub language: ZebraLanguage,
    /// Print resolution: 203 or 300 dots per inch.
    #[arg(long, default_value_t = 203, value_parser = parse_dpi)]
    pub dpi: u32,
    /// Print head width in dots (default: 4 inches at the resolution).
    #[arg(long)]
    pub width_dots: Option<u32>,
    /// The print port's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write every printed label to this directory as label-NNNN.png.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

/// Options of `printer tspl`.
#[derive(Debug, Args)]
pub struct TsplArgs {
    /// Print resolution: 203 or 300 dots per inch.
    #[arg(long, default_value_t = 203, value_parser = parse_dpi)]
    pub dpi: u32,
    /// Print head width in dots (default: 864 at 203 dpi, 1248 at 300 dpi).
    #[arg(long)]
    pub width_dots: Option<u32>,
    /// The print port's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// The control API's address (loopback only; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,
    /// Also write every printed label to this directory as label-NNNN.png.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// Keep serving when standard input ends (for running detached, with stdin closed).
    #[arg(long)]
    pub ignore_stdin: bool,
}

fn parse_dpi(text: &str) -> Result<u32, String> {
    match text {
        "203" => Ok(203),
        "300" => Ok(300),
        other => Err(format!("{other} is not 203 or 300")),
    }
}

/// Why the printer subcommand failed.
#[derive(Debug, thiserror::Error)]
pub enum PrinterCliError {
    /// The async runtime could not be built.
    #[error("starting the async runtime failed")]
    Runtime(#[source] std::io::Error),
    /// The simulator did not start.
    #[error("starting the printer simulator failed")]
    Start(#[from] StartError),
    /// The announcement line could not be written.
    #[error("writing the announcement line to standard output failed")]
    Announce(#[source] std::io::Error),
    /// Installing the SIGTERM handler failed.
    #[error("installing the signal handler failed")]
    Signal(#[source] std::io::Error),
}

/// The one line printed on start.
#[derive(Debug, Serialize)]
struct Announcement<'a> {
    family: &'a str,
    language: &'a str,
    print: String,
    control: String,
}

/// Runs a printer subcommand to completion on its own runtime. Call it from a plain `main`,
/// not from inside a tokio runtime (use [`run_async`] there).
pub fn run(command: PrinterCommand) -> Result<(), PrinterCliError> {
    let runtime = crate::command::runtime(Some(2)).map_err(PrinterCliError::Runtime)?;
    runtime.block_on(run_async(command))
}

/// Runs a printer subcommand inside an existing runtime.
pub async fn run_async(command: PrinterCommand) -> Result<(), PrinterCliError> {
    crate::command::log_to_stderr();
    let (family, language, ignore_stdin, printer) = match command {
        PrinterCommand::Zebra(args) => {
            let printer = ZebraSimulator::start(ZebraConfig {
                language: args.language,
                dpi: args.dpi,
                width_dots: args.width_dots,
                listen: args.listen,
                control: args.control,
                out_dir: args.out_dir,
            })
            .await?;
            ("zebra", args.language.name(), args.ignore_stdin, printer)
        }
        PrinterCommand::Escpos(args) => {
            let printer = super::escpos::EscPosSimulator::start(super::escpos::EscPosConfig {
                width_dots: args.width_dots,
                listen: args.listen,
                control: args.control,
                out_dir: args.out_dir,
            })
            .await?;
            (
                "escpos",
                super::escpos::LANGUAGE,
                args.ignore_stdin,
                printer,
            )
        }
        PrinterCommand::Tspl(args) => {
            let printer = TsplSimulator::start(TsplConfig {
                dpi: args.dpi,
                width_dots: args.width_dots,
                listen: args.listen,
                control: args.control,
                out_dir: args.out_dir,
            })
            .await?;
            ("tspl", super::tspl::LANGUAGE, args.ignore_stdin, printer)
        }
        PrinterCommand::BrotherQl(args) => {
            let printer = BrotherSimulator::start(BrotherConfig {
                model: args.model,
                media: args.media,
                silent: args.silent,
                listen: args.listen,
                control: args.control,
                out_dir: args.out_dir,
            })
            .await?;
            (
                "brother-ql",
                "brother-ql-raster",
                args.ignore_stdin,
                printer,
            )
        }
        PrinterCommand::Dymo(args) => {
            let printer = super::dymo::DymoSimulator::start(super::dymo::DymoConfig {
                model: args.model,
                listen: args.listen,
                control: args.control,
                out_dir: args.out_dir,
            })
            .await?;
            ("dymo", args.model.language(), args.ignore_stdin, printer)
        }
    };
    crate::command::announce(&Announcement {
        family,
        language,
        print: printer.print_addr().to_string(),
        control: printer.control_url(),
    })
    .map_err(PrinterCliError::Announce)?;
    crate::stop::wait_for_stop(ignore_stdin)
        .await
        .map_err(PrinterCliError::Signal)?;
    printer.shutdown().await;
    Ok(())
}
