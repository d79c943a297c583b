//! The `devicehub` command line: argument definitions and the commands behind them.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{anyhow, bail, Context};
use clap::{Args, Parser, Subcommand};
use devicehub_plugin_api::{PrinterProfile, Setting};
use serde::Serialize;

use crate::{
    config::{self, Config},
    devices::{self, DeviceSpec, DeviceTable},
    plugins::{format_usb_id, parse_usb_id, PluginSet},
    print::{self, FileFormat, PrintOptions},
    render::{Halftone, Rotation},
    service,
    storage::{DataDir, RotatingLog},
    transport::usb::UsbBus,
};

/// DeviceHub connects a shipping desk's printers, scales and scanners to a cloud shipping
/// application.
#[derive(Debug, Parser)]
#[command(name = "devicehub", version, about)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config file (default: the platform's config directory, devicehub/devicehub.toml).
    #[arg(long, global = true, env = "DEVICEHUB_CONFIG")]
    pub config: Option<PathBuf>,
    /// The plugins folder (overrides the config file).
    #[arg(long, global = true)]
    pub plugins_dir: Option<PathBuf>,
    /// Log filter for this command, e.g. "debug" (default: warn; the config's level for `run`).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List loaded plugins with their versions and USB IDs, and files that were refused.
    Plugins,
    /// List devices: configured ones and USB devices a plugin drives.
    Devices,
    /// Print a file (GIF, PNG, JPEG, PDF, or raw printer language) on a device, or write the
    /// printer's bytes to a file.
    Print(Box<PrintArgs>),
    /// Register this computer with the cloud by fleet provisioning, with the activation code
    /// the shipping application shows; needs the `[cloud]` section of the config.
    Register {
        /// The one-time activation code.
        #[arg(long)]
        code: String,
    },
    /// Run the agent: connect to the cloud and print the jobs it sends, until SIGINT/SIGTERM.
    Run,
    /// Try DeviceHub on this computer alone: start the emulator cloud, simulated printers and
    /// a scale, register and run DeviceHub against them, and print the status page's and the
    /// emulator page's addresses; until SIGINT/SIGTERM.
    Sandbox {
        /// The sandbox directory (default: the platform's data directory, devicehub/sandbox).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Print a shipping label and an indicia once ready, wait until both succeeded, and
        /// list the printed labels' PNG files.
        #[arg(long)]
        print_demo: bool,
    },
}

/// Arguments of `devicehub print`.
#[derive(Debug, Args)]
pub struct PrintArgs {
    /// The file to print.
    pub file: PathBuf,
    /// The device to print on (an ID from `devicehub devices`).
    #[arg(long, conflicts_with_all = ["model", "out"])]
    pub device: Option<String>,
    /// Encode for this printer model (USB VID:PID, e.g. 0A5F:0141) instead of a device.
    #[arg(long, requires = "out")]
    pub model: Option<String>,
    /// With --model: the plugin to use, when the USB ID alone does not say.
    #[arg(long)]
    pub plugin: Option<String>,
    /// The plugin profile, e.g. "epl2-203" (default: the model's).
    #[arg(long)]
    pub profile: Option<String>,
    /// With --model: write the printer's bytes here instead of printing.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of copies.
    #[arg(long, default_value_t = 1)]
    pub copies: u32,
    /// The file's format: gif, png, jpeg, pdf or raw (default: from its contents).
    #[arg(long)]
    pub format: Option<String>,
    /// Dither instead of threshold (photographs; never for barcodes or indicia).
    #[arg(long)]
    pub dither: bool,
    /// Rotation: auto, none, 90, 180 or 270.
    #[arg(long, default_value = "auto")]
    pub rotate: String,
    /// A plugin setting for this job, KEY=VALUE (repeatable), e.g. compression=z64.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
}

