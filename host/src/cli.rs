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
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    config::{self, Config},
    devices::{self, DeviceSpec, DeviceTable},
    plugins::{format_usb_id, parse_usb_id, PluginSet},
    print::{self, FileFormat, PrintOptions},
    render::{Halftone, InputFormat, Rotation},
    rpc::{
        client::{ClientError, RpcClient, Subscription},
        protocol::{method, topic},
    },
    service, sheets,
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
    /// List loaded plugins with their versions, USB IDs and how each was approved, and files
    /// that were refused; or trust, untrust and rescan plugin files.
    Plugins {
        #[command(subcommand)]
        action: Option<PluginsAction>,
    },
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
    /// Show what the running service is doing: cloud link, plugins, devices, recent jobs.
    Status,
    /// Read a scale through the running service.
    Scale(ScaleArgs),
    /// Show the end of DeviceHub's log files (in the data directory).
    Logs {
        /// How many lines to show.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        /// Keep showing lines as they are written, until Ctrl+C.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Install or remove DeviceHub as a system service.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
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

/// `devicehub plugins` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum PluginsAction {
    /// Trust one plugin library by its SHA-256 (kept owner-only in the data directory), then
    /// ask the running service to rescan its plugins folder.
    Trust { file: PathBuf },
    /// Stop trusting a file trusted by hash (give the file or its SHA-256). A plugin already
    /// loaded stays loaded until DeviceHub restarts.
    Untrust { file_or_hash: String },
    /// Ask the running service to load new plugins from its folder and attach their devices.
    Rescan,
}

/// Arguments of `devicehub scale`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The scale (an ID from `devicehub devices`); may be left out when there is only one.
    #[arg(long)]
    pub device: Option<String>,
    /// Show the weight in mg, g, kg, oz or lb (default: the scale's own unit).
    #[arg(long)]
    pub unit: Option<String>,
    /// How long to wait for the scale's answer, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u32,
}

/// `devicehub service` actions.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ServiceAction {
    /// Install the service definition and enable it (systemd on Linux; instructions elsewhere).
    Install,
    /// Stop, disable and remove the service definition.
    Uninstall,
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
    #[command(flatten)]
    pub sheet: SheetArgs,
}

/// Options of `devicehub print` for system (IPP) printers.
#[derive(Debug, Args)]
pub struct SheetArgs {
    /// System printers: the envelope or sheet, as an IPP media name
    /// (na_number-10_4.125x9.5in, iso_a4_210x297mm, iso_dl_110x220mm, na_letter_8.5x11in...),
    /// a short name (letter, a4, dl, #10) or a custom WxHmm size. Needed for images.
    #[arg(long)]
    pub media: Option<String>,
    /// System printers: where an image (an indicium) goes, as X_MM,Y_MM from the page's
    /// top-left corner.
    #[arg(long, value_name = "X_MM,Y_MM", default_value = "0,0")]
    pub at: String,
    /// System printers: the image's resolution in dpi (indicia come at 203 or 300).
    #[arg(long, default_value_t = 300)]
    pub dpi: u32,
    /// System printers: portrait, landscape, reverse-landscape or reverse-portrait.
    #[arg(long)]
    pub orientation: Option<String>,
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
        Command::Plugins { action: None } => cmd_plugins(&cli.global, &config),
        Command::Plugins {
            action: Some(action),
        } => cmd_plugins_action(&cli.global, &config, action),
        Command::Devices => cmd_devices(&cli.global, &config),
        Command::Print(args) => cmd_print(&cli.global, &config, *args),
        Command::Register { code } => cmd_register(&cli.global, &config, &code),
        Command::Run => cmd_run(&cli.global, config),
        Command::Status => cmd_status(&cli.global, &config),
        Command::Scale(args) => cmd_scale(&cli.global, &config, &args),
        Command::Logs { lines, follow } => cmd_logs(&cli.global, &config, lines, follow),
        Command::Service { action } => crate::install::run(action),
        Command::Sandbox { .. } => unreachable!("the sandbox is run before the config is read"),
    }
}

