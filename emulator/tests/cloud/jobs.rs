//! Jobs rows over the wire, driven by signed print and scale requests to the HTTP API, and the
//! signed HTTPS URLs print files are downloaded from. The rows that involve MQTT run against the
//! embedded broker and against Mosquitto: the jobs service publishes its answers and
//! notifications on the thing's topics, which AWS and both brokers deliver to every subscriber of
//! that thing, so the same assertions hold on both.

use devicehub_emulator::cloud::jobs::DEFAULT_REQUESTS_PER_THING_PER_SECOND;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{eventually, on_both_brokers, Broker, Credentials, Emulator, Mqtt};

on_both_brokers!(
    a_signed_print_job_reaches_the_device_which_downloads_the_file_and_reports_success,
    a_scale_request_is_a_job_and_the_reading_shows_in_the_things_messages,
    a_print_job_by_url_carries_the_url_and_a_signed_cancel_reaches_the_device,
    get_lists_pending_jobs_and_start_next_takes_the_oldest_queued_one,
    a_stale_expected_version_is_a_version_mismatch_with_the_execution_state,
    an_expired_step_timer_moves_the_execution_to_timed_out,
    a_job_cancelled_while_in_progress_is_canceled_for_the_device,
    malformed_or_unknown_requests_are_rejected_with_their_codes,
    requests_beyond_the_per_second_allowance_are_throttled_until_the_clock_moves,
);

/// A minimal valid PNG: the signature and an IHDR/IEND are enough for format detection.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00\x3a\x7e\x9b\x55\x00\x00\x00\x00IEND\xae\x42\x60\x82";

async fn jobs_session(emulator: &Emulator, thing: &Credentials) -> Mqtt {
    let mut mqtt = emulator.connect("desk-1", thing).await;
    mqtt.subscribe_ok(&["$aws/things/desk-1/jobs/#"]).await;
    mqtt
}

async fn a_signed_print_job_reaches_the_device_which_downloads_the_file_and_reports_success(
    broker: Broker,
) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let mut mqtt = jobs_session(&emulator, &thing).await;

    let created = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "?copies=2",
            "image/png",
            PNG.to_vec(),
            &secret,
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    let job_id = created["jobId"].as_str().expect("job id").to_string();

    let notify = mqtt
        .expect_json("$aws/things/desk-1/jobs/notify-next")
        .await;
    let execution = &notify["execution"];
    assert_eq!(execution["jobId"], job_id.as_str());
    assert_eq!(execution["status"], "QUEUED");
    let document = &execution["jobDocument"];
    assert_eq!(document["operation"], "print");
    assert_eq!(document["copies"], 2);
    assert_eq!(document["file"]["format"], "png");
    assert_eq!(document["file"]["size"], PNG.len());
    assert_eq!(document["file"]["sha256"], hex::encode(Sha256::digest(PNG)));

    let url = document["file"]["url"].as_str().expect("url");
    assert!(url.starts_with("https://"));
    let downloaded = emulator.http().get(url).send().await.expect("download");
    assert_eq!(downloaded.status(), 200);
    assert_eq!(downloaded.headers()["content-type"], "image/png");
    assert_eq!(downloaded.bytes().await.expect("bytes").as_ref(), PNG);
    let tampered = url.replace("signature=", "signature=00");
    assert_eq!(
        emulator
            .http()
            .get(tampered)
            .send()
            .await
            .expect("download")
            .status(),
        403
    );

    mqtt.publish(
        "$aws/things/desk-1/jobs/start-next",
        json!({"clientToken": "s-1"}).to_string(),
    )
    .await;
    let started = mqtt
        .expect_json("$aws/things/desk-1/jobs/start-next/accepted")
        .await;
    assert_eq!(started["execution"]["status"], "IN_PROGRESS");
    assert_eq!(started["clientToken"], "s-1");

    // The shipping application may wait for the end instead of polling: a short wait ends with
    // the status then, a long one with the end as soon as it comes; too long a wait is refused.
    let job_url = emulator.api(&format!("/things/desk-1/jobs/{job_id}"));
    let waited: Value = emulator
        .http()
        .get(format!("{job_url}?waitMs=50"))
        .send()
        .await
        .expect("GET job, waiting")
        .json()
        .await
        .expect("JSON");
    assert_eq!(waited["status"], "IN_PROGRESS");
    let too_long = emulator
        .http()
        .get(format!("{job_url}?waitMs=60001"))
        .send()
        .await
        .expect("GET job, waiting too long");
    assert_eq!(too_long.status(), 400);
    let waiting = tokio::spawn({
        let request = emulator.http().get(format!("{job_url}?waitMs=60000"));
        async move {
            let answer: Value = request
                .send()
                .await
                .expect("GET job, waiting for the end")
                .json()
                .await
                .expect("JSON");
            answer
        }
    });

    let update_topic = format!("$aws/things/desk-1/jobs/{job_id}/update");
    mqtt.publish(
        &update_topic,
        json!({"status": "SUCCEEDED", "statusDetails": {"printed": "2"}, "clientToken": "u-1"})
            .to_string(),
    )
    .await;
    let updated = mqtt.expect_json(&format!("{update_topic}/accepted")).await;
    assert_eq!(updated["clientToken"], "u-1");
    let ended = waiting.await.expect("the waiting request");
    assert_eq!(ended["status"], "SUCCEEDED", "{ended}");
    assert_eq!(ended["statusDetails"]["printed"], "2");

    mqtt.publish(&update_topic, json!({"status": "IN_PROGRESS"}).to_string())
        .await;
    let refused = mqtt.expect_json(&format!("{update_topic}/rejected")).await;
    assert!(
        refused["code"] == "InvalidStateTransition" || refused["code"] == "TerminalStateReached",
        "{refused}"
    );

    let status: Value = emulator
        .http()
        .get(emulator.api(&format!("/things/desk-1/jobs/{job_id}")))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("JSON");
    assert_eq!(status["status"], "SUCCEEDED");
    assert_eq!(status["statusDetails"]["printed"], "2");
}

