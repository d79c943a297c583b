//! `devicehub sandbox` end to end: the real binary (with the emulator binary beside it) starts
//! the emulator cloud, the printer and scale simulators and the agent, prints the demo jobs,
//! serves both pages, and leaves no process behind when it is stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

use crate::support;

/// How long the sandbox may take to be ready and to print the demo on a busy machine.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long it may take to stop after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The sandbox process, killed if the test fails before stopping it.
struct Sandbox {
    /// `None` once the test has taken it to wait for its exit.
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Sandbox {
    /// The next JSON line on standard output, waiting at most `timeout`.
    fn next_event(&self, timeout: Duration) -> Value {
        let line = self
            .lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("the sandbox printed no line within {timeout:?}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

/// Whether a process with this ID still exists (a zombie counts as gone: it has ended).
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z')
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn the_sandbox_prints_the_demo_serves_both_pages_and_leaves_no_process_behind() {
    // The emulator binary must be beside devicehub, where the sandbox looks for it.
    support::emulator_bin();
    let plugins = support::plugins_folder(&[
        support::ZEBRA,
        "devicehub_driver_tspl",
        "devicehub_driver_brother_ql",
        "devicehub_driver_dymo",
        "devicehub_driver_serial_scale",
    ]);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_devicehub"))
        .arg("sandbox")
        .arg("--print-demo")
        .arg("--json")
        .arg("--dir")
        .arg(dir.path())
        .arg("--plugins-dir")
        .arg(plugins.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("devicehub sandbox starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut sandbox = Sandbox {
        child: Some(child),
        lines,
    };

    let ready = sandbox.next_event(READY_TIMEOUT);
    assert_eq!(ready["event"], "ready", "{ready}");
    let status_page = ready["statusPage"].as_str().expect("statusPage");
    let emulator_page = ready["emulatorPage"].as_str().expect("emulatorPage");
    assert!(status_page.starts_with("http://127.0.0.1:") && status_page.ends_with("/status"));
    assert!(emulator_page.starts_with("http://127.0.0.1:") && emulator_page.ends_with('/'));
    let ids: Vec<&str> = ready["devices"]
        .as_array()
        .expect("devices")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    // A scanner simulator joins them when the emulator has one.
    assert_eq!(
        ids[..5],
        [
            "desk-zebra",
            "desk-tspl",
            "desk-brother",
            "desk-dymo",
            "desk-scale"
        ],
        "{ready}"
    );
    assert!(ids.len() == 5 || ids[5..] == ["desk-scanner"], "{ready}");
    let pids: Vec<u64> = ready["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(
        pids.len(),
        ids.len() + 1,
        "the cloud and one simulator per device: {ready}"
    );
    assert!(pids.iter().all(|pid| alive(*pid)), "{pids:?}");

    let demo = sandbox.next_event(READY_TIMEOUT);
    assert_eq!(demo["event"], "demo", "{demo}");
    let jobs = demo["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 2, "{demo}");
    for job in jobs {
        assert_eq!(job["status"], "SUCCEEDED", "{job}");
        let pngs = job["pngs"].as_array().expect("pngs");
        assert!(!pngs.is_empty(), "{job}");
        for png in pngs {
            let bytes = std::fs::read(png.as_str().expect("a path")).expect("the PNG exists");
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
        }
    }
    // Each job printed one label record on the Zebra, and each shows only its own.
    for job in jobs {
        assert_eq!(job["pngs"].as_array().map(Vec::len), Some(1), "{job}");
    }
    let indicia = image::open(jobs[1]["pngs"][0].as_str().expect("a path")).expect("a PNG");
    assert_eq!((indicia.width(), indicia.height()), (600, 400));
    let label_job = jobs[0]["jobId"].as_str().expect("job id");

    let http = support::http_client();
    let page = http.get(emulator_page).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    assert!(page
        .text()
        .await
        .expect("text")
        .contains("DeviceHub emulator"));

    let thing = ready["thing"].as_str().expect("thing");
    let found: Value = http
        .get(format!(
            "{emulator_page}page/things/{thing}/jobs/{label_job}/labels"
        ))
        .send()
        .await
        .expect("GET labels")
        .json()
        .await
        .expect("JSON");
    assert_eq!(found["device"], "desk-zebra", "{found}");
    let png_path = found["labels"][0]["png"].as_str().expect("a label");
    let png = http
        .get(format!("{}{png_path}", emulator_page.trim_end_matches('/')))
        .send()
        .await
        .expect("GET png");
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let label = image::load_from_memory(&png.bytes().await.expect("bytes")).expect("a PNG");
    // The 4 x 6 in label at 203 dpi.
    assert_eq!((label.width(), label.height()), (812, 1218));

    // The printed address is the agent's own status page, with its status API beside it.
    let page = http
        .get(status_page)
        .send()
        .await
        .expect("GET the status page");
    assert_eq!(page.status(), 200);
    let page = page.text().await.expect("page text");
    assert!(page.contains("<title>Status - DeviceHub</title>"), "{page}");
    assert!(ready["webSocket"]
        .as_str()
        .is_some_and(|ws| ws.starts_with("ws://127.0.0.1:")));
    let status: Value = http
        .get(status_page.replace("/status", "/api/status"))
        .send()
        .await
        .expect("GET status")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["link"]["state"], "connected", "{status}");
    assert_eq!(status["thingName"], thing);

    let mut child = sandbox.child.take().expect("the sandbox runs");
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits");
    // SAFETY: kill(2) on the sandbox child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let stopped = sandbox.next_event(STOP_TIMEOUT);
    assert_eq!(stopped["event"], "stopped", "{stopped}");
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let exit = done
        .recv_timeout(STOP_TIMEOUT)
        .expect("the sandbox exits after SIGTERM")
        .expect("wait");
    assert!(exit.success(), "{exit}");
    let left: Vec<u64> = pids.iter().copied().filter(|pid| alive(*pid)).collect();
    assert!(left.is_empty(), "child processes left running: {left:?}");
}
