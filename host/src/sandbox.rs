//! `devicehub sandbox`: the whole system on one machine with one command, to evaluate
//! DeviceHub without a cloud account or hardware.
//!
//! It starts, as child processes of this one, the emulator's cloud and a simulator for each
//! printer family (Zebra ZPL, TSPL, Brother QL, DYMO LabelWriter 450) and a serial scale, all on
//! free loopback ports (and a text scanner when the emulator has one); writes a DeviceHub config naming those devices; runs the agent in this
//! process, registers it with an activation code as a user would, waits until it is connected,
//! and prints two addresses: DeviceHub's status page (the running agent's own local pages, on
//! a free port, with its WebSocket address beside it) and the emulator's page, where a person
//! sends print jobs and scale readings and sees the printed labels. It serves until SIGINT or
//! SIGTERM, then stops the agent and every child.
//!
//! # Children never outlive the sandbox
//! Each child's standard input is a pipe held here: the simulators stop when it closes, which
//! happens however this process ends. On Linux every child also gets `PR_SET_PDEATHSIG`, which
//! covers the cloud (it stops on signals only). A normal stop sends SIGTERM and waits.
//!
//! # The sandbox directory
//! `--dir` (default: the platform's data directory, `devicehub/sandbox`) holds `cloud/` (the
//! emulator's data), `claim/` (the claim certificate), `agent/` (DeviceHub's data directory),
//! `devicehub.toml`, `labels/<device>/` (every printed label as PNG), `demo/`, `logs/`,
//! `plugins/` and `plugin-signing.key`.
//!
//! # Plugins
//! The agent loads only signed plugins, and the sandbox does not use the development flag: at
//! every start it makes a throwaway signing key (`plugin-signing.key`, owner-only), signs a
//! bundle of the drivers it finds (in `--plugins-dir`, else where DeviceHub's default rule
//! finds them, e.g. the build output) into its own `plugins/` folder, and trusts that key in
//! the config it writes.
//! Those entries are removed at start, and nothing else in the directory is touched: every
//! start is a fresh desk.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::cloud::link::LinkState;
use crate::config::Config;
use crate::storage::atomic::ensure_dir;
use crate::storage::{write_atomic, Visibility};

/// How long a child may take to announce itself, and the cloud to write its endpoints.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long registration and the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a demo job may take from submission to its outcome.
const DEMO_JOB_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a child may take to stop after SIGTERM before it is killed.
const CHILD_STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the agent may take to stop.
const AGENT_STOP_GRACE: Duration = Duration::from_secs(30);

/// What `devicehub sandbox` was asked to do.
#[derive(Debug, Clone)]
pub struct SandboxOptions {
    /// The sandbox directory; see the module documentation for its default.
    pub dir: Option<PathBuf>,
    /// Where the drivers to bundle are (`None`: DeviceHub's default plugins rule).
    pub plugins_dir: Option<PathBuf>,
    /// Print a shipping label and an indicia once ready, wait for both, and list the PNGs.
    pub print_demo: bool,
    /// One JSON object per line on standard output instead of text.
    pub json: bool,
}