#[tokio::test]
async fn print_urls_expire() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let created: Value = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "application/octet-stream",
            PNG.to_vec(),
            &secret,
        )
        .await
        .json()
        .await
        .expect("JSON");
    let url = created["document"]["file"]["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(
        emulator
            .http()
            .get(&url)
            .send()
            .await
            .expect("download")
            .status(),
        200
    );
    emulator.clock.advance(3600);
    assert_eq!(
        emulator
            .http()
            .get(&url)
            .send()
            .await
            .expect("download")
            .status(),
        403
    );
}

#[tokio::test]
async fn unsigned_wrongly_signed_or_unknown_format_requests_are_refused() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");

    let unsigned = emulator
        .http()
        .post(emulator.api("/things/desk-1/print-jobs"))
        .header("content-type", "image/png")
        .body(PNG.to_vec())
        .send()
        .await
        .expect("POST");
    assert_eq!(unsigned.status(), 401);

    let wrong = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "image/png",
            PNG.to_vec(),
            "not-the-secret",
        )
        .await;
    assert_eq!(wrong.status(), 401);

    let html = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "application/octet-stream",
            b"<html>".to_vec(),
            &secret,
        )
        .await;
    assert_eq!(html.status(), 415);

    let mismatch = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "application/pdf",
            PNG.to_vec(),
            &secret,
        )
        .await;
    assert_eq!(mismatch.status(), 415);

    let jobs: Value = emulator
        .http()
        .get(emulator.api("/things/desk-1/jobs"))
        .send()
        .await
        .expect("GET jobs")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        jobs.as_array().map(Vec::len),
        Some(0),
        "no refused request created a job"
    );
}

