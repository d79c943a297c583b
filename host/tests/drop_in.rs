//! Drop-in drivers with `devicehub run`: a plugin copied into the folder of the running agent
//! is verified, loaded and drives its configured device without a restart (same process); an
//! unsigned copy, one signed by an unknown key and a tampered one are refused with their
//! reasons; a file trusted by its hash with `devicehub plugins trust` loads too; the
//! development flag shows in the status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use devicehub::plugins::{PluginSet, Selection};
use devicehub::rpc::client::RpcClient;
use devicehub::rpc::RpcEndpoint;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::support::{self, Simulator, ZEBRA};
use crate::support_desk::Agent;

/// The TSPL plugin's library (crate name with underscores).
const TSPL: &str = "devicehub_driver_tspl";
/// The configured TSPL printer, whose plugin is not in the folder at start.
const PRINTER: &str = "tsc-dropped";
/// How long the agent may take to start, and a dropped plugin to be picked up (the folder is
/// polled every two seconds and a change must be stable over two polls); a passing test
/// never waits this long.
const WAIT: Duration = Duration::from_secs(60);

fn toml_path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").replace('\\', "/")
}

/// An unregistered desk running `devicehub run` with the Zebra plugin only, and a TSPL
/// simulator configured as a network printer.
struct Desk {
    _dir: tempfile::TempDir,
    plugins: tempfile::TempDir,
    sim: Simulator,
    config: PathBuf,
    data_dir: PathBuf,
    agent: Agent,
    endpoint: RpcEndpoint,
}

impl Desk {
    async fn start(extra_plugins_toml: &str) -> Desk {
        let dir = tempfile::tempdir().expect("temp dir");
        let plugins = support::plugins_folder(&[ZEBRA]);
        let sim = Simulator::start("tspl", &["--dpi", "203"]);
        let data_dir = dir.path().join("data");
        let config = dir.path().join("devicehub.toml");
        std::fs::write(
            &config,
            format!(
                "data_dir = \"{}\"\nplugins_dir = \"{}\"\n[usb]\nenabled = false\n\
                 [[devices]]\nid = \"{PRINTER}\"\naddress = \"tcp://{}\"\nplugin = \"tspl\"\n\
                 profile = \"tspl-203\"\n\
                 [cloud]\nendpoint = \"localhost\"\n\
                 [local]\nrpc_port = 0\nrpc_publish_port = 0\nws_port = 0\nhttp_port = 0\n{}{}",
                toml_path(&data_dir),
                toml_path(plugins.path()),
                sim.print_addr,
                support::trust_toml(),
                extra_plugins_toml,
            ),
        )
        .expect("write config");
        let mut agent = Agent::start(&config, &dir.path().join("run.log"));
        let deadline = Instant::now() + WAIT;
        let endpoint = loop {
            if let Some(endpoint) = RpcEndpoint::read(&data_dir) {
                break endpoint;
            }
            assert!(
                agent.exited().is_none(),
                "devicehub run ended:\n{}",
                agent.log()
            );
            assert!(
                Instant::now() < deadline,
                "the local RPC did not start:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        Desk {
            _dir: dir,
            plugins,
            sim,
            config,
            data_dir,
            agent,
            endpoint,
        }
    }

    async fn call(&self, method: &str) -> Value {
        let mut client = RpcClient::connect_to(self.endpoint, &self.data_dir)
            .await
            .expect("connect to the local RPC");
        client
            .call(method, json!({}), WAIT)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}\n{}", self.agent.log()))
    }

    /// `devicehub --config CONFIG ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_devicehub"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .expect("run devicehub")
    }

    fn attached(devices: &Value) -> bool {
        devices["devices"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == PRINTER))
    }

    /// Waits until the printer is attached, without a restart.
    async fn wait_attached(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            if Desk::attached(&self.call("devices").await) {
                return;
            }
            assert!(self.agent.exited().is_none(), "{}", self.agent.log());
            assert!(
                Instant::now() < deadline,
                "{PRINTER} was not attached after the plugin was dropped in:\n{}",
                self.agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The TSPL library copied into the plugins folder as `name`.
    fn drop_library(&self, name: &str) -> PathBuf {
        let to = self.plugins.path().join(name);
        std::fs::copy(support::library(TSPL), &to).expect("copy the TSPL plugin");
        to
    }

    /// Prints the indicia on the printer with `devicehub print` (through the running service)
    /// and compares what the simulator decoded with the host's rendering, dot for dot.
    async fn print_and_compare(&self) {
        let file = support::fixture("indicia.gif");
        let out = self.cli(&["print", file.to_str().expect("UTF-8"), "--device", PRINTER]);
        assert!(
            out.status.success(),
            "{}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.agent.log()
        );
        // The profile's geometry, from the same library loaded here.
        let folder = support::plugins_folder(&[TSPL]);
        let set = PluginSet::load_dir(
            folder.path(),
            Selection::AllLibraries,
            &support::test_trust(),
        );
        let profile = set
            .plugin("tspl")
            .and_then(|p| p.manifest.printer_profile("tspl-203"))
            .expect("the TSPL plugin's tspl-203 profile")
            .clone();
        let expected = support::render_for(
            &file,
            profile.dpi,
            profile.width_dots,
            profile.max_length_dots,
        );
        let labels = self.sim.labels().await;
        assert_eq!(labels.len(), expected.len(), "{labels:?}");
        for (index, want) in expected.iter().enumerate() {
            let got = self.sim.label_bitmap(index).await;
            support::assert_same_bitmap(want, &got, &format!("dropped-in TSPL page {index}"));
        }
    }
}

fn refusal<'a>(listing: &'a Value, file: &str) -> &'a str {
    listing["refused"]
        .as_array()
        .and_then(|r| {
            r.iter()
                .find(|r| r["path"].as_str().is_some_and(|p| p.ends_with(file)))
        })
        .and_then(|r| r["reason"].as_str())
        .unwrap_or_else(|| panic!("{file} was not refused: {listing}"))
}

