//! Registration by fleet provisioning, end to end: the real `devicehub register` binary (and the
//! library flow where a clock must be injected) against the real emulator over the wire.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use devicehub::cloud::link::LinkTransport;
use devicehub::cloud::registration::{
    self, RegistrationError, RegistrationSettings, RegistrationStep, DEVICE_CONFIGURATION_FILE,
};
use devicehub::storage::DataDir;
use rustls::pki_types::UnixTime;
use rustls::time_provider::TimeProvider;
use serde_json::Value;

use crate::support::emulator_bin;
use crate::support_cloud::{start_link, wait_connected, Cloud};

/// A cloud with a claim certificate issued into its data directory.
struct Setup {
    cloud: Cloud,
    claim_dir: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let cloud = Cloud::start();
        let claim_dir = cloud.dir.path().join("claim");
        emulator(
            &cloud,
            &["claim-certificate", claim_dir.to_str().expect("UTF-8 path")],
        );
        Setup { cloud, claim_dir }
    }

    /// A fresh one-time activation code.
    fn activation_code(&self) -> String {
        let output = emulator(&self.cloud, &["activation-code"]);
        String::from_utf8(output.stdout)
            .expect("UTF-8 code")
            .trim()
            .to_string()
    }

    /// Writes a config for a new installation (its own data directory) and returns its path.
    /// `ca_bundle` false leaves the CA unset, so that only Amazon's roots are trusted.
    fn installation(&self, name: &str, ca_bundle: bool) -> Installation {
        let root = self.cloud.dir.path().join(name);
        std::fs::create_dir_all(&root).expect("installation folder");
        let data_dir = root.join("data");
        let path = |p: PathBuf| p.to_str().expect("UTF-8 path").replace('\\', "/");
        let mut text = format!(
            "data_dir = \"{}\"\n[cloud]\nendpoint = \"localhost\"\nport = {}\n\
             claim_certificate = \"{}\"\nclaim_private_key = \"{}\"\n",
            path(data_dir.clone()),
            self.cloud.ports.mqtt,
            path(self.claim_dir.join("certificate.pem.crt")),
            path(self.claim_dir.join("private.pem.key")),
        );
        if ca_bundle {
            text.push_str(&format!(
                "ca_bundle = \"{}\"\n",
                path(self.claim_dir.join("ca.pem"))
            ));
        }
        let config = root.join("devicehub.toml");
        std::fs::write(&config, text).expect("write config");
        Installation { config, data_dir }
    }

    /// Library settings equivalent to an installation's config, over `transport`.
    fn settings(&self, transport: LinkTransport) -> RegistrationSettings {
        let read = |file: &str| std::fs::read_to_string(self.claim_dir.join(file)).expect(file);
        let mut settings = RegistrationSettings::from_config(
            &devicehub::config::CloudConfig {
                endpoint: Some("localhost".into()),
                ..Default::default()
            },
            self.cloud.dir.path(),
        )
        .expect("settings");
        settings.transport = transport;
        settings.ca_bundle_pem = Some(read("ca.pem"));
        settings.claim_certificate = self.claim_dir.join("certificate.pem.crt");
        settings.claim_private_key = self.claim_dir.join("private.pem.key");
        settings.step_timeout = Duration::from_secs(20);
        settings
    }

    /// The things the emulator knows, by name.
    fn thing_names(&self) -> Vec<String> {
        let output = emulator(&self.cloud, &["things", "--json"]);
        let things: Value = serde_json::from_slice(&output.stdout).expect("things JSON");
        things
            .as_array()
            .expect("a list of things")
            .iter()
            .filter_map(|t| t["thingName"].as_str().map(str::to_string))
            .collect()
    }
}

struct Installation {
    config: PathBuf,
    data_dir: PathBuf,
}