async fn a_scale_request_is_a_job_and_the_reading_shows_in_the_things_messages(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let mut mqtt = jobs_session(&emulator, &thing).await;
    let created = emulator
        .signed(
            Method::POST,
            "/things/desk-1/scale-requests",
            "",
            "application/json",
            br#"{"unit":"lb"}"#.to_vec(),
            &secret,
        )
        .await;
    assert_eq!(created.status(), 201);
    let notify = mqtt
        .expect_json("$aws/things/desk-1/jobs/notify-next")
        .await;
    assert_eq!(
        notify["execution"]["jobDocument"],
        json!({"operation": "scale.read", "unit": "lb"})
    );

    mqtt.publish("devicehub/desk-1/heartbeat", r#"{"uptimeS":5}"#)
        .await;
    mqtt.publish(
        "devicehub/desk-1/events/scale",
        r#"{"weight":1.25,"unit":"lb","stable":true}"#,
    )
    .await;
    // The services receive on their own connection: wait until they have recorded both.
    let messages = eventually(|| async {
        let messages: Value = emulator
            .http()
            .get(emulator.api("/things/desk-1/messages?after=0"))
            .send()
            .await
            .expect("GET messages")
            .json()
            .await
            .expect("JSON");
        (messages.as_array().map(Vec::len) == Some(2)).then_some(messages)
    })
    .await;
    let channels: Vec<&str> = messages
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|m| m["channel"].as_str())
        .collect();
    assert_eq!(channels, ["heartbeat", "events/scale"]);
    assert_eq!(messages[1]["payload"]["weight"], 1.25);
    let thing_view: Value = emulator
        .http()
        .get(emulator.api("/things/desk-1"))
        .send()
        .await
        .expect("GET thing")
        .json()
        .await
        .expect("JSON");
    assert_eq!(thing_view["lastHeartbeat"]["uptimeS"], 5);
}

async fn a_print_job_by_url_carries_the_url_and_a_signed_cancel_reaches_the_device(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let mut mqtt = jobs_session(&emulator, &thing).await;

    let body = json!({
        "url": "https://labels.example.com/label-42.pdf",
        "format": "pdf",
        "sha256": "00".repeat(32),
        "size": 1234
    });
    let created = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "application/json",
            body.to_string().into_bytes(),
            &secret,
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    let job_id = created["jobId"].as_str().expect("job id").to_string();
    let notify = mqtt
        .expect_json("$aws/things/desk-1/jobs/notify-next")
        .await;
    let file = &notify["execution"]["jobDocument"]["file"];
    assert_eq!(file["url"], "https://labels.example.com/label-42.pdf");
    assert_eq!(file["format"], "pdf");
    assert_eq!(file["size"], 1234);

    let plain_http = emulator
        .signed(
            Method::POST,
            "/things/desk-1/print-jobs",
            "",
            "application/json",
            json!({"url": "http://labels.example.com/a.pdf", "format": "pdf"})
                .to_string()
                .into_bytes(),
            &secret,
        )
        .await;
    assert_eq!(
        plain_http.status(),
        400,
        "print files travel over HTTPS only"
    );

    let path = format!("/things/desk-1/jobs/{job_id}");
    let unsigned = emulator
        .http()
        .delete(emulator.api(&path))
        .send()
        .await
        .expect("DELETE");
    assert_eq!(unsigned.status(), 401);
    let cancelled = emulator
        .signed(
            Method::DELETE,
            &path,
            "",
            "application/json",
            Vec::new(),
            &secret,
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled: Value = cancelled.json().await.expect("JSON");
    assert_eq!(cancelled["status"], "CANCELED");
    // The head of the device's pending list changed: it is told there is nothing next.
    let next = mqtt
        .expect_json("$aws/things/desk-1/jobs/notify-next")
        .await;
    assert!(next.get("execution").is_none(), "{next}");

    let missing = emulator
        .signed(
            Method::DELETE,
            "/things/desk-1/jobs/no-such-job",
            "",
            "application/json",
            Vec::new(),
            &secret,
        )
        .await;
    assert_eq!(missing.status(), 404);
}

const JOBS: &str = "$aws/things/desk-1/jobs";

/// Publishes a jobs request one second of the emulator's clock after the previous one: the
/// service allows a fixed number of requests per thing within one second of its clock, and the manual
/// clock would otherwise keep every request of a test inside the same second.
async fn request(emulator: &Emulator, mqtt: &Mqtt, topic: &str, body: Value) {
    emulator.clock.advance(1);
    mqtt.publish(topic, body.to_string()).await;
}

/// Creates a scale job for desk-1 through the signed API and returns its job id.
async fn create_scale_job(emulator: &Emulator, thing: &Credentials, body: Value) -> String {
    let secret = thing.device_signature.as_deref().expect("device secret");
    let created = emulator
        .signed(
            Method::POST,
            "/things/desk-1/scale-requests",
            "",
            "application/json",
            body.to_string().into_bytes(),
            secret,
        )
        .await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    created["jobId"].as_str().expect("job id").to_string()
}

/// The status the HTTP API reports for one of desk-1's jobs.
async fn api_status(emulator: &Emulator, job_id: &str) -> Value {
    let execution: Value = emulator
        .http()
        .get(emulator.api(&format!("/things/desk-1/jobs/{job_id}")))
        .send()
        .await
        .expect("GET job")
        .json()
        .await
        .expect("JSON");
    execution["status"].clone()
}

/// The latest payload on `topic` among messages collected with `json_until`: notifications of
/// earlier requests may still be queued before it, and the latest one is the current state.
fn payload_on<'a>(messages: &'a [(String, Value)], topic: &str) -> Option<&'a Value> {
    messages
        .iter()
        .rev()
        .find(|(t, _)| t == topic)
        .map(|(_, v)| v)
}

