//! Shared fixtures for the integration tests.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

use devicehub::plugins::bundle::{self, BundleEntry, BundleManifest, TrustStore};
use devicehub::render::{self, InputFormat, MonoBitmap, RenderOptions, RenderTarget};
use ed25519_dalek::SigningKey;

/// The folder cargo builds this profile's dependencies into; the test binary lives there, and
/// so do the plugin libraries built as dev-dependencies.
pub fn deps_dir() -> PathBuf {
    std::env::current_exe()
        .expect("test binary path")
        .parent()
        .expect("test binary has a folder")
        .to_path_buf()
}

/// The profile's output folder (`target/debug`).
pub fn profile_dir() -> PathBuf {
    deps_dir()
        .parent()
        .expect("deps has a parent")
        .to_path_buf()
}

/// The shared library built from the crate `crate_name` (with underscores).
pub fn library(crate_name: &str) -> PathBuf {
    let path = deps_dir().join(format!(
        "{}{crate_name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

pub const ZEBRA: &str = "devicehub_driver_zebra";
pub const PANICKING: &str = "devicehub_testplugin_panicking";
pub const INCOMPATIBLE: &str = "devicehub_testplugin_incompatible";
pub const NOT_A_PLUGIN: &str = "devicehub_testplugin_not_a_plugin";

/// The throwaway key the tests sign plugin folders with; the release key's private half is
/// never in the repository.
pub fn test_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// What the tests trust: the release keys and [`test_key`], strict otherwise.
pub fn test_trust() -> TrustStore {
    TrustStore::new(&[bundle::public_key_text(&test_key())], Vec::new(), false)
        .expect("the test key parses")
}

/// The config section that trusts [`test_key`]; goes after the top-level keys of a config.
pub fn trust_toml() -> String {
    format!(
        "\n[plugins]\ntrusted_keys = [\"{}\"]\n",
        bundle::public_key_text(&test_key())
    )
}

/// A fresh plugins folder holding copies of the named libraries, listed in a bundle manifest
/// signed by [`test_key`].
pub fn plugins_folder(crates: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Vec::new();
    for name in crates {
        let from = library(name);
        let to = dir.path().join(from.file_name().expect("file name"));
        std::fs::copy(&from, &to).expect("copy plugin");
        files.push(to);
    }
    sign_files(dir.path(), &files, &test_key(), bundle::DEFAULT_MANIFEST);
    dir
}

/// Signs every library now in `dir` with [`test_key`] as the default bundle (replacing it),
/// for tests that add files whose refusal must be about the library, not about trust.
pub fn sign_folder(dir: &Path) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read plugins folder")
        .map(|e| e.expect("folder entry").path())
        .filter(|p| devicehub::plugins::is_library(p))
        .collect();
    files.sort();
    sign_files(dir, &files, &test_key(), bundle::DEFAULT_MANIFEST);
}

/// Writes `manifest_name` in `dir` listing `files` (already in `dir`) with their sizes and
/// hashes, signed by `key`. The test plugins that are refused for what they are (not a plugin,
/// incompatible) are signed too, so that their refusal is about the library, not trust.
pub fn sign_files(dir: &Path, files: &[PathBuf], key: &SigningKey, manifest_name: &str) {
    let plugins = files
        .iter()
        .map(|file| {
            let (size, sha256) = bundle::file_digest(file).expect("hash plugin");
            let file_name = file
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            BundleEntry {
                name: file_name
                    .trim_start_matches(std::env::consts::DLL_PREFIX)
                    .trim_end_matches(std::env::consts::DLL_SUFFIX)
                    .to_string(),
                file: file_name,
                version: "0.1.0".into(),
                api_version: devicehub_plugin_api::API_VERSION.into(),
                size,
                sha256,
            }
        })
        .collect();
    let manifest = BundleManifest {
        format: bundle::BUNDLE_FORMAT.into(),
        format_version: bundle::FORMAT_VERSION,
        bundle_version: "0.1.0".into(),
        target: bundle::target_triple(),
        created_at: 0,
        plugins,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).expect("encode manifest");
    let path = dir.join(manifest_name);
    std::fs::write(&path, &bytes).expect("write manifest");
    std::fs::write(bundle::signature_path(&path), bundle::sign(key, &bytes))
        .expect("write signature");
}

/// A committed test input under `tests/fixtures/labels/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/labels")
        .join(name)
}

/// Renders `file` the way the print pipeline does for a 203 dpi, 832-dot printer.
pub fn render_for_zebra(file: &Path) -> Vec<MonoBitmap> {
    render_for(file, 203, 832, 7900)
}

/// Renders `file` the way the print pipeline does for a printer of `dpi` whose head is
/// `width_dots` wide and whose labels are at most `max_length_dots` long.
pub fn render_for(file: &Path, dpi: u32, width_dots: u32, max_length_dots: u32) -> Vec<MonoBitmap> {
    let bytes = std::fs::read(file).expect("read fixture");
    let format = InputFormat::sniff(&bytes).expect("known format");
    let options = RenderOptions::for_target(RenderTarget {
        dpi,
        width_dots,
        max_length_dots: Some(max_length_dots),
    });
    render::render(&bytes, format, &options)
        .expect("render fixture")
        .into_iter()
        .map(|page| page.bitmap)
        .collect()
}

/// The `devicehub-emulator` binary, built by `cargo test --workspace` beside this profile's
/// other binaries.
pub fn emulator_bin() -> PathBuf {
    let path = profile_dir().join(format!(
        "devicehub-emulator{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p devicehub-emulator` or `cargo test --workspace`",
        path.display()
    );
    path
}

/// An HTTP client for the simulators' control APIs.
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a default TLS crypto provider; install ring's once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A printer simulator running as its own process.
pub struct Simulator {
    child: Child,
    /// Held open: the simulator stops when its standard input closes, so it can never outlive
    /// the test.
    _stdin: ChildStdin,
    /// The print port, `127.0.0.1:PORT`.
    pub print_addr: String,
    /// The control API's base URL.
    pub control: String,
    http: reqwest::Client,
}

impl Simulator {
    /// Starts `devicehub-emulator printer zebra` with `args` on free ports.
    pub fn zebra(args: &[&str]) -> Simulator {
        Simulator::start("zebra", args)
    }

    /// Starts `devicehub-emulator printer FAMILY` with `args` on free ports.
    pub fn start(family: &str, args: &[&str]) -> Simulator {
        let mut child = Command::new(emulator_bin())
            .args([
                "printer",
                family,
                "--listen",
                "127.0.0.1:0",
                "--control",
                "127.0.0.1:0",
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the printer simulator");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the simulator's announcement");
        let announced: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad announcement {line:?}: {e}"));
        Simulator {
            child,
            _stdin: stdin,
            print_addr: announced["print"]
                .as_str()
                .expect("print address")
                .to_string(),
            control: announced["control"]
                .as_str()
                .expect("control URL")
                .to_string(),
            http: http_client(),
        }
    }

    /// The labels printed so far (JSON metadata).
    pub async fn labels(&self) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/labels", self.control))
            .send()
            .await
            .expect("GET /labels")
            .json()
            .await
            .expect("labels JSON")
    }

    /// One printed label's bitmap.
    pub async fn label_bitmap(&self, index: usize) -> MonoBitmap {
        let response = self
            .http
            .get(format!("{}/labels/{index}/bits", self.control))
            .send()
            .await
            .expect("GET bits");
        assert!(response.status().is_success(), "no label {index}");
        let header = |name: &str| -> u32 {
            response.headers()[name]
                .to_str()
                .expect("ascii header")
                .parse()
                .expect("number header")
        };
        let (width, height) = (header("x-label-width"), header("x-label-height"));
        let data = response.bytes().await.expect("bits body").to_vec();
        MonoBitmap {
            width,
            height,
            data,
        }
    }

    /// Sets the simulator's faults.
    pub async fn set_faults(&self, faults: serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/faults", self.control))
            .json(&faults)
            .send()
            .await
            .expect("POST /faults");
        assert!(
            response.status().is_success(),
            "faults refused: {response:?}"
        );
    }

    /// Decoding errors the simulator recorded.
    pub async fn errors(&self) -> Vec<serde_json::Value> {
        self.http
            .get(format!("{}/errors", self.control))
            .send()
            .await
            .expect("GET /errors")
            .json()
            .await
            .expect("errors JSON")
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Asserts two bitmaps are equal dot for dot, naming the first difference.
pub fn assert_same_bitmap(expected: &MonoBitmap, actual: &MonoBitmap, what: &str) {
    assert_eq!(
        (expected.width, expected.height),
        (actual.width, actual.height),
        "{what}: size differs"
    );
    for y in 0..expected.height {
        for x in 0..expected.width {
            assert_eq!(
                expected.get(x, y),
                actual.get(x, y),
                "{what}: dot ({x}, {y}) differs"
            );
        }
    }
}
