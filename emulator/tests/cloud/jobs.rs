//! Jobs rows over the wire, driven by signed print and scale requests to the HTTP API, and the
//! signed HTTPS URLs print files are downloaded from.

use reqwest::Method;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::{eventually, Emulator, Mqtt};

/// A minimal valid PNG: the signature and an IHDR/IEND are enough for format detection.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00\x3a\x7e\x9b\x55\x00\x00\x00\x00IEND\xae\x42\x60\x82";

async fn jobs_session(emulator: &Emulator, thing: &crate::support::Credentials) -> Mqtt {
    let mut mqtt = emulator.connect("desk-1", thing).await;
    mqtt.subscribe_ok(&["$aws/things/desk-1/jobs/#"]).await;
    mqtt
}

#[tokio::test]
async fn a_signed_print_job_reaches_the_device_which_downloads_the_file_and_reports_success() {
    let emulator = Emulator::start().await;
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

    let update_topic = format!("$aws/things/desk-1/jobs/{job_id}/update");
    mqtt.publish(
        &update_topic,
        json!({"status": "SUCCEEDED", "statusDetails": {"printed": "2"}, "clientToken": "u-1"})
            .to_string(),
    )
    .await;
    let updated = mqtt.expect_json(&format!("{update_topic}/accepted")).await;
    assert_eq!(updated["clientToken"], "u-1");

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

#[tokio::test]
async fn a_scale_request_is_a_job_and_the_reading_shows_in_the_things_messages() {
    let emulator = Emulator::start().await;
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

#[tokio::test]
async fn a_print_job_by_url_carries_the_url_and_a_signed_cancel_reaches_the_device() {
    let emulator = Emulator::start().await;
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