/// The job ids of a list of execution summaries.
fn job_ids(summaries: &Value) -> Vec<&str> {
    summaries
        .as_array()
        .map(|list| list.iter().filter_map(|s| s["jobId"].as_str()).collect())
        .unwrap_or_default()
}

/// Asserts `summary` is a JobExecutionSummary: its fields, and no job document.
fn assert_summary(summary: &Value) {
    for field in [
        "jobId",
        "queuedAt",
        "lastUpdatedAt",
        "versionNumber",
        "executionNumber",
    ] {
        assert!(summary.get(field).is_some(), "{field} missing: {summary}");
    }
    assert!(summary.get("jobDocument").is_none(), "{summary}");
    assert!(summary.get("status").is_none(), "{summary}");
}

async fn get_lists_pending_jobs_and_start_next_takes_the_oldest_queued_one(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = jobs_session(&emulator, &thing).await;

    let first = create_scale_job(&emulator, &thing, json!({"unit": "kg"})).await;
    let created = mqtt.json_until(&format!("{JOBS}/notify-next")).await;
    let notify = payload_on(&created, &format!("{JOBS}/notify")).expect("notify");
    assert_eq!(job_ids(&notify["jobs"]["QUEUED"]), [first.as_str()]);
    assert!(notify["jobs"].get("IN_PROGRESS").is_none(), "{notify}");
    assert!(notify["timestamp"].is_u64());
    assert_summary(&notify["jobs"]["QUEUED"][0]);
    let next = payload_on(&created, &format!("{JOBS}/notify-next")).expect("notify-next");
    let execution = &next["execution"];
    assert_eq!(execution["jobId"], first.as_str());
    assert_eq!(execution["thingName"], "desk-1");
    assert_eq!(execution["status"], "QUEUED");
    assert_eq!(execution["jobDocument"]["unit"], "kg");
    assert_eq!(execution["versionNumber"], 1);
    assert!(execution["queuedAt"].is_u64());

    // A second job changes the list but not its head: notify only.
    let second = create_scale_job(&emulator, &thing, json!({"unit": "lb"})).await;
    let created = mqtt.json_until(&format!("{JOBS}/notify")).await;
    let notify = payload_on(&created, &format!("{JOBS}/notify")).expect("notify");
    assert_eq!(
        job_ids(&notify["jobs"]["QUEUED"]),
        [first.as_str(), second.as_str()]
    );

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/get"),
        json!({"clientToken": "g-1"}),
    )
    .await;
    let listed = mqtt.expect_json(&format!("{JOBS}/get/accepted")).await;
    assert_eq!(listed["clientToken"], "g-1");
    assert!(listed["timestamp"].is_u64());
    assert_eq!(job_ids(&listed["inProgressJobs"]), Vec::<&str>::new());
    assert_eq!(
        job_ids(&listed["queuedJobs"]),
        [first.as_str(), second.as_str()]
    );
    assert_summary(&listed["queuedJobs"][1]);

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/$next/get"),
        json!({"clientToken": "n-1"}),
    )
    .await;
    let described = mqtt
        .expect_json(&format!("{JOBS}/$next/get/accepted"))
        .await;
    assert_eq!(described["clientToken"], "n-1");
    assert_eq!(described["execution"]["jobId"], first.as_str());
    assert_eq!(described["execution"]["jobDocument"]["unit"], "kg");
    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/{second}/get"),
        json!({"includeJobDocument": false}),
    )
    .await;
    let described = mqtt
        .expect_json(&format!("{JOBS}/{second}/get/accepted"))
        .await;
    assert_eq!(described["execution"]["jobId"], second.as_str());
    assert_eq!(described["execution"]["status"], "QUEUED");
    assert!(described["execution"].get("jobDocument").is_none());

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/start-next"),
        json!({"statusDetails": {"step": "weighing"}, "clientToken": "s-1"}),
    )
    .await;
    let started = mqtt.json_until(&format!("{JOBS}/notify")).await;
    let accepted = payload_on(&started, &format!("{JOBS}/start-next/accepted")).expect("accepted");
    assert_eq!(accepted["clientToken"], "s-1");
    let execution = &accepted["execution"];
    assert_eq!(execution["jobId"], first.as_str(), "the oldest queued job");
    assert_eq!(execution["status"], "IN_PROGRESS");
    assert_eq!(execution["statusDetails"]["step"], "weighing");
    assert_eq!(execution["versionNumber"], 2);
    assert!(execution["startedAt"].is_u64());
    assert_eq!(execution["jobDocument"]["unit"], "kg");
    let notify = payload_on(&started, &format!("{JOBS}/notify")).expect("notify");
    assert_eq!(job_ids(&notify["jobs"]["IN_PROGRESS"]), [first.as_str()]);
    assert_eq!(job_ids(&notify["jobs"]["QUEUED"]), [second.as_str()]);

    // An execution already in progress comes first again, unchanged.
    request(&emulator, &mqtt, &format!("{JOBS}/start-next"), json!({})).await;
    let again = mqtt
        .expect_json(&format!("{JOBS}/start-next/accepted"))
        .await;
    assert_eq!(again["execution"]["jobId"], first.as_str());
    assert_eq!(again["execution"]["versionNumber"], 2);

    request(&emulator, &mqtt, &format!("{JOBS}/get"), json!({})).await;
    let listed = mqtt.expect_json(&format!("{JOBS}/get/accepted")).await;
    assert_eq!(job_ids(&listed["inProgressJobs"]), [first.as_str()]);
    assert_eq!(job_ids(&listed["queuedJobs"]), [second.as_str()]);

    // Finishing both leaves nothing: start-next and $next answer without an execution.
    for job in [&first, &second] {
        request(
            &emulator,
            &mqtt,
            &format!("{JOBS}/{job}/update"),
            json!({"status": "SUCCEEDED"}),
        )
        .await;
        mqtt.expect_json(&format!("{JOBS}/{job}/update/accepted"))
            .await;
    }
    request(&emulator, &mqtt, &format!("{JOBS}/start-next"), json!({})).await;
    let empty = mqtt
        .expect_json(&format!("{JOBS}/start-next/accepted"))
        .await;
    assert!(empty.get("execution").is_none(), "{empty}");
    request(&emulator, &mqtt, &format!("{JOBS}/$next/get"), json!({})).await;
    let empty = mqtt
        .expect_json(&format!("{JOBS}/$next/get/accepted"))
        .await;
    assert!(empty.get("execution").is_none(), "{empty}");
}