/// Why the sandbox could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the emulator binary {path} is missing: build it with `cargo build {release}-p devicehub-emulator`"
    )]
    EmulatorMissing {
        path: PathBuf,
        release: &'static str,
    },
    #[error("cannot find the devicehub executable's folder")]
    NoExecutable(#[source] std::io::Error),
    #[error("cannot prepare {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("cannot start {what}")]
    Spawn {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} did not start: {detail} (see {log})")]
    Start {
        what: String,
        detail: String,
        log: PathBuf,
    },
    #[error("`devicehub-emulator {command}` failed: {detail}")]
    EmulatorCommand { command: String, detail: String },
    #[error("cannot sign the drivers into the sandbox's plugins folder")]
    Bundle(#[from] crate::plugins::bundle::BundleError),
    #[error("the generated config does not load")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("DeviceHub's local pages are not running (see the log in the sandbox's logs/ folder)")]
    NoStatusPage,
    #[error("registering with the emulator failed")]
    Register(#[from] crate::agent::RegisterError),
    #[error("DeviceHub did not connect to the emulator within {0:?}")]
    NotConnected(Duration),
    #[error("DeviceHub stopped: {0}")]
    Agent(String),
    #[error("asking the emulator {url} failed: {detail}")]
    Http { url: String, detail: String },
    #[error("demo job {job_id} ended {status}: {details}")]
    DemoJob {
        job_id: String,
        status: String,
        details: String,
    },
    #[error("demo job {job_id} did not end within {timeout:?}")]
    DemoTimeout { job_id: String, timeout: Duration },
    #[error("cannot listen for stop signals")]
    Signals(#[source] std::io::Error),
}

/// One simulated printer: the emulator subcommand that plays it and the config row that
/// drives it.
struct PrinterPlan {
    /// The device ID in DeviceHub's config, also the name the emulator page shows.
    id: &'static str,
    family: &'static str,
    args: &'static [&'static str],
    usb_id: &'static str,
    /// The plugin profile; `None` lets the plugin's USB ID table choose.
    profile: Option<&'static str>,
}

/// The desk: one printer of each family. The Zebra comes first, so it is DeviceHub's default
/// printer for jobs that name no device.
const PRINTERS: &[PrinterPlan] = &[
    PrinterPlan {
        id: "desk-zebra",
        family: "zebra",
        args: &[],
        usb_id: "0A5F:0141",
        profile: Some("zpl-203"),
    },
    PrinterPlan {
        id: "desk-tspl",
        family: "tspl",
        args: &[],
        usb_id: "1203:0160",
        profile: None,
    },
    PrinterPlan {
        id: "desk-brother",
        family: "brother-ql",
        args: &["--media", "62"],
        usb_id: "04F9:209D",
        profile: None,
    },
    PrinterPlan {
        id: "desk-dymo",
        family: "dymo",
        args: &["--model", "450"],
        usb_id: "0922:0020",
        profile: None,
    },
];

/// The scale's device ID.
const SCALE_ID: &str = "desk-scale";
/// The scanner's device ID (when the emulator has a scanner simulator).
const SCANNER_ID: &str = "desk-scanner";

/// A running device simulator as the config and the emulator page need it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDevice {
    pub id: String,
    pub kind: &'static str,
    /// DeviceHub's address for it (`tcp://..` or `serial://..`).
    pub address: String,
    /// The simulator's control API.
    pub control: String,
}

/// The child processes, stopped (SIGTERM, then a kill after a grace period) when dropped.
struct Children {
    running: Vec<RunningChild>,
}

struct RunningChild {
    what: String,
    child: Child,
    /// Held open: simulators stop when their standard input closes.
    _stdin: Option<ChildStdin>,
}

impl Children {
    fn pids(&self) -> Vec<u32> {
        self.running.iter().map(|c| c.child.id()).collect()
    }

    /// Stops every child: SIGTERM to all, then waits, killing those that outstay the grace.
    fn stop(&mut self) {
        for running in &self.running {
            terminate(&running.child);
        }
        let deadline = Instant::now() + CHILD_STOP_GRACE;
        for mut running in self.running.drain(..) {
            loop {
                match running.child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) | Err(_) => {
                        tracing::warn!(child = %running.what, "did not stop in time; killing it");
                        let _ = running.child.kill();
                        let _ = running.child.wait();
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(unix)]
fn terminate(child: &Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid of our own unreaped child and a valid signal number has
        // no memory-safety preconditions.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

#[cfg(not(unix))]
fn terminate(_child: &Child) {
    // Without signals the grace period passes and the child is killed.
}

/// Makes a child die with this process on Linux, whatever way this process ends.
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// The sandbox's paths.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn cloud(&self) -> PathBuf {
        self.root.join("cloud")
    }
    fn claim(&self) -> PathBuf {
        self.root.join("claim")
    }
    fn agent(&self) -> PathBuf {
        self.root.join("agent")
    }
    fn config(&self) -> PathBuf {
        self.root.join("devicehub.toml")
    }
    fn labels(&self, device: &str) -> PathBuf {
        self.root.join("labels").join(device)
    }
    fn demo(&self) -> PathBuf {
        self.root.join("demo")
    }
    fn plugins(&self) -> PathBuf {
        self.root.join("plugins")
    }
    fn signing_key(&self) -> PathBuf {
        self.root.join("plugin-signing.key")
    }
    fn log(&self, what: &str) -> PathBuf {
        self.root.join("logs").join(format!("{what}.log"))
    }

    /// Removes what an earlier sandbox left here (only the sandbox's own entries) and creates
    /// the folders.
    fn prepare(&self) -> Result<(), SandboxError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SandboxError::Io { path, source }
        };
        for dir in [
            "cloud", "claim", "agent", "labels", "demo", "logs", "plugins",
        ] {
            let path = self.root.join(dir);
            match std::fs::remove_dir_all(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        for file in [self.config(), self.signing_key()] {
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&file)(e)),
            }
        }
        for dir in [
            self.root.join("logs"),
            self.demo(),
            self.root.join("labels"),
        ] {
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }
}

/// The default sandbox directory.
pub fn default_dir() -> PathBuf {
    crate::config::default_data_dir().join("sandbox")
}

/// Finds `devicehub-emulator` beside this executable (a cargo build puts both in
/// `target/release` or `target/debug`; an installation puts them side by side).
fn emulator_binary() -> Result<PathBuf, SandboxError> {
    let exe = std::env::current_exe().map_err(SandboxError::NoExecutable)?;
    let folder = exe.parent().unwrap_or(Path::new("."));
    let path = folder.join(format!(
        "devicehub-emulator{}",
        std::env::consts::EXE_SUFFIX
    ));
    if path.is_file() {
        Ok(path)
    } else {
        let release = if folder.ends_with("debug") {
            ""
        } else {
            "--release "
        };
        Err(SandboxError::EmulatorMissing { path, release })
    }
}

/// Runs `devicehub sandbox` until SIGINT or SIGTERM.
pub fn run(options: SandboxOptions) -> Result<(), SandboxError> {
    let emulator = emulator_binary()?;
    let layout = Layout {
        root: options.dir.clone().unwrap_or_else(default_dir),
    };
    std::fs::create_dir_all(&layout.root).map_err(|source| SandboxError::Io {
        path: layout.root.clone(),
        source,
    })?;
    // An absolute root keeps the config's paths valid whatever the working directory.
    let root = std::fs::canonicalize(&layout.root).map_err(|source| SandboxError::Io {
        path: layout.root.clone(),
        source,
    })?;
    let layout = Layout { root };
    layout.prepare()?;

    let mut children = Children {
        running: Vec::new(),
    };
    let cloud = start_cloud(&emulator, &layout, &mut children)?;
    let mut devices = Vec::new();
    for plan in PRINTERS {
        devices.push(start_printer(&emulator, &layout, plan, &mut children)?);
    }
    devices.push(start_scale(&emulator, &layout, &mut children)?);
    if has_scanner_simulator(&emulator) {
        devices.push(start_scanner(&emulator, &layout, &mut children)?);
    }

    emulator_command(
        &emulator,
        &layout,
        &["claim-certificate", &path_text(&layout.claim())],
    )?;
    let code = emulator_command(&emulator, &layout, &["activation-code"])?
        .trim()
        .to_string();
    let trusted_key = sign_plugins(&layout, options.plugins_dir.as_deref())?;
    write_config(&layout, &cloud, &devices, &layout.plugins(), &trusted_key)?;
    let config = Config::load(&layout.config())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(SandboxError::Runtime)?;
    let result = runtime.block_on(serve(
        config, &cloud, &devices, &code, &layout, &children, &options,
    ));
    runtime.shutdown_timeout(Duration::from_secs(5));
    children.stop();
    if options.json && result.is_ok() {
        println!("{}", json!({"event": "stopped"}));
    }
    result
}

/// Where the cloud is.
struct CloudEndpoints {
    api_url: String,
    mqtt_port: u16,
    ca_certificate: PathBuf,
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

fn log_file(layout: &Layout, what: &str) -> Result<(std::fs::File, PathBuf), SandboxError> {
    let path = layout.log(what);
    let file = std::fs::File::create(&path).map_err(|source| SandboxError::Io {
        path: path.clone(),
        source,
    })?;
    Ok((file, path))
}

/// Spawns an emulator subcommand as an owned child with piped standard input and output.
fn spawn(
    emulator: &Path,
    layout: &Layout,
    what: &str,
    args: &[String],
    children: &mut Children,
) -> Result<(std::process::ChildStdout, PathBuf), SandboxError> {
    let (log, log_path) = log_file(layout, what)?;
    let mut command = Command::new(emulator);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    die_with_parent(&mut command);
    let mut child = command.spawn().map_err(|source| SandboxError::Spawn {
        what: what.to_string(),
        source,
    })?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    children.running.push(RunningChild {
        what: what.to_string(),
        child,
        _stdin: stdin,
    });
    let stdout = stdout.ok_or_else(|| SandboxError::Start {
        what: what.to_string(),
        detail: "its standard output is not a pipe".into(),
        log: log_path.clone(),
    })?;
    Ok((stdout, log_path))
}

/// Reads a simulator's one-line JSON announcement, waiting at most [`START_TIMEOUT`].
fn announcement(
    stdout: std::process::ChildStdout,
    what: &str,
    log: &Path,
) -> Result<Value, SandboxError> {
    let failed = |detail: String| SandboxError::Start {
        what: what.to_string(),
        detail,
        log: log.to_path_buf(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    // The reader owns the pipe: after the line it keeps draining it, so that a simulator
    // writing more never blocks on a full pipe.
    std::thread::Builder::new()
        .name(format!("{what}-stdout"))
        .spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let first = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(first);
            std::io::copy(&mut reader, &mut std::io::sink()).ok();
        })
        .map_err(|source| SandboxError::Spawn {
            what: format!("the reader of {what}"),
            source,
        })?;
    let line = rx
        .recv_timeout(START_TIMEOUT)
        .map_err(|_| failed(format!("no announcement within {START_TIMEOUT:?}")))?
        .map_err(|e| failed(format!("reading its announcement failed: {e}")))?;
    if line.trim().is_empty() {
        return Err(failed("it exited without announcing itself".into()));
    }
    serde_json::from_str(line.trim())
        .map_err(|e| failed(format!("its announcement is not JSON: {e}")))
}

fn field<'a>(
    value: &'a Value,
    name: &str,
    what: &str,
    log: &Path,
) -> Result<&'a str, SandboxError> {
    value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| SandboxError::Start {
            what: what.to_string(),
            detail: format!("its announcement has no {name}: {value}"),
            log: log.to_path_buf(),
        })
}