fn json_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

#[tokio::test]
async fn a_signed_plugin_dropped_into_the_running_agents_folder_prints_without_a_restart() {
    let mut desk = Desk::start("").await;
    let pid = desk.agent.id();
    // The printer's plugin is missing: the device is not attached, and says why.
    let devices = desk.call("devices").await;
    assert!(!Desk::attached(&devices), "{devices}");
    assert!(
        devices["problems"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == PRINTER)),
        "{devices}"
    );

    // Three copies that must never load: unsigned, signed by a key nobody trusts, and changed
    // after a trusted key signed it.
    desk.drop_library("unsigned-tspl.so");
    let stranger = desk.drop_library("stranger-tspl.so");
    support::sign_files(
        desk.plugins.path(),
        &[stranger],
        &SigningKey::from_bytes(&[9; 32]),
        "stranger.bundle.json",
    );
    let tampered = desk.drop_library("tampered-tspl.so");
    support::sign_files(
        desk.plugins.path(),
        std::slice::from_ref(&tampered),
        &support::test_key(),
        "tampered.bundle.json",
    );
    let mut bytes = std::fs::read(&tampered).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&tampered, bytes).expect("tamper");

    let rescan = desk.cli(&["plugins", "rescan"]);
    assert!(
        rescan.status.success(),
        "{}",
        String::from_utf8_lossy(&rescan.stderr)
    );
    let listing = json_of(&desk.cli(&["plugins", "--json"]));
    assert_eq!(listing["source"], "service", "{listing}");
    assert!(
        refusal(&listing, "unsigned-tspl.so").contains("not signed by a trusted key"),
        "{listing}"
    );
    let stranger = refusal(&listing, "stranger-tspl.so");
    assert!(
        stranger.contains("approves nothing") && stranger.contains("not signed by a trusted key"),
        "{stranger}"
    );
    assert!(
        refusal(&listing, "stranger.bundle.json").contains("not signed by a trusted key"),
        "{listing}"
    );
    assert!(
        refusal(&listing, "tampered-tspl.so").contains("does not match the signed manifest"),
        "{listing}"
    );
    assert!(
        !Desk::attached(&desk.call("devices").await),
        "a refused copy attached the printer"
    );

    // The real drop-in: the library and its manifest signed by the trusted key. Nothing asks
    // for a rescan: the folder watch sees the change.
    let good = desk.drop_library("libdevicehub_driver_tspl.so");
    support::sign_files(
        desk.plugins.path(),
        &[good],
        &support::test_key(),
        "tspl.bundle.json",
    );
    desk.wait_attached().await;
    desk.print_and_compare().await;

    let listing = json_of(&desk.cli(&["plugins", "--json"]));
    let tspl = listing["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "tspl"))
        .unwrap_or_else(|| panic!("tspl is not listed: {listing}"));
    assert_eq!(tspl["approval"], "signed", "{tspl}");
    assert!(
        tspl["approval_detail"]
            .as_str()
            .is_some_and(|d| d.contains("tspl.bundle.json")),
        "{tspl}"
    );
    assert_eq!(desk.agent.id(), pid, "the same agent process");
    assert!(desk.agent.exited().is_none(), "{}", desk.agent.log());
    // Several rescans ran (the command, and the folder watch for each change); a refusal is
    // logged once per file content, not at every rescan or poll.
    let log = desk.agent.log();
    let refusals = log
        .lines()
        .filter(|l| l.contains("plugin refused") && l.contains("unsigned-tspl.so"))
        .count();
    assert_eq!(refusals, 1, "{log}");
}

#[tokio::test]
async fn an_unsigned_plugin_trusted_by_its_hash_loads_into_the_running_agent() {
    let mut desk = Desk::start("").await;
    let pid = desk.agent.id();
    let library = desk.drop_library("libdevicehub_driver_tspl.so");
    let out = desk.cli(&["plugins", "trust", library.to_str().expect("UTF-8")]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("Loaded tspl"), "{text}");
    assert!(text.contains(&format!("Attached {PRINTER}")), "{text}");
    desk.wait_attached().await;
    let listing = json_of(&desk.cli(&["plugins", "--json"]));
    let tspl = listing["plugins"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["name"] == "tspl"))
        .unwrap_or_else(|| panic!("tspl is not listed: {listing}"));
    assert_eq!(tspl["approval"], "trustedHash", "{tspl}");
    assert_eq!(desk.agent.id(), pid, "the same agent process");

    // The list is owner-only, and untrusting removes the entry.
    let trusted = desk.data_dir.join("trusted-plugins.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&trusted)
            .expect("trusted list")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = desk.cli(&["plugins", "untrust", library.to_str().expect("UTF-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("until DeviceHub restarts"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn the_development_flag_is_shown_in_the_status() {
    let desk = Desk::start("allow_unsigned = true\n").await;
    let status = desk.call("status").await;
    assert_eq!(status["unsignedPluginsAllowed"], true, "{status}");
    let out = desk.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("development flag on: unsigned plugins allowed (0 loaded unsigned)"),
        "{text}"
    );
    assert!(
        desk.agent.log().contains("DEVELOPMENT FLAG"),
        "{}",
        desk.agent.log()
    );
}