impl Installation {
    /// Runs `devicehub --config CONFIG register --code CODE --json`.
    fn register(&self, code: &str) -> Registered {
        let output = Command::new(env!("CARGO_BIN_EXE_devicehub"))
            .arg("--config")
            .arg(&self.config)
            .args(["register", "--code", code, "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("run devicehub register");
        let lines = String::from_utf8(output.stdout)
            .expect("UTF-8 output")
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"))
            })
            .collect();
        Registered {
            success: output.status.success(),
            lines,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn certs_dir(&self) -> PathBuf {
        self.data_dir.join("certs")
    }

    /// Whether any part of an identity was written.
    fn stored_anything(&self) -> bool {
        std::fs::read_dir(self.certs_dir())
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false)
    }
}

/// What `devicehub register --json` printed.
struct Registered {
    success: bool,
    lines: Vec<Value>,
    stderr: String,
}

impl Registered {
    fn steps(&self) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|l| l["step"].as_str())
            .collect()
    }

    fn error(&self) -> (&str, &str) {
        let error = self
            .lines
            .iter()
            .find_map(|l| l.get("error"))
            .unwrap_or_else(|| panic!("no error line in {:?}", self.lines));
        (
            error["kind"].as_str().expect("kind"),
            error["message"].as_str().expect("message"),
        )
    }
}

