//! The emulator page over the wire: the page and its assets, the token and origin checks on
//! its job endpoints, printer simulators registered and their labels served as PNG, and the
//! labels of a succeeded job found by its device.

use std::time::{SystemTime, UNIX_EPOCH};

use devicehub_emulator::cloud::Clock;
use devicehub_emulator::printers::zebra::{ZebraConfig, ZebraSimulator};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::support::Emulator;

/// Reads the token the page was served with from its `<meta>` element.
fn page_token(html: &str) -> String {
    let marker = "name=\"devicehub-page-token\" content=\"";
    let start = html.find(marker).expect("the page carries its token") + marker.len();
    let end = html[start..].find('"').expect("the token attribute ends") + start;
    html[start..end].to_string()
}

async fn fetch_page(emulator: &Emulator) -> String {
    let answer = emulator
        .http()
        .get(emulator.api("/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(answer.status(), 200);
    let headers = answer.headers().clone();
    assert!(headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/html"));
    let policy = headers["content-security-policy"].to_str().expect("ascii");
    assert!(policy.contains("default-src 'self'"), "{policy}");
    answer.text().await.expect("the page")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Moves the emulator's manual clock to the real time, which the printer simulators stamp
/// their labels with.
fn catch_up(emulator: &Emulator) {
    let behind = now().saturating_sub(emulator.clock.now_epoch_s());
    emulator.clock.advance(behind);
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_self_contained() {
    let emulator = Emulator::start().await;
    let html = fetch_page(&emulator).await;
    assert!(html.contains("<script src=\"/page.js\""));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no external resources"
    );
    assert_eq!(page_token(&html).len(), 32);
    for (path, kind) in [("/page.js", "text/javascript"), ("/page.css", "text/css")] {
        let answer = emulator
            .http()
            .get(emulator.api(path))
            .send()
            .await
            .expect("GET asset");
        assert_eq!(answer.status(), 200, "{path}");
        assert!(answer.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with(kind));
    }
    let samples: Value = emulator
        .http()
        .get(emulator.api("/page/samples"))
        .send()
        .await
        .expect("GET samples")
        .json()
        .await
        .expect("JSON");
    let names: Vec<&str> = samples
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.contains(&"label-4x6.pdf") && names.contains(&"indicia.gif"),
        "{samples}"
    );
}

#[tokio::test]
async fn page_jobs_need_the_page_token_and_the_same_origin() {
    let emulator = Emulator::start().await;
    emulator.create_thing("desk-1").await;
    let token = page_token(&fetch_page(&emulator).await);
    let url = emulator.api("/page/things/desk-1/print-jobs?sample=label-4x6.pdf&copies=2");

    let without = emulator.http().post(&url).send().await.expect("POST");
    assert_eq!(without.status(), 403);
    let wrong = emulator
        .http()
        .post(&url)
        .header("x-devicehub-page-token", "0".repeat(32))
        .send()
        .await
        .expect("POST");
    assert_eq!(wrong.status(), 403);
    let foreign = emulator
        .http()
        .post(&url)
        .header("x-devicehub-page-token", &token)
        .header("origin", "http://evil.example")
        .send()
        .await
        .expect("POST");
    assert_eq!(foreign.status(), 403);
    let rebound = emulator
        .http()
        .post(&url)
        .header("x-devicehub-page-token", &token)
        .header("host", "evil.example")
        .send()
        .await
        .expect("POST");
    assert_eq!(rebound.status(), 403);

    let origin = emulator.endpoints.api_url.clone();
    let created = emulator
        .http()
        .post(&url)
        .header("x-devicehub-page-token", &token)
        .header("origin", origin.as_str())
        .send()
        .await
        .expect("POST");
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.expect("JSON");
    let document = &created["document"];
    assert_eq!(document["operation"], "print");
    assert_eq!(document["copies"], 2);
    assert_eq!(document["kind"], "label");
    assert_eq!(document["file"]["format"], "pdf");

    let uploaded = emulator
        .http()
        .post(emulator.api("/page/things/desk-1/print-jobs?kind=indicia&device=desk-zebra"))
        .header("x-devicehub-page-token", &token)
        .header("content-type", "application/octet-stream")
        .body(b"GIF89a not really a picture".to_vec())
        .send()
        .await
        .expect("POST");
    assert_eq!(uploaded.status(), 201);
    let uploaded: Value = uploaded.json().await.expect("JSON");
    assert_eq!(uploaded["document"]["device"], "desk-zebra");
    assert_eq!(uploaded["document"]["file"]["format"], "gif");

    let not_a_label = emulator
        .http()
        .post(emulator.api("/page/things/desk-1/print-jobs"))
        .header("x-devicehub-page-token", &token)
        .body(b"<html>".to_vec())
        .send()
        .await
        .expect("POST");
    assert_eq!(not_a_label.status(), 415);

    let weighing = emulator
        .http()
        .post(emulator.api("/page/things/desk-1/scale-requests"))
        .header("x-devicehub-page-token", &token)
        .header("content-type", "application/json")
        .body(json!({"unit": "kg"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(weighing.status(), 201);
    let weighing: Value = weighing.json().await.expect("JSON");
    assert_eq!(
        weighing["document"],
        json!({"operation": "scale.read", "unit": "kg"})
    );

    let jobs: Value = emulator
        .http()
        .get(emulator.api("/things/desk-1/jobs"))
        .send()
        .await
        .expect("GET jobs")
        .json()
        .await
        .expect("JSON");
    assert_eq!(jobs.as_array().expect("a list").len(), 3, "{jobs}");
}

#[tokio::test]
async fn printers_are_registered_and_a_succeeded_job_shows_its_labels_as_png() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let printer = ZebraSimulator::start(ZebraConfig::default())
        .await
        .expect("the simulator starts on port 0");

    let refused = emulator
        .http()
        .post(emulator.api("/printers"))
        .json(&json!({"name": "desk-zebra", "control": "http://10.1.2.3:80"}))
        .send()
        .await
        .expect("POST /printers");
    assert_eq!(refused.status(), 400);
    let registered = emulator
        .http()
        .post(emulator.api("/printers"))
        .json(&json!({"name": "desk-zebra", "control": printer.control_url()}))
        .send()
        .await
        .expect("POST /printers");
    assert_eq!(registered.status(), 201);
    let listed: Value = emulator
        .http()
        .get(emulator.api("/printers"))
        .send()
        .await
        .expect("GET /printers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(listed[0]["name"], "desk-zebra");
    assert_eq!(listed[0]["family"], "zebra");

    // The shipping application sends a job; the device takes it, prints, and reports success
    // naming the printer, as DeviceHub does.
    catch_up(&emulator);
    let token = page_token(&fetch_page(&emulator).await);
    let created: Value = emulator
        .http()
        .post(emulator.api("/page/things/desk-1/print-jobs?sample=indicia.gif"))
        .header("x-devicehub-page-token", &token)
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    let job_id = created["jobId"].as_str().expect("job id").to_string();
    let labels_url = emulator.api(&format!("/page/things/desk-1/jobs/{job_id}/labels"));
    let early = emulator.http().get(&labels_url).send().await.expect("GET");
    assert_eq!(early.status(), 409, "no labels before the job succeeded");

    // The device takes the job before it prints, as DeviceHub does.
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    mqtt.subscribe_ok(&["$aws/things/desk-1/jobs/#"]).await;
    mqtt.publish("$aws/things/desk-1/jobs/start-next", json!({}).to_string())
        .await;
    let started = mqtt
        .expect_json("$aws/things/desk-1/jobs/start-next/accepted")
        .await;
    assert_eq!(started["execution"]["jobId"], job_id.as_str());

    let mut print = tokio::net::TcpStream::connect(printer.print_addr())
        .await
        .expect("the print port accepts");
    print
        .write_all(b"^XA^PW16^LL4^FO0,0^GFA,8,8,2,FFFF00FF00FFFFFF^FS^XZ")
        .await
        .expect("the label is sent");
    drop(print);
    let wait_for_label = async {
        loop {
            if !printer.state().labels().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(crate::support::ANSWER_TIMEOUT, wait_for_label)
        .await
        .expect("the simulator decodes the label");
    catch_up(&emulator);

    let update = format!("$aws/things/desk-1/jobs/{job_id}/update");
    mqtt.publish(
        &update,
        json!({"status": "SUCCEEDED", "statusDetails": {"device": "desk-zebra"}}).to_string(),
    )
    .await;
    mqtt.expect_json(&format!("{update}/accepted")).await;

    let found: Value = emulator
        .http()
        .get(&labels_url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON");
    assert_eq!(found["device"], "desk-zebra");
    assert_eq!(found["knownPrinter"], true);
    let png_path = found["labels"][0]["png"]
        .as_str()
        .expect("one label")
        .to_string();
    assert_eq!(png_path, "/printers/desk-zebra/labels/0/png");
    let png = emulator
        .http()
        .get(emulator.api(&png_path))
        .send()
        .await
        .expect("GET png");
    assert_eq!(png.status(), 200);
    assert_eq!(png.headers()["content-type"], "image/png");
    let bytes = png.bytes().await.expect("bytes");
    let image = image::load_from_memory(&bytes).expect("a PNG");
    assert_eq!((image.width(), image.height()), (16, 4));

    let missing = emulator
        .http()
        .get(emulator.api("/printers/desk-zebra/labels/7/png"))
        .send()
        .await
        .expect("GET png");
    assert_eq!(missing.status(), 404);
    printer.shutdown().await;
}
