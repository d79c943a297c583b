//! `devicehub run`: the long-running agent. Loads plugins, attaches devices, connects to the
//! cloud with the registered identity and runs print jobs until it is told to stop.
//!
//! # Before registration
//! Without a stored identity the agent still starts: plugins load, devices attach, and the
//! shared [`Agent`] state exists for local servers. It waits until this computer is registered
//! (through [`Agent::register`], or by `devicehub register` in another process, noticed by
//! looking at the certificate store every second), then connects.
//!
//! # Tasks and shutdown
//! The link's incoming messages are read by one dispatcher task, which routes jobs topics to the
//! jobs task and shadow topics to the shadow task. The shadow task publishes the effective
//! settings on a watch channel that the heartbeat and events task follows.
//!
//! Every long-lived piece is owned here and stopped in order when `shutdown` is cancelled (or
//! the jobs task ends, which stops the others too):
//! 1. the jobs task stops taking jobs; a print that has started gets
//!    [`DEFAULT_SHUTDOWN_GRACE`] to finish (then it is reported failed), a job that has not
//!    reached the printer is left for the next start; the shadow and events tasks stop;
//! 2. the MQTT link, which has its own token so that the jobs task's last status report leaves
//!    before it, says goodbye and disconnects; the dispatcher ends with it;
//! 3. the local RPC stops (before the devices, so that a print it started finishes or fails on
//!    a device that is still there), the local WebSocket server closes its connections and the
//!    scale readings service stops;
//! 4. the USB watcher thread and the device threads are joined.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::cloud::bundle_update::{BundleUpdater, RestartRequest, UpdaterSettings};
use crate::cloud::dispatch;
use crate::cloud::events::{EventsTask, HealthInputs, SharedHealth};
use crate::cloud::jobs::{DownloadSettings, JobsSettings, JobsTask, DEFAULT_SHUTDOWN_GRACE};
use crate::cloud::link::{LinkConfig, MqttLink};
use crate::cloud::registration::RegistrationSettings;
use crate::cloud::shadow::{plugin_reports, AgentSettings, ShadowSettings, ShadowTask};
use crate::config::{self, Config, DeviceAddress};
use crate::devices::{hid_watch::HidWatcher, usb_watch::UsbWatcher, DeviceTable};
use crate::plugins::folder_watch::FolderWatch;
use crate::plugins::{bundle::TrustStore, trusted_files, PluginSet, Selection, SharedPlugins};
use crate::scales::ScaleReadings;
use crate::scanning::ScanPoller;
use crate::storage::certs::{CertificateInfo, EXPIRY_WARNING};
use crate::storage::{DataDir, DeviceIdentity, Loaded};
use crate::web::LocalPages;
use crate::ws::WsServer;

/// How long the link may take to say goodbye after the jobs task ended.
const LINK_STOP_GRACE: Duration = Duration::from_secs(5);
/// How long the shadow and events tasks may take to stop.
const TASK_STOP_GRACE: Duration = Duration::from_secs(5);

/// Loads the plugins from the config's folder (which `--plugins-dir` overrides), else the
/// default one, each file verified against [`trust_store`], with the active updated bundle on
/// top (see [`crate::plugins::update`]); every command and the service use this one rule.
pub fn load_plugins(config: &Config) -> PluginSet {
    let (dir, selection) = plugins_folder(config);
    crate::plugins::update::load_installed(
        &dir,
        selection,
        &config.data_dir(),
        &trust_store(config),
    )
}

/// [`load_plugins`] for the agent's start: an updated bundle being tried is confirmed or
/// rolled back.
fn load_plugins_at_start(config: &Config) -> PluginSet {
    let (dir, selection) = plugins_folder(config);
    crate::plugins::update::load_at_start(&dir, selection, &config.data_dir(), &trust_store(config))
}

/// The plugins folder and how files are picked there.
pub fn plugins_folder(config: &Config) -> (std::path::PathBuf, Selection) {
    match &config.plugins_dir {
        Some(dir) => (dir.clone(), Selection::AllLibraries),
        None => config::default_plugins_dir(),
    }
}