async fn a_stale_expected_version_is_a_version_mismatch_with_the_execution_state(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = jobs_session(&emulator, &thing).await;
    let job = create_scale_job(&emulator, &thing, json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/notify-next")).await;

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/start-next"),
        json!({"statusDetails": {"step": "1"}}),
    )
    .await;
    let started = mqtt
        .expect_json(&format!("{JOBS}/start-next/accepted"))
        .await;
    let version = started["execution"]["versionNumber"]
        .as_u64()
        .expect("versionNumber");

    let update = format!("{JOBS}/{job}/update");
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"status": "SUCCEEDED", "expectedVersion": version + 5, "clientToken": "u-stale"}),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{update}/rejected")).await;
    assert_eq!(rejected["code"], "VersionMismatch", "{rejected}");
    assert_eq!(rejected["clientToken"], "u-stale");
    assert!(rejected["message"].is_string());
    assert!(rejected["timestamp"].is_u64());
    assert_eq!(rejected["executionState"]["status"], "IN_PROGRESS");
    assert_eq!(rejected["executionState"]["versionNumber"], version);
    assert_eq!(rejected["executionState"]["statusDetails"]["step"], "1");
    assert_eq!(api_status(&emulator, &job).await, "IN_PROGRESS");

    request(
        &emulator,
        &mqtt,
        &update,
        json!({
            "status": "SUCCEEDED",
            "expectedVersion": version,
            "statusDetails": {"weight": "1.25"},
            "includeJobExecutionState": true,
            "includeJobDocument": true,
            "clientToken": "u-1"
        }),
    )
    .await;
    let accepted = mqtt.expect_json(&format!("{update}/accepted")).await;
    assert_eq!(accepted["clientToken"], "u-1");
    assert_eq!(accepted["executionState"]["status"], "SUCCEEDED");
    assert_eq!(accepted["executionState"]["versionNumber"], version + 1);
    assert_eq!(
        accepted["executionState"]["statusDetails"]["weight"],
        "1.25"
    );
    assert_eq!(accepted["jobDocument"]["operation"], "scale.read");

    // A terminal execution cannot change, and describing it says so.
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"status": "FAILED", "clientToken": "u-late"}),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{update}/rejected")).await;
    assert_eq!(rejected["code"], "InvalidStateTransition", "{rejected}");
    assert_eq!(rejected["clientToken"], "u-late");
    assert_eq!(rejected["executionState"]["status"], "SUCCEEDED");
    request(&emulator, &mqtt, &format!("{JOBS}/{job}/get"), json!({})).await;
    let rejected = mqtt
        .expect_json(&format!("{JOBS}/{job}/get/rejected"))
        .await;
    assert_eq!(rejected["code"], "TerminalStateReached", "{rejected}");
    assert_eq!(api_status(&emulator, &job).await, "SUCCEEDED");
}

