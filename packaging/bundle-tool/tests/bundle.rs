//! `devicehub-bundle` end to end on the real Zebra driver library: a key made, a bundle built
//! and signed, verified with and without trusting the key, and refused once a byte changes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The folder cargo builds dependencies into; the driver's shared library is there.
fn deps_dir() -> PathBuf {
    std::env::current_exe()
        .expect("test binary path")
        .parent()
        .expect("test binary folder")
        .to_path_buf()
}

fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_devicehub-bundle"))
        .args(args)
        .output()
        .expect("run devicehub-bundle")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn arg(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn a_signed_bundle_verifies_only_with_its_key_and_only_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("release.key");
    let out = dir.path().join("plugins");

    let made = tool(&["keygen", "--out", arg(&key)]);
    assert!(made.status.success(), "{}", text(&made));
    let public = String::from_utf8(made.stdout)
        .expect("UTF-8")
        .trim()
        .to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).expect("key").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the signing key is owner-only");
    }
    let again = tool(&["keygen", "--out", arg(&key)]);
    assert!(!again.status.success(), "a key is never overwritten");

    let built = tool(&[
        "build",
        "--from",
        arg(&deps_dir()),
        "--key",
        arg(&key),
        "--version",
        "1.2.3",
        "--out",
        arg(&out),
        "--plugin",
        "zebra",
    ]);
    assert!(built.status.success(), "{}", text(&built));
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(out.join("default.bundle.json")).expect("manifest written"),
    )
    .expect("manifest JSON");
    assert_eq!(manifest["bundleVersion"], "1.2.3");
    let entries = manifest["plugins"].as_array().expect("plugins");
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["name"], "zebra");
    let library = out.join(entries[0]["file"].as_str().expect("file"));
    assert!(library.is_file());

    let trusted = tool(&["verify", arg(&out), "--trust", &public]);
    assert!(trusted.status.success(), "{}", text(&trusted));
    assert!(text(&trusted).contains("signed in default.bundle.json"));

    let stranger = tool(&["verify", arg(&out)]);
    assert!(!stranger.status.success());
    assert!(
        text(&stranger).contains("not signed by a trusted key"),
        "{}",
        text(&stranger)
    );

    let mut bytes = std::fs::read(&library).expect("library");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&library, bytes).expect("tamper");
    let tampered = tool(&["verify", arg(&out), "--trust", &public]);
    assert!(!tampered.status.success());
    assert!(
        text(&tampered).contains("does not match the signed manifest"),
        "{}",
        text(&tampered)
    );
}

/// The shared library file of each default driver: the workspace's default members under
/// `plugins/`, as the package's bundle takes them.
fn default_driver_libraries() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace: toml::Table = std::fs::read_to_string(root.join("Cargo.toml"))
        .expect("workspace Cargo.toml")
        .parse()
        .expect("workspace Cargo.toml parses");
    let members = workspace["workspace"]["default-members"]
        .as_array()
        .expect("default-members");
    let mut libraries = Vec::new();
    for member in members.iter().filter_map(|m| m.as_str()) {
        if !member.starts_with("plugins/") {
            continue;
        }
        let package: toml::Table = std::fs::read_to_string(root.join(member).join("Cargo.toml"))
            .expect("driver Cargo.toml")
            .parse()
            .expect("driver Cargo.toml parses");
        let name = package["package"]["name"].as_str().expect("package name");
        let library = deps_dir().join(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        ));
        assert!(
            library.is_file(),
            "{} is missing: the default driver {name} must be a dev-dependency of \
             devicehub-bundle (packaging/bundle-tool/Cargo.toml)",
            library.display()
        );
        libraries.push(library);
    }
    libraries
}