fn start_cloud(
    emulator: &Path,
    layout: &Layout,
    children: &mut Children,
) -> Result<CloudEndpoints, SandboxError> {
    let mut args: Vec<String> = ["serve", "--data-dir"].map(String::from).to_vec();
    args.push(path_text(&layout.cloud()));
    for port in [
        "--mqtt-port",
        "--alpn-port",
        "--websocket-port",
        "--http-port",
        "--files-port",
    ] {
        args.push(port.to_string());
        args.push("0".to_string());
    }
    let (stdout, log) = spawn(emulator, layout, "cloud", &args, children)?;
    // The cloud's text output is for people; its endpoints file is the interface.
    std::thread::Builder::new()
        .name("cloud-stdout".into())
        .spawn(move || {
            std::io::copy(&mut BufReader::new(stdout), &mut std::io::sink()).ok();
        })
        .map_err(|source| SandboxError::Spawn {
            what: "the reader of the cloud".into(),
            source,
        })?;
    let endpoints_file = layout.cloud().join("endpoints.json");
    let deadline = Instant::now() + START_TIMEOUT;
    let endpoints: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&endpoints_file) {
            if let Ok(value) = serde_json::from_str(&text) {
                break value;
            }
        }
        if let Some(child) = children.running.last_mut() {
            if let Ok(Some(status)) = child.child.try_wait() {
                return Err(SandboxError::Start {
                    what: "the emulator cloud".into(),
                    detail: format!("it exited ({status})"),
                    log,
                });
            }
        }
        if Instant::now() > deadline {
            return Err(SandboxError::Start {
                what: "the emulator cloud".into(),
                detail: format!("no {} within {START_TIMEOUT:?}", endpoints_file.display()),
                log,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let bad = |name: &str| SandboxError::Start {
        what: "the emulator cloud".into(),
        detail: format!("endpoints.json has no {name}"),
        log: log.clone(),
    };
    Ok(CloudEndpoints {
        api_url: endpoints["apiUrl"]
            .as_str()
            .ok_or_else(|| bad("apiUrl"))?
            .to_string(),
        mqtt_port: endpoints["mqttPort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| bad("mqttPort"))?,
        ca_certificate: endpoints["caCertificate"]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| bad("caCertificate"))?,
    })
}

fn start_printer(
    emulator: &Path,
    layout: &Layout,
    plan: &PrinterPlan,
    children: &mut Children,
) -> Result<SandboxDevice, SandboxError> {
    let labels = layout.labels(plan.id);
    std::fs::create_dir_all(&labels).map_err(|source| SandboxError::Io {
        path: labels.clone(),
        source,
    })?;
    let mut args: Vec<String> = vec!["printer".into(), plan.family.into()];
    args.extend(plan.args.iter().map(|a| a.to_string()));
    args.extend(
        [
            "--listen",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--out-dir",
        ]
        .map(String::from),
    );
    args.push(path_text(&labels));
    let (stdout, log) = spawn(emulator, layout, plan.id, &args, children)?;
    let announced = announcement(stdout, plan.id, &log)?;
    Ok(SandboxDevice {
        id: plan.id.to_string(),
        kind: "printer",
        address: format!("tcp://{}", field(&announced, "print", plan.id, &log)?),
        control: field(&announced, "control", plan.id, &log)?.to_string(),
    })
}

fn start_scale(
    emulator: &Path,
    layout: &Layout,
    children: &mut Children,
) -> Result<SandboxDevice, SandboxError> {
    let args: Vec<String> = [
        "scale",
        "serial",
        "--protocol",
        "mt-sics",
        "--weight",
        "1.250",
        "--unit",
        "kg",
    ]
    .map(String::from)
    .to_vec();
    let (stdout, log) = spawn(emulator, layout, SCALE_ID, &args, children)?;
    let announced = announcement(stdout, SCALE_ID, &log)?;
    Ok(SandboxDevice {
        id: SCALE_ID.to_string(),
        kind: "scale",
        address: format!(
            "serial://{}?baud=9600",
            field(&announced, "pty", SCALE_ID, &log)?
        ),
        control: field(&announced, "control", SCALE_ID, &log)?.to_string(),
    })
}

/// Whether this emulator build has the scanner simulator (`scanner serial`).
fn has_scanner_simulator(emulator: &Path) -> bool {
    Command::new(emulator)
        .args(["scanner", "serial", "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn start_scanner(
    emulator: &Path,
    layout: &Layout,
    children: &mut Children,
) -> Result<SandboxDevice, SandboxError> {
    let args: Vec<String> = ["scanner", "serial"].map(String::from).to_vec();
    let (stdout, log) = spawn(emulator, layout, SCANNER_ID, &args, children)?;
    let announced = announcement(stdout, SCANNER_ID, &log)?;
    Ok(SandboxDevice {
        id: SCANNER_ID.to_string(),
        kind: "scanner",
        address: format!("serial://{}", field(&announced, "pty", SCANNER_ID, &log)?),
        control: field(&announced, "control", SCANNER_ID, &log)?.to_string(),
    })
}

/// Runs a short emulator CLI command against the sandbox's cloud and returns its output.
fn emulator_command(
    emulator: &Path,
    layout: &Layout,
    args: &[&str],
) -> Result<String, SandboxError> {
    let output = Command::new(emulator)
        .args(args)
        .arg("--data-dir")
        .arg(layout.cloud())
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SandboxError::Spawn {
            what: format!("devicehub-emulator {}", args[0]),
            source,
        })?;
    if !output.status.success() {
        return Err(SandboxError::EmulatorCommand {
            command: args[0].to_string(),
            detail: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// Makes the throwaway signing key and signs a bundle of the drivers in `source` (else where
/// the default plugins rule finds them) into the sandbox's plugins folder; returns the public
/// key to trust.
fn sign_plugins(layout: &Layout, source: Option<&Path>) -> Result<String, SandboxError> {
    use crate::plugins::bundle;
    let from = match source {
        Some(dir) => dir.to_path_buf(),
        None => crate::config::default_plugins_dir().0,
    };
    let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    bundle::write_signing_key(&layout.signing_key(), &key)?;
    let out = layout.plugins();
    bundle::build_bundle(
        &bundle::BundleRequest {
            from: &from,
            out: &out,
            version: env!("CARGO_PKG_VERSION"),
            manifest_name: bundle::DEFAULT_MANIFEST,
            only: &[],
        },
        &key,
    )?;
    Ok(bundle::public_key_text(&key))
}

fn write_config(
    layout: &Layout,
    cloud: &CloudEndpoints,
    devices: &[SandboxDevice],
    plugins_dir: &Path,
    trusted_key: &str,
) -> Result<(), SandboxError> {
    let mut text = String::from(
        "# Written by `devicehub sandbox` for the simulated desk; rewritten at every start.\n",
    );
    text.push_str(&format!(
        "data_dir = {}\nlog_level = \"warn\"\n",
        toml_string(&path_text(&layout.agent()))
    ));
    text.push_str(&format!(
        "plugins_dir = {}\n",
        toml_string(&path_text(plugins_dir))
    ));
    // The local servers take free ports, so that the sandbox runs beside an installed
    // DeviceHub; the sandbox prints where they are.
    text.push_str("\n[usb]\nenabled = false\n\n[local]\nhttp_port = 0\nws_port = 0\n");
    for plan in PRINTERS {
        let Some(device) = devices.iter().find(|d| d.id == plan.id) else {
            continue;
        };
        text.push_str(&format!(
            "\n[[devices]]\nid = {}\naddress = {}\nusb_id = {}\n",
            toml_string(plan.id),
            toml_string(&device.address),
            toml_string(plan.usb_id)
        ));
        if let Some(profile) = plan.profile {
            text.push_str(&format!("profile = {}\n", toml_string(profile)));
        }
    }
    if let Some(scale) = devices.iter().find(|d| d.id == SCALE_ID) {
        text.push_str(&format!(
            "\n[[devices]]\nid = {}\naddress = {}\nplugin = \"serial-scale\"\nprofile = \"mt-sics\"\n",
            toml_string(SCALE_ID),
            toml_string(&scale.address)
        ));
    }
    if let Some(scanner) = devices.iter().find(|d| d.id == SCANNER_ID) {
        text.push_str(&format!(
            "\n[[devices]]\nid = {}\naddress = {}\nplugin = \"text-scanner\"\n",
            toml_string(SCANNER_ID),
            toml_string(&scanner.address)
        ));
    }
    let claim = layout.claim();
    text.push_str(&format!(
        "\n[cloud]\nendpoint = \"localhost\"\nport = {}\nca_bundle = {}\nclaim_certificate = {}\nclaim_private_key = {}\n",
        cloud.mqtt_port,
        toml_string(&path_text(&cloud.ca_certificate)),
        toml_string(&path_text(&claim.join("certificate.pem.crt"))),
        toml_string(&path_text(&claim.join("private.pem.key"))),
    ));
    // The sandbox's own throwaway key signed its plugins folder; no development flag.
    text.push_str(&format!(
        "\n[plugins]\ntrusted_keys = [{}]\n",
        toml_string(trusted_key)
    ));
    write_atomic(&layout.config(), text.as_bytes(), Visibility::OwnerOnly).map_err(|source| {
        SandboxError::Write {
            path: layout.config(),
            source,
        }
    })
}

/// A plain-HTTP client for the emulator's API on loopback. reqwest's rustls backend needs a
/// crypto provider even when no TLS is used; ring's is handed over.
fn http_client() -> Result<reqwest::Client, SandboxError> {
    let failed = |detail: String| SandboxError::Http {
        url: "(client)".into(),
        detail,
    };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| failed(e.to_string()))?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| failed(e.to_string()))
}

/// The emulator's API as the sandbox uses it.
struct EmulatorApi {
    base: String,
    http: reqwest::Client,
}

impl EmulatorApi {
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<reqwest::Response, SandboxError> {
        let failed = |detail: String| SandboxError::Http {
            url: url.to_string(),
            detail,
        };
        let response = request.send().await.map_err(|e| failed(e.to_string()))?;
        if !response.status().is_success() {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            return Err(failed(format!("{status}: {body}")));
        }
        Ok(response)
    }

    async fn get_json(&self, path: &str) -> Result<Value, SandboxError> {
        let url = format!("{}{path}", self.base);
        let response = self.send(self.http.get(&url), &url).await?;
        response.json().await.map_err(|e| SandboxError::Http {
            url,
            detail: e.to_string(),
        })
    }

    async fn post_json(
        &self,
        path: &str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Value, SandboxError> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.post(&url).json(body);
        if let Some(token) = token {
            request = request.header("x-devicehub-page-token", token);
        }
        let response = self.send(request, &url).await?;
        response.json().await.map_err(|e| SandboxError::Http {
            url,
            detail: e.to_string(),
        })
    }

    /// The token the emulator page carries, for the page's own job endpoints.
    async fn page_token(&self) -> Result<String, SandboxError> {
        let url = format!("{}/", self.base);
        let html = self
            .send(self.http.get(&url), &url)
            .await?
            .text()
            .await
            .map_err(|e| SandboxError::Http {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        let marker = "name=\"devicehub-page-token\" content=\"";
        html.find(marker)
            .map(|start| &html[start + marker.len()..])
            .and_then(|rest| rest.split('"').next())
            .map(str::to_string)
            .ok_or_else(|| SandboxError::Http {
                url,
                detail: "the page carries no token".into(),
            })
    }
}

/// Runs the agent, registers it, reports the addresses, and serves until a stop signal.
async fn serve(
    config: Config,
    cloud: &CloudEndpoints,
    devices: &[SandboxDevice],
    code: &str,
    layout: &Layout,
    children: &Children,
    options: &SandboxOptions,
) -> Result<(), SandboxError> {
    let api = EmulatorApi {
        base: cloud.api_url.clone(),
        http: http_client()?,
    };
    for device in devices.iter().filter(|d| d.kind == "printer") {
        api.post_json(
            "/printers",
            &json!({"name": device.id, "control": device.control}),
            None,
        )
        .await?;
    }

    let shutdown = CancellationToken::new();
    let (agent_tx, agent_rx) = oneshot::channel();
    let mut agent_task = tokio::spawn(crate::service::run_with_agent(
        config,
        shutdown.clone(),
        move |agent| {
            let _ = agent_tx.send(agent);
        },
    ));
    let outcome = async {
        let agent = tokio::select! {
            agent = agent_rx => agent.map_err(|_| SandboxError::Agent("it stopped before it started".into()))?,
            ended = &mut agent_task => return Err(agent_ended(ended)),
        };
        let thing = tokio::select! {
            registered = register_and_connect(&agent, code) => registered?,
            ended = &mut agent_task => return Err(agent_ended(ended)),
        };
        // The agent's own pages: they bound before the agent was handed over, so their
        // address is known by now (or they could not start).
        let servers = *agent.local_servers().borrow();
        let pages = servers.pages.ok_or(SandboxError::NoStatusPage)?;
        let status_url = format!("http://{pages}/status");
        announce_ready(
            &Addresses {
                status_page: &status_url,
                websocket: servers.websocket.map(|addr| format!("ws://{addr}")),
                api_url: &cloud.api_url,
            },
            &thing,
            layout,
            devices,
            children,
            options.json,
        );
        let stopping = tokio::spawn(crate::service::cancel_on_signals(shutdown.clone()));
        if options.print_demo {
            let demo = tokio::select! {
                demo = print_demo(&api, &thing, layout) => demo,
                ended = &mut agent_task => Err(agent_ended(ended)),
            };
            match demo {
                Ok(jobs) => report_demo(&jobs, options.json),
                Err(e) => {
                    shutdown.cancel();
                    let _ = stopping.await;
                    return Err(e);
                }
            }
        }
        // Serves until a stop signal, or until the agent ends on its own (an error).
        tokio::select! {
            signals = stopping => match signals {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(SandboxError::Signals(e)),
                Err(e) => return Err(SandboxError::Agent(format!("the signal task failed: {e}"))),
            },
            ended = &mut agent_task => {
                shutdown.cancel();
                return Err(agent_ended(ended));
            }
        }
        if !options.json {
            println!("Stopping the sandbox...");
        }
        Ok(())
    }
    .await;
    shutdown.cancel();
    if !agent_task.is_finished() {
        match tokio::time::timeout(AGENT_STOP_GRACE, &mut agent_task).await {
            Ok(Ok(Err(e))) if outcome.is_ok() => {
                return Err(SandboxError::Agent(format!("{e:#}")));
            }
            Ok(_) => {}
            Err(_) => {
                tracing::warn!("DeviceHub did not stop in time");
                agent_task.abort();
            }
        }
    }
    outcome
}

fn agent_ended(ended: Result<anyhow::Result<()>, tokio::task::JoinError>) -> SandboxError {
    match ended {
        Ok(Ok(())) => SandboxError::Agent("it ended on its own".into()),
        Ok(Err(e)) => SandboxError::Agent(format!("{e:#}")),
        Err(e) => SandboxError::Agent(format!("it failed: {e}")),
    }
}

/// Registers with the activation code, as a user would, and waits for the first connection.
async fn register_and_connect(agent: &Agent, code: &str) -> Result<String, SandboxError> {
    let registration = agent
        .register(code, &mut |step| tracing::info!(?step, "registration"))
        .await?;
    let mut link = agent.link();
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        link.wait_for(|state| matches!(state, Some(LinkState::Connected { .. })))
            .await
            .is_ok()
    })
    .await;
    match connected {
        Ok(true) => Ok(registration.thing_name),
        Ok(false) => Err(SandboxError::Agent("the cloud link stopped".into())),
        Err(_) => Err(SandboxError::NotConnected(CONNECT_TIMEOUT)),
    }
}

/// What the sandbox tells the person about where things are.
struct Addresses<'a> {
    /// DeviceHub's own status page, served by the running agent.
    status_page: &'a str,
    /// DeviceHub's local WebSocket server, when it runs.
    websocket: Option<String>,
    /// The emulator's HTTP API; its page is at `/`.
    api_url: &'a str,
}

fn announce_ready(
    addresses: &Addresses<'_>,
    thing: &str,
    layout: &Layout,
    devices: &[SandboxDevice],
    children: &Children,
    json: bool,
) {
    let Addresses {
        status_page: status_url,
        websocket,
        api_url,
    } = addresses;
    let emulator_page = format!("{api_url}/");
    if json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "statusPage": status_url,
                "webSocket": websocket,
                "emulatorPage": emulator_page,
                "emulatorApi": api_url,
                "thing": thing,
                "dir": layout.root,
                "devices": devices,
                "processes": children.pids(),
            })
        );
    } else {
        println!("Sandbox in {}", layout.root.display());
        println!("DeviceHub is registered as {thing} and connected; devices:");
        for device in devices {
            println!("  {:<13} {:<8} {}", device.id, device.kind, device.address);
        }
        println!(
            "Printed labels are also written to {}",
            layout.root.join("labels").display()
        );
        println!();
        println!("DeviceHub status page: {status_url}");
        if let Some(websocket) = websocket {
            println!("DeviceHub WebSocket: {websocket}");
        }
        println!("Emulator page: {emulator_page}");
        println!();
        println!("Press Ctrl+C to stop.");
    }
}

