//! The Device Shadow, heartbeats and events with `devicehub run` against the emulator: the
//! reported shadow names the plugins and the simulated printer, desired settings are applied
//! while running and after a stop, and heartbeats reach the cloud.
//!
//! The shadow is read and changed as the shipping application would: over MQTT, here with the
//! emulator's own services certificate (which may use every thing's topics) and a client ID of
//! its own, so that DeviceHub's connection is never displaced.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use devicehub::cloud::events::{EventsTask, HealthInputs};
use devicehub::cloud::link::{InboundMessage, LinkState};
use devicehub::cloud::shadow::{AgentSettings, PluginReport, ShadowSettings, ShadowTask};
use devicehub::devices::{self, Connection, DeviceSpec, DeviceTable};
use devicehub::plugins::{PluginSet, Selection};
use devicehub::storage::certs::CertificateInfo;
use devicehub::storage::DataDir;
use devicehub_plugin_api::TransportBox;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Simulator, ZEBRA};
use crate::support_cloud::{start_link, wait_connected, wait_for_state, Cloud};
use crate::support_desk::{self, zebra_row, Agent, ShadowConsole};

/// The longest a test waits for DeviceHub to do something; a passing test never waits this long.
const WAIT: Duration = Duration::from_secs(60);
/// The device ID of the simulator in the agent's config.
const PRINTER: &str = "zebra-1";

/// A shipping desk: the cloud, a printer, and an installation registered with the cloud.
struct Desk {
    cloud: Cloud,
    _sim: Simulator,
    _plugins: tempfile::TempDir,
    config: PathBuf,
    data_dir: PathBuf,
    thing: String,
}

impl Desk {
    fn new() -> Desk {
        let cloud = Cloud::start();
        let sim = Simulator::zebra(&["--language", "zpl"]);
        let plugins = support::plugins_folder(&[ZEBRA]);
        let devices = zebra_row(PRINTER, &sim.print_addr, "");
        let registration = support_desk::register(&cloud, plugins.path(), &devices);
        Desk {
            cloud,
            _sim: sim,
            _plugins: plugins,
            config: registration.config,
            data_dir: registration.data_dir,
            thing: registration.thing,
        }
    }

    fn run(&self) -> Agent {
        Agent::start(&self.config, &self.data_dir.join("..").join("run.log"))
    }

    /// Connects to the thing's shadow as the shipping application's side.
    async fn console(&self) -> Console {
        Console::connect(&self.cloud, &self.thing).await
    }

    /// Heartbeats the cloud kept for the thing, oldest first.
    async fn heartbeats(&self) -> Vec<Value> {
        self.cloud
            .messages(&self.thing)
            .await
            .into_iter()
            .filter(|m| m["topic"] == format!("devicehub/{}/heartbeat", self.thing))
            .map(|m| m["payload"].clone())
            .collect()
    }
}

/// The shadow console of these tests: settings and releases go to `desired`, waits are bounded
/// by [`WAIT`].
struct Console(ShadowConsole);

impl Console {
    async fn connect(cloud: &Cloud, thing: &str) -> Console {
        Console(ShadowConsole::connect(cloud, thing).await)
    }

    async fn shadow(&mut self) -> Option<Value> {
        self.0.shadow().await
    }

    /// Sets `desired.config` fields.
    async fn desire(&mut self, config: Value) {
        self.0.desire("config", config).await;
    }

    /// Sets `desired.releases`.
    async fn announce(&mut self, releases: Value) {
        self.0.desire("releases", releases).await;
    }

    async fn wait_for(
        &mut self,
        what: &str,
        agent: &mut Agent,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        self.0.wait_for(what, agent, WAIT, wanted).await
    }
}

/// Runs `devicehub-emulator ARGS --data-dir CLOUD` and asserts it succeeded.
fn reported_interval(shadow: &Value) -> Option<u64> {
    shadow["state"]["reported"]["config"]["heartbeatIntervalS"].as_u64()
}