async fn an_expired_step_timer_moves_the_execution_to_timed_out(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = jobs_session(&emulator, &thing).await;
    let timed = create_scale_job(&emulator, &thing, json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/notify-next")).await;
    let cleared = create_scale_job(&emulator, &thing, json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/notify")).await;

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/start-next"),
        json!({"stepTimeoutInMinutes": 1}),
    )
    .await;
    let started = mqtt
        .expect_json(&format!("{JOBS}/start-next/accepted"))
        .await;
    assert_eq!(started["execution"]["jobId"], timed.as_str());
    // The second job runs too, with a timer that a later update clears with -1.
    let update = format!("{JOBS}/{cleared}/update");
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1}),
    )
    .await;
    mqtt.expect_json(&format!("{update}/accepted")).await;
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1}),
    )
    .await;
    mqtt.expect_json(&format!("{update}/accepted")).await;

    // The runtime checks the timers against the emulator's clock on its own one-second tick.
    emulator.clock.advance(61);
    let expired = mqtt.json_until(&format!("{JOBS}/notify-next")).await;
    let next = payload_on(&expired, &format!("{JOBS}/notify-next")).expect("notify-next");
    assert_eq!(next["execution"]["jobId"], cleared.as_str(), "{expired:?}");
    let notify = payload_on(&expired, &format!("{JOBS}/notify")).expect("notify");
    assert_eq!(job_ids(&notify["jobs"]["IN_PROGRESS"]), [cleared.as_str()]);
    // The same tick would have expired both timers: the cleared one did not run out.
    assert_eq!(api_status(&emulator, &timed).await, "TIMED_OUT");
    assert_eq!(api_status(&emulator, &cleared).await, "IN_PROGRESS");

    let update = format!("{JOBS}/{timed}/update");
    request(&emulator, &mqtt, &update, json!({"status": "SUCCEEDED"})).await;
    let rejected = mqtt.expect_json(&format!("{update}/rejected")).await;
    assert_eq!(rejected["code"], "InvalidStateTransition", "{rejected}");
    assert_eq!(rejected["executionState"]["status"], "TIMED_OUT");
}

async fn a_job_cancelled_while_in_progress_is_canceled_for_the_device(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let mut mqtt = jobs_session(&emulator, &thing).await;
    let job = create_scale_job(&emulator, &thing, json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/notify-next")).await;
    request(&emulator, &mqtt, &format!("{JOBS}/start-next"), json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/start-next/accepted"))
        .await;

    let cancelled = emulator
        .signed(
            Method::DELETE,
            &format!("/things/desk-1/jobs/{job}"),
            "",
            "application/json",
            Vec::new(),
            &secret,
        )
        .await;
    assert_eq!(cancelled.status(), 200);
    let cancelled = mqtt.json_until(&format!("{JOBS}/notify-next")).await;
    let notify = payload_on(&cancelled, &format!("{JOBS}/notify")).expect("notify");
    assert_eq!(notify["jobs"], json!({}), "nothing is pending: {notify}");
    let next = payload_on(&cancelled, &format!("{JOBS}/notify-next")).expect("notify-next");
    assert!(next.get("execution").is_none(), "{next}");
    assert!(next["timestamp"].is_u64());

    let update = format!("{JOBS}/{job}/update");
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"status": "SUCCEEDED", "clientToken": "late"}),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{update}/rejected")).await;
    assert_eq!(rejected["code"], "InvalidStateTransition", "{rejected}");
    assert_eq!(rejected["clientToken"], "late");
    assert_eq!(rejected["executionState"]["status"], "CANCELED");
    assert_eq!(api_status(&emulator, &job).await, "CANCELED");
}