/// What plugin files may load: the release keys, the config's `[plugins] trusted_keys`, the
/// files trusted by hash in the data directory, and the development flag. A trusted list that
/// cannot be read is logged and trusts nothing: fewer plugins load, never more.
pub fn trust_store(config: &Config) -> TrustStore {
    let data_dir = DataDir::new(config.data_dir());
    let hashes = match trusted_files::load(&data_dir) {
        Ok(files) => files.files.into_iter().map(|f| f.sha256).collect(),
        Err(e) => {
            tracing::error!("plugin files trusted by hash are not trusted now: {e}");
            Vec::new()
        }
    };
    match TrustStore::new(
        &config.plugins.trusted_keys,
        hashes.clone(),
        config.plugins.allow_unsigned,
    ) {
        Ok(store) => store,
        Err(e) => {
            // The config check refuses bad keys, so only a config built in code gets here.
            tracing::error!("plugins.trusted_keys: {e}; only the release keys are trusted");
            TrustStore::new(&[], hashes, config.plugins.allow_unsigned)
                .expect("the built-in release keys parse")
        }
    }
}

/// Says loudly that the development flag is on: an error-level line at start-up.
pub fn warn_development_flag(config: &Config, plugins: &PluginSet) {
    if config.plugins.allow_unsigned {
        tracing::error!(
            unsigned_loaded = plugins.unsigned_count(),
            "DEVELOPMENT FLAG: [plugins] allow_unsigned = true lets unsigned plugin code run \
             inside DeviceHub; never use it in production"
        );
    }
}

/// Runs the agent until `shutdown` is cancelled (or the cloud link ends).
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    run_with_agent(config, shutdown, |_| {}).await
}

/// [`run`], handing the shared [`Agent`] to `on_agent` as soon as it exists (before the
/// agent waits for registration), for a caller that serves or drives it locally.
pub async fn run_with_agent(
    config: Config,
    shutdown: CancellationToken,
    on_agent: impl FnOnce(Arc<Agent>) + Send,
) -> anyhow::Result<()> {
    run_inner(config, shutdown, on_agent, false)
        .await
        .map(|_| ())
}

