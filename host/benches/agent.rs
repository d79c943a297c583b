//! Agent benchmark: how fast `devicehub run` is ready, how much memory it holds when idle, and
//! how long a print job takes from the shipping application's request to SUCCEEDED, through the
//! emulator cloud, DeviceHub and Zebra simulators, all as separate processes on loopback.
//!
//! Prints:
//! - ready time: from starting `devicehub run` to "cloud link connected" (plugins loaded, devices
//!   attached, connected), over several starts;
//! - idle resident memory of the agent with the default plugins loaded and 4 printers attached;
//! - job latency p50 / p99 over `DEVICEHUB_BENCH_JOBS` (default 500) GIF label jobs submitted
//!   one after another through the signed HTTP API, each naming the next of the 4 printers in
//!   turn and followed to SUCCEEDED, started at most `DEVICEHUB_BENCH_RATE` (default 25) per
//!   second: the emulator, like AWS, throttles each thing's Jobs requests (100 per second; a job
//!   costs two or three: `{jobId}/get` unless `notify-next` brought the document, the
//!   IN_PROGRESS update and the final update), and a throttled request waits a second, which
//!   would measure the throttle rather than DeviceHub;
//! - throughput with 4 printers: `DEVICEHUB_BENCH_BURST` (default 200) jobs submitted at once,
//!   spread over the printers, as jobs per second from the first submission to the last
//!   SUCCEEDED.
//!
//! `DEVICEHUB_BENCH_LONG_IDLE_S=N` measures the idle agent's memory again N seconds later.
//! `DEVICEHUB_BENCH_SMAPS=FILE` saves the idle agent's `/proc/PID/smaps` to FILE, and again to
//! `FILE.after-jobs` once it is idle after the jobs.
//!
//! Run with:
//! ```sh
//! cargo build --release -p devicehub-emulator
//! cargo bench -p devicehub --bench agent
//! ```

#[path = "../tests/support.rs"]
#[allow(dead_code)]
mod support;
#[path = "../tests/support_cloud.rs"]
#[allow(dead_code)]
mod support_cloud;
#[path = "../tests/support_desk.rs"]
#[allow(dead_code)]
mod support_desk;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devicehub::cloud::registration::load_device_configuration;
use devicehub::storage::DataDir;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

use support::{http_client, Simulator, ZEBRA};
use support_cloud::Cloud;

const PRINTERS: usize = 4;
/// The default bundle's plugins (the workspace's default members): the idle memory target is
/// for an agent with all of them loaded.
const DEFAULT_PLUGINS: &[&str] = &[
    ZEBRA,
    "devicehub_driver_tspl",
    "devicehub_driver_brother_ql",
    "devicehub_driver_dymo",
    "devicehub_driver_hid_scale",
    "devicehub_driver_serial_scale",
    "devicehub_driver_text_scanner",
];
const STARTS: usize = 5;

/// Starts `devicehub run` and waits for it to be connected; returns the process and the time.
fn start_agent(config: &Path) -> (Child, Duration) {
    let start = Instant::now();
    // DEVICEHUB_BENCH_WRAP runs the agent under a tool (say `heaptrack -o FILE`), split at
    // spaces.
    let wrapper = std::env::var("DEVICEHUB_BENCH_WRAP").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut child = match words.next() {
        Some(tool) => {
            let mut command = Command::new(tool);
            command.args(words).arg(env!("CARGO_BIN_EXE_devicehub"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_devicehub")),
    };
    let mut child = child
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start devicehub run");
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("devicehub run ended before connecting"))
            .expect("read the agent's log");
        if line.contains("cloud link connected") {
            break;
        }
    }
    let ready = start.elapsed();
    // Keep draining the log so that the agent never blocks on a full pipe; warnings and errors
    // are shown, since they explain slow jobs.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("agent: {line}");
            }
        }
    });
    (child, ready)
}