/// Waits until at least `count` heartbeats announce `interval_s` as their interval.
async fn wait_heartbeats(
    desk: &Desk,
    agent: &mut Agent,
    interval_s: u64,
    count: usize,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let beats: Vec<Value> = desk
            .heartbeats()
            .await
            .into_iter()
            .filter(|b| b["heartbeatIntervalS"] == json!(interval_s))
            .collect();
        if beats.len() >= count {
            return beats;
        }
        if let Some(exit) = agent.exited() {
            panic!("devicehub run ended ({exit}):\n{}", agent.log());
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} heartbeats at {interval_s} s within {WAIT:?}:\n{}",
            beats.len(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_shadow_reports_plugins_and_printer_and_applies_desired_settings_while_running() {
    let desk = Desk::new();
    let mut console = desk.console().await;
    let mut agent = desk.run();

    let shadow = console
        .wait_for("report of the printer", &mut agent, |s| {
            s["state"]["reported"]["devices"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["id"] == PRINTER))
        })
        .await;
    let reported = &shadow["state"]["reported"];
    let plugins = reported["plugins"].as_array().expect("plugins reported");
    assert!(
        plugins
            .iter()
            .any(|p| p["name"] == "zebra" && p["version"].is_string() && p["approval"] == "signed"),
        "plugins: {plugins:?}"
    );
    let printer = reported["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["id"] == PRINTER))
        .expect("printer reported");
    assert_eq!(printer["kind"], "printer");
    assert_eq!(printer["plugin"], "zebra");
    assert_eq!(printer["usbId"], "0A5F:0141");
    assert_eq!(printer["status"], "attached");
    assert_eq!(reported["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(reported_interval(&shadow), Some(60));

    // The first heartbeat is sent on connecting, with the health checks.
    let beats = wait_heartbeats(&desk, &mut agent, 60, 1).await;
    let beat = &beats[0];
    assert_eq!(beat["link"]["connected"], true);
    assert_eq!(beat["plugins"]["loaded"], 1);
    assert_eq!(beat["plugins"]["unsigned"], 0);
    assert_eq!(beat["checks"], json!([]), "a strict desk has no warnings");
    assert_eq!(beat["devices"]["attached"], 1);
    assert!(
        beat["disk"]["freeBytes"].as_u64().is_some_and(|b| b > 0),
        "{beat}"
    );
    assert!(
        beat["certificate"]["daysLeft"]
            .as_i64()
            .is_some_and(|d| d > 0),
        "{beat}"
    );

    console.desire(json!({ "heartbeatIntervalS": 1 })).await;
    let shadow = console
        .wait_for("the new interval reported", &mut agent, |s| {
            reported_interval(s) == Some(1)
        })
        .await;
    assert!(
        shadow["state"].get("delta").is_none(),
        "delta left: {shadow}"
    );
    // Heartbeats now come every second: several, each saying so.
    wait_heartbeats(&desk, &mut agent, 1, 3).await;

    // An invalid value is reported back with a reason; the effective value stays.
    console
        .desire(json!({ "heartbeatIntervalS": "often" }))
        .await;
    let shadow = console
        .wait_for("the refusal reported", &mut agent, |s| {
            s["state"]["reported"]["configErrors"]["heartbeatIntervalS"].is_string()
        })
        .await;
    assert_eq!(reported_interval(&shadow), Some(1));
    assert!(
        agent.exited().is_none(),
        "an invalid setting stopped DeviceHub"
    );
}

#[tokio::test]
async fn a_setting_desired_while_devicehub_is_stopped_is_applied_at_the_next_start() {
    let desk = Desk::new();
    let mut console = desk.console().await;
    let mut agent = desk.run();
    console
        .wait_for("the first report", &mut agent, |s| {
            reported_interval(s) == Some(60)
        })
        .await;
    agent.terminate().await;

    console
        .desire(json!({ "heartbeatIntervalS": 2, "defaultPrinter": { "label": PRINTER } }))
        .await;
    let shadow = console.shadow().await.expect("shadow exists");
    assert_eq!(shadow["state"]["delta"]["config"]["heartbeatIntervalS"], 2);

    let mut agent = desk.run();
    let shadow = console
        .wait_for("the offline change reported", &mut agent, |s| {
            reported_interval(s) == Some(2)
        })
        .await;
    assert_eq!(
        shadow["state"]["reported"]["config"]["defaultPrinter"]["label"],
        PRINTER
    );
    assert!(
        shadow["state"].get("delta").is_none(),
        "delta left: {shadow}"
    );
    wait_heartbeats(&desk, &mut agent, 2, 2).await;

    // The applied settings are kept on disk for a start without a connection.
    agent.terminate().await;
    let stored: Value = DataDir::new(desk.data_dir.clone())
        .shadow_file::<Value>()
        .load()
        .expect("stored shadow readable")
        .into_option()
        .expect("shadow stored");
    assert_eq!(stored["settings"]["heartbeatIntervalS"], 2);
}

/// A printer on the simulator, as the device table describes it.
fn simulated_printer(sim: &Simulator, plugins: &PluginSet, id: &str) -> (DeviceSpec, TransportBox) {
    let chosen = devices::choose_plugin(plugins, Some((0x0A5F, 0x0141)), None).expect("zebra");
    let spec = DeviceSpec {
        id: id.into(),
        kind: chosen.plugin.manifest.kind,
        plugin: chosen.plugin,
        profile: "zpl-203".into(),
        model: chosen.model,
        usb_id: Some((0x0A5F, 0x0141)),
        connection: Some(Connection::Tcp(sim.print_addr.clone())),
        settings: Vec::new(),
    };
    let transport =
        devices::open_transport(spec.connection.as_ref().expect("tcp"), None).expect("transport");
    (spec, transport)
}

/// The device events the cloud kept for `thing`, as (event, device ID) pairs, oldest first.
async fn device_events(cloud: &Cloud, thing: &str) -> Vec<(String, String)> {
    cloud
        .messages(thing)
        .await
        .into_iter()
        .filter(|m| m["topic"] == format!("devicehub/{thing}/events/device"))
        .map(|m| {
            (
                m["payload"]["event"].as_str().unwrap_or("").to_string(),
                m["payload"]["device"]["id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

async fn wait_queued(queued: &mut watch::Receiver<usize>, count: usize) {
    tokio::time::timeout(WAIT, queued.wait_for(|n| *n == count))
        .await
        .unwrap_or_else(|_| panic!("{count} events never queued within {WAIT:?}"))
        .expect("the events task runs");
}

async fn wait_device_events(cloud: &Cloud, thing: &str, wanted: &[(&str, &str)]) {
    let wanted: Vec<(String, String)> = wanted
        .iter()
        .map(|(e, id)| (e.to_string(), id.to_string()))
        .collect();
    let deadline = Instant::now() + WAIT;
    loop {
        let seen = device_events(cloud, thing).await;
        if seen == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "device events {seen:?}, expected {wanted:?} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn devices_attached_and_detached_are_announced_and_held_while_offline() {
    // The events task in-process, so that devices can be attached and detached under it.
    let mut cloud = Cloud::start();
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let identity = cloud.thing("desk-events");
    let plugins_dir = support::plugins_folder(&[ZEBRA]);
    let plugins = Arc::new(PluginSet::load_dir(
        plugins_dir.path(),
        Selection::AllLibraries,
        &support::test_trust(),
    ));
    let table = Arc::new(DeviceTable::default());
    let data = tempfile::tempdir().expect("data dir");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let (_settings_tx, settings_rx) = watch::channel(AgentSettings::defaults("info"));
    let (link, link_shutdown) = start_link(cloud.link_config(identity.clone(), cloud.mutual_tls()));
    let events = EventsTask::new(
        "desk-events",
        link.handle.clone(),
        table.clone(),
        HealthInputs {
            plugins: Arc::new(devicehub::plugins::SharedPlugins::from(plugins.clone())),
            data_dir: data.path().to_path_buf(),
            certificate: CertificateInfo {
                subject: "CN=desk-events".into(),
                not_before: now,
                not_after: now + 10 * 86_400,
            },
            board: Default::default(),
        },
        settings_rx,
    );
    let mut queued = events.queued();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(events.run(shutdown.clone()));
    let mut state = link.handle.state();
    wait_connected(&mut state).await;

    let (spec, transport) = simulated_printer(&sim, &plugins, "zebra-a");
    table.attach(spec, transport).expect("attach");
    wait_device_events(&cloud, "desk-events", &[("attached", "zebra-a")]).await;
    assert!(table.detach("zebra-a"));
    wait_device_events(
        &cloud,
        "desk-events",
        &[("attached", "zebra-a"), ("detached", "zebra-a")],
    )
    .await;

    // While the cloud is away, events wait; after it is back they arrive oldest first (the
    // restarted cloud's message log starts empty).
    cloud.kill();
    wait_for_state(&mut state, "the link noticing the loss", |s| {
        !matches!(s, LinkState::Connected { .. })
    })
    .await;
    let (spec, transport) = simulated_printer(&sim, &plugins, "zebra-b");
    table.attach(spec, transport).expect("attach");
    // Detach only once the poll has seen the device, so that both events exist.
    wait_queued(&mut queued, 1).await;
    assert!(table.detach("zebra-b"));
    wait_queued(&mut queued, 2).await;
    cloud.restart();
    wait_device_events(
        &cloud,
        "desk-events",
        &[("attached", "zebra-b"), ("detached", "zebra-b")],
    )
    .await;

    shutdown.cancel();
    task.await.expect("the events task ends");
    link_shutdown.cancel();
    link.task.await.expect("the link task ends");
    table.shutdown();
}

#[tokio::test]
async fn a_version_conflict_is_answered_by_reading_the_shadow_again() {
    // The shadow task in-process, fed through a channel the test controls: the answer to its
    // first `get` is held back until the shipping application has changed the shadow, so that
    // the task's first report carries a stale version and is refused with 409.
    let cloud = Cloud::start();
    let identity = cloud.thing("desk-409");
    let mut console = Console::connect(&cloud, "desk-409").await;
    console.desire(json!({ "logLevel": "debug" })).await;
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = DataDir::new(data.path().to_path_buf());
    let (link, link_shutdown) = start_link(cloud.link_config(identity, cloud.mutual_tls()));
    let (settings_tx, mut settings_rx) = watch::channel(AgentSettings::defaults("info"));
    let shadow = ShadowTask::new(
        link.handle.clone(),
        ShadowSettings {
            thing_name: "desk-409".into(),
            plugins: vec![PluginReport {
                name: "zebra".into(),
                version: "1.0.0".into(),
                approval: "signed".into(),
            }],
            devices: Arc::new(DeviceTable::default()),
            file: data_dir.shadow_file(),
            settings: settings_tx,
            health: Default::default(),
        },
        AgentSettings::defaults("info"),
    );
    let (to_task, task_incoming) = mpsc::channel(64);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(shadow.run(task_incoming, shutdown.clone()));

    let mut incoming = link.incoming;
    let forward = |message: InboundMessage| {
        let to_task = to_task.clone();
        async move { to_task.send(message).await.expect("the shadow task reads") }
    };
    let held = next_shadow_answer(&mut incoming, "/get/accepted").await;
    console.desire(json!({ "heartbeatIntervalS": 7 })).await;
    forward(held).await;
    let conflict = loop {
        let message = next_shadow_answer(&mut incoming, "").await;
        let refused = message.topic.ends_with("/update/rejected");
        let body: Value = serde_json::from_slice(&message.payload).expect("JSON answer");
        forward(message).await;
        if refused {
            break body;
        }
    };
    assert_eq!(conflict["code"], 409, "{conflict}");

    // The task reads the shadow again and reports against it: both wishes applied.
    let relay = tokio::spawn(async move {
        while let Some(message) = incoming.recv().await {
            if to_task.send(message).await.is_err() {
                break;
            }
        }
    });
    tokio::time::timeout(
        WAIT,
        settings_rx.wait_for(|s| s.heartbeat_interval_s == 7 && s.log_level == "debug"),
    )
    .await
    .expect("settings applied in time")
    .expect("the shadow task runs");
    let deadline = Instant::now() + WAIT;
    loop {
        let shadow = console.shadow().await.expect("shadow exists");
        if reported_interval(&shadow) == Some(7) && shadow["state"].get("delta").is_none() {
            assert_eq!(shadow["state"]["reported"]["config"]["logLevel"], "debug");
            assert_eq!(shadow["state"]["reported"]["plugins"][0]["name"], "zebra");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the shadow never caught up: {shadow}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    shutdown.cancel();
    task.await
        .expect("the shadow task ends")
        .expect("without error");
    link_shutdown.cancel();
    link.task.await.expect("the link task ends");
    relay.await.expect("the relay ends");
}

/// The next message on a shadow topic ending in `suffix` (any shadow topic when empty).
async fn next_shadow_answer(
    incoming: &mut mpsc::Receiver<InboundMessage>,
    suffix: &str,
) -> InboundMessage {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(message) = incoming.recv().await {
            if message.topic.contains("/shadow/") && message.topic.ends_with(suffix) {
                return Some(message);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(message)) => message,
        Ok(None) => panic!("the link closed before a shadow message ending in {suffix:?}"),
        Err(_) => panic!("no shadow message ending in {suffix:?} within {WAIT:?}"),
    }
}

/// Submits a print job for a fixture with extra `devicehub-emulator job print` options and
/// waits for its terminal status.
async fn print_and_wait(
    cloud: &Cloud,
    thing: &str,
    fixture: &str,
    options: &[&str],
    agent: &mut Agent,
) -> Value {
    let file = support::fixture(fixture);
    let mut args = vec!["job", "print", thing, file.to_str().expect("UTF-8 path")];
    args.extend_from_slice(options);
    args.push("--json");
    let output = support_desk::emulator_cli(cloud, &args);
    let answer: Value = serde_json::from_slice(&output.stdout).expect("job answer JSON");
    let job = answer["jobId"].as_str().expect("jobId").to_string();
    let deadline = Instant::now() + WAIT;
    loop {
        let execution: Value = support::http_client()
            .get(format!("{}/things/{thing}/jobs/{job}", cloud.api_url))
            .send()
            .await
            .expect("GET job")
            .json()
            .await
            .expect("job JSON");
        if !matches!(execution["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")) {
            return execution;
        }
        if let Some(exit) = agent.exited() {
            panic!("devicehub run ended ({exit}):\n{}", agent.log());
        }
        assert!(
            Instant::now() < deadline,
            "job {job} unfinished within {WAIT:?}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn cloud_settings_pick_printers_per_kind_set_the_log_level_and_announce_upgrades() {
    let cloud = Cloud::start();
    let labels = Simulator::zebra(&["--language", "zpl"]);
    let envelopes = Simulator::zebra(&["--language", "zpl"]);
    let plugins = support::plugins_folder(&[ZEBRA]);
    let devices = format!(
        "{}{}",
        zebra_row(PRINTER, &labels.print_addr, ""),
        zebra_row("envelopes", &envelopes.print_addr, "")
    );
    let registration = support_desk::register(&cloud, plugins.path(), &devices);
    let thing = registration.thing.clone();
    let mut console = Console::connect(&cloud, &thing).await;
    let mut agent = Agent::start(
        &registration.config,
        &registration.data_dir.join("..").join("run.log"),
    );
    console
        .wait_for("report of both printers", &mut agent, |s| {
            s["state"]["reported"]["devices"]
                .as_array()
                .is_some_and(|d| d.len() == 2)
        })
        .await;

    console
        .desire(json!({
            "defaultPrinter": { "indicia": "envelopes" },
            "logLevel": "debug",
            "heartbeatIntervalS": 1,
        }))
        .await;
    console
        .wait_for("the settings reported", &mut agent, |s| {
            let config = &s["state"]["reported"]["config"];
            config["defaultPrinter"]["indicia"] == "envelopes" && config["logLevel"] == "debug"
        })
        .await;

    // Indicia go to the cloud's default for indicia; labels keep the config-order default.
    let indicia = print_and_wait(
        &cloud,
        &thing,
        "indicia.gif",
        &["--kind", "indicia"],
        &mut agent,
    )
    .await;
    assert_eq!(indicia["status"], "SUCCEEDED", "{indicia}");
    assert_eq!(indicia["statusDetails"]["device"], "envelopes");
    assert_eq!(indicia["statusDetails"]["kind"], "indicia");
    let label = print_and_wait(&cloud, &thing, "label.png", &[], &mut agent).await;
    assert_eq!(label["status"], "SUCCEEDED", "{label}");
    assert_eq!(label["statusDetails"]["device"], PRINTER);
    assert_eq!(envelopes.labels().await.len(), 1);
    assert_eq!(labels.labels().await.len(), 1);

    // The log level applies to the running process.
    let log = agent.log();
    let switched = log
        .find("log level set by the cloud")
        .unwrap_or_else(|| panic!("no log level change in the log:\n{log}"));
    assert!(
        log[switched..].contains("DEBUG"),
        "no debug line after the switch:\n{log}"
    );

    // A newer agent on DeviceHub's channel is announced in the shadow, as an event and in the
    // heartbeat; another channel's announcement is not.
    console
        .announce(json!({ "stable": { "agent": "99.0.0" }, "beta": { "agent": "100.0.0" } }))
        .await;
    let shadow = console
        .wait_for("the upgrade notice reported", &mut agent, |s| {
            s["state"]["reported"]["upgradeAvailable"]["agent"]["available"] == "99.0.0"
        })
        .await;
    assert_eq!(
        shadow["state"]["reported"]["upgradeAvailable"]["channel"],
        "stable"
    );
    assert!(
        shadow["state"].get("delta").is_none(),
        "delta left: {shadow}"
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let messages = cloud.messages(&thing).await;
        let event = messages
            .iter()
            .find(|m| m["topic"] == format!("devicehub/{thing}/events/upgrade"));
        let beat = messages.iter().rev().find(|m| {
            m["topic"] == format!("devicehub/{thing}/heartbeat")
                && m["payload"]["upgradeAvailable"].is_object()
        });
        let job_events = messages
            .iter()
            .filter(|m| m["topic"] == format!("devicehub/{thing}/events/job"))
            .count();
        if let (Some(event), Some(beat)) = (event, beat) {
            assert_eq!(event["payload"]["event"], "upgrade-available");
            assert_eq!(
                event["payload"]["agent"]["current"],
                env!("CARGO_PKG_VERSION")
            );
            let beat = &beat["payload"];
            assert_eq!(beat["upgradeAvailable"]["agent"]["available"], "99.0.0");
            assert_eq!(beat["lastJob"]["status"], "SUCCEEDED", "{beat}");
            assert!(beat["clock"]["skewS"].is_i64(), "{beat}");
            assert_eq!(job_events, 2, "one event per job");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no upgrade event and heartbeat within {WAIT:?}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_development_flag_is_a_warning_in_every_heartbeat() {
    let desk = Desk::new();
    let folder = desk
        .config
        .parent()
        .expect("config folder")
        .join("plugins-unsigned");
    std::fs::create_dir_all(&folder).expect("plugins folder");
    // The Zebra plugin without any manifest: it loads only because of the flag.
    let library = support::library(ZEBRA);
    std::fs::copy(
        &library,
        folder.join(library.file_name().expect("file name")),
    )
    .expect("copy plugin");
    // The config ends with the [plugins] table that trusts the test key: the flag joins it,
    // and the plugins folder becomes the unsigned one.
    let config = std::fs::read_to_string(&desk.config).expect("read config");
    let mut lines: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with("plugins_dir = ") {
                format!(
                    "plugins_dir = \"{}\"",
                    folder.to_str().expect("UTF-8").replace('\\', "/")
                )
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(
        lines.last().is_some_and(|l| l.starts_with("trusted_keys")),
        "{config}"
    );
    lines.push("allow_unsigned = true".to_string());
    std::fs::write(&desk.config, lines.join("\n") + "\n").expect("write config");

    let mut agent = desk.run();
    let deadline = Instant::now() + WAIT;
    let beat = loop {
        if let Some(beat) = desk.heartbeats().await.into_iter().next() {
            break beat;
        }
        if let Some(exit) = agent.exited() {
            panic!("devicehub run ended ({exit}):\n{}", agent.log());
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat within {WAIT:?}:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(beat["plugins"]["unsigned"], 1, "{beat}");
    assert_eq!(
        beat["checks"],
        json!([{
            "name": "plugins.unsigned",
            "status": "warn",
            "message": "unsigned plugins allowed: 1 loaded unsigned",
        }]),
        "{beat}"
    );
    assert!(agent.log().contains("DEVELOPMENT FLAG"), "{}", agent.log());
}