/// Runs the command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    // `run` logs at the config's level unless --log-level says otherwise, to stderr and to the
    // size-capped log files in the data directory; a config that does not load is reported by
    // the command itself.
    let service_config = match cli.command {
        Command::Run => load_config(&cli.global).ok(),
        _ => None,
    };
    let level = cli
        .global
        .log_level
        .clone()
        .or_else(|| service_config.as_ref().map(|c| c.log_level.clone()));
    let log_file = service_config.as_ref().and_then(|config| {
        let data = DataDir::new(config.data_dir());
        data.create()
            .and_then(|()| RotatingLog::open(&data.logs_dir(), LOG_FILE_MAX_BYTES, LOG_FILES_KEPT))
            .map_err(|e| eprintln!("warning: logging to stderr only: {e}"))
            .ok()
    });
    crate::logging::init(level.as_deref().unwrap_or("warn"), log_file);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Size at which `devicehub.log` is rotated.
const LOG_FILE_MAX_BYTES: u64 = 10 * 1024 * 1024;
/// Rotated log files kept besides the current one.
const LOG_FILES_KEPT: usize = 5;

fn run(cli: Cli) -> anyhow::Result<()> {
    // The sandbox writes its own config; the user's is not read.
    if let Command::Sandbox { dir, print_demo } = &cli.command {
        return crate::sandbox::run(crate::sandbox::SandboxOptions {
            dir: dir.clone(),
            plugins_dir: cli.global.plugins_dir.clone(),
            print_demo: *print_demo,
            json: cli.global.json,
        })
        .map_err(anyhow::Error::from);
    }
    let config = load_config(&cli.global)?;
    match cli.command {
        Command::Plugins => cmd_plugins(&cli.global, &config),
        Command::Devices => cmd_devices(&cli.global, &config),
        Command::Print(args) => cmd_print(&cli.global, &config, *args),
        Command::Register { code } => cmd_register(&cli.global, &config, &code),
        Command::Run => cmd_run(&cli.global, config),
        Command::Sandbox { .. } => unreachable!("the sandbox is run before the config is read"),
    }
}

/// `devicehub run`: the agent on a multi-threaded runtime, stopped by SIGINT or SIGTERM.
fn cmd_run(global: &GlobalArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(dir) = &global.plugins_dir {
        config.plugins_dir = Some(dir.clone());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = tokio::spawn(crate::service::cancel_on_signals(shutdown.clone()));
        let result = crate::service::run(config, shutdown.clone()).await;
        // Ends the signal task when the service stopped on its own.
        shutdown.cancel();
        match signals.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("cannot listen for stop signals: {e}"),
            Err(e) => tracing::warn!("the signal task failed: {e}"),
        }
        result
    });
    // A render still running on a blocking thread must not hold the process forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

/// `devicehub register`: prints each step as it happens (with `--json`, one JSON object per
/// line: the steps, then `{"result":..}` or `{"error":..}`).
fn cmd_register(global: &GlobalArgs, config: &Config, code: &str) -> anyhow::Result<()> {
    use crate::cloud::registration::{self, RegistrationSettings};
    let data_dir = crate::storage::DataDir::new(config.data_dir());
    let json = global.json;
    let outcome = RegistrationSettings::from_config(&config.cloud, data_dir.root()).map(|s| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        anyhow::Ok(
            runtime.block_on(registration::register(&s, &data_dir, code, &mut |step| {
                if json {
                    println!("{}", serde_json::json!(step));
                } else {
                    println!("{step}");
                }
            })),
        )
    });
    let outcome = match outcome {
        Ok(ran) => ran?,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(done) => {
            if json {
                println!("{}", serde_json::json!({ "result": done }));
            }
            Ok(())
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "error": { "kind": e.kind(), "message": e.to_string() } })
                );
            }
            Err(anyhow!(e).context("registration failed"))
        }
    }
}

/// Reads the config file; `--plugins-dir` overrides the file's `plugins_dir`.
fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut config = match &global.config {
        Some(path) => Config::load(path)?,
        None => Config::load_or_default(&config::default_config_path())?,
    };
    if let Some(dir) = &global.plugins_dir {
        config.plugins_dir = Some(dir.clone());
    }
    Ok(config)
}

#[derive(Serialize)]
struct PluginListing {
    dir: String,
    plugins: Vec<PluginRow>,
    refused: Vec<RefusedRow>,
    conflicts: Vec<ConflictRow>,
}

