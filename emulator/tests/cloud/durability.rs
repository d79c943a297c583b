//! Stopping the emulator and starting it again on the same data directory keeps things,
//! certificates, shadows, jobs and activation codes.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::{on_both_brokers, Broker, Emulator};

// With Mosquitto the broker keeps running across the restart; only the emulator's services and
// API stop and start again.
on_both_brokers!(things_shadows_and_jobs_survive_a_restart);

async fn things_shadows_and_jobs_survive_a_restart(broker: Broker) {
    let mut emulator = Emulator::start_on(broker).await;
    let thing = emulator.create_thing("desk-1").await;
    let secret = thing.device_signature.clone().expect("secret");
    let prefix = "$aws/things/desk-1/shadow";
    {
        let mut mqtt = emulator.connect("desk-1", &thing).await;
        mqtt.subscribe_ok(&[&format!("{prefix}/update/accepted")])
            .await;
        mqtt.publish(
            &format!("{prefix}/update"),
            json!({"state": {"reported": {"paper": "ok"}}}).to_string(),
        )
        .await;
        mqtt.expect_json(&format!("{prefix}/update/accepted")).await;
    }
    let created: Value = emulator
        .signed(
            Method::POST,
            "/things/desk-1/scale-requests",
            "",
            "application/json",
            b"{}".to_vec(),
            &secret,
        )
        .await
        .json()
        .await
        .expect("JSON");
    let job_id = created["jobId"].as_str().expect("job id").to_string();
    let code = emulator.activation_code(3600).await;

    emulator.restart().await;

    // The same certificate still identifies desk-1 (the CA and the registry were kept).
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    mqtt.subscribe_ok(&[
        &format!("{prefix}/get/accepted"),
        "$aws/things/desk-1/jobs/get/accepted",
    ])
    .await;
    mqtt.publish(&format!("{prefix}/get"), "").await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert_eq!(document["state"]["reported"]["paper"], "ok");
    assert_eq!(document["version"], 1);

    mqtt.publish(
        "$aws/things/desk-1/jobs/get",
        json!({"clientToken": "after-restart"}).to_string(),
    )
    .await;
    let pending = mqtt
        .expect_json("$aws/things/desk-1/jobs/get/accepted")
        .await;
    assert_eq!(pending["queuedJobs"][0]["jobId"], job_id.as_str());

    // The secret still signs requests, and the code made before the restart is still valid.
    let again = emulator
        .signed(
            Method::POST,
            "/things/desk-1/scale-requests",
            "",
            "application/json",
            b"{}".to_vec(),
            &secret,
        )
        .await;
    assert_eq!(again.status(), 201);
    let claim = emulator.create_claim().await;
    let mut provisioning = emulator.connect("claim", &claim).await;
    provisioning
        .subscribe_ok(&[
            "$aws/certificates/create/json/accepted",
            "$aws/provisioning-templates/DeviceHubFleet/provision/json/accepted",
        ])
        .await;
    provisioning
        .publish("$aws/certificates/create/json", "{}")
        .await;
    let created = provisioning
        .expect_json("$aws/certificates/create/json/accepted")
        .await;
    provisioning
        .publish(
            "$aws/provisioning-templates/DeviceHubFleet/provision/json",
            json!({
                "certificateOwnershipToken": created["certificateOwnershipToken"],
                "parameters": {"SerialNumber": "SN9", "ActivationCode": code}
            })
            .to_string(),
        )
        .await;
    let registered = provisioning
        .expect_json("$aws/provisioning-templates/DeviceHubFleet/provision/json/accepted")
        .await;
    assert_eq!(registered["thingName"], "devicehub-SN9");
}