/// A demo job's outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DemoJob {
    job_id: String,
    sample: &'static str,
    status: String,
    /// The printed labels, written to the sandbox's `demo/` folder.
    pngs: Vec<PathBuf>,
}

/// Sends a shipping label and a two-copy indicia through the emulator page's endpoints, waits
/// for both to succeed, and saves their printed labels.
async fn print_demo(
    api: &EmulatorApi,
    thing: &str,
    layout: &Layout,
) -> Result<Vec<DemoJob>, SandboxError> {
    let token = api.page_token().await?;
    let mut jobs = Vec::new();
    for (sample, copies, kind) in [("label-4x6.pdf", 1, "label"), ("indicia.gif", 2, "indicia")] {
        let created = api
            .post_json(
                &format!(
                    "/page/things/{thing}/print-jobs?sample={sample}&copies={copies}&kind={kind}&device=desk-zebra"
                ),
                &Value::Null,
                Some(&token),
            )
            .await?;
        let job_id = created["jobId"]
            .as_str()
            .ok_or_else(|| SandboxError::Http {
                url: format!("{}/page/things/{thing}/print-jobs", api.base),
                detail: format!("the answer names no job: {created}"),
            })?
            .to_string();
        jobs.push((sample, job_id));
    }
    let mut done = Vec::new();
    for (sample, job_id) in jobs {
        let execution = wait_for_outcome(api, thing, &job_id).await?;
        let status = execution["status"].as_str().unwrap_or_default().to_string();
        if status != "SUCCEEDED" {
            return Err(SandboxError::DemoJob {
                job_id,
                status,
                details: execution["statusDetails"].to_string(),
            });
        }
        let labels = api
            .get_json(&format!("/page/things/{thing}/jobs/{job_id}/labels"))
            .await?;
        let mut pngs = Vec::new();
        for label in labels["labels"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let (Some(path), Some(index)) = (label["png"].as_str(), label["index"].as_u64()) else {
                continue;
            };
            let url = format!("{}{path}", api.base);
            let bytes = api
                .send(api.http.get(&url), &url)
                .await?
                .bytes()
                .await
                .map_err(|e| SandboxError::Http {
                    url: url.clone(),
                    detail: e.to_string(),
                })?;
            let file = layout.demo().join(format!("{job_id}-label-{index}.png"));
            ensure_dir(&layout.demo(), Visibility::Default).map_err(|source| {
                SandboxError::Write {
                    path: layout.demo(),
                    source,
                }
            })?;
            write_atomic(&file, &bytes, Visibility::Default).map_err(|source| {
                SandboxError::Write {
                    path: file.clone(),
                    source,
                }
            })?;
            pngs.push(file);
        }
        done.push(DemoJob {
            job_id,
            sample,
            status,
            pngs,
        });
    }
    Ok(done)
}