#[derive(Serialize)]
struct PluginRow {
    name: String,
    version: String,
    api_version: String,
    kind: &'static str,
    description: String,
    path: String,
    usb_ids: Vec<UsbRow>,
    /// The plugin's IEEE-1284 rules for printers whose USB ID no table lists.
    ieee1284_rules: Vec<Ieee1284Row>,
}

#[derive(Serialize)]
struct Ieee1284Row {
    manufacturer: String,
    model_prefix: String,
    command_set: String,
    profile: String,
}

#[derive(Serialize)]
struct UsbRow {
    usb_id: String,
    model: String,
    support: &'static str,
    profile: String,
}

#[derive(Serialize)]
struct RefusedRow {
    path: String,
    reason: String,
}

#[derive(Serialize)]
struct ConflictRow {
    usb_id: String,
    driven_by: String,
    also_claimed_by: Vec<String>,
}

fn cmd_plugins(global: &GlobalArgs, config: &Config) -> anyhow::Result<()> {
    let set = service::load_plugins(config);
    let listing = PluginListing {
        dir: set.dir.display().to_string(),
        plugins: set
            .plugins
            .iter()
            .map(|p| PluginRow {
                name: p.name().to_string(),
                version: p.version.to_string(),
                api_version: p.manifest.api_version.to_string(),
                kind: p.manifest.kind.as_str(),
                description: p.manifest.description.to_string(),
                path: p.path.display().to_string(),
                usb_ids: p
                    .manifest
                    .usb_models
                    .iter()
                    .map(|m| UsbRow {
                        usb_id: format_usb_id(m.vendor_id, m.product_id),
                        model: m.model.to_string(),
                        support: m.support.as_str(),
                        profile: m.profile.to_string(),
                    })
                    .collect(),
                ieee1284_rules: p
                    .manifest
                    .ieee1284_matches
                    .iter()
                    .map(|r| Ieee1284Row {
                        manufacturer: r.manufacturer.to_string(),
                        model_prefix: r.model_prefix.to_string(),
                        command_set: r.command_set.to_string(),
                        profile: r.profile.to_string(),
                    })
                    .collect(),
            })
            .collect(),
        refused: set
            .refused
            .iter()
            .map(|r| RefusedRow {
                path: r.path.display().to_string(),
                reason: r.reason.clone(),
            })
            .collect(),
        conflicts: set
            .conflicts
            .iter()
            .map(|c| ConflictRow {
                usb_id: format_usb_id(c.vendor_id, c.product_id),
                driven_by: c.winner.clone(),
                also_claimed_by: c.losers.clone(),
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Plugins folder: {}", listing.dir)?;
    if listing.plugins.is_empty() {
        writeln!(out, "No plugins loaded.")?;
    }
    for p in &listing.plugins {
        writeln!(
            out,
            "\n{} {} ({}, plugin API {})\n  {}\n  {}",
            p.name, p.version, p.kind, p.api_version, p.description, p.path
        )?;
        for u in &p.usb_ids {
            writeln!(
                out,
                "  {}  {:<28} {:<12} {}",
                u.usb_id, u.model, u.support, u.profile
            )?;
        }
        for r in &p.ieee1284_rules {
            // An empty field matches anything; shown as `*`.
            let any = |field: &str| {
                if field.is_empty() {
                    "*".to_string()
                } else {
                    field.to_string()
                }
            };
            writeln!(
                out,
                "  IEEE-1284 MFG:{} MDL:{}{} CMD:{}  {}",
                any(&r.manufacturer),
                r.model_prefix,
                if r.model_prefix.is_empty() {
                    "*"
                } else {
                    "..."
                },
                any(&r.command_set),
                r.profile
            )?;
        }
    }
    if !listing.refused.is_empty() {
        writeln!(out, "\nRefused:")?;
        for r in &listing.refused {
            writeln!(out, "  {}: {}", r.path, r.reason)?;
        }
    }
    for c in &listing.conflicts {
        writeln!(
            out,
            "\nUSB ID {} is claimed by several plugins: {} drives it (also: {})",
            c.usb_id,
            c.driven_by,
            c.also_claimed_by.join(", ")
        )?;
    }
    Ok(())
}

#[derive(Serialize)]
struct DeviceListing {
    devices: Vec<devices::DeviceSummary>,
    problems: Vec<devices::DeviceProblem>,
    usb: String,
}

fn cmd_devices(global: &GlobalArgs, config: &Config) -> anyhow::Result<()> {
    let plugins = service::load_plugins(config);
    let mut listing = DeviceListing {
        devices: Vec::new(),
        problems: Vec::new(),
        usb: String::new(),
    };
    for entry in &config.devices {
        match devices::resolve_entry(entry, &plugins) {
            Ok(spec) => listing.devices.push(devices::summarize(&spec)),
            Err(err) => listing.problems.push(devices::DeviceProblem {
                id: entry.id.clone(),
                reason: err.to_string(),
            }),
        }
    }
    if config.usb.enabled {
        match UsbBus::open() {
            Ok(bus) => {
                let found = bus.list();
                listing.usb = format!("{} USB devices on the bus", found.len());
                for info in found {
                    if let Some(binding) = plugins.lookup_usb(info.vendor_id, info.product_id, None)
                    {
                        listing.devices.push(devices::DeviceSummary {
                            id: info.stable_key(),
                            kind: binding.plugin.manifest.kind.as_str(),
                            plugin: binding.plugin.name().to_string(),
                            plugin_version: binding.plugin.version.to_string(),
                            profile: binding.profile.clone(),
                            model: Some(binding.model.clone()),
                            usb_id: Some(format_usb_id(info.vendor_id, info.product_id)),
                            connection: Some(format!("usb {}", info.port_path)),
                        });
                    }
                }
            }
            Err(err) => listing.usb = err.to_string(),
        }
    } else {
        listing.usb = "USB discovery is disabled in the config".to_string();
    }
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
        return Ok(());
    }
    if listing.devices.is_empty() {
        writeln!(out, "No devices.")?;
    }
    for d in &listing.devices {
        writeln!(
            out,
            "{:<20} {:<8} {} {} [{}] {} {}",
            d.id,
            d.kind,
            d.plugin,
            d.plugin_version,
            d.profile,
            d.model.as_deref().unwrap_or("-"),
            d.connection.as_deref().unwrap_or("(waiting for USB)")
        )?;
    }
    for p in &listing.problems {
        writeln!(out, "{:<20} not usable: {}", p.id, p.reason)?;
    }
    writeln!(out, "{}", listing.usb)?;
    Ok(())
}

fn parse_rotation(text: &str) -> anyhow::Result<Rotation> {
    Ok(match text {
        "auto" => Rotation::Auto,
        "none" | "0" => Rotation::None,
        "90" => Rotation::Deg90,
        "180" => Rotation::Deg180,
        "270" => Rotation::Deg270,
        other => bail!("--rotate takes auto, none, 90, 180 or 270, not {other:?}"),
    })
}

fn parse_settings(pairs: &[String]) -> anyhow::Result<Vec<Setting>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| Setting::new(k.trim(), v.trim()))
                .ok_or_else(|| anyhow!("--set takes KEY=VALUE, not {pair:?}"))
        })
        .collect()
}

