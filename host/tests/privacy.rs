//! Privacy: addresses are personal data, never logged and never written to disk.
//!
//! A whole desk runs: `devicehub run` registered with the emulator cloud, logging at trace
//! level (every crate, DeviceHub's own and its libraries'), with a text scanner and a serial
//! scale attached on pseudo-terminals. A distinctive address is scanned, the scale is read
//! through a cloud job, and the test waits until the address reached the cloud's scanner topic,
//! so that it certainly went through DeviceHub. Then the agent stops, and every log (its
//! standard error and the data directory's log files) and every file in the data directory is
//! searched for the address: none may hold any of its lines or a distinctive part of them.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{
    scanners::{text_scanner, SimulatorProcess, TEXT_SCANNER},
    support::{self, http_client},
    support_cloud::Cloud,
    support_desk::{emulator_cli, register, Agent},
};

/// The address scanned: made of words no log line, certificate or state file would hold by
/// chance.
const ADDRESS: [&str; 4] = [
    "Quentin Zyxwvut-Plimsoll",
    "Obscurantist Widgets Ltd",
    "4217 Xanthippe Causeway",
    "Nowhereville ZZ 99413",
];
/// Parts of the address searched for on their own, case-insensitively, so that a log that
/// split, re-cased or escaped a line is still caught.
const DISTINCTIVE: [&str; 5] = [
    "zyxwvut",
    "plimsoll",
    "obscurantist",
    "xanthippe",
    "nowhereville",
];
/// The longest a step waits; a passing test never waits this long.
const WAIT: Duration = Duration::from_secs(60);

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read the data directory") {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// The places in `bytes` that hold part of the address, described for a failure message.
fn address_traces(bytes: &[u8]) -> Vec<String> {
    let lower = String::from_utf8_lossy(bytes).to_lowercase();
    let mut traces: Vec<String> = ADDRESS
        .iter()
        .filter(|line| lower.contains(&line.to_lowercase()))
        .map(|line| format!("line {line:?}"))
        .collect();
    traces.extend(
        DISTINCTIVE
            .iter()
            .filter(|part| lower.contains(*part))
            .map(|part| format!("part {part:?}")),
    );
    traces
}

async fn job_status(cloud: &Cloud, thing: &str, job: &str) -> Value {
    http_client()
        .get(format!("{}/things/{thing}/jobs/{job}", cloud.api_url))
        .send()
        .await
        .expect("GET job")
        .error_for_status()
        .expect("job answered")
        .json()
        .await
        .expect("job JSON")
}

#[tokio::test]
async fn a_scan_and_weigh_flow_at_trace_level_leaves_no_address_in_logs_or_files() {
    let cloud = Cloud::start();
    let scanner = text_scanner();
    let scale = SimulatorProcess::start(&[
        "scale",
        "serial",
        "--protocol",
        "mt-sics",
        "--weight",
        "1.25",
        "--unit",
        "kg",
    ]);
    let plugins = support::plugins_folder(&[TEXT_SCANNER, "devicehub_driver_serial_scale"]);
    let devices = format!(
        "[[devices]]\nid = \"desk-scanner\"\naddress = \"serial://{}\"\nplugin = \"text-scanner\"\n\
         [[devices]]\nid = \"desk-scale\"\naddress = \"serial://{}\"\nplugin = \"serial-scale\"\n\
         profile = \"mt-sics\"\n",
        scanner.field("pty"),
        scale.field("pty"),
    );
    let desk = register(&cloud, plugins.path(), &devices);
    let config = std::fs::read_to_string(&desk.config).expect("read config");
    assert!(config.contains("log_level = \"info\""), "{config}");
    std::fs::write(
        &desk.config,
        config.replace("log_level = \"info\"", "log_level = \"trace\""),
    )
    .expect("write config");
    let logs = tempfile::tempdir().expect("log folder");
    let stderr_log = logs.path().join("stderr.log");
    let mut agent = Agent::start(&desk.config, &stderr_log);

    // Scan once DeviceHub runs with both devices attached.
    let deadline = Instant::now() + WAIT;
    while !agent.log().contains("DeviceHub is running") {
        assert!(
            agent.exited().is_none(),
            "devicehub run ended:\n{}",
            agent.log()
        );
        assert!(
            Instant::now() < deadline,
            "DeviceHub did not start:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scanner.post("/scan", json!({ "lines": ADDRESS })).await;

    // Weigh: the shipping application asks for a reading through a job.
    let answer: Value = serde_json::from_slice(
        &emulator_cli(&cloud, &["job", "scale", &desk.thing, "--json"]).stdout,
    )
    .expect("job answer JSON");
    let job = answer["jobId"].as_str().expect("jobId").to_string();

    // The scan reaches the cloud, and the scale job ends.
    let topic = format!("devicehub/{}/scanner", desk.thing);
    let deadline = Instant::now() + WAIT;
    let (scan, weighed) = loop {
        let messages = cloud.messages(&desk.thing).await;
        let scan = messages
            .iter()
            .find(|m| m["topic"] == topic)
            .map(|m| m["payload"].clone());
        let status = job_status(&cloud, &desk.thing, &job).await;
        let ended = !matches!(status["status"].as_str(), Some("QUEUED" | "IN_PROGRESS"));
        if let (Some(scan), true) = (&scan, ended) {
            break (scan.clone(), status);
        }
        assert!(
            agent.exited().is_none(),
            "devicehub run ended:\n{}",
            agent.log()
        );
        assert!(
            Instant::now() < deadline,
            "no scan on {topic} or job still running ({status}):\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(scan["event"], "scan");
    assert_eq!(scan["device"], "desk-scanner");
    assert_eq!(scan["lines"], json!(ADDRESS));
    let exit = agent.terminate().await;
    assert!(exit.success(), "devicehub run: {exit}\n{}", agent.log());

    // The logs are at trace level and tell of the scan, without its text.
    let stderr = std::fs::read(&stderr_log).expect("read standard error");
    let stderr_text = String::from_utf8_lossy(&stderr);
    assert!(
        stderr_text.contains("TRACE"),
        "not at trace level:\n{stderr_text}"
    );
    assert!(
        stderr_text.contains("scan of 4 lines from desk-scanner"),
        "the scan is not in the log:\n{stderr_text}"
    );
    let mut found = Vec::new();
    let traces = address_traces(&stderr);
    if !traces.is_empty() {
        found.push(format!("standard error: {}", traces.join(", ")));
    }
    let files = files_under(&desk.data_dir);
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(desk.data_dir.join("logs"))),
        "no log files in the data directory: {files:?}"
    );
    for file in &files {
        let bytes = std::fs::read(file).expect("read a data file");
        let traces = address_traces(&bytes);
        if !traces.is_empty() {
            found.push(format!("{}: {}", file.display(), traces.join(", ")));
        }
    }
    assert!(
        found.is_empty(),
        "the address was written (scale job {}):\n{}",
        weighed["status"],
        found.join("\n")
    );
}