/// Polls a job until it reaches a terminal state, at most [`DEMO_JOB_TIMEOUT`].
async fn wait_for_outcome(
    api: &EmulatorApi,
    thing: &str,
    job_id: &str,
) -> Result<Value, SandboxError> {
    let deadline = tokio::time::Instant::now() + DEMO_JOB_TIMEOUT;
    loop {
        let execution = api
            .get_json(&format!("/things/{thing}/jobs/{job_id}"))
            .await?;
        match execution["status"].as_str() {
            Some("QUEUED" | "IN_PROGRESS") | None => {}
            Some(_) => return Ok(execution),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(SandboxError::DemoTimeout {
                job_id: job_id.to_string(),
                timeout: DEMO_JOB_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report_demo(jobs: &[DemoJob], json: bool) {
    if json {
        println!("{}", json!({"event": "demo", "jobs": jobs}));
        return;
    }
    println!("Demo print jobs:");
    for job in jobs {
        println!("  {} ({}): {}", job.job_id, job.sample, job.status);
        for png in &job.pngs {
            println!("    {}", png.display());
        }
    }
    println!("Demo finished.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_config_loads_with_every_device() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        layout.prepare().expect("prepared");
        let mut devices: Vec<SandboxDevice> = PRINTERS
            .iter()
            .enumerate()
            .map(|(n, plan)| SandboxDevice {
                id: plan.id.to_string(),
                kind: "printer",
                address: format!("tcp://127.0.0.1:{}", 9100 + n),
                control: format!("http://127.0.0.1:{}", 9200 + n),
            })
            .collect();
        devices.push(SandboxDevice {
            id: SCALE_ID.into(),
            kind: "scale",
            address: "serial:///dev/pts/7?baud=9600".into(),
            control: "http://127.0.0.1:9300".into(),
        });
        let cloud = CloudEndpoints {
            api_url: "http://127.0.0.1:8080".into(),
            mqtt_port: 8883,
            ca_certificate: dir.path().join("cloud \"quoted\"/ca.pem"),
        };
        let key = crate::plugins::bundle::public_key_text(&ed25519_dalek::SigningKey::from_bytes(
            &[3; 32],
        ));
        write_config(&layout, &cloud, &devices, Path::new("/opt/plugins"), &key).expect("written");
        let config = Config::load(&layout.config()).expect("the config loads");
        let ids: Vec<&str> = config.devices.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "desk-zebra",
                "desk-tspl",
                "desk-brother",
                "desk-dymo",
                "desk-scale"
            ]
        );
        assert_eq!(config.devices[4].address, "serial:///dev/pts/7?baud=9600");
        assert_eq!(config.cloud.port, Some(8883));
        assert_eq!(config.cloud.ca_bundle, Some(cloud.ca_certificate.clone()));
        assert_eq!(config.data_dir(), layout.agent());
        assert_eq!(config.plugins_dir, Some(PathBuf::from("/opt/plugins")));
        assert_eq!(config.plugins.trusted_keys, vec![key]);
        assert!(!config.plugins.allow_unsigned);
    }

    #[test]
    fn preparing_removes_only_the_sandbox_entries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let layout = Layout {
            root: dir.path().to_path_buf(),
        };
        std::fs::create_dir_all(layout.cloud()).expect("mkdir");
        std::fs::write(layout.cloud().join("old"), b"x").expect("write");
        std::fs::write(dir.path().join("keep.txt"), b"mine").expect("write");
        layout.prepare().expect("prepared");
        assert!(!layout.cloud().exists());
        assert!(dir.path().join("keep.txt").exists());
        assert!(layout.demo().is_dir());
    }
}
