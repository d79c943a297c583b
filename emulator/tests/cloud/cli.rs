//! The command line, run as a user would: `serve` in the background, then the other
//! subcommands against it through `endpoints.json`.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_devicehub-emulator");

/// A `serve` process that is stopped when the test ends.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(data_dir: &Path, args: &[&str]) -> Value {
    let output = Command::new(BINARY)
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--json")
        .output()
        .expect("the CLI runs");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn serve_then_create_a_thing_send_a_scale_job_and_list_things() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data_dir = dir.path().join("data");
    let mut child = Command::new(BINARY)
        .args(["serve", "--json", "--mqtt-port", "0", "--alpn-port", "0"])
        .args([
            "--websocket-port",
            "0",
            "--http-port",
            "0",
            "--files-port",
            "0",
        ])
        .arg("--data-dir")
        .arg(&data_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout piped");
    let serve = Serve(child);

    // `serve --json` prints one pretty-printed JSON object once everything listens.
    let mut reader = BufReader::new(stdout);
    let mut printed = String::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("read serve's output");
        assert!(
            read > 0,
            "serve exited before printing its endpoints: {printed}"
        );
        printed.push_str(&line);
        if line.starts_with('}') {
            break;
        }
    }
    let endpoints: Value = serde_json::from_str(&printed).expect("endpoints JSON");
    assert!(endpoints["mqttPort"].as_u64().is_some_and(|p| p > 0));
    assert!(endpoints["caCertificate"]
        .as_str()
        .is_some_and(|p| Path::new(p).exists()));

    let code = run(&data_dir, &["activation-code"]);
    assert_eq!(code["code"].as_str().map(str::len), Some(8));

    let device_dir = dir.path().join("desk-1");
    let created = run(
        &data_dir,
        &[
            "thing",
            "create",
            "desk-1",
            device_dir.to_str().expect("UTF-8 path"),
        ],
    );
    assert_eq!(created["thingName"], "desk-1");
    for file in [
        "certificate.pem.crt",
        "private.pem.key",
        "ca.pem",
        "device.json",
    ] {
        assert!(device_dir.join(file).exists(), "{file} missing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in ["private.pem.key", "device.json"] {
            let mode = std::fs::metadata(device_dir.join(secret))
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{secret}");
        }
    }

    let claim_dir = dir.path().join("claim");
    let claim = run(
        &data_dir,
        &["claim-certificate", claim_dir.to_str().expect("UTF-8 path")],
    );
    assert_eq!(claim["provisioningTemplate"], "DeviceHubFleet");

    let job = run(&data_dir, &["job", "scale", "desk-1", "--unit", "kg"]);
    let job_id = job["jobId"].as_str().expect("job id").to_string();
    let status = run(&data_dir, &["job", "status", "desk-1", &job_id]);
    assert_eq!(status["status"], "QUEUED");
    assert_eq!(status["jobDocument"]["unit"], "kg");

    let gif = dir.path().join("label.gif");
    std::fs::write(&gif, b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").expect("write GIF");
    let print = run(
        &data_dir,
        &[
            "job",
            "print",
            "desk-1",
            gif.to_str().expect("UTF-8 path"),
            "--copies",
            "3",
        ],
    );
    assert_eq!(print["document"]["copies"], 3);
    assert_eq!(print["document"]["file"]["format"], "gif");

    let cancelled = run(&data_dir, &["job", "cancel", "desk-1", &job_id]);
    assert_eq!(cancelled["status"], "CANCELED");

    let things = run(&data_dir, &["things"]);
    assert_eq!(things[0]["thingName"], "desk-1");

    drop(serve);
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
}