async fn malformed_or_unknown_requests_are_rejected_with_their_codes(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = jobs_session(&emulator, &thing).await;

    emulator.clock.advance(1);
    mqtt.publish(&format!("{JOBS}/get"), "{not json").await;
    let rejected = mqtt.expect_json(&format!("{JOBS}/get/rejected")).await;
    assert_eq!(rejected["code"], "InvalidJson", "{rejected}");

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/no-such-job/update"),
        json!({"status": "SUCCEEDED", "clientToken": "missing"}),
    )
    .await;
    let rejected = mqtt
        .expect_json(&format!("{JOBS}/no-such-job/update/rejected"))
        .await;
    assert_eq!(rejected["code"], "ResourceNotFound", "{rejected}");
    assert_eq!(rejected["clientToken"], "missing");

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/no-such-job/get"),
        json!({}),
    )
    .await;
    let rejected = mqtt
        .expect_json(&format!("{JOBS}/no-such-job/get/rejected"))
        .await;
    assert_eq!(rejected["code"], "ResourceNotFound", "{rejected}");

    let job = create_scale_job(&emulator, &thing, json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/notify-next")).await;
    let update = format!("{JOBS}/{job}/update");
    for (case, body) in [
        ("a status the service sets", json!({"status": "CANCELED"})),
        ("no status", json!({"statusDetails": {"a": "b"}})),
        (
            "statusDetails that are not strings",
            json!({"status": "IN_PROGRESS", "statusDetails": {"a": 1}}),
        ),
    ] {
        request(&emulator, &mqtt, &update, body).await;
        let rejected = mqtt.expect_json(&format!("{update}/rejected")).await;
        assert!(
            rejected["code"] == "InvalidRequest" || rejected["code"] == "InvalidStateTransition",
            "{case}: {rejected}"
        );
    }
    assert_eq!(api_status(&emulator, &job).await, "QUEUED");

    request(
        &emulator,
        &mqtt,
        &format!("{JOBS}/$next/update"),
        json!({"status": "IN_PROGRESS"}),
    )
    .await;
    let rejected = mqtt
        .expect_json(&format!("{JOBS}/$next/update/rejected"))
        .await;
    assert_eq!(rejected["code"], "InvalidRequest", "{rejected}");
}

async fn requests_beyond_the_per_second_allowance_are_throttled_until_the_clock_moves(
    broker: Broker,
) {
    let emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = jobs_session(&emulator, &thing).await;

    // One request more than the allowance inside one second of the emulator's clock: the
    // clock does not move.
    let allowance = DEFAULT_REQUESTS_PER_THING_PER_SECOND as usize;
    for n in 0..=allowance {
        mqtt.publish(
            &format!("{JOBS}/get"),
            json!({"clientToken": format!("g-{n}")}).to_string(),
        )
        .await;
    }
    let mut answers = Vec::new();
    while answers.len() <= allowance {
        answers.push(
            mqtt.json_until_any(&[
                &format!("{JOBS}/get/accepted"),
                &format!("{JOBS}/get/rejected"),
            ])
            .await,
        );
    }
    let rejected: Vec<_> = answers
        .iter()
        .filter(|(topic, _)| topic.ends_with("/rejected"))
        .collect();
    assert_eq!(rejected.len(), 1, "{answers:?}");
    assert_eq!(rejected[0].1["code"], "RequestThrottled");
    assert_eq!(
        rejected[0].1["clientToken"],
        format!("g-{allowance}").as_str()
    );

    request(&emulator, &mqtt, &format!("{JOBS}/get"), json!({})).await;
    mqtt.expect_json(&format!("{JOBS}/get/accepted")).await;
}
