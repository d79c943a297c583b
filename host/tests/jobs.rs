//! Print jobs end to end: the real emulator cloud, a Zebra simulator process, a device registered
//! with `devicehub register`, and `devicehub run` as its own process. Jobs are submitted through
//! the emulator's command line (the shipping application's side) and followed through its HTTP API.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use devicehub::cloud::jobs::{DownloadSettings, JobsSettings, JobsTask};
use devicehub::cloud::registration::load_device_configuration;
use devicehub::devices::{self, Connection, DeviceSpec, DeviceTable};
use devicehub::plugins::{PluginSet, Selection};
use devicehub::storage::{DataDir, JobState};
use devicehub_plugin_api::Setting;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{self, http_client, Simulator, ZEBRA};
use crate::support_cloud::{start_link, Cloud};
use crate::support_desk::{self, emulator_cli as emulator, zebra_row, Agent};

/// The longest a test waits for a job to finish. Generous for a loaded machine (the agent has
/// to start, connect and print first); a passing test never waits this long.
const JOB_WAIT: Duration = Duration::from_secs(60);
/// The device ID of the simulator in the agent's config.
const PRINTER: &str = "zebra-1";

/// A shipping desk: the cloud, a printer, and an installation registered with the cloud.
struct Desk {
    cloud: Cloud,
    sim: Simulator,
    _plugins: tempfile::TempDir,
    config: PathBuf,
    data_dir: PathBuf,
    thing: String,
}

impl Desk {
    fn new() -> Desk {
        Desk::with_devices("")
    }

    /// A desk whose device table starts with `devices_first` (TOML `[[devices]]` rows), before
    /// the simulator's row.
    fn with_devices(devices_first: &str) -> Desk {
        Desk::with_plugins(devices_first, &[ZEBRA])
    }

    /// [`Desk::with_devices`] with the plugin libraries `libraries` in its plugins folder.
    fn with_plugins(devices_first: &str, libraries: &[&str]) -> Desk {
        let cloud = Cloud::start();
        let sim = Simulator::zebra(&["--language", "zpl"]);
        let plugins = support::plugins_folder(libraries);
        let devices = format!("{devices_first}{}", zebra_row(PRINTER, &sim.print_addr, ""));
        let registration = support_desk::register(&cloud, plugins.path(), &devices);
        Desk {
            cloud,
            sim,
            _plugins: plugins,
            config: registration.config,
            data_dir: registration.data_dir,
            thing: registration.thing,
        }
    }

    /// Starts `devicehub run`.
    fn run(&self) -> Agent {
        Agent::start(&self.config, &self.data_dir.join("..").join("run.log"))
    }

    /// Submits a print job for a fixture file and returns its job ID.
    fn print_job(&self, fixture: &str, copies: u32) -> String {
        let file = support::fixture(fixture);
        let output = emulator(
            &self.cloud,
            &[
                "job",
                "print",
                &self.thing,
                file.to_str().expect("UTF-8 path"),
                "--copies",
                &copies.to_string(),
                "--json",
            ],
        );
        job_id(&output.stdout)
    }

    /// Submits a print job for a fixture file naming `device` and returns its job ID.
    fn print_job_on(&self, fixture: &str, device: &str) -> String {
        let file = support::fixture(fixture);
        let output = emulator(
            &self.cloud,
            &[
                "job",
                "print",
                &self.thing,
                file.to_str().expect("UTF-8 path"),
                "--device",
                device,
                "--json",
            ],
        );
        job_id(&output.stdout)
    }

    /// Asks for a scale reading in `unit` and returns the job ID.
    fn scale_job_in(&self, unit: &str) -> String {
        let output = emulator(
            &self.cloud,
            &["job", "scale", &self.thing, "--unit", unit, "--json"],
        );
        job_id(&output.stdout)
    }

    /// Asks for a scale reading and returns the job ID.
    fn scale_job(&self) -> String {
        let output = emulator(&self.cloud, &["job", "scale", &self.thing, "--json"]);
        job_id(&output.stdout)
    }