/// `devicehub run`: the agent on a multi-threaded runtime, stopped by SIGINT or SIGTERM.
fn cmd_run(global: &GlobalArgs, mut config: Config) -> anyhow::Result<()> {
    if let Some(dir) = &global.plugins_dir {
        config.plugins_dir = Some(dir.clone());
    }
    // Before the runtime's threads start, so that they share the allocator's arenas.
    crate::memory::configure_allocator();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = tokio::spawn(crate::service::cancel_on_signals(shutdown.clone()));
        let result = crate::service::run_until_restart(config, shutdown.clone()).await;
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
    if result? {
        restart_for_update()?;
    }
    Ok(())
}

/// The exit status `devicehub run` ends with to be started again where it cannot replace
/// itself (not Unix): the service definitions restart on it (75, `EX_TEMPFAIL`).
pub const RESTART_EXIT_CODE: i32 = 75;

/// Starts DeviceHub again after a plugin bundle update: on Unix the process replaces itself
/// with its own binary and arguments (same process ID, so a service manager sees no stop);
/// elsewhere it exits with [`RESTART_EXIT_CODE`] for the service manager to start it again.
fn restart_for_update() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let exe = std::env::current_exe().context("cannot find DeviceHub's own binary")?;
        tracing::info!("restarting DeviceHub with the updated plugins");
        let error = std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .exec();
        Err(anyhow::anyhow!(error).context(format!("cannot restart {}", exe.display())))
    }
    #[cfg(not(unix))]
    {
        tracing::info!(
            "exiting for the service manager to start DeviceHub with the updated plugins"
        );
        std::process::exit(RESTART_EXIT_CODE);
    }
}

