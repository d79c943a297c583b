//! Plugin bundle updates end to end: the real `devicehub run` against the emulator cloud over
//! mutual TLS, bundles signed with a throwaway key the desk's config trusts, served by the
//! emulator's HTTPS file server, which counts the bytes it serves and can cut a download.
//!
//! Bundle 1.0.0 is installed in the plugins folder (the Zebra driver and the `versioned`
//! fixture at 1.0.0). Bundle 2.0.0 changes only `versioned` (2.0.0): only its bytes are
//! downloaded, DeviceHub restarts itself and reports the new version. Bundle 3.0.0 serves a file
//! that differs from its signed manifest: refused, 2.0.0 keeps running. Bundle 4.0.0 has its
//! download cut halfway every time: it fails, 2.0.0 is untouched and still runs; after the cut
//! is lifted and DeviceHub restarted, the download resumes where it stopped and 4.0.0 installs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use devicehub::plugins::bundle::{
    self, BundleEntry, BundleManifest, BUNDLE_FORMAT, FORMAT_VERSION,
};
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::support::{self, http_client, ZEBRA};
use crate::support_cloud::Cloud;
use crate::support_desk::{self, Agent, ShadowConsole};

/// The longest a test waits for DeviceHub to do something; a passing test never waits this long.
const WAIT: Duration = Duration::from_secs(90);
/// The name the `versioned` fixture library has in every bundle, whichever version it is.
fn versioned_file() -> String {
    format!(
        "{}devicehub_testplugin_versioned{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The key the bundles are signed with, trusted by the desk's config only.
fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A bundle folder: the libraries (file name, bytes, plugin name, plugin version), the
/// manifest and its signature.
fn bundle_folder(dir: &Path, version: &str, files: &[(&str, Vec<u8>, &str, &str)]) {
    std::fs::create_dir_all(dir).expect("bundle folder");
    let mut plugins = Vec::new();
    for (file, bytes, name, plugin_version) in files {
        let path = dir.join(file);
        std::fs::write(&path, bytes).expect("write library");
        let (size, sha256) = bundle::file_digest(&path).expect("digest");
        plugins.push(BundleEntry {
            file: file.to_string(),
            name: name.to_string(),
            version: plugin_version.to_string(),
            api_version: devicehub_plugin_api::API_VERSION.to_string(),
            size,
            sha256,
        });
    }
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_string(),
        format_version: FORMAT_VERSION,
        bundle_version: version.to_string(),
        target: devicehub::plugins::update::this_target(),
        created_at: 1_764_000_000,
        plugins,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("manifest JSON");
    let path = dir.join("default.bundle.json");
    std::fs::write(&path, &bytes).expect("write manifest");
    std::fs::write(
        bundle::signature_path(&path),
        bundle::sign(&signing_key(), &bytes),
    )
    .expect("write signature");
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `bytes` with `n` zero bytes after them: a library that loads like the original but has
/// other bytes, so that no installed file matches it.
fn padded(mut bytes: Vec<u8>, n: usize) -> Vec<u8> {
    bytes.resize(bytes.len() + n, 0);
    bytes
}

/// The shadow console of this test: bundles are announced in `desired.bundle`, and waits look
/// at the reported state.
struct Console(ShadowConsole);

impl Console {
    async fn connect(cloud: &Cloud, thing: &str) -> Console {
        Console(ShadowConsole::connect(cloud, thing).await)
    }

    /// Announces a bundle in `desired.bundle`.
    async fn announce(&mut self, version: &str, manifest_url: &str) {
        self.0
            .desire(
                "bundle",
                json!({"version": version, "manifestUrl": manifest_url}),
            )
            .await;
    }

    /// Reads the shadow until `wanted` holds for its reported state (bounded by [`WAIT`]);
    /// returns the reported state.
    async fn wait_for(
        &mut self,
        what: &str,
        agent: &mut Agent,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        let shadow = self
            .0
            .wait_for(what, agent, WAIT, |s| wanted(&s["state"]["reported"]))
            .await;
        shadow["state"]["reported"].clone()
    }
}

/// The version of the plugin `name` in the reported state.
fn plugin_version(reported: &Value, name: &str) -> Option<String> {
    reported["plugins"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["version"]
        .as_str()
        .map(str::to_string)
}

fn bundle_is(reported: &Value, version: &str, state: &str) -> bool {
    reported["bundle"]["version"] == version && reported["bundle"]["state"] == state
}

/// The emulator's counters of bundle bytes served, by `version/file`.
async fn downloads(cloud: &Cloud) -> Value {
    http_client()
        .get(format!("{}/bundles/downloads", cloud.api_url))
        .send()
        .await
        .expect("GET downloads")
        .error_for_status()
        .expect("downloads answered")
        .json::<Value>()
        .await
        .expect("downloads JSON")["files"]
        .clone()
}

/// Publishes a bundle folder at the emulator; returns its manifest URL.
async fn publish(cloud: &Cloud, dir: &Path) -> String {
    let answer: Value = http_client()
        .post(format!("{}/bundles", cloud.api_url))
        .json(&json!({"dir": dir}))
        .send()
        .await
        .expect("POST bundles")
        .error_for_status()
        .expect("bundle published")
        .json()
        .await
        .expect("publish JSON");
    answer["manifestUrl"]
        .as_str()
        .expect("manifestUrl")
        .to_string()
}

async fn cloud_api(cloud: &Cloud, method: reqwest::Method, path: &str, body: Option<Value>) {
    let mut request = http_client().request(method, format!("{}{path}", cloud.api_url));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request
        .send()
        .await
        .expect("API request")
        .error_for_status()
        .expect("API request accepted");
}

/// The SHA-256 of every file in `dir`, by name.
fn folder_digests(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| {
            let (_, sha256) = bundle::file_digest(&e.path()).expect("digest");
            (e.file_name().to_string_lossy().into_owned(), sha256)
        })
        .collect();
    files.sort();
    files
}

fn starts(agent: &Agent) -> usize {
    agent.log().matches("DeviceHub is running").count()
}

#[tokio::test]
async fn a_bundle_update_downloads_only_changed_plugins_refuses_tampering_and_survives_cuts() {
    let cloud = Cloud::start();
    let work = tempfile::tempdir().expect("work folder");
    let zebra = read(&support::library(ZEBRA));
    let v1 = read(&support::library("devicehub_testplugin_versioned_v1"));
    let v2 = read(&support::library("devicehub_testplugin_versioned_v2"));
    let zebra_file = support::library(ZEBRA)
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();

    // Bundle 1.0.0 is what the platform installer put in the plugins folder.
    let plugins: PathBuf = work.path().join("plugins");
    bundle_folder(
        &plugins,
        "1.0.0",
        &[
            (&zebra_file, zebra.clone(), "zebra", "0.1.0"),
            (&versioned_file(), v1.clone(), "versioned", "1.0.0"),
        ],
    );
    let registration = support_desk::register(&cloud, &plugins, "");
    // The desk's config trusts the test support's key; the bundles here are signed with their
    // own key, which it trusts too.
    let test_key = bundle::public_key_text(&support::test_key());
    let bundle_key = bundle::public_key_text(&signing_key());
    let config = std::fs::read_to_string(&registration.config)
        .expect("read config")
        .replace(
            &format!("trusted_keys = [\"{test_key}\"]"),
            &format!("trusted_keys = [\"{test_key}\", \"{bundle_key}\"]"),
        );
    assert!(
        config.contains(&bundle_key),
        "the config trusts the bundle key"
    );
    std::fs::write(&registration.config, config).expect("write config");
    let data_dir = registration.data_dir.clone();
    let log = |n: u32| data_dir.join("..").join(format!("run-{n}.log"));

    let mut agent = Agent::start(&registration.config, &log(1));
    let mut console = Console::connect(&cloud, &registration.thing).await;
    console
        .wait_for("the installed plugins reported", &mut agent, |r| {
            plugin_version(r, "versioned").as_deref() == Some("1.0.0")
        })
        .await;

    // 2.0.0 changes only the `versioned` plugin.
    let v2_dir = work.path().join("bundle-2");
    bundle_folder(
        &v2_dir,
        "2.0.0",
        &[
            (&zebra_file, zebra.clone(), "zebra", "0.1.0"),
            (&versioned_file(), v2.clone(), "versioned", "2.0.0"),
        ],
    );
    let url = publish(&cloud, &v2_dir).await;
    console.announce("2.0.0", &url).await;
    let reported = console
        .wait_for("bundle 2.0.0 installed", &mut agent, |r| {
            bundle_is(r, "2.0.0", "installed")
                && plugin_version(r, "versioned").as_deref() == Some("2.0.0")
        })
        .await;
    assert_eq!(plugin_version(&reported, "zebra").as_deref(), Some("0.1.0"));
    let served = downloads(&cloud).await;
    assert_eq!(
        served[format!("2.0.0/{}", versioned_file())]["bytes"],
        json!(v2.len()),
        "the changed plugin is downloaded once, whole: {served}"
    );
    assert!(
        served.get(format!("2.0.0/{zebra_file}")).is_none(),
        "the unchanged Zebra driver was downloaded: {served}"
    );
    assert!(
        served.get("2.0.0/default.bundle.json").is_some(),
        "{served}"
    );
    // The same process (re-executed in place) started a second time.
    assert_eq!(starts(&agent), 2, "{}", agent.log());
    assert!(agent.exited().is_none());
    let installed_v2 = data_dir.join("bundles").join("2.0.0");
    let v2_digests = folder_digests(&installed_v2);

    // 3.0.0 serves a file that is not what its manifest signed.
    let v3_dir = work.path().join("bundle-3");
    let v3_bytes = padded(v1.clone(), 16);
    bundle_folder(
        &v3_dir,
        "3.0.0",
        &[
            (&zebra_file, zebra.clone(), "zebra", "0.1.0"),
            (&versioned_file(), v3_bytes, "versioned", "1.0.0"),
        ],
    );
    let mut tampered = read(&v3_dir.join(versioned_file()));
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(v3_dir.join(versioned_file()), tampered).expect("tamper");
    let url = publish(&cloud, &v3_dir).await;
    console.announce("3.0.0", &url).await;
    let reported = console
        .wait_for("bundle 3.0.0 refused", &mut agent, |r| {
            bundle_is(r, "3.0.0", "failed")
        })
        .await;
    let error = reported["bundle"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("does not match the signed manifest"),
        "{reported}"
    );
    assert_eq!(
        plugin_version(&reported, "versioned").as_deref(),
        Some("2.0.0")
    );
    assert_eq!(starts(&agent), 2, "no restart for a refused bundle");
    assert_eq!(folder_digests(&installed_v2), v2_digests);
    assert!(!data_dir.join("bundles").join("3.0.0").exists());
    assert!(!data_dir.join("bundles").join("staging-3.0.0").exists());

    // 4.0.0: every download of its changed plugin is cut halfway.
    let v4_dir = work.path().join("bundle-4");
    let v4_bytes = padded(v1.clone(), 32);
    bundle_folder(
        &v4_dir,
        "4.0.0",
        &[
            (&zebra_file, zebra.clone(), "zebra", "0.1.0"),
            (&versioned_file(), v4_bytes.clone(), "versioned", "1.0.0"),
        ],
    );
    let half = v4_bytes.len() as u64 / 2;
    cloud_api(
        &cloud,
        reqwest::Method::POST,
        "/bundles/faults",
        Some(
            json!({"version": "4.0.0", "file": versioned_file(), "cutAtByte": half, "times": 100}),
        ),
    )
    .await;
    let url = publish(&cloud, &v4_dir).await;
    console.announce("4.0.0", &url).await;
    let reported = console
        .wait_for("bundle 4.0.0 failing its download", &mut agent, |r| {
            bundle_is(r, "4.0.0", "failed")
        })
        .await;
    assert_eq!(
        plugin_version(&reported, "versioned").as_deref(),
        Some("2.0.0")
    );
    assert_eq!(starts(&agent), 2);
    assert_eq!(
        folder_digests(&installed_v2),
        v2_digests,
        "2.0.0 was touched"
    );
    let part = data_dir
        .join("bundles")
        .join("staging-4.0.0")
        .join(format!("{}.part", versioned_file()));
    // What arrived before the cut is kept for resuming (bytes in flight when the connection
    // dropped are lost, so it may be less than the cut offset).
    let kept = std::fs::metadata(&part).map_or(0, |m| m.len());
    assert!(
        kept > 0 && kept <= half,
        "{kept} bytes kept of a cut at {half}"
    );
    let key = format!("4.0.0/{}", versioned_file());
    let served = downloads(&cloud).await;
    let served_before = served[&key]["bytes"].as_u64().expect("bytes served");
    let requests_before = served[&key]["requests"].as_u64().expect("requests");
    assert!(
        requests_before > 1,
        "the cut download was tried again: {served}"
    );

    // The cut is lifted; a restart of DeviceHub resumes the download where it stopped.
    cloud_api(&cloud, reqwest::Method::DELETE, "/bundles/faults", None).await;
    let status = agent.terminate().await;
    assert!(status.success(), "{status}");
    let mut agent = Agent::start(&registration.config, &log(2));
    let reported = console
        .wait_for("bundle 4.0.0 installed after resuming", &mut agent, |r| {
            bundle_is(r, "4.0.0", "installed")
                && plugin_version(r, "versioned").as_deref() == Some("1.0.0")
        })
        .await;
    assert!(reported["bundle"]["error"].is_null(), "{reported}");
    // 2.0.0 is kept as the set to go back to; the staging folder became 4.0.0.
    assert_eq!(folder_digests(&installed_v2), v2_digests);
    assert!(data_dir.join("bundles").join("4.0.0").is_dir());
    assert!(!data_dir.join("bundles").join("staging-4.0.0").exists());
    let served = downloads(&cloud).await;
    assert_eq!(
        served[&key]["bytes"].as_u64().expect("bytes served") - served_before,
        v4_bytes.len() as u64 - kept,
        "the resumed download fetched only what was missing: {served}"
    );
    let requests = served[&key]["requests"].as_u64().expect("requests");
    let ranged = served[&key]["rangeRequests"]
        .as_u64()
        .expect("range requests");
    assert_eq!(requests, requests_before + 1, "{served}");
    assert_eq!(
        requests - ranged,
        1,
        "only the very first request was whole: {served}"
    );

    // Each step was told as an event of type `bundle` on the upgrade topic.
    let topic = format!("devicehub/{}/events/upgrade", registration.thing);
    let events: Vec<(String, String)> = cloud
        .messages(&registration.thing)
        .await
        .into_iter()
        .filter(|m| m["topic"] == topic && m["payload"]["type"] == "bundle")
        .map(|m| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (text(&m["payload"]["version"]), text(&m["payload"]["state"]))
        })
        .collect();
    for wanted in [
        ("2.0.0", "downloading"),
        ("2.0.0", "installed"),
        ("3.0.0", "failed"),
        ("4.0.0", "failed"),
        ("4.0.0", "installed"),
    ] {
        assert!(
            events
                .iter()
                .any(|(v, s)| (v.as_str(), s.as_str()) == wanted),
            "no {wanted:?} event in {events:?}"
        );
    }
    let status = agent.terminate().await;
    assert!(status.success(), "{status}");
}

#[test]
fn a_set_whose_plugins_do_not_load_is_rolled_back_and_an_older_set_ignored() {
    use devicehub::plugins::update::{self, BundleState, OutcomeState};
    use devicehub::plugins::Selection;

    let work = tempfile::tempdir().expect("work folder");
    let zebra_path = support::library(ZEBRA);
    let zebra_file = zebra_path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let zebra = read(&zebra_path);
    let plugins = work.path().join("plugins");
    bundle_folder(
        &plugins,
        "1.0.0",
        &[
            (&zebra_file, zebra.clone(), "zebra", "0.1.0"),
            (
                &versioned_file(),
                read(&support::library("devicehub_testplugin_versioned_v1")),
                "versioned",
                "1.0.0",
            ),
        ],
    );
    let data_dir = work.path().join("data");
    let bundles = update::bundles_dir(&data_dir);
    bundle_folder(
        &bundles.join("2.0.0"),
        "2.0.0",
        &[(
            &versioned_file(),
            read(&support::library("devicehub_testplugin_versioned_v2")),
            "versioned",
            "2.0.0",
        )],
    );
    // 3.0.0 is signed, but its `versioned` library is not a plugin at all.
    bundle_folder(
        &bundles.join("3.0.0"),
        "3.0.0",
        &[(
            &versioned_file(),
            read(&support::library(support::NOT_A_PLUGIN)),
            "versioned",
            "3.0.0",
        )],
    );
    let state = update::state_file(&data_dir);
    state
        .save(&BundleState {
            active: Some("2.0.0".into()),
            trying: Some("3.0.0".into()),
            trying_manifest_url: Some("https://cloud/3.0.0/default.bundle.json".into()),
            ..BundleState::default()
        })
        .expect("save state");
    let keys = [bundle::public_key_text(&signing_key())];
    let trust = bundle::TrustStore::new(&keys, Vec::new(), false).expect("trust store");

    let set = update::load_at_start(&plugins, Selection::AllLibraries, &data_dir, &trust);
    let versioned = set.plugin("versioned").expect("versioned loaded");
    assert_eq!(versioned.version.to_string(), "2.0.0", "{set:?}");
    assert!(set.plugin("zebra").is_some(), "{set:?}");
    let after = update::read_state(&data_dir);
    assert_eq!(after.active.as_deref(), Some("2.0.0"));
    assert_eq!(after.trying, None);
    let last = after.last.expect("an outcome");
    assert_eq!(last.state, OutcomeState::RolledBack);
    assert_eq!(last.version, "3.0.0");
    assert!(
        last.error
            .as_deref()
            .unwrap_or_default()
            .contains(&versioned_file()),
        "{last:?}"
    );

    // The platform installer shipped bundle 2.0.0 in the plugins folder since: the updated
    // set of the same version is ignored and the plugins folder's own files load. (A new
    // folder: rewriting a library this process has mapped would crash it.)
    let plugins = work.path().join("plugins-2");
    bundle_folder(
        &plugins,
        "2.0.0",
        &[
            (&zebra_file, zebra, "zebra", "0.1.0"),
            (
                &versioned_file(),
                read(&support::library("devicehub_testplugin_versioned_v1")),
                "versioned",
                "1.0.0",
            ),
        ],
    );
    let set = update::load_installed(&plugins, Selection::AllLibraries, &data_dir, &trust);
    let versioned = set.plugin("versioned").expect("versioned loaded");
    assert_eq!(versioned.version.to_string(), "1.0.0");
    assert_eq!(versioned.path, plugins.join(versioned_file()));
}