fn stop_agent(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// The agent's resident set size in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    proc_field(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// What the resident set is made of: anonymous memory (heap, stacks) and file pages (the
/// binary's and the libraries' code and read-only data), in KiB.
fn rss_split_kib(pid: u32) -> Option<(u64, u64)> {
    let rollup = format!("/proc/{pid}/smaps_rollup");
    Some((
        proc_field(&rollup, "Anonymous:")?,
        proc_field(&rollup, "Pss_File:")?,
    ))
}

fn proc_field(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

struct Submitter {
    api: String,
    thing: String,
    secret: String,
    file: Vec<u8>,
    http: reqwest::Client,
}

impl Submitter {
    /// Submits the label for `device`; returns the job ID.
    async fn submit(&self, device: &str) -> String {
        let path = format!("/things/{}/print-jobs", self.thing);
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let message = format!(
            "POST\n{path}\n{timestamp}\n{}",
            hex::encode(Sha256::digest(&self.file))
        );
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key length");
        mac.update(message.as_bytes());
        let answer: Value = self
            .http
            .post(format!("{}{path}?device={device}", self.api))
            .header("content-type", "image/gif")
            .header("x-devicehub-timestamp", timestamp.to_string())
            .header(
                "x-devicehub-signature",
                hex::encode(mac.finalize().into_bytes()),
            )
            .body(self.file.clone())
            .send()
            .await
            .expect("POST print-jobs")
            .error_for_status()
            .expect("print job accepted")
            .json()
            .await
            .expect("answer JSON");
        answer["jobId"].as_str().expect("jobId").to_string()
    }

    /// Waits for the job to end; returns its status and `statusDetails`.
    async fn wait_done(&self, job_id: &str) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The emulator answers as soon as the job ends: no polling interval in the figure.
            let execution: Value = self
                .http
                .get(format!(
                    "{}/things/{}/jobs/{job_id}?waitMs=10000",
                    self.api, self.thing
                ))
                .send()
                .await
                .expect("GET job")
                .json()
                .await
                .expect("job JSON");
            let status = execution["status"].as_str().unwrap_or("").to_string();
            if !matches!(status.as_str(), "QUEUED" | "IN_PROGRESS") {
                return (status, execution["statusDetails"].clone());
            }
            assert!(Instant::now() < deadline, "job {job_id} stuck in {status}");
        }
    }

    /// Waits until none of the thing's jobs is pending; returns how many succeeded.
    async fn wait_all_done(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let executions: Vec<Value> = self
                .http
                .get(format!("{}/things/{}/jobs", self.api, self.thing))
                .send()
                .await
                .expect("GET jobs")
                .json()
                .await
                .expect("jobs JSON");
            let pending = executions
                .iter()
                .filter(|e| matches!(e["status"].as_str(), Some("QUEUED" | "IN_PROGRESS")))
                .count();
            if pending == 0 {
                return executions
                    .iter()
                    .filter(|e| e["status"] == "SUCCEEDED")
                    .count();
            }
            assert!(Instant::now() < deadline, "{pending} jobs still pending");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let jobs: usize = std::env::var("DEVICEHUB_BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let rate: f64 = std::env::var("DEVICEHUB_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(25.0);
    let burst: usize = std::env::var("DEVICEHUB_BENCH_BURST")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let cloud = Cloud::start();
    let sims: Vec<Simulator> = (0..PRINTERS)
        .map(|_| Simulator::zebra(&["--language", "zpl"]))
        .collect();
    let plugins = support::plugins_folder(DEFAULT_PLUGINS);
    let devices: String = sims
        .iter()
        .enumerate()
        .map(|(i, sim)| support_desk::zebra_row(&format!("zebra-{i}"), &sim.print_addr, ""))
        .collect();
    // The desk's state (journal, shadow, certificates) goes where DEVICEHUB_BENCH_DESK_DIR
    // says, else beside the cloud's, so that the cloud's storage and DeviceHub's can be put on
    // different disks.
    let desk = match std::env::var_os("DEVICEHUB_BENCH_DESK_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).expect("desk folder"),
        None => tempfile::tempdir().expect("desk folder"),
    };
    let support_desk::Registration {
        config,
        data_dir,
        thing,
    } = support_desk::register_prepared(support_desk::prepare_in(
        &cloud,
        desk.path(),
        plugins.path(),
        &devices,
    ));
    let data = DataDir::new(data_dir);
    let secret = load_device_configuration(&data)
        .expect("device configuration readable")
        .expect("device configuration stored")["deviceSignature"]
        .as_str()
        .expect("deviceSignature")
        .to_string();

    let mut ready_times = Vec::new();
    // A wrapped agent is started once: stopping the wrapper would leave the agent running.
    let starts = if std::env::var_os("DEVICEHUB_BENCH_WRAP").is_some() {
        1
    } else {
        STARTS
    };
    for _ in 0..starts - 1 {
        let (child, ready) = start_agent(&config);
        ready_times.push(ready);
        stop_agent(child);
    }
    let (agent, ready) = start_agent(&config);
    ready_times.push(ready);
    ready_times.sort();
    // Just after start-up, then idle: once the agent has been quiet long enough to hand
    // start-up's memory back (devicehub::memory::QUIET), and a little more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started_rss = rss_kib(agent.id());
    tokio::time::sleep(devicehub::memory::QUIET + Duration::from_secs(3)).await;
    let idle_rss = rss_kib(agent.id());
    let idle_split = rss_split_kib(agent.id());
    // Idle for longer (heartbeats, health messages, folder polls run meanwhile), when asked.
    let long_idle = std::env::var("DEVICEHUB_BENCH_LONG_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    let long_idle_rss = match long_idle {
        Some(wait) => {
            tokio::time::sleep(wait).await;
            Some((wait, rss_kib(agent.id())))
        }
        None => None,
    };
    // For finding what holds the memory: the whole map, when asked for.
    if let Some(path) = std::env::var_os("DEVICEHUB_BENCH_SMAPS") {
        let smaps = std::fs::read(format!("/proc/{}/smaps", agent.id())).expect("read smaps");
        std::fs::write(path, smaps).expect("write the smaps copy");
    }

    let submitter = Submitter {
        api: cloud.api_url.clone(),
        thing,
        secret,
        file: std::fs::read(support::fixture("label.gif")).expect("label.gif"),
        http: http_client(),
    };
    let mut latencies = Vec::with_capacity(jobs);
    // DeviceHub's own account of each job (`statusDetails`, whole milliseconds): download,
    // render and print, and its total from the start's acceptance to the printed label.
    let mut stages: [Vec<u64>; 4] = Default::default();
    let all = Instant::now();
    for n in 0..jobs {
        let due = all + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let start = Instant::now();
        let job_id = submitter.submit(&format!("zebra-{}", n % PRINTERS)).await;
        let (status, details) = submitter.wait_done(&job_id).await;
        assert_eq!(status, "SUCCEEDED", "job {job_id}");
        latencies.push(start.elapsed());
        for (stage, key) in stages
            .iter_mut()
            .zip(["downloadMs", "renderMs", "printMs", "totalMs"])
        {
            if let Some(ms) = details[key].as_str().and_then(|v| v.parse().ok()) {
                stage.push(ms);
            }
        }
    }
    let elapsed = all.elapsed();
    // The agent's first job: connections to the file server and the printer are new.
    let first_job = latencies[0];

    // Throughput: everything queued at once, spread over the printers.
    let all_at_once = Instant::now();
    for n in 0..burst {
        submitter.submit(&format!("zebra-{}", n % PRINTERS)).await;
    }
    let succeeded = submitter.wait_all_done().await;
    let burst_elapsed = all_at_once.elapsed();
    assert_eq!(succeeded, jobs + burst, "every job succeeded");
    let busy_rss = rss_kib(agent.id());
    tokio::time::sleep(devicehub::memory::QUIET + Duration::from_secs(3)).await;
    let idle_after_rss = rss_kib(agent.id());
    // A job on the agent that has released its memory while idle, code faulted back in.
    let after_idle = {
        let start = Instant::now();
        let job_id = submitter.submit("zebra-0").await;
        let (status, _) = submitter.wait_done(&job_id).await;
        assert_eq!(status, "SUCCEEDED", "job {job_id}");
        start.elapsed()
    };
    if let Some(path) = std::env::var_os("DEVICEHUB_BENCH_SMAPS") {
        let smaps = std::fs::read(format!("/proc/{}/smaps", agent.id())).expect("read smaps");
        let mut path = std::path::PathBuf::from(path).into_os_string();
        path.push(".after-jobs");
        std::fs::write(path, smaps).expect("write the smaps copy");
    }
    stop_agent(agent);
    latencies.sort();
    let printed: usize = {
        let mut total = 0;
        for sim in &sims {
            total += sim.labels().await.len();
        }
        total
    };
    assert_eq!(printed, jobs + burst + 1, "every job printed exactly once");

    println!(
        "ready (plugins loaded, {PRINTERS} printers attached, connected): median {:.1} ms, min {:.1} ms, max {:.1} ms over {starts} starts",
        ms(percentile(&ready_times, 0.5)),
        ms(ready_times[0]),
        ms(ready_times[ready_times.len() - 1])
    );
    let kib = |k: Option<u64>| k.map_or("?".to_string(), |k| k.to_string());
    println!(
        "resident memory: 1 s after ready {} KiB, idle {} KiB; right after the jobs {} KiB, idle again {} KiB",
        kib(started_rss),
        kib(idle_rss),
        kib(busy_rss),
        kib(idle_after_rss)
    );
    if let Some((wait, rss)) = long_idle_rss {
        println!(
            "resident memory idle {} s longer: {} KiB",
            wait.as_secs(),
            kib(rss)
        );
    }
    if let Some((anon, file)) = idle_split {
        println!("idle resident memory split: anonymous {anon} KiB, file pages (code) {file} KiB");
    }
    println!(
        "{jobs} GIF label jobs (812x1218, one at a time over {PRINTERS} printers, at most {rate} per second): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {:.1} jobs/s",
        ms(percentile(&latencies, 0.5)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        jobs as f64 / elapsed.as_secs_f64()
    );
    println!(
        "the agent's first job: {:.1} ms; a job after {} s idle (memory released): {:.1} ms",
        ms(first_job),
        (devicehub::memory::QUIET + Duration::from_secs(3)).as_secs(),
        ms(after_idle)
    );
    let median = |values: &mut Vec<u64>| {
        values.sort_unstable();
        values.get(values.len() / 2).copied().unwrap_or(0)
    };
    let [download, render, print, total] = &mut stages;
    println!(
        "inside DeviceHub per job (statusDetails, medians, whole ms): download {} ms, render {} ms, print {} ms, total from acceptance {} ms",
        median(download),
        median(render),
        median(print),
        median(total)
    );
    println!(
        "{burst} GIF label jobs queued at once over {PRINTERS} printers: all SUCCEEDED in {:.0} ms, {:.1} jobs/s",
        ms(burst_elapsed),
        burst as f64 / burst_elapsed.as_secs_f64()
    );
}