    /// Submits a print job by URL through the shipping application's API, signed with the
    /// thing's `deviceSignature` as the application signs it; returns the job ID.
    async fn print_by_url(&self, file: Value) -> String {
        let configuration = load_device_configuration(&DataDir::new(self.data_dir.clone()))
            .expect("device configuration readable")
            .expect("device configuration stored");
        let secret = configuration["deviceSignature"]
            .as_str()
            .expect("deviceSignature");
        let path = format!("/things/{}/print-jobs", self.thing);
        let body = file.to_string().into_bytes();
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let message = format!(
            "POST\n{path}\n{timestamp}\n{}",
            hex::encode(Sha256::digest(&body))
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(message.as_bytes());
        let answer: Value = http_client()
            .post(format!("{}{path}", self.cloud.api_url))
            .header("content-type", "application/json")
            .header("x-devicehub-timestamp", timestamp.to_string())
            .header(
                "x-devicehub-signature",
                hex::encode(mac.finalize().into_bytes()),
            )
            .body(body)
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

    /// The job execution as the cloud sees it.
    async fn execution(&self, job_id: &str) -> Value {
        http_client()
            .get(format!(
                "{}/things/{}/jobs/{job_id}",
                self.cloud.api_url, self.thing
            ))
            .send()
            .await
            .expect("GET job")
            .error_for_status()
            .expect("job answered")
            .json()
            .await
            .expect("job JSON")
    }

    /// Waits until the job reaches a terminal status and returns the execution.
    async fn wait_done(&self, job_id: &str, agent: &mut Agent) -> Value {
        let deadline = Instant::now() + JOB_WAIT;
        loop {
            let execution = self.execution(job_id).await;
            let status = execution["status"].as_str().unwrap_or("").to_string();
            if !matches!(status.as_str(), "QUEUED" | "IN_PROGRESS") {
                return execution;
            }
            if let Some(exit) = agent.exited() {
                panic!(
                    "devicehub run ended ({exit}) with job {job_id} still {status}:\n{}",
                    agent.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id} still {status} after {JOB_WAIT:?}:\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The journal, read from disk.
    fn journal_state(&self, job_id: &str) -> Option<JobState> {
        let (journal, _) = DataDir::new(self.data_dir.clone())
            .open_journal()
            .expect("journal readable");
        journal.get(job_id).map(|entry| entry.state.clone())
    }

    /// Changes a job execution in the stopped emulator's state: the record is appended to the
    /// jobs log, where the last record of an execution is the one that counts, each line being
    /// `<crc32 hex> <JSON>` as the emulator writes it.
    fn edit_execution(&self, job_id: &str, edit: impl FnOnce(&mut Value)) {
        let log = self.cloud.dir.path().join("jobs").join("executions.log");
        let text = std::fs::read_to_string(&log).expect("read the jobs log");
        let mut stored: Value = text
            .lines()
            .rev()
            .filter_map(|line| line.split_once(' '))
            .map(|(_, record)| serde_json::from_str::<Value>(record).expect("a JSON record"))
            .find(|record| record["job_id"] == job_id)
            .unwrap_or_else(|| panic!("no record of job {job_id} in {}", log.display()));
        edit(&mut stored);
        let record = serde_json::to_string(&stored).expect("encode");
        let line = format!("{:08x} {record}\n", crc32fast::hash(record.as_bytes()));
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open the jobs log");
        std::io::Write::write_all(&mut file, line.as_bytes()).expect("append to the jobs log");
    }
}

fn job_id(stdout: &[u8]) -> String {
    let answer: Value = serde_json::from_slice(stdout).expect("job answer JSON");
    answer["jobId"]
        .as_str()
        .unwrap_or_else(|| panic!("no jobId in {answer}"))
        .to_string()
}

fn detail<'a>(execution: &'a Value, key: &str) -> &'a str {
    execution["statusDetails"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no statusDetails.{key} in {execution}"))
}

#[tokio::test]
async fn a_print_job_is_printed_once_dot_for_dot_and_reported() {
    let desk = Desk::new();
    let mut agent = desk.run();
    let job = desk.print_job("indicia.gif", 2);
    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");

    let expected = support::render_for_zebra(&support::fixture("indicia.gif"));
    let file_size = std::fs::metadata(support::fixture("indicia.gif"))
        .expect("fixture size")
        .len();
    assert_eq!(detail(&execution, "device"), PRINTER);
    assert_eq!(detail(&execution, "copies"), "2");
    assert_eq!(
        detail(&execution, "labels"),
        (expected.len() * 2).to_string()
    );
    assert_eq!(detail(&execution, "bytes"), file_size.to_string());
    for key in [
        "printerBytes",
        "downloadMs",
        "renderMs",
        "printMs",
        "totalMs",
    ] {
        detail(&execution, key)
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("statusDetails.{key} is not a number: {e}"));
    }

    let labels = desk.sim.labels().await;
    assert_eq!(labels.len(), expected.len(), "labels recorded: {labels:?}");
    for (page, want) in expected.iter().enumerate() {
        assert_eq!(labels[page]["copies"], json!(2));
        let got = desk.sim.label_bitmap(page).await;
        support::assert_same_bitmap(want, &got, &format!("page {page}"));
    }
    assert!(desk.sim.errors().await.is_empty());

    #[cfg(unix)]
    {
        let exit = agent.terminate().await;
        assert!(
            exit.success(),
            "exit {exit} after SIGTERM:\n{}",
            agent.log()
        );
    }
    assert!(
        matches!(desk.journal_state(&job), Some(JobState::Succeeded { .. })),
        "journal: {:?}",
        desk.journal_state(&job)
    );
    // The service also logs to the size-capped file in its data directory.
    let log_file = std::fs::read_to_string(desk.data_dir.join("logs").join("devicehub.log"))
        .expect("devicehub.log in the data directory");
    assert!(
        log_file.contains("cloud link connected"),
        "log file: {log_file}"
    );
}

#[tokio::test]
async fn a_second_agent_on_the_same_data_directory_is_refused_and_nothing_prints_twice() {
    let desk = Desk::new();
    let mut first = desk.run();
    let job = desk.print_job("indicia.gif", 1);
    let execution = desk.wait_done(&job, &mut first).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");

    let mut second = Agent::start(&desk.config, &desk.data_dir.join("..").join("second.log"));
    let deadline = Instant::now() + JOB_WAIT;
    let exit = loop {
        if let Some(exit) = second.exited() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the second agent kept running:\n{}",
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!exit.success(), "the second agent exited {exit}");
    let log = second.log();
    assert!(
        log.contains("is already running") && log.contains(&format!("(process {})", first.id())),
        "the refusal names the running agent:\n{log}"
    );

    // The first agent keeps its session and prints the next job, once.
    assert!(
        first.exited().is_none(),
        "the first agent stopped:\n{}",
        first.log()
    );
    let next = desk.print_job("indicia.gif", 1);
    let execution = desk.wait_done(&next, &mut first).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let expected = support::render_for_zebra(&support::fixture("indicia.gif"));
    assert_eq!(desk.sim.labels().await.len(), expected.len() * 2);
}

#[tokio::test]
async fn paper_out_fails_the_job_naming_it_and_prints_nothing() {
    let desk = Desk::new();
    desk.sim.set_faults(json!({ "paper_out": true })).await;
    let mut agent = desk.run();
    let job = desk.print_job("label.png", 1);
    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = detail(&execution, "reason");
    assert!(
        reason.starts_with("printer not ready: paper out"),
        "{reason}"
    );

    // Nothing was sent: clearing the fault prints no held label.
    desk.sim.set_faults(json!({})).await;
    assert!(desk.sim.labels().await.is_empty());
    assert!(matches!(
        desk.journal_state(&job),
        Some(JobState::Failed { .. })
    ));
}

#[tokio::test]
async fn a_printer_that_drops_the_connection_fails_the_job_once_and_the_next_job_prints() {
    let desk = Desk::new();
    let mut agent = desk.run();
    // The first job goes through, so that the connection is up; the next is cut after its
    // status query and the first 200 bytes of the label.
    let first = desk.print_job("label.png", 1);
    assert_eq!(
        desk.wait_done(&first, &mut agent).await["status"],
        "SUCCEEDED"
    );
    desk.sim
        .set_faults(json!({ "drop_after_bytes": 203 }))
        .await;
    let cut = desk.print_job("label.png", 1);
    let execution = desk.wait_done(&cut, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = detail(&execution, "reason");
    assert!(
        reason.contains("zebra-1"),
        "the reason names the printer: {reason}"
    );
    assert!(matches!(
        desk.journal_state(&cut),
        Some(JobState::Failed { .. })
    ));
    // The fault fired once: the next job reconnects and prints; the cut one never comes back.
    let next = desk.print_job("label.png", 1);
    assert_eq!(
        desk.wait_done(&next, &mut agent).await["status"],
        "SUCCEEDED"
    );
    assert_eq!(
        desk.sim.labels().await.len(),
        2,
        "the cut label is not a label"
    );
    assert_eq!(desk.execution(&cut).await["status"], "FAILED");
}

#[tokio::test]
async fn jobs_flowing_while_the_broker_restarts_are_each_printed_once() {
    let mut desk = Desk::new();
    let mut agent = desk.run();
    let first = desk.print_job("label.png", 1);
    assert_eq!(
        desk.wait_done(&first, &mut agent).await["status"],
        "SUCCEEDED"
    );

    // Jobs are queued and the cloud restarts while DeviceHub is taking them: starts, reports
    // and answers are lost with the connection at whatever point it is cut.
    let jobs: Vec<String> = (0..6).map(|_| desk.print_job("indicia.gif", 1)).collect();
    desk.cloud.kill();
    desk.cloud.restart();
    let more: Vec<String> = (0..3).map(|_| desk.print_job("indicia.gif", 1)).collect();

    // DeviceHub kept running: every print finished, and every status reached the cloud
    // after the reconnection.
    for job in jobs.iter().chain(&more) {
        let execution = desk.wait_done(job, &mut agent).await;
        assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    }
    assert_eq!(
        desk.sim.labels().await.len(),
        1 + jobs.len() + more.len(),
        "every job printed exactly once"
    );
    let log = agent.log();
    assert!(
        !log.contains("cannot go from"),
        "no job tried to print twice:\n{log}"
    );
}

#[tokio::test]
async fn unknown_operations_and_scale_reads_without_a_scale_are_rejected() {
    let mut desk = Desk::new();
    let scale = desk.scale_job();
    // The shipping application's API only creates print and scale documents; AWS's CreateJob
    // takes any document. A job with an operation DeviceHub does not know is made by editing a
    // queued job's document in the stopped emulator's state.
    let unknown = desk.scale_job();
    let elsewhere = desk.scale_job();
    desk.cloud.kill();
    let edit = |job: &str, document: Value| {
        desk.edit_execution(job, |stored| stored["job_document"] = document);
    };
    edit(
        &unknown,
        json!({"operation": "label.fold", "corner": "top-left"}),
    );
    edit(
        &elsewhere,
        json!({"operation": "print", "device": "zebra-9",
               "file": {"url": "https://localhost:1/files/x.png", "format": "png"}}),
    );
    desk.cloud.restart();

    let mut agent = desk.run();
    let execution = desk.wait_done(&scale, &mut agent).await;
    assert_eq!(execution["status"], "REJECTED", "{execution}");
    assert_eq!(detail(&execution, "reason"), "no scale is attached");

    let execution = desk.wait_done(&unknown, &mut agent).await;
    assert_eq!(execution["status"], "REJECTED", "{execution}");
    let reason = detail(&execution, "reason");
    assert!(
        reason.starts_with("unknown operation \"label.fold\""),
        "{reason}"
    );

    let execution = desk.wait_done(&elsewhere, &mut agent).await;
    assert_eq!(execution["status"], "REJECTED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "no such device: 'zebra-9' is not attached"
    );
    assert!(desk.sim.labels().await.is_empty());
}

#[tokio::test]
async fn a_job_interrupted_mid_print_is_reported_not_printed_again() {
    let desk = Desk::new();
    // Two jobs queued while DeviceHub is down. The journal says the first was being printed
    // when DeviceHub died, and the second printed but its report never reached the cloud.
    let interrupted = desk.print_job("indicia.gif", 1);
    let printed = desk.print_job("label.png", 1);
    {
        let (mut journal, _) = DataDir::new(desk.data_dir.clone())
            .open_journal()
            .expect("journal");
        for job in [&interrupted, &printed] {
            journal.record(job, JobState::Received).expect("received");
            journal
                .record(
                    job,
                    JobState::Printing {
                        device: PRINTER.into(),
                    },
                )
                .expect("printing");
        }
        journal
            .record(
                &printed,
                JobState::Succeeded {
                    summary: "printed 1 label(s) on zebra-1".into(),
                },
            )
            .expect("succeeded");
    }

    let mut agent = desk.run();
    let execution = desk.wait_done(&interrupted, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "interrupted while printing on zebra-1; it may have printed: check before reprinting"
    );
    let execution = desk.wait_done(&printed, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(
        detail(&execution, "summary"),
        "printed 1 label(s) on zebra-1"
    );
    assert_eq!(detail(&execution, "replayed"), "true");

    assert!(desk.sim.labels().await.is_empty(), "nothing printed twice");
    assert!(matches!(
        desk.journal_state(&interrupted),
        Some(JobState::Failed { .. })
    ));
}

#[tokio::test]
async fn a_file_that_does_not_match_its_hash_or_link_is_not_printed() {
    let desk = Desk::new();
    let mut agent = desk.run();
    // A real job first, for a URL the emulator signed.
    let first = desk.print_job("label.png", 1);
    let execution = desk.wait_done(&first, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let printed = desk.sim.labels().await.len();
    let url = execution["jobDocument"]["file"]["url"]
        .as_str()
        .expect("file URL")
        .to_string();

    let wrong_hash = desk
        .print_by_url(json!({"url": url, "format": "png", "sha256": "0".repeat(64)}))
        .await;
    let execution = desk.wait_done(&wrong_hash, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = detail(&execution, "reason");
    assert!(reason.starts_with("file hash mismatch"), "{reason}");

    let (base, _) = url.split_once("&signature=").expect("signed URL");
    let tampered = format!("{base}&signature={}", "0".repeat(64));
    let forbidden = desk
        .print_by_url(json!({"url": tampered, "format": "png"}))
        .await;
    let execution = desk.wait_done(&forbidden, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    let reason = detail(&execution, "reason");
    assert!(
        reason.starts_with("download failed: the file server answered 403"),
        "{reason}"
    );
    assert!(
        !reason.contains("signature="),
        "the URL is not reported: {reason}"
    );

    assert_eq!(
        desk.sim.labels().await.len(),
        printed,
        "nothing more printed"
    );
    assert!(!agent.log().contains(&url), "the signed URL is not logged");
}

#[tokio::test]
async fn printers_print_in_parallel_and_each_takes_one_job_at_a_time() {
    // A printer that takes the connection and never answers: the job sent to it stays in
    // progress for the whole test (its status query waits ten minutes).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().collect();
        drop(held);
    });
    let desk = Desk::with_devices(&zebra_row(
        "silent-1",
        &silent_addr,
        "[devices.settings]\nstatus_timeout_ms = \"600000\"\n",
    ));
    let mut agent = desk.run();

    // The first printer in the config is the default: the first job goes to the silent one.
    let stuck = desk.print_job("indicia.gif", 1);
    let deadline = Instant::now() + JOB_WAIT;
    while desk.journal_state(&stuck)
        != Some(JobState::Printing {
            device: "silent-1".into(),
        })
    {
        assert!(
            Instant::now() < deadline,
            "the first job never reached the silent printer:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let waiting = desk.print_job_on("label.png", "silent-1");
    let other = desk.print_job_on("label.png", PRINTER);

    // The other printer prints while the silent one is busy.
    let execution = desk.wait_done(&other, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(detail(&execution, "device"), PRINTER);
    assert_eq!(
        desk.sim.labels().await.len(),
        support::render_for_zebra(&support::fixture("label.png")).len()
    );
    // The silent printer still has its first job, and its second waits its turn, unstarted.
    assert_eq!(desk.execution(&stuck).await["status"], "IN_PROGRESS");
    let second = desk.execution(&waiting).await;
    assert_eq!(second["status"], "QUEUED", "{second}");
    assert_eq!(
        desk.journal_state(&waiting),
        None,
        "never handed to a printer"
    );
}

#[tokio::test]
async fn a_job_redelivered_after_success_is_answered_from_the_journal_not_printed_again() {
    let mut desk = Desk::new();
    let mut agent = desk.run();
    let job = desk.print_job("indicia.gif", 1);
    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let printed = desk.sim.labels().await.len();
    assert!(printed > 0);

    // The cloud comes back without the status: the execution is in progress again, as if the
    // report had never arrived, and the job is delivered again.
    desk.cloud.kill();
    desk.edit_execution(&job, |stored| {
        stored["status"] = json!("IN_PROGRESS");
        stored["status_details"] = json!({});
    });
    desk.cloud.restart();

    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(detail(&execution, "replayed"), "true");
    assert_eq!(
        detail(&execution, "summary"),
        "printed 1 label(s) on zebra-1"
    );
    assert_eq!(desk.sim.labels().await.len(), printed, "not printed again");
}

#[tokio::test]
async fn a_job_queued_while_the_link_was_down_is_taken_after_the_reconnection() {
    let mut desk = Desk::new();
    let mut agent = desk.run();
    let first = desk.print_job("indicia.gif", 1);
    let execution = desk.wait_done(&first, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");

    // The cloud restarts and forgets every MQTT session; the job is created before DeviceHub
    // is back, so its notification reaches nobody. Only asking after the reconnection finds it.
    desk.cloud.kill();
    desk.cloud.restart();
    let second = desk.print_job("label.png", 1);
    let execution = desk.wait_done(&second, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    let expected = support::render_for_zebra(&support::fixture("indicia.gif")).len()
        + support::render_for_zebra(&support::fixture("label.png")).len();
    assert_eq!(
        desk.sim.labels().await.len(),
        expected,
        "each job printed once"
    );
}

#[tokio::test]
async fn devicehub_killed_mid_print_reports_the_job_instead_of_printing_it_again() {
    // A printer that takes the connection and never answers: the print stays in progress (the
    // status query waits ten minutes) until DeviceHub is killed.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("address");
    let held = std::thread::spawn(move || {
        let (connection, _) = silent.accept().expect("DeviceHub connects");
        connection
    });
    let desk = Desk::with_devices(&format!(
        "[[devices]]\nid = \"silent-1\"\naddress = \"tcp://{silent_addr}\"\n\
         usb_id = \"0A5F:0141\"\nprofile = \"zpl-203\"\n\
         settings = {{ status_timeout_ms = \"600000\" }}\n"
    ));
    let agent = desk.run();
    let job = desk.print_job("indicia.gif", 1);
    let deadline = Instant::now() + JOB_WAIT;
    while desk.journal_state(&job)
        != Some(JobState::Printing {
            device: "silent-1".into(),
        })
    {
        assert!(
            Instant::now() < deadline,
            "job {job} never reached the printer; journal {:?}:\n{}",
            desk.journal_state(&job),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _connection = held.join().expect("the silent printer was connected to");
    drop(agent);

    let mut agent = desk.run();
    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "interrupted while printing on silent-1; it may have printed: check before reprinting"
    );
    assert!(desk.sim.labels().await.is_empty());
}

#[tokio::test]
async fn stopping_while_printing_waits_then_reports_the_job_failed() {
    // The jobs task in-process, so that the shutdown grace can be short: a printer that never
    // answers holds the print past it.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("address").to_string();
    let held = std::thread::spawn(move || silent.accept().map(|(connection, _)| connection));
    let cloud = Cloud::start();
    let identity = cloud.thing("desk-stop");
    let plugins_dir = support::plugins_folder(&[ZEBRA]);
    let plugins = PluginSet::load_dir(
        plugins_dir.path(),
        Selection::AllLibraries,
        &support::test_trust(),
    );
    let chosen = devices::choose_plugin(&plugins, Some((0x0A5F, 0x0141)), None).expect("zebra");
    let spec = DeviceSpec {
        id: "silent-1".into(),
        kind: chosen.plugin.manifest.kind,
        plugin: chosen.plugin,
        profile: "zpl-203".into(),
        model: chosen.model,
        usb_id: Some((0x0A5F, 0x0141)),
        connection: Some(Connection::Tcp(silent_addr)),
        settings: vec![Setting::new("status_timeout_ms", "3000")],
    };
    let table = Arc::new(DeviceTable::default());
    let transport =
        devices::open_transport(spec.connection.as_ref().expect("tcp"), None).expect("transport");
    table.attach(spec, transport).expect("attach");
    let data = tempfile::tempdir().expect("data dir");
    let data_dir = DataDir::new(data.path().to_path_buf());
    let (journal, _) = data_dir.open_journal().expect("journal");

    let (link, link_shutdown) = start_link(cloud.link_config(identity.clone(), cloud.mutual_tls()));
    let jobs = JobsTask::new(
        JobsSettings {
            thing_name: identity.thing_name.clone(),
            download: DownloadSettings {
                ca_bundle_pem: identity.ca_bundle_pem.clone(),
                ..DownloadSettings::default()
            },
            shutdown_grace: Duration::from_millis(200),
            preferred_devices: vec!["silent-1".into()],
            settings: None,
        },
        link.handle.clone(),
        table.clone(),
        journal,
    )
    .expect("jobs task");
    let jobs_shutdown = tokio_util::sync::CancellationToken::new();
    let jobs_task = tokio::spawn(jobs.run(link.incoming, jobs_shutdown.clone()));

    let output = emulator(
        &cloud,
        &[
            "job",
            "print",
            "desk-stop",
            support::fixture("indicia.gif")
                .to_str()
                .expect("UTF-8 path"),
            "--json",
        ],
    );
    let job = job_id(&output.stdout);
    let deadline = Instant::now() + JOB_WAIT;
    let printing = || {
        DataDir::new(data.path().to_path_buf())
            .open_journal()
            .expect("journal")
            .0
            .get(&job)
            .map(|entry| entry.state.clone())
    };
    while printing()
        != Some(JobState::Printing {
            device: "silent-1".into(),
        })
    {
        assert!(
            Instant::now() < deadline,
            "the job never reached the printer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    jobs_shutdown.cancel();
    jobs_task
        .await
        .expect("the jobs task ends")
        .expect("without error");
    // The jobs task waited for the cloud to confirm its report before it ended.
    link_shutdown.cancel();
    link.task.await.expect("the link task ends");
    assert!(matches!(printing(), Some(JobState::Failed { .. })));

    let execution: Value = http_client()
        .get(format!("{}/things/desk-stop/jobs/{job}", cloud.api_url))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("job JSON");
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "DeviceHub stopped while printing on silent-1; it may have printed: check before reprinting"
    );
    // The device thread gives up on the silent printer after its status timeout.
    table.shutdown();
    drop(held.join());
}

#[tokio::test]
async fn run_before_registration_waits_then_connects_when_registered() {
    let cloud = Cloud::start();
    let sim = Simulator::zebra(&["--language", "zpl"]);
    let plugins = support::plugins_folder(&[ZEBRA]);
    let prepared = support_desk::prepare(
        &cloud,
        plugins.path(),
        &zebra_row(PRINTER, &sim.print_addr, ""),
    );
    let log = prepared
        .config
        .parent()
        .expect("the config is in the desk folder")
        .join("run.log");
    let mut agent = Agent::start(&prepared.config, &log);
    let deadline = Instant::now() + JOB_WAIT;
    while !agent.log().contains("devicehub register --code CODE") {
        assert!(
            agent.exited().is_none(),
            "devicehub run ended without registration:\n{}",
            agent.log()
        );
        assert!(
            Instant::now() < deadline,
            "no registration hint:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent.log().contains("not registered"), "{}", agent.log());

    // Registering from another process: the waiting agent notices, connects and prints.
    let registration = support_desk::register_prepared(prepared);
    let desk = Desk {
        cloud,
        sim,
        _plugins: plugins,
        config: registration.config,
        data_dir: registration.data_dir,
        thing: registration.thing,
    };
    let job = desk.print_job("indicia.gif", 1);
    let execution = desk.wait_done(&job, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert!(agent.terminate().await.success(), "{}", agent.log());
}

#[tokio::test]
async fn run_without_registration_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("devicehub.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[usb]\nenabled = false\n[cloud]\nendpoint = \"localhost\"\n\
             [local]\nws_port = 0\nhttp_port = 0\nrpc_port = 0\nrpc_publish_port = 0\n",
            data.to_str().expect("UTF-8 path").replace('\\', "/")
        ),
    )
    .expect("write config");
    let mut agent = Agent::start(&config, &dir.path().join("run.log"));
    let deadline = Instant::now() + JOB_WAIT;
    while !agent.log().contains("not registered") {
        assert!(agent.exited().is_none(), "{}", agent.log());
        assert!(Instant::now() < deadline, "no hint:\n{}", agent.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(agent.terminate().await.success(), "{}", agent.log());
    assert!(agent.log().contains("DeviceHub stopped"), "{}", agent.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scale_job_returns_the_stable_weight_or_the_reason_it_has_none() {
    let scale = crate::scales::SerialScale::start("mt-sics");
    scale.set(json!({"weight": "1.250", "unit": "lb"})).await;
    let row = format!(
        "[[devices]]\nid = \"bench-scale\"\naddress = \"serial://{}\"\n\
         plugin = \"serial-scale\"\nprofile = \"mt-sics\"\n\
         [devices.settings]\npoll_interval_ms = \"20\"\n",
        scale.pty
    );
    let desk = Desk::with_plugins(&row, &[ZEBRA, crate::scales::SERIAL_SCALE]);
    let in_kg = desk.scale_job_in("kg");
    let mut agent = desk.run();
    let execution = desk.wait_done(&in_kg, &mut agent).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}");
    assert_eq!(detail(&execution, "device"), "bench-scale");
    assert_eq!(detail(&execution, "state"), "stable");
    // 1.250 lb is 566 990 462.5 ug, rounded once; a 0.001 lb step is 0.45 g: four decimals
    // of a kilogram.
    assert_eq!(detail(&execution, "micrograms"), "566990463");
    assert_eq!(detail(&execution, "value"), "0.5670");
    assert_eq!(detail(&execution, "unit"), "kg");
    assert_eq!(detail(&execution, "resolutionMicrograms"), "453592");

    // With the link up the scale is read in the background, and its reading reaches the
    // cloud's scale topic.
    let topic = format!("devicehub/{}/scale", desk.thing);
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        let messages = desk.cloud.messages(&desk.thing).await;
        let published = messages
            .iter()
            .find(|m| m["topic"] == topic.as_str() && m["payload"]["micrograms"] == 566_990_463);
        if let Some(message) = published {
            let reading = &message["payload"];
            assert_eq!(reading["device"], "bench-scale", "{reading}");
            assert_eq!(reading["value"], "1.250", "{reading}");
            assert_eq!(reading["unit"], "lb", "{reading}");
            assert_eq!(reading["state"], "stable", "{reading}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reading on {topic}: {messages:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A weight that never settles: the job waits its default 5000 ms and says so.
    scale.set(json!({"motion_reads": 1_000_000})).await;
    let moving = desk.scale_job();
    let execution = desk.wait_done(&moving, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "scale 'bench-scale' still in motion after 5000 ms"
    );
    scale.set(json!({"motion_reads": 0})).await;

    scale.set(json!({"condition": "over-capacity"})).await;
    let over = desk.scale_job();
    let execution = desk.wait_done(&over, &mut agent).await;
    assert_eq!(execution["status"], "FAILED", "{execution}");
    assert_eq!(
        detail(&execution, "reason"),
        "scale 'bench-scale' over capacity"
    );
    assert!(desk.sim.labels().await.is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn sigterm_during_a_cloud_print_finishes_it_reports_it_and_prints_it_once() {
    let held_sim = Simulator::zebra(&["--language", "zpl"]);
    let relay = crate::rpc::HeldPrinter::start(&held_sim.print_addr);
    let desk = Desk::with_devices(&zebra_row("held-1", &relay.addr, ""));
    let agent = desk.run();
    let job = desk.print_job_on("indicia.gif", "held-1");
    relay.wait_held(&agent).await;
    // The cloud hears that the job started before the agent is stopped.
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        let status = desk.execution(&job).await["status"].clone();
        if status == "IN_PROGRESS" {
            break;
        }
        assert_eq!(status, "QUEUED", "the held job ended early");
        assert!(
            Instant::now() < deadline,
            "job {job} never reported IN_PROGRESS"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let log = desk.data_dir.join("..").join("run.log");
    let (exit, agent_log) = crate::rpc::terminate_releasing(agent, &log, &relay).await;
    assert!(exit.success(), "exit {exit} after SIGTERM:\n{agent_log}");
    // The outcome left before the link closed, and the journal holds it.
    let execution = desk.execution(&job).await;
    assert_eq!(execution["status"], "SUCCEEDED", "{execution}\n{agent_log}");
    assert_eq!(detail(&execution, "device"), "held-1");
    assert!(
        matches!(desk.journal_state(&job), Some(JobState::Succeeded { .. })),
        "journal: {:?}",
        desk.journal_state(&job)
    );
    assert_eq!(held_sim.labels().await.len(), 1, "printed exactly once");
    assert!(
        desk.sim.labels().await.is_empty(),
        "not sent to the other printer"
    );
}