/// [`run`] with plugin bundle updates: `Ok(true)` when the agent stopped to restart on an
/// updated plugin set, which the caller does (the `devicehub run` command re-executes itself).
pub async fn run_until_restart(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<bool> {
    run_inner(config, shutdown, |_| {}, true).await
}

/// The agent; with `updates`, plugin bundle updates are followed and may end the run with a
/// restart request (`Ok(true)`).
async fn run_inner(
    config: Config,
    shutdown: CancellationToken,
    on_agent: impl FnOnce(Arc<Agent>) + Send,
    updates: bool,
) -> anyhow::Result<bool> {
    // A restart stops this run as a stop signal would, without stopping the caller.
    let shutdown = shutdown.child_token();
    let restart = RestartRequest::new(shutdown.clone());
    let data_dir = DataDir::new(config.data_dir());
    data_dir.create().with_context(|| {
        format!(
            "cannot use the data directory {}",
            data_dir.root().display()
        )
    })?;
    // Held until this run ends: a second agent on the same directory could print twice.
    let _lock = data_dir.lock()?;
    let stored = data_dir
        .cert_store()
        .load()
        .context("cannot read the device identity")?;
    let cloud = RegistrationSettings::from_config(&config.cloud, data_dir.root())
        .context("the [cloud] section of the config is incomplete")?;
    let (journal, loaded) = data_dir
        .open_journal()
        .context("cannot open the job journal")?;
    if let Loaded::MovedAside { moved_to, reason } = &loaded {
        tracing::error!(
            moved_to = %moved_to.display(),
            "the job journal was damaged ({reason}) and was moved aside; jobs that were \
             printing when it broke cannot be recognised"
        );
    }

    // Loading plugins and opening devices block (dlopen, serial ports): keep them off the
    // async workers.
    let devices_config = config.clone();
    let (plugins, devices) = tokio::task::spawn_blocking(move || {
        let plugins = load_plugins_at_start(&devices_config);
        for refused in &plugins.refused {
            tracing::warn!(path = %refused.path.display(), "plugin refused: {}", refused.reason);
        }
        warn_development_flag(&devices_config, &plugins);
        let devices = Arc::new(DeviceTable::from_config_with(
            &devices_config.devices,
            &plugins,
            &devices_config.system_printers,
        ));
        devices.attach_system_printers(&devices_config.system_printers);
        (Arc::new(SharedPlugins::new(plugins)), devices)
    })
    .await
    .context("loading plugins and devices stopped")?;
    tracing::info!(
        plugins = plugins.current().plugins.len(),
        devices = devices.list().len(),
        "plugins loaded and devices attached"
    );
    let usb = config.usb.enabled.then(|| {
        let bindings = config
            .devices
            .iter()
            .filter(|d| {
                matches!(
                    DeviceAddress::parse(&d.address),
                    Ok(DeviceAddress::Usb { .. })
                )
            })
            .cloned()
            .collect();
        UsbWatcher::start(
            plugins.clone(),
            devices.clone(),
            bindings,
            Duration::from_millis(config.usb.poll_interval_ms.max(100)),
        )
    });
    let hid = config
        .usb
        .enabled
        .then(|| HidWatcher::start_for_config(plugins.clone(), devices.clone(), &config));

    let health = SharedHealth::default();
    let agent = Arc::new(Agent::new(
        config.clone(),
        data_dir.clone(),
        plugins.clone(),
        devices.clone(),
        health.clone(),
        stored
            .as_ref()
            .map(|(identity, _)| identity.thing_name.clone()),
    ));
    // The local RPC serves whether or not this computer is registered. A port already taken
    // (another DeviceHub on this computer) costs the local tools, not the cloud printing.
    let rpc = match crate::rpc::LocalRpc::start(agent.clone(), &shutdown).await {
        Ok(rpc) => Some(rpc),
        Err(e) => {
            tracing::error!("the local RPC is not available: {e}");
            None
        }
    };
    // The local WebSocket server and the scale readings it follows run from here, registered
    // or not, until the service stops.
    // A taken port (another DeviceHub, another program) disables the local server only: cloud
    // jobs do not depend on it.
    let ws = match WsServer::start(agent.clone(), &config.local).await {
        Ok(ws) => Some(ws),
        Err(e) => {
            tracing::error!("the local WebSocket server is not running: {e}");
            None
        }
    };
    let readings = ScaleReadings::start(agent.clone());
    // The pages are how a desk registers, but a desk that cannot show them (the port is
    // taken) still prints: their failure is logged, not fatal.
    let pages = match LocalPages::start(agent.clone(), config.local.http_port).await {
        Ok(pages) => Some(pages),
        Err(e) => {
            tracing::error!("{e}; the registration and status pages are not available");
            None
        }
    };

    // Start-up's code and buffers go back to the system once the agent is quiet, and so do
    // each run of jobs' afterwards.
    let quiet_shutdown = shutdown.child_token();
    let quiet_task = tokio::spawn(agent.quiet().run(quiet_shutdown.clone()));
    // Scanners are polled from the start, so that local tools get scans before registration.
    let scan_poller = ScanPoller::start(agent.clone());
    // Drivers dropped into the plugins folder are picked up while running.
    let folder_watch = FolderWatch::start(agent.clone(), &shutdown);
    on_agent(agent.clone());

    // Without an identity the agent waits, devices attached, until this computer is
    // registered (by a local page or tool through `Agent::register`, or by `devicehub
    // register` in another process).
    let (mut identity, certificate) = match stored {
        Some(stored) => stored,
        None => match wait_for_registration(&agent, &data_dir, &shutdown).await? {
            Some(stored) => stored,
            None => {
                folder_watch.stop().await;
                stop_rpc(rpc).await;
                if let Some(ws) = ws {
                    ws.stop().await;
                }
                readings.stop().await;
                stop_pages(pages).await;
                scan_poller.stop().await;
                stop_devices(usb, hid, devices).await;
                quiet_shutdown.cancel();
                let _ = quiet_task.await;
                tracing::info!("DeviceHub stopped");
                return Ok(false);
            }
        },
    };
    let days_left = certificate.days_until_expiry(std::time::SystemTime::now());
    if days_left < 0 {
        tracing::error!("the device certificate has expired; register the device again");
    } else if days_left < (EXPIRY_WARNING.as_secs() / 86_400) as i64 {
        tracing::warn!(
            days_left,
            "the device certificate expires soon; register the device again"
        );
    }
    // A CA bundle in the config wins over the one stored at registration, so that changing
    // the config takes effect without registering again.
    if let Some(ca) = cloud.ca_bundle_pem.clone() {
        identity.ca_bundle_pem = Some(ca);
    }
    let thing_name = identity.thing_name.clone();
    let ca_bundle_pem = identity.ca_bundle_pem.clone();

    let link_config = LinkConfig::new(cloud.endpoint.clone(), cloud.transport.clone(), identity);
    let link_shutdown = CancellationToken::new();
    let link = MqttLink::start(link_config, link_shutdown.clone())
        .context("cannot start the cloud link")?;
    agent.follow_link(link.handle.state());
    let (settings_tx, settings_rx) =
        tokio::sync::watch::channel(AgentSettings::defaults(&config.log_level));
    let jobs = JobsTask::new(
        JobsSettings {
            thing_name: thing_name.clone(),
            download: DownloadSettings {
                ca_bundle_pem: ca_bundle_pem.clone(),
                ..DownloadSettings::default()
            },
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            preferred_devices: config.devices.iter().map(|d| d.id.clone()).collect(),
            settings: Some(settings_rx.clone()),
        },
        link.handle.clone(),
        devices.clone(),
        journal,
    )
    .map(|jobs| jobs.report_to(health.clone()).announce_to(agent.clone()));
    let (dispatcher, routes) = dispatch::dispatcher(thing_name.clone(), link.incoming);
    // The dispatcher ends when the link closes its channel; the token only guards against a
    // link that never does.
    let dispatcher_shutdown = CancellationToken::new();
    let dispatcher_task = tokio::spawn(dispatcher.run(dispatcher_shutdown.clone()));

    // The shadow and events tasks stop with the service, and also when the jobs task ends on
    // its own (the link ended).
    let tasks_shutdown = shutdown.child_token();
    let log_level_task = tokio::spawn(follow_log_level(
        settings_rx.clone(),
        config.log_level.clone(),
        tasks_shutdown.clone(),
    ));
    let mut shadow = ShadowTask::new(
        link.handle.clone(),
        ShadowSettings {
            thing_name: thing_name.clone(),
            plugins: plugin_reports(&plugins.current()),
            devices: devices.clone(),
            file: data_dir.shadow_file(),
            settings: settings_tx,
            health: health.clone(),
        },
        AgentSettings::defaults(&config.log_level),
    )
    .follow_plugins(plugins.clone());
    let updater = if updates {
        let (desired_tx, desired_rx) = tokio::sync::watch::channel(serde_json::Value::Null);
        let (report_tx, report_rx) = tokio::sync::watch::channel(serde_json::Value::Null);
        shadow = shadow.follow_bundle(desired_tx, report_rx);
        match BundleUpdater::new(
            UpdaterSettings {
                data_dir: data_dir.root().to_path_buf(),
                plugins_dir: plugins_folder(&config).0,
                trusted_keys: config.plugins.trusted_keys.clone(),
                download: DownloadSettings {
                    ca_bundle_pem: ca_bundle_pem.clone(),
                    ..DownloadSettings::default()
                },
            },
            report_tx,
            health.clone(),
            restart.clone(),
        ) {
            Ok(updater) => Some(tokio::spawn(
                updater.run(desired_rx, tasks_shutdown.clone()),
            )),
            Err(e) => {
                tracing::error!("plugin bundle updates are off: {e}");
                None
            }
        }
    } else {
        None
    };
    let shadow_task = tokio::spawn(shadow.run(routes.shadow, tasks_shutdown.clone()));
    let events = EventsTask::new(
        &thing_name,
        link.handle.clone(),
        devices.clone(),
        HealthInputs {
            plugins: plugins.clone(),
            data_dir: data_dir.root().to_path_buf(),
            certificate,
            board: health,
        },
        settings_rx,
    )
    .forward_scans(agent.subscribe_local());
    let events_task = tokio::spawn(events.run(tasks_shutdown.clone()));

    let outcome = match jobs {
        Ok(jobs) => {
            tracing::info!(thing = %thing_name, "DeviceHub is running");
            let result = tokio::spawn(jobs.run(routes.jobs, shutdown.clone())).await;
            match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(anyhow!(e).context("the jobs task stopped")),
                Err(e) => Err(anyhow!("the jobs task failed: {e}")),
            }
        }
        Err(e) => Err(anyhow!(e).context("cannot start the jobs task")),
    };

    tasks_shutdown.cancel();
    let mut shadow_task = shadow_task;
    match tokio::time::timeout(TASK_STOP_GRACE, &mut shadow_task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!("the shadow task stopped: {e}"),
        Ok(Err(e)) => tracing::error!("the shadow task failed: {e}"),
        Err(_) => {
            tracing::warn!("the shadow task did not stop in time");
            shadow_task.abort();
            let _ = shadow_task.await;
        }
    }
    if let Some(updater) = updater {
        // A download stops at once; its partial files are resumed at the next start.
        if let Err(e) = updater.await {
            tracing::error!("the plugin bundle updater failed: {e}");
        }
    }
    if let Err(e) = log_level_task.await {
        tracing::error!("the log level task failed: {e}");
    }
    let mut events_task = events_task;
    match tokio::time::timeout(TASK_STOP_GRACE, &mut events_task).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("the events task failed: {e}"),
        Err(_) => {
            tracing::warn!("the events task did not stop in time");
            events_task.abort();
            let _ = events_task.await;
        }
    }

    link_shutdown.cancel();
    let mut link_task = link.task;
    if tokio::time::timeout(LINK_STOP_GRACE, &mut link_task)
        .await
        .is_err()
    {
        tracing::warn!("the cloud link did not stop in time");
        link_task.abort();
        let _ = link_task.await;
    }
    dispatcher_shutdown.cancel();
    if let Err(e) = dispatcher_task.await {
        tracing::error!("the message dispatcher failed: {e}");
    }
    folder_watch.stop().await;
    stop_rpc(rpc).await;
    if let Some(ws) = ws {
        ws.stop().await;
    }
    readings.stop().await;
    stop_pages(pages).await;
    scan_poller.stop().await;
    stop_devices(usb, hid, devices).await;
    quiet_shutdown.cancel();
    if let Err(e) = quiet_task.await {
        tracing::error!("the memory release task failed: {e}");
    }
    let restarting = restart.requested();
    if restarting {
        tracing::info!("DeviceHub stopped to restart with the updated plugins");
    } else {
        tracing::info!("DeviceHub stopped");
    }
    outcome.map(|()| restarting)
}

