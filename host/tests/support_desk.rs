//! A shipping desk registered with the emulator cloud, for end-to-end tests and the agent
//! benchmark: a claim certificate and an activation code from the emulator's command line, a
//! config naming the cloud and the desk's printers, and `devicehub register` run as a user would.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use devicehub::storage::DataDir;

use crate::support::emulator_bin;
use crate::support_cloud::Cloud;

/// Runs `devicehub-emulator ARGS --data-dir <the cloud's>` and checks it succeeded.
pub fn emulator_cli(cloud: &Cloud, args: &[&str]) -> Output {
    let output = Command::new(emulator_bin())
        .args(args)
        .arg("--data-dir")
        .arg(cloud.dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run devicehub-emulator");
    assert!(
        output.status.success(),
        "devicehub-emulator {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A `[[devices]]` row for a 203 dpi ZPL printer at `print_addr`, with `extra` TOML lines.
pub fn zebra_row(id: &str, print_addr: &str, extra: &str) -> String {
    format!(
        "[[devices]]\nid = \"{id}\"\naddress = \"tcp://{print_addr}\"\nusb_id = \"0A5F:0141\"\n\
         profile = \"zpl-203\"\n{extra}"
    )
}

/// What registering a desk left behind.
pub struct Registration {
    /// The config file `devicehub --config` takes.
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// The thing name the cloud gave the desk.
    pub thing: String,
}

fn toml_path(p: &Path) -> String {
    p.to_str().expect("UTF-8 path").replace('\\', "/")
}

/// A desk ready to register: its config file, data directory and an activation code.
pub struct Prepared {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub code: String,
}

/// Writes a desk's config (`devices` are TOML `[[devices]]` rows) with the emulator's claim
/// certificate, and asks the emulator for an activation code.
pub fn prepare(cloud: &Cloud, plugins_dir: &Path, devices: &str) -> Prepared {
    prepare_in(cloud, &cloud.dir.path().join("desk"), plugins_dir, devices)
}

/// [`prepare`] with the desk's config and data in `root` instead of the cloud's folder.
pub fn prepare_in(cloud: &Cloud, root: &Path, plugins_dir: &Path, devices: &str) -> Prepared {
    let claim_dir = cloud.dir.path().join("claim");
    emulator_cli(cloud, &["claim-certificate", &toml_path(&claim_dir)]);
    let code = String::from_utf8(emulator_cli(cloud, &["activation-code"]).stdout)
        .expect("UTF-8 code")
        .trim()
        .to_string();
    std::fs::create_dir_all(root).expect("desk folder");
    let data_dir = root.join("data");
    let text = format!(
        "data_dir = \"{}\"\nplugins_dir = \"{}\"\nlog_level = \"info\"\n\
         [usb]\nenabled = false\n{devices}\
         [cloud]\nendpoint = \"localhost\"\nport = {}\nca_bundle = \"{}\"\n\
         claim_certificate = \"{}\"\nclaim_private_key = \"{}\"\n\
         [local]\nws_port = 0\nhttp_port = 0\nrpc_port = 0\nrpc_publish_port = 0\n{}",
        toml_path(&data_dir),
        toml_path(plugins_dir),
        cloud.ports.mqtt,
        toml_path(&claim_dir.join("ca.pem")),
        toml_path(&claim_dir.join("certificate.pem.crt")),
        toml_path(&claim_dir.join("private.pem.key")),
        crate::support::trust_toml(),
    );
    let config = root.join("devicehub.toml");
    std::fs::write(&config, text).expect("write config");
    Prepared {
        config,
        data_dir,
        code,
    }
}

/// Registers a prepared desk with `devicehub register --code`.
pub fn register_prepared(prepared: Prepared) -> Registration {
    let output = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("--config")
        .arg(&prepared.config)
        .args(["register", "--code", &prepared.code])
        .stdin(Stdio::null())
        .output()
        .expect("run devicehub register");
    assert!(
        output.status.success(),
        "registration failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (identity, _) = DataDir::new(prepared.data_dir.clone())
        .cert_store()
        .load()
        .expect("identity readable")
        .expect("identity stored");
    Registration {
        config: prepared.config,
        data_dir: prepared.data_dir,
        thing: identity.thing_name,
    }
}

/// Registers a desk with the emulator cloud; see [`prepare`].
pub fn register(cloud: &Cloud, plugins_dir: &Path, devices: &str) -> Registration {
    register_prepared(prepare(cloud, plugins_dir, devices))
}

/// How long `Agent::terminate` waits for the agent to exit; a passing test never waits this long.
const STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `devicehub run` as a child process, its log in a file; killed when dropped.
pub struct Agent {
    child: std::process::Child,
    log: PathBuf,
}

impl Agent {
    /// Starts `devicehub --config CONFIG run`, logging to `log`.
    pub fn start(config: &Path, log: &Path) -> Agent {
        let log_file = std::fs::File::create(log).expect("agent log file");
        let child = Command::new(env!("CARGO_BIN_EXE_devicehub"))
            .arg("--config")
            .arg(config)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start devicehub run");
        Agent {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The agent's process ID: a test that must show no restart happened compares it.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, once the agent has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("poll the agent")
    }

    /// Stops the agent (SIGTERM where there are signals) and waits, bounded, for it to exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        #[cfg(unix)]
        {
            let status = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
        }
        #[cfg(not(unix))]
        self.child.kill().expect("stop the agent");
        let deadline = std::time::Instant::now() + STOP_WAIT;
        loop {
            if let Some(exit) = self.exited() {
                return exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "devicehub run did not stop:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a shadow console waits for one answer; a passing test never waits this long.
const CONSOLE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// The shipping application's side of a thing's shadow, over MQTT with the emulator's services
/// certificate: `get` and `update` requests matched to their answers by client token.
pub struct ShadowConsole {
    handle: devicehub::cloud::link::LinkHandle,
    incoming: tokio::sync::mpsc::Receiver<devicehub::cloud::link::InboundMessage>,
    prefix: String,
    _shutdown: tokio_util::sync::DropGuard,
}

impl ShadowConsole {
    /// Connects to `thing`'s shadow.
    pub async fn connect(cloud: &Cloud, thing: &str) -> ShadowConsole {
        use devicehub::cloud::link::{Qos, StartedLink};
        let pki = cloud.dir.path().join("pki");
        let read = |file: &str| {
            std::fs::read_to_string(pki.join(file)).unwrap_or_else(|e| panic!("pki/{file}: {e}"))
        };
        let identity = devicehub::storage::DeviceIdentity {
            thing_name: "shadow-console".to_string(),
            certificate_pem: read("cloud.crt"),
            private_key_pem: read("cloud.key"),
            ca_bundle_pem: Some(read("ca.crt")),
        };
        let (link, shutdown) =
            crate::support_cloud::start_link(cloud.link_config(identity, cloud.mutual_tls()));
        let StartedLink {
            handle, incoming, ..
        } = link;
        let mut state = handle.state();
        crate::support_cloud::wait_connected(&mut state).await;
        let prefix = format!("$aws/things/{thing}/shadow");
        for tail in [
            "get/accepted",
            "get/rejected",
            "update/accepted",
            "update/rejected",
        ] {
            handle
                .subscribe(&format!("{prefix}/{tail}"), Qos::AtLeastOnce)
                .await
                .expect("subscribe");
        }
        ShadowConsole {
            handle,
            incoming,
            prefix,
            _shutdown: shutdown.drop_guard(),
        }
    }

    /// Publishes `payload` (with a fresh client token) to `PREFIX/op` and returns the answer
    /// carrying that token: its topic and body.
    pub async fn request(
        &mut self,
        op: &str,
        mut payload: serde_json::Value,
    ) -> (String, serde_json::Value) {
        let token = format!("console-{}", rand::random::<u32>());
        payload["clientToken"] = serde_json::json!(token);
        self.handle
            .publish(
                &format!("{}/{op}", self.prefix),
                payload.to_string(),
                devicehub::cloud::link::Qos::AtLeastOnce,
            )
            .await
            .expect("publish");
        let answer = tokio::time::timeout(CONSOLE_ANSWER_WAIT, async {
            while let Some(message) = self.incoming.recv().await {
                let body: serde_json::Value =
                    serde_json::from_slice(&message.payload).unwrap_or_default();
                if body["clientToken"] == serde_json::json!(token) {
                    return Some((message.topic, body));
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(found)) => found,
            Ok(None) => panic!("the console link closed before the {op} answer"),
            Err(_) => panic!("no answer to {op} within {CONSOLE_ANSWER_WAIT:?}"),
        }
    }

    /// The whole shadow document, or `None` when there is none yet.
    pub async fn shadow(&mut self) -> Option<serde_json::Value> {
        let (topic, body) = self.request("get", serde_json::json!({})).await;
        topic.ends_with("/get/accepted").then_some(body)
    }

    /// Sets `desired.KEY` (`config`, `releases`, `bundle`) and checks the cloud took it.
    pub async fn desire(&mut self, key: &str, value: serde_json::Value) {
        let (topic, body) = self
            .request(
                "update",
                serde_json::json!({ "state": { "desired": { key: value } } }),
            )
            .await;
        assert!(
            topic.ends_with("/update/accepted"),
            "update refused: {body}"
        );
    }

    /// Reads the shadow every 200 ms until `wanted` holds for it, for at most `within`; fails
    /// at once, with the agent's log, when the agent ends.
    pub async fn wait_for(
        &mut self,
        what: &str,
        agent: &mut Agent,
        within: std::time::Duration,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + within;
        let mut last = None;
        loop {
            if let Some(shadow) = self.shadow().await {
                if wanted(&shadow) {
                    return shadow;
                }
                last = Some(shadow);
            }
            if let Some(exit) = agent.exited() {
                panic!(
                    "devicehub run ended ({exit}) before {what}:\n{}",
                    agent.log()
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} within {within:?}; the shadow is {last:?}\n{}",
                agent.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