#[derive(Serialize)]
struct PrintOutcome {
    device: String,
    bytes: u64,
    labels: u32,
    detail: String,
    out: Option<String>,
    pages: Vec<String>,
}

fn cmd_print(global: &GlobalArgs, config: &Config, args: PrintArgs) -> anyhow::Result<()> {
    let plugins = service::load_plugins(config);
    let file = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let options = PrintOptions {
        job_id: format!("local-{}", std::process::id()),
        copies: args.copies,
        format: args
            .format
            .as_deref()
            .map(|f| FileFormat::parse(f).ok_or_else(|| anyhow!("unknown --format {f:?}")))
            .transpose()?,
        halftone: if args.dither {
            Halftone::Dither
        } else {
            Halftone::default()
        },
        rotation: parse_rotation(&args.rotate)?,
        settings: parse_settings(&args.settings)?,
    };

    let spec = match (&args.device, &args.model) {
        (Some(id), None) => {
            let entry = config
                .devices
                .iter()
                .find(|d| &d.id == id)
                .ok_or_else(|| anyhow!("no device '{id}' in the config's device table"))?;
            devices::resolve_entry(entry, &plugins)?
        }
        (None, Some(model)) => spec_for_model(&plugins, model, &args)?,
        _ => bail!("say where to print: --device ID, or --model VID:PID --out FILE"),
    };
    let profile: PrinterProfile = spec
        .printer_profile()
        .cloned()
        .ok_or_else(|| anyhow!("device '{}' is not a printer", spec.id))?;
    let prepared = print::prepare_job(&file, &profile, &options)
        .with_context(|| format!("cannot print {}", args.file.display()))?;
    let pages: Vec<String> = prepared
        .placements
        .iter()
        .map(|p| {
            let mut text = format!("{}x{} dots", p.width, p.height);
            if p.is_rotated() {
                text.push_str(&format!(
                    ", turned {} degrees",
                    u32::from(p.quarter_turns) * 90
                ));
            }
            if p.is_scaled() {
                text.push_str(", shrunk to fit");
                tracing::warn!(
                    "page shrunk from {}x{} to fit the printer; barcodes may scan less well",
                    p.source_width,
                    p.source_height
                );
            }
            text
        })
        .collect();

    let outcome = if let Some(out) = &args.out {
        let bytes = devices::encode_offline(&spec, &prepared.job)?;
        write_file_atomically(out, &bytes)?;
        PrintOutcome {
            device: spec.id.clone(),
            bytes: bytes.len() as u64,
            labels: 0,
            detail: format!("printer bytes written to {}", out.display()),
            out: Some(out.display().to_string()),
            pages,
        }
    } else {
        let table = DeviceTable::default();
        let connection = spec.connection.clone().ok_or_else(|| {
            anyhow!(
                "device '{}' is bound to USB; it prints through the running service",
                spec.id
            )
        })?;
        let transport = devices::open_transport(&connection, None)
            .map_err(|message| anyhow!("cannot open device '{}': {message}", spec.id))?;
        let worker = table.attach(spec.clone(), transport)?;
        let report = worker.print(prepared.job)?;
        table.shutdown();
        PrintOutcome {
            device: spec.id.clone(),
            bytes: report.bytes_sent,
            labels: report.labels,
            detail: report.detail.to_string(),
            out: None,
            pages,
        }
    };
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &outcome)?;
        writeln!(out)?;
    } else if outcome.out.is_some() {
        writeln!(
            out,
            "{} ({} bytes; {})",
            outcome.detail,
            outcome.bytes,
            outcome.pages.join("; ")
        )?;
    } else {
        writeln!(
            out,
            "Printed {} label(s) on {} ({} bytes; {}){}",
            outcome.labels,
            outcome.device,
            outcome.bytes,
            outcome.pages.join("; "),
            if outcome.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", outcome.detail)
            }
        )?;
    }
    Ok(())
}