/// Stops the local pages, when they run.
async fn stop_pages(pages: Option<LocalPages>) {
    if let Some(pages) = pages {
        pages.stop().await;
    }
}

/// How often the certificate store is looked at while waiting for registration, for a
/// `devicehub register` run in another process.
const REGISTRATION_POLL: Duration = Duration::from_secs(1);

/// Waits until this computer is registered; `None` when `shutdown` came first.
async fn wait_for_registration(
    agent: &Agent,
    data_dir: &DataDir,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<(DeviceIdentity, CertificateInfo)>> {
    tracing::warn!(
        "this computer is not registered with the cloud yet: open the registration page, or run \
         `devicehub register --code CODE` with the activation code from the shipping \
         application; waiting"
    );
    let mut registered = agent.thing();
    let mut poll = tokio::time::interval(REGISTRATION_POLL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = registered.changed() => {}
            _ = poll.tick() => {}
        }
        if let Some(stored) = data_dir
            .cert_store()
            .load()
            .context("cannot read the device identity")?
        {
            tracing::info!(thing = %stored.0.thing_name, "registered; connecting");
            agent.registered_elsewhere(&stored.0.thing_name);
            return Ok(Some(stored));
        }
    }
}

/// Stops the local RPC: requests already running (a print) get a short grace to answer.
async fn stop_rpc(rpc: Option<crate::rpc::LocalRpc>) {
    if let Some(rpc) = rpc {
        rpc.stop().await;
    }
}