/// `devicehub register`: through the running service when there is one; prints each step as it
/// happens (with `--json`, one JSON object per line: the steps, then `{"result":..}` or
/// `{"error":..}`).
fn cmd_register(global: &GlobalArgs, config: &Config, code: &str) -> anyhow::Result<()> {
    // The running service registers itself and connects at once; without it, this process
    // registers and the service connects when it starts.
    if register_through_service(global, config, code)?.is_some() {
        return Ok(());
    }
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
                println!(
                    "{}",
                    serde_json::json!({ "result": done, "source": "offline" })
                );
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

/// The plugins listing of `devicehub plugins` and the local RPC's `plugins` method.
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginListing {
    /// `service` when the running service answered, `offline` when this command loaded the
    /// plugins itself.
    #[serde(default)]
    pub source: String,
    pub dir: String,
    pub plugins: Vec<PluginRow>,
    pub refused: Vec<RefusedRow>,
    pub conflicts: Vec<ConflictRow>,
    /// The development flag: unsigned plugins may load.
    #[serde(default)]
    pub unsigned_allowed: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PluginRow {
    pub name: String,
    pub version: String,
    pub api_version: String,
    pub kind: String,
    pub description: String,
    pub path: String,
    /// How the file was allowed to load: `signed`, `trustedHash`, `unsigned` or `builtIn`.
    #[serde(default)]
    pub approval: String,
    /// The same in words: for a signed file, the key's ID and the bundle's name and version.
    #[serde(default)]
    pub approval_detail: String,
    pub usb_ids: Vec<UsbRow>,
    /// The plugin's IEEE-1284 rules for printers whose USB ID no table lists.
    pub ieee1284_rules: Vec<Ieee1284Row>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Ieee1284Row {
    pub manufacturer: String,
    pub model_prefix: String,
    pub command_set: String,
    pub profile: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct UsbRow {
    pub usb_id: String,
    pub model: String,
    pub support: String,
    pub profile: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RefusedRow {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConflictRow {
    pub usb_id: String,
    pub driven_by: String,
    pub also_claimed_by: Vec<String>,
}

/// The listing of a plugin set.
pub fn plugin_listing(set: &PluginSet) -> PluginListing {
    PluginListing {
        source: "service".to_string(),
        dir: set.dir.display().to_string(),
        plugins: set
            .plugins
            .iter()
            .map(|p| PluginRow {
                name: p.name().to_string(),
                version: p.version.to_string(),
                api_version: p.manifest.api_version.to_string(),
                kind: p.manifest.kind.as_str().to_string(),
                description: p.manifest.description.to_string(),
                path: p.path.display().to_string(),
                approval: p.approval.kind().to_string(),
                approval_detail: p.approval.to_string(),
                usb_ids: p
                    .manifest
                    .usb_models
                    .iter()
                    .map(|m| UsbRow {
                        usb_id: format_usb_id(m.vendor_id, m.product_id),
                        model: m.model.to_string(),
                        support: m.support.as_str().to_string(),
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
        unsigned_allowed: set.allow_unsigned,
    }
}

fn cmd_plugins(global: &GlobalArgs, config: &Config) -> anyhow::Result<()> {
    // An explicit --plugins-dir asks about that folder, not about what the service loaded.
    let from_service = match &global.plugins_dir {
        Some(_) => None,
        None => ask_service(config, method::PLUGINS, json!({}), SHORT_CALL)?,
    };
    let listing = match from_service {
        Some(answer) => serde_json::from_value(answer)
            .context("the running service sent a plugins listing this command cannot read")?,
        None => {
            let mut listing = plugin_listing(&service::load_plugins(config));
            listing.source = "offline".to_string();
            listing
        }
    };
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(out, "Plugins folder: {}", listing.dir)?;
    if listing.unsigned_allowed {
        writeln!(
            out,
            "DEVELOPMENT FLAG: unsigned plugins are allowed ([plugins] allow_unsigned)"
        )?;
    }
    if listing.plugins.is_empty() {
        writeln!(out, "No plugins loaded.")?;
    }
    for p in &listing.plugins {
        writeln!(
            out,
            "\n{} {} ({}, plugin API {})\n  {}\n  {}\n  {}",
            p.name, p.version, p.kind, p.api_version, p.description, p.path, p.approval_detail
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

/// `devicehub plugins trust|untrust|rescan`.
fn cmd_plugins_action(
    global: &GlobalArgs,
    config: &Config,
    action: PluginsAction,
) -> anyhow::Result<()> {
    use crate::plugins::trusted_files;
    let data_dir = DataDir::new(config.data_dir());
    let mut out = std::io::stdout().lock();
    let mut result = json!({});
    match &action {
        PluginsAction::Trust { file } => {
            data_dir.create().with_context(|| {
                format!(
                    "cannot use the data directory {}",
                    data_dir.root().display()
                )
            })?;
            let trusted = trusted_files::trust(&data_dir, file)?;
            if !global.json {
                writeln!(
                    out,
                    "Trusted {} (sha256 {})",
                    file.display(),
                    trusted.sha256
                )?;
            }
            result["trusted"] = json!(trusted);
        }
        PluginsAction::Untrust { file_or_hash } => {
            let removed = trusted_files::untrust(&data_dir, file_or_hash)?;
            if !global.json {
                for file in &removed {
                    writeln!(
                        out,
                        "No longer trusted: {} (sha256 {}); if it is loaded, it stays loaded \
                         until DeviceHub restarts",
                        file.file_name, file.sha256
                    )?;
                }
            }
            result["untrusted"] = json!(removed);
        }
        PluginsAction::Rescan => {}
    }
    // Untrusting needs no rescan: loaded code cannot be unloaded, and the next start reads
    // the list again.
    if matches!(action, PluginsAction::Untrust { .. }) {
        if global.json {
            serde_json::to_writer_pretty(&mut out, &result)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    let rescan = if matches!(action, PluginsAction::Rescan) {
        Some(require_service(
            global,
            config,
            method::PLUGINS_RESCAN,
            json!({}),
            RESCAN_CALL,
        )?)
    } else {
        ask_service(config, method::PLUGINS_RESCAN, json!({}), RESCAN_CALL)?
    };
    match rescan {
        Some(rescan) => {
            if !global.json {
                print_rescan(&mut out, &rescan)?;
            }
            result["rescan"] = rescan;
        }
        None => {
            if !global.json {
                writeln!(
                    out,
                    "DeviceHub is not running: the file will be loaded when it starts"
                )?;
            }
            result["rescan"] = Value::Null;
        }
    }
    if global.json {
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Prints a `plugins.rescan` answer.
fn print_rescan(out: &mut impl Write, rescan: &Value) -> anyhow::Result<()> {
    let text = |v: &Value| v.as_str().unwrap_or("").to_string();
    let loaded = rescan["loaded"].as_array().cloned().unwrap_or_default();
    if loaded.is_empty() {
        writeln!(out, "Rescanned: no new plugins")?;
    }
    for p in &loaded {
        writeln!(
            out,
            "Loaded {} {} ({})",
            text(&p["name"]),
            text(&p["version"]),
            text(&p["approvalDetail"])
        )?;
    }
    for id in rescan["attached"].as_array().into_iter().flatten() {
        writeln!(out, "Attached {}", text(id))?;
    }
    for f in rescan["failed"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "Not attached {}: {}",
            text(&f["id"]),
            text(&f["reason"])
        )?;
    }
    for r in rescan["refused"].as_array().into_iter().flatten() {
        writeln!(out, "Refused {}: {}", text(&r["file"]), text(&r["reason"]))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct DeviceListing {
    devices: Vec<devices::DeviceSummary>,
    problems: Vec<devices::DeviceProblem>,
    usb: String,
    /// The state of system (IPP) printers by device ID, from printer-state and its reasons.
    printer_states: std::collections::BTreeMap<String, String>,
}

fn cmd_devices(global: &GlobalArgs, config: &Config) -> anyhow::Result<()> {
    let from_service = match &global.plugins_dir {
        Some(_) => None,
        None => ask_service(config, method::DEVICES, json!({}), SHORT_CALL)?,
    };
    if let Some(mut listing) = from_service {
        listing["source"] = "service".into();
        listing["usb"] = "as attached by the running service".into();
        return print_device_listing(global, &listing);
    }
    let plugins = service::load_plugins(config);
    let mut listing = DeviceListing {
        devices: Vec::new(),
        problems: Vec::new(),
        usb: String::new(),
        printer_states: Default::default(),
    };
    for entry in &config.devices {
        match devices::resolve_entry(entry, &plugins) {
            Ok(spec) => {
                if let Some(devices::Connection::Ipp(address)) = &spec.connection {
                    let state = sheets::client_for(address, &config.system_printers)
                        .map_err(anyhow::Error::from)
                        .and_then(|client| Ok(client.printer_attributes()?))
                        .map(|attributes| attributes.status_line())
                        .unwrap_or_else(|e| format!("{e:#}"));
                    listing.printer_states.insert(spec.id.clone(), state);
                }
                listing.devices.push(devices::summarize(&spec));
            }
            Err(err) => listing.problems.push(devices::DeviceProblem {
                id: entry.id.clone(),
                reason: err.to_string(),
            }),
        }
    }
    match sheets::discovery::discover(&config.system_printers) {
        Ok(queues) => {
            for queue in queues {
                let spec = devices::sheet_spec(
                    &queue.id,
                    sheets::SYSTEM_DRIVER,
                    queue.attributes.make_and_model.clone(),
                    queue.address,
                )?;
                listing
                    .printer_states
                    .insert(queue.id.clone(), queue.attributes.status_line());
                listing.devices.push(devices::summarize(&spec));
            }
        }
        Err(err) => listing.problems.push(devices::DeviceProblem {
            id: "system".to_string(),
            reason: err.to_string(),
        }),
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
    let mut listing = serde_json::to_value(&listing).expect("a device listing is plain JSON");
    listing["source"] = "offline".into();
    print_device_listing(global, &listing)
}

/// Prints a device listing, from the running service or made offline.
fn print_device_listing(global: &GlobalArgs, listing: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, listing)?;
        writeln!(out)?;
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let devices = listing["devices"].as_array().cloned().unwrap_or_default();
    if devices.is_empty() {
        writeln!(out, "No devices.")?;
    }
    for d in &devices {
        writeln!(
            out,
            "{:<20} {:<8} {} {} [{}] {} {}{}",
            text(&d["id"]),
            text(&d["kind"]),
            text(&d["plugin"]),
            text(&d["plugin_version"]),
            text(&d["profile"]),
            text(&d["model"]),
            d["connection"].as_str().unwrap_or("(waiting for USB)"),
            listing["printer_states"][text(&d["id"])]
                .as_str()
                .map(|state| format!(" ({state})"))
                .unwrap_or_default()
        )?;
    }
    for p in listing["problems"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<20} not usable: {}",
            text(&p["id"]),
            text(&p["reason"])
        )?;
    }
    writeln!(out, "{}", text(&listing["usb"]))?;
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
    /// Always `offline` here: the command drove the printer itself.
    source: &'static str,
    device: String,
    bytes: u64,
    labels: u32,
    detail: String,
    out: Option<String>,
    pages: Vec<String>,
}

fn cmd_print(global: &GlobalArgs, config: &Config, args: PrintArgs) -> anyhow::Result<()> {
    // A device of the running service prints through it: the service holds the connection.
    if let (Some(device), None) = (&args.device, &args.out) {
        if print_through_service(global, config, device, &args)? {
            return Ok(());
        }
    }
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
        (Some(id), None) => match config.devices.iter().find(|d| &d.id == id) {
            Some(entry) => devices::resolve_entry(entry, &plugins)?,
            None if id.starts_with("system:") => system_queue_spec(config, id)?,
            None => bail!("no device '{id}' in the config's device table"),
        },
        (None, Some(model)) => spec_for_model(&plugins, model, &args)?,
        _ => bail!("say where to print: --device ID, or --model VID:PID --out FILE"),
    };
    if matches!(spec.connection, Some(devices::Connection::Ipp(_))) {
        return cmd_print_sheet(global, config, &args, spec, file);
    }
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
            source: "offline",
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
            source: "offline",
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

/// The spec of a queue of the local print server, by its device ID (`system:NAME`).
fn system_queue_spec(config: &Config, id: &str) -> anyhow::Result<DeviceSpec> {
    let queue = sheets::discovery::discover(&config.system_printers)?
        .into_iter()
        .find(|q| q.id == id)
        .ok_or_else(|| {
            anyhow!("the local print server has no queue '{id}' (see `devicehub devices`)")
        })?;
    Ok(devices::sheet_spec(
        &queue.id,
        sheets::SYSTEM_DRIVER,
        queue.attributes.make_and_model,
        queue.address,
    )?)
}

/// Prints on a system printer: a PDF as it is, an image composed onto a page of `--media`.
fn cmd_print_sheet(
    global: &GlobalArgs,
    config: &Config,
    args: &PrintArgs,
    spec: DeviceSpec,
    file: Vec<u8>,
) -> anyhow::Result<()> {
    let sheet = &args.sheet;
    let format = match args.format.as_deref() {
        Some(name) => {
            FileFormat::parse(name).ok_or_else(|| anyhow!("unknown --format {name:?}"))?
        }
        None => InputFormat::sniff(&file)
            .map(FileFormat::Render)
            .ok_or_else(|| anyhow!("{} is not a PDF or an image", args.file.display()))?,
    };
    let media = sheet
        .media
        .as_deref()
        .map(sheets::Media::parse)
        .transpose()
        .map_err(|e| anyhow!("--media: {e}"))?;
    let orientation = sheet
        .orientation
        .as_deref()
        .map(|text| {
            sheets::Orientation::parse(text).ok_or_else(|| {
                anyhow!("--orientation takes portrait, landscape, reverse-landscape or reverse-portrait")
            })
        })
        .transpose()?;
    let content = match format {
        FileFormat::Render(InputFormat::Pdf) => sheets::SheetContent::Pdf(file),
        FileFormat::Render(_) => {
            let (x_mm, y_mm) = sheet
                .at
                .split_once(',')
                .and_then(|(x, y)| Some((x.trim().parse().ok()?, y.trim().parse().ok()?)))
                .ok_or_else(|| anyhow!("--at takes X_MM,Y_MM, e.g. 180,8, not {:?}", sheet.at))?;
            sheets::SheetContent::Image {
                data: file,
                placement: sheets::ImagePlacement {
                    dpi: sheet.dpi,
                    x_mm,
                    y_mm,
                },
            }
        }
        FileFormat::Raw => bail!("system printers take PDF or images, not printer-language files"),
    };
    let job = sheets::SheetJob {
        job_id: format!("local-{}", std::process::id()),
        content,
        media,
        orientation,
        copies: args.copies,
    }
    .into_print_job()
    .with_context(|| format!("cannot print {}", args.file.display()))?;
    let table = DeviceTable::default();
    let device = devices::open_connected(&spec, None, &config.system_printers)?;
    let worker = table.attach_opened(spec.clone(), device)?;
    let report = worker.print(job);
    table.shutdown();
    let report = report?;
    let outcome = PrintOutcome {
        source: "offline",
        device: spec.id.clone(),
        bytes: report.bytes_sent,
        labels: report.labels,
        detail: report.detail.to_string(),
        out: None,
        pages: Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &outcome)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Printed {} sheet(s) on {} ({} bytes of PDF): {}",
            outcome.labels, outcome.device, outcome.bytes, outcome.detail
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

/// How long a quick request to the running service may take.
const SHORT_CALL: std::time::Duration = std::time::Duration::from_secs(15);
/// How long a print through the running service may take (a long PDF on a slow printer).
const PRINT_CALL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long a plugin rescan may take (loading libraries, opening the devices they drive).
const RESCAN_CALL: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a registration through the running service may take.
const REGISTER_CALL: std::time::Duration = std::time::Duration::from_secs(300);
/// How long registration steps published just before the answer are still waited for.
const LATE_STEPS: std::time::Duration = std::time::Duration::from_millis(300);

/// A small runtime for one command's requests.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Asks the running service; `None` when it is not running, so that the caller works offline.
fn ask_service(
    config: &Config,
    method: &str,
    params: Value,
    timeout: std::time::Duration,
) -> anyhow::Result<Option<Value>> {
    client_runtime()?.block_on(async {
        let mut client = match RpcClient::connect(config).await {
            Ok(client) => client,
            Err(ClientError::NotRunning { .. }) => return Ok(None),
            Err(e) => return Err(anyhow!(e)),
        };
        Ok(Some(client.call(method, params, timeout).await?))
    })
}

/// Asks the running service, which must be running; with `--json` a failure is also printed
/// as `{"error":{"kind","message"}}`.
fn require_service(
    global: &GlobalArgs,
    config: &Config,
    method: &str,
    params: Value,
    timeout: std::time::Duration,
) -> anyhow::Result<Value> {
    let outcome = client_runtime()?.block_on(async {
        let mut client = RpcClient::connect(config).await?;
        client.call(method, params, timeout).await
    });
    outcome.map_err(|e| json_failure(global, e))
}

/// Prints a client error as JSON when `--json` asks for it, and hands it on.
fn json_failure(global: &GlobalArgs, error: ClientError) -> anyhow::Error {
    if global.json {
        println!(
            "{}",
            json!({ "error": { "kind": error.kind(), "message": error.to_string() } })
        );
    }
    anyhow!(error)
}

/// `devicehub status`: the running service's state.
fn cmd_status(global: &GlobalArgs, config: &Config) -> anyhow::Result<()> {
    let status = require_service(global, config, method::STATUS, json!({}), SHORT_CALL)?;
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &status)?;
        writeln!(out)?;
        return Ok(());
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let uptime = status["uptimeS"].as_u64().unwrap_or(0);
    writeln!(
        out,
        "DeviceHub {}, running for {}h {:02}m {:02}s",
        text(&status["agentVersion"]),
        uptime / 3600,
        uptime / 60 % 60,
        uptime % 60
    )?;
    let link = text(&status["link"]["state"]);
    match status["thingName"].as_str() {
        Some(thing) => writeln!(out, "Cloud: {link} as {thing}")?,
        None => writeln!(
            out,
            "Cloud: not registered (run `devicehub register --code CODE`)"
        )?,
    }
    if let Some(detail) = status["link"]["detail"].as_str() {
        writeln!(out, "  last failure: {detail}")?;
    }
    let plugins = status["plugins"].as_array().cloned().unwrap_or_default();
    let refused = status["refusedPlugins"].as_array().map_or(0, |r| r.len());
    if status["unsignedPluginsAllowed"].as_bool() == Some(true) {
        let unsigned = plugins
            .iter()
            .filter(|p| p["approval"].as_str() == Some("unsigned"))
            .count();
        writeln!(
            out,
            "WARNING: development flag on: unsigned plugins allowed ({unsigned} loaded unsigned)"
        )?;
    }
    writeln!(
        out,
        "Plugins: {} loaded{}",
        plugins.len(),
        if refused > 0 {
            format!(", {refused} refused (see `devicehub plugins`)")
        } else {
            String::new()
        }
    )?;
    let devices = status["devices"].as_array().cloned().unwrap_or_default();
    writeln!(out, "Devices: {}", devices.len())?;
    for d in &devices {
        writeln!(
            out,
            "  {:<20} {:<8} {} {}",
            text(&d["id"]),
            text(&d["kind"]),
            text(&d["model"]),
            text(&d["connection"])
        )?;
    }
    for p in status["deviceProblems"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {:<20} not usable: {}",
            text(&p["id"]),
            text(&p["reason"])
        )?;
    }
    let jobs = status["recentJobs"].as_array().cloned().unwrap_or_default();
    if !jobs.is_empty() {
        writeln!(out, "Recent jobs:")?;
        for job in jobs.iter().take(5) {
            writeln!(out, "  {job}")?;
        }
    }
    if let Some(version) = status["upgradeAvailable"]["version"].as_str() {
        writeln!(out, "DeviceHub {version} is available")?;
    }
    Ok(())
}

/// Prints through the running service; `false` when it is not running.
fn print_through_service(
    global: &GlobalArgs,
    config: &Config,
    device: &str,
    args: &PrintArgs,
) -> anyhow::Result<bool> {
    // The service has its own working folder: it gets an absolute path.
    let path = std::path::absolute(&args.file)
        .with_context(|| format!("cannot find {}", args.file.display()))?;
    let settings: serde_json::Map<String, Value> = parse_settings(&args.settings)?
        .into_iter()
        .map(|s| (s.key.to_string(), Value::String(s.value.to_string())))
        .collect();
    let params = json!({
        "path": path,
        "device": device,
        "copies": args.copies,
        "format": args.format,
        "dither": args.dither,
        "rotate": args.rotate,
        "settings": settings,
    });
    let runtime = client_runtime()?;
    let outcome = runtime.block_on(async {
        let mut client = match RpcClient::connect(config).await {
            Ok(client) => client,
            Err(ClientError::NotRunning { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if !global.json {
            eprintln!(
                "Printing {} on {device} through the running DeviceHub...",
                args.file.display()
            );
        }
        client
            .call(method::PRINT, params, PRINT_CALL)
            .await
            .map(Some)
    });
    let mut result = match outcome {
        Ok(Some(result)) => result,
        Ok(None) => return Ok(false),
        Err(e) => return Err(json_failure(global, e).context("printing failed")),
    };
    let mut out = std::io::stdout().lock();
    if global.json {
        result["source"] = "service".into();
        serde_json::to_writer_pretty(&mut out, &result)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "Printed {} label(s) on {} ({} bytes){}",
            result["labels"],
            device,
            result["bytes"],
            match result["detail"].as_str() {
                Some(detail) if !detail.is_empty() => format!(": {detail}"),
                _ => String::new(),
            }
        )?;
    }
    Ok(true)
}

/// `devicehub scale`: one reading through the running service.
fn cmd_scale(global: &GlobalArgs, config: &Config, args: &ScaleArgs) -> anyhow::Result<()> {
    let mut params = json!({ "timeoutMs": args.timeout_ms });
    if let Some(device) = &args.device {
        params["device"] = device.clone().into();
    }
    if let Some(unit) = &args.unit {
        params["unit"] = unit.clone().into();
    }
    // The request waits for the scale, then for the answer to travel back.
    let timeout = SHORT_CALL + std::time::Duration::from_millis(u64::from(args.timeout_ms));
    let reading = require_service(global, config, method::SCALE_READ, params, timeout)?;
    let mut out = std::io::stdout().lock();
    if global.json {
        serde_json::to_writer_pretty(&mut out, &reading)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "{} {} ({}) on {}",
            reading["weight"],
            reading["unit"].as_str().unwrap_or(""),
            reading["state"].as_str().unwrap_or(""),
            reading["device"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// Registers through the running service, printing each step as it is published; `None` when
/// the service is not running.
fn register_through_service(
    global: &GlobalArgs,
    config: &Config,
    code: &str,
) -> anyhow::Result<Option<()>> {
    let runtime = client_runtime()?;
    let json_output = global.json;
    let show = move |body: &Value| {
        let step = &body["step"];
        if json_output {
            println!("{step}");
        } else {
            match serde_json::from_value::<crate::cloud::registration::RegistrationStep>(
                step.clone(),
            ) {
                Ok(step) => println!("{step}"),
                Err(_) => println!("{step}"),
            }
        }
    };
    let outcome = runtime.block_on(async {
        let mut client = match RpcClient::connect(config).await {
            Ok(client) => client,
            Err(ClientError::NotRunning { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut steps: Subscription = client.subscribe(&[topic::REGISTRATION]).await?;
        let id = client.next_request_id();
        let call = client.call_with_id(
            id.clone(),
            method::REGISTER,
            json!({ "activationCode": code }),
            REGISTER_CALL,
        );
        tokio::pin!(call);
        let answer = loop {
            tokio::select! {
                answer = &mut call => break answer,
                step = steps.next() => {
                    let (_, body) = step?;
                    if body["requestId"] == id {
                        show(&body);
                    }
                }
            }
        };
        // The answer and the last steps travel on different sockets: collect stragglers.
        while let Ok(Ok((_, body))) = tokio::time::timeout(LATE_STEPS, steps.next()).await {
            if body["requestId"] == id {
                show(&body);
            }
        }
        answer.map(Some)
    });
    match outcome {
        Ok(Some(done)) => {
            if global.json {
                println!("{}", json!({ "result": done, "source": "service" }));
            } else if let Some(thing) = done["thingName"].as_str() {
                println!("Registered as {thing}; the running DeviceHub is connecting");
            }
            Ok(Some(()))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(json_failure(global, e).context("registration failed")),
    }
}

/// `devicehub logs`: the last lines of the log files, then (with `--follow`) new ones.
fn cmd_logs(
    global: &GlobalArgs,
    config: &Config,
    lines: usize,
    follow: bool,
) -> anyhow::Result<()> {
    use crate::storage::rotating_log::LOG_FILE;
    let dir = DataDir::new(config.data_dir()).logs_dir();
    let current = dir.join(LOG_FILE);
    // Oldest rotated file first, the current file last.
    let mut files: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the log folder {}", dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix(&format!("{LOG_FILE}."))?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    files.sort_by_key(|file| std::cmp::Reverse(file.0));
    let mut tail = std::collections::VecDeque::with_capacity(lines + 1);
    for path in files
        .into_iter()
        .map(|(_, path)| path)
        .chain(std::iter::once(current.clone()))
    {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines() {
            if tail.len() == lines {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
    }
    let show = |line: &str| {
        if global.json {
            println!("{}", json!(line));
        } else {
            println!("{line}");
        }
    };
    tail.iter().for_each(|line| show(line));
    if !follow {
        return Ok(());
    }
    follow_log(&current, show)
}

/// Follows `path` as it grows; a rotation (the file shrinking or being replaced) starts again
/// at the new file's beginning.
fn follow_log(path: &Path, show: impl Fn(&str)) -> anyhow::Result<()> {
    use std::io::{BufRead, Seek, SeekFrom};
    const POLL: std::time::Duration = std::time::Duration::from_millis(250);
    let mut position = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut partial = String::new();
    loop {
        std::thread::sleep(POLL);
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let length = file.metadata().map_or(0, |m| m.len());
        if length < position {
            position = 0;
            partial.clear();
        }
        if length == position {
            continue;
        }
        let mut reader = std::io::BufReader::new(file);
        reader.seek(SeekFrom::Start(position))?;
        let mut line = String::new();
        while reader.read_line(&mut line)? > 0 {
            position += line.len() as u64;
            if line.ends_with('\n') {
                partial.push_str(line.trim_end_matches(['\n', '\r']));
                show(&partial);
                partial.clear();
            } else {
                partial.push_str(&line);
            }
            line.clear();
        }
    }
}