/// Checks one rule line the way udev reads it: comma-separated `KEY==\"value\"` matches and
/// `KEY=\"value\"` assignments, keys udev knows, IDs as four lower-case hex digits.
fn check_rule_syntax(line: &str) {
    let mut has_match = false;
    let mut has_assignment = false;
    for token in line.split(", ") {
        let (key, operator, value) = if let Some((key, value)) = token.split_once("==") {
            (key, "==", value)
        } else if let Some((key, value)) = token.split_once('=') {
            (key, "=", value)
        } else {
            panic!("no operator in {token:?} of {line:?}");
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or_else(|| panic!("unquoted value in {token:?} of {line:?}"));
        assert!(!value.contains('"'), "a quote inside {token:?}");
        match (key, operator) {
            ("SUBSYSTEM" | "KERNEL" | "ENV{DEVTYPE}", "==") => has_match = true,
            ("ATTRS{idVendor}" | "ATTRS{idProduct}", "==") => {
                assert!(
                    value.len() == 4
                        && value
                            .chars()
                            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                    "sysfs IDs are four lower-case hex digits: {token:?}"
                );
                has_match = true;
            }
            ("MODE", "=") => {
                assert_eq!(value, "0660", "{line}");
                has_assignment = true;
            }
            ("GROUP", "=") => {
                assert_eq!(value, "devicehub", "{line}");
                has_assignment = true;
            }
            _ => panic!("unexpected key or operator in {token:?} of {line:?}"),
        }
    }
    assert!(has_match && has_assignment, "{line:?}");
}

/// `udevadm verify` checks rules files (udev 253 and later); older udev has no such command.
fn udevadm_verify(rules: &Path) -> Option<Output> {
    let help = Command::new("udevadm").args(["verify", "--help"]).output();
    match help {
        Ok(help) if help.status.success() => Some(
            Command::new("udevadm")
                .args(["verify", arg(rules)])
                .output()
                .expect("run udevadm verify"),
        ),
        _ => None,
    }
}

#[test]
fn udev_rules_cover_every_usb_id_of_every_default_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).expect("plugins folder");
    for library in default_driver_libraries() {
        std::fs::copy(
            &library,
            plugins.join(library.file_name().expect("file name")),
        )
        .expect("copy driver");
    }
    let rules_path = dir.path().join("60-devicehub.rules");
    let made = tool(&[
        "udev-rules",
        "--from",
        arg(&plugins),
        "--out",
        arg(&rules_path),
    ]);
    assert!(made.status.success(), "{}", text(&made));
    let rules = std::fs::read_to_string(&rules_path).expect("rules written");

    for line in rules.lines() {
        if !line.is_empty() && !line.starts_with('#') {
            check_rule_syntax(line);
        }
    }
    if let Some(verified) = udevadm_verify(&rules_path) {
        assert!(verified.status.success(), "{}", text(&verified));
    }

    // Each library loaded here, apart from the tool, says which IDs it claims.
    let (mut usb_devices, mut hidraw) = (0, 0);
    for entry in std::fs::read_dir(&plugins).expect("plugins folder") {
        let path = entry.expect("entry").path();
        let (_, sha256) = devicehub::plugins::bundle::file_digest(&path).expect("readable");
        let plugin = devicehub::plugins::load_plugin(
            &path,
            devicehub::plugins::bundle::Approval::NotChecked,
            sha256,
        )
        .expect("default driver loads");
        for model in plugin.manifest.usb_models.iter() {
            let node = match plugin.manifest.kind {
                devicehub_plugin_api::DeviceKind::Printer => {
                    usb_devices += 1;
                    r#"SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device""#
                }
                _ => {
                    hidraw += 1;
                    r#"SUBSYSTEM=="hidraw", KERNEL=="hidraw*""#
                }
            };
            let rule = format!(
                r#"{node}, ATTRS{{idVendor}}=="{:04x}", ATTRS{{idProduct}}=="{:04x}", MODE="0660", GROUP="devicehub""#,
                model.vendor_id, model.product_id
            );
            assert!(
                rules.lines().any(|l| l == rule),
                "{} {} ({}) has no rule:\n{rules}",
                plugin.name(),
                model.model,
                rule
            );
        }
    }
    assert!(
        usb_devices > 0 && hidraw > 0,
        "the default drivers claim printers ({usb_devices}) and HID scales ({hidraw})"
    );
}

#[test]
fn udev_rules_refuse_a_folder_with_a_broken_plugin() {
    let dir = tempfile::tempdir().expect("temp dir");
    let library = default_driver_libraries()
        .into_iter()
        .next()
        .expect("a default driver");
    std::fs::copy(&library, dir.path().join("libdevicehub_driver_a.so")).expect("copy driver");
    std::fs::write(
        dir.path().join("libdevicehub_driver_b.so"),
        b"not a library",
    )
    .expect("broken file");
    let made = tool(&["udev-rules", "--from", arg(dir.path())]);
    assert!(!made.status.success(), "{}", text(&made));
    assert!(
        text(&made).contains("libdevicehub_driver_b.so was refused"),
        "{}",
        text(&made)
    );
}

#[test]
fn the_packaged_service_configs_parse() {
    let packaging = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let linux = packaging.join("linux/devicehub.toml");
    let config = devicehub::config::Config::load(&linux).expect("the Debian package's config");
    assert_eq!(config.data_dir(), Path::new("/var/lib/devicehub"));
    assert_eq!(
        config.plugins_dir.as_deref(),
        Some(Path::new("/usr/lib/devicehub/plugins"))
    );
    // packaging/build-deb --trust-signing-key appends this section for a test package.
    let mut text = std::fs::read_to_string(&linux).expect("config text");
    text.push_str(
        "\n[plugins]\ntrusted_keys = [\"uLhIUJGyhdllNfnV05BezfjQ7HjDXJ3uxG8G4To12NA=\"]\n",
    );
    let trusting = devicehub::config::Config::parse(&text, &linux).expect("with the test key");
    assert_eq!(trusting.plugins.trusted_keys.len(), 1);

    let windows = packaging.join("windows/devicehub.toml");
    devicehub::config::Config::load(&windows).expect("the Windows installer's config");
}
