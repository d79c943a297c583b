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