fn emulator(cloud: &Cloud, args: &[&str]) -> Output {
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

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_code_registers_stores_the_identity_and_connects_with_it() {
    let setup = Setup::new();
    let desk = setup.installation("desk", true);
    let registered = desk.register(&setup.activation_code());
    assert!(registered.success, "{}", registered.stderr);
    assert_eq!(
        registered.steps(),
        [
            "keyGenerated",
            "claimConnected",
            "certificateIssued",
            "thingRegistered",
            "identityStored",
            "connected"
        ]
    );
    let result = registered
        .lines
        .last()
        .and_then(|l| l.get("result"))
        .expect("a result line");
    let thing = result["thingName"].as_str().expect("thingName").to_string();
    let serial = result["serialNumber"].as_str().expect("serialNumber");
    assert_eq!(thing, format!("devicehub-{serial}"));
    assert_eq!(
        registered.lines[0]["serialNumber"], result["serialNumber"],
        "the claim client and the template use the same serial"
    );

    let data = DataDir::new(desk.data_dir.clone());
    let (identity, _) = data
        .cert_store()
        .load()
        .expect("the stored identity loads")
        .expect("an identity is stored");
    assert_eq!(identity.thing_name, thing);
    assert!(identity.ca_bundle_pem.is_some(), "the CA bundle is kept");
    let configuration = registration::load_device_configuration(&data)
        .expect("device configuration loads")
        .expect("device configuration stored");
    assert!(
        configuration
            .get("deviceSignature")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty()),
        "{configuration:?}"
    );
    #[cfg(unix)]
    {
        assert_eq!(mode(&desk.certs_dir()), 0o700);
        for file in [
            "private.pem.key",
            "certificate.pem.crt",
            "ca.pem",
            "thing.json",
            DEVICE_CONFIGURATION_FILE,
        ] {
            assert_eq!(mode(&desk.certs_dir().join(file)), 0o600, "{file}");
        }
    }
    assert!(setup.thing_names().contains(&thing), "the cloud lists it");

    // The stored identity connects on its own, with the thing name as client ID.
    let (link, shutdown) = start_link(setup.cloud.link_config(identity, setup.cloud.mutual_tls()));
    let mut state = link.handle.state();
    wait_connected(&mut state).await;
    shutdown.cancel();
    link.task.await.expect("the link task ends");

    // Registering again keeps the serial number, and so the thing.
    let again = desk.register(&setup.activation_code());
    assert!(again.success, "{}", again.stderr);
    let result = again
        .lines
        .last()
        .and_then(|l| l.get("result"))
        .expect("result");
    assert_eq!(result["thingName"].as_str(), Some(thing.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_code_is_refused_with_the_reason_and_nothing_is_stored() {
    let setup = Setup::new();
    let desk = setup.installation("desk", true);
    let registered = desk.register("NOT-A-CODE");
    assert!(!registered.success);
    let (kind, message) = registered.error();
    assert_eq!(kind, "activationCodeRefused");
    assert!(message.contains("activation code is unknown"), "{message}");
    assert!(message.contains("get a new one"), "{message}");
    assert!(
        registered.stderr.contains("activation code"),
        "{}",
        registered.stderr
    );
    assert!(!registered.steps().contains(&"thingRegistered"));
    assert!(
        !desk.stored_anything(),
        "nothing is stored for a refused code"
    );
    assert!(setup.thing_names().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_code_is_refused() {
    let setup = Setup::new();
    let code = setup.activation_code();
    let first = setup.installation("first", true);
    assert!(first.register(&code).success);
    let second = setup.installation("second", true);
    let registered = second.register(&code);
    assert!(!registered.success);
    let (kind, message) = registered.error();
    assert_eq!(kind, "activationCodeRefused");
    assert!(message.contains("already been used"), "{message}");
    assert!(!second.stored_anything());
    assert_eq!(setup.thing_names().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_ca_bundle_is_refused_before_anything_is_sent() {
    let setup = Setup::new();
    // Without a CA bundle only Amazon's roots are trusted, and they did not sign the emulator.
    let desk = setup.installation("desk", false);
    let registered = desk.register(&setup.activation_code());
    assert!(!registered.success);
    let (kind, message) = registered.error();
    assert_eq!(kind, "serverNotTrusted");
    assert!(message.contains("cloud.ca_bundle"), "{message}");
    assert!(!registered.steps().contains(&"claimConnected"));
    assert!(!desk.stored_anything());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_claim_certificate_is_named() {
    let setup = Setup::new();
    let desk = setup.installation("desk", true);
    std::fs::remove_file(setup.claim_dir.join("certificate.pem.crt")).expect("remove claim");
    let registered = desk.register(&setup.activation_code());
    assert!(!registered.success);
    let (kind, message) = registered.error();
    assert_eq!(kind, "claimCertificateMissing");
    assert!(message.contains("certificate.pem.crt"), "{message}");
}

/// A clock that is `behind` the real one.
#[derive(Debug)]
struct SlowClock {
    behind: Duration,
}

impl TimeProvider for SlowClock {
    fn current_time(&self) -> Option<UnixTime> {
        let now = UnixTime::now().as_secs();
        Some(UnixTime::since_unix_epoch(Duration::from_secs(
            now - self.behind.as_secs(),
        )))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_days_behind_is_reported_with_its_size() {
    let setup = Setup::new();
    let mut settings = setup.settings(setup.cloud.mutual_tls());
    // The emulator's server certificate is valid from one day before it started, so a clock
    // three days and an hour behind is two days and (nearly) an hour short of it: the hour
    // keeps the seconds between the emulator's start and this check out of the figure.
    settings.clock = Arc::new(SlowClock {
        behind: Duration::from_secs(3 * 86_400 + 3_600),
    });
    let data = DataDir::new(setup.cloud.dir.path().join("slow-clock"));
    let mut steps = Vec::new();
    let error = registration::register(&settings, &data, &setup.activation_code(), &mut |s| {
        steps.push(s.clone())
    })
    .await
    .expect_err("a clock days behind cannot verify the server");
    assert!(
        matches!(error, RegistrationError::ClockWrong { .. }),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("the computer's clock is wrong by 2 days"),
        "{text}"
    );
    assert!(text.contains("behind"), "{text}");
    assert!(data.cert_store().load().expect("load").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_works_over_alpn_and_websocket() {
    let setup = Setup::new();
    for (name, transport) in [
        ("alpn", setup.cloud.alpn()),
        ("wss", setup.cloud.websocket()),
    ] {
        let settings = setup.settings(transport);
        let data = DataDir::new(setup.cloud.dir.path().join(name));
        let mut steps = Vec::new();
        let done = registration::register(&settings, &data, &setup.activation_code(), &mut |s| {
            steps.push(s.clone())
        })
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(steps.last(), Some(RegistrationStep::Connected { thing_name }) if *thing_name == done.thing_name),
            "{name}: {steps:?}"
        );
    }
    assert_eq!(setup.thing_names().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_certificate_the_cloud_never_issued_is_refused() {
    let setup = Setup::new();
    let desk = setup.installation("desk", true);
    // A self-signed certificate in place of the claim certificate: the server must refuse it
    // during the handshake.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "devicehub-claim");
    let forged = params.self_signed(&key).expect("self-signed");
    std::fs::write(setup.claim_dir.join("certificate.pem.crt"), forged.pem()).expect("write");
    std::fs::write(setup.claim_dir.join("private.pem.key"), key.serialize_pem()).expect("write");
    let registered = desk.register(&setup.activation_code());
    assert!(!registered.success);
    let (kind, message) = registered.error();
    assert_eq!(kind, "claimCertificateRefused", "{message}");
    assert!(
        message.contains("install a current claim certificate"),
        "{message}"
    );
    assert!(!desk.stored_anything());
}