/// Stops the USB and HID watchers and the device threads (joining them blocks).
async fn stop_devices(
    mut usb: Option<UsbWatcher>,
    hid: Option<HidWatcher>,
    devices: Arc<DeviceTable>,
) {
    let stopped = tokio::task::spawn_blocking(move || {
        if let Some(watcher) = usb.as_mut() {
            watcher.stop();
        }
        drop(hid);
        devices.shutdown();
    })
    .await;
    if let Err(e) = stopped {
        tracing::error!("stopping the devices failed: {e}");
    }
}

/// Applies the log level the cloud asks for (`desired.config.logLevel`) to the running process's
/// log filter, until `shutdown`. The level only changes when the cloud's value does, so a level
/// given on the command line holds until the cloud sets another.
async fn follow_log_level(
    mut settings: tokio::sync::watch::Receiver<AgentSettings>,
    initial: String,
    shutdown: CancellationToken,
) {
    let mut current = initial;
    loop {
        let wanted = settings.borrow_and_update().log_level.clone();
        if wanted != current {
            match crate::logging::set_filter(&wanted) {
                Ok(()) => tracing::info!(level = %wanted, "log level set by the cloud"),
                Err(e) => tracing::warn!("cannot apply the log level {wanted:?}: {e}"),
            }
            current = wanted;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = settings.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Cancels `shutdown` on SIGINT or SIGTERM (Ctrl+C on Windows); returns when either happened
/// or `shutdown` was cancelled by someone else.
pub async fn cancel_on_signals(shutdown: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            result = tokio::signal::ctrl_c() => {
                result?;
                tracing::info!("Ctrl+C: stopping");
            }
            _ = shutdown.cancelled() => return Ok(()),
        }
    }
    shutdown.cancel();
    Ok(())
}