fn spec_for_model(
    plugins: &PluginSet,
    model: &str,
    args: &PrintArgs,
) -> anyhow::Result<DeviceSpec> {
    let usb_id = parse_usb_id(model)
        .ok_or_else(|| anyhow!("--model takes a USB ID VID:PID in hex, e.g. 0A5F:0141"))?;
    let chosen = devices::choose_plugin(plugins, Some(usb_id), args.plugin.as_deref())?;
    let profile = chosen
        .profile_or(args.profile.as_deref())
        .ok_or_else(|| anyhow!("plugin '{}' needs --profile", chosen.plugin.name()))?;
    let devices::ChosenDriver {
        plugin,
        model: model_name,
        ..
    } = chosen;
    if plugin.manifest.printer_profile(&profile).is_none() {
        bail!("plugin '{}' has no profile '{profile}'", plugin.name());
    }
    Ok(DeviceSpec {
        id: format!("model-{}", format_usb_id(usb_id.0, usb_id.1)),
        kind: plugin.manifest.kind,
        plugin: Arc::clone(&plugin),
        profile,
        model: model_name,
        usb_id: Some(usb_id),
        connection: None,
        settings: Vec::new(),
    })
}

/// Writes `bytes` to `path` through a temporary file in the same folder, so that a crash never
/// leaves a half-written file under the final name.
pub fn write_file_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
