//! Fleet provisioning by claim over MQTT, as AWS IoT Core's provisioning MQTT API defines it.
//! The flows run against the embedded broker and against Mosquitto; where Mosquitto cannot
//! behave like AWS (it delivers each answer to every claim client subscribed to the answer
//! topic), the test says so and asserts what holds there.

use serde_json::{json, Value};

use crate::support::{
    eventually, new_csr, on_both_brokers, provision_topic, Broker, Credentials, Emulator, Mqtt, Via,
};

on_both_brokers!(
    csr_claim_flow_registers_a_thing_that_can_connect_with_its_new_certificate,
    activation_codes_unknown_used_or_expired_are_refused_by_the_hook,
    ownership_tokens_expire_after_one_hour_and_bad_requests_are_rejected,
    answers_go_only_to_the_connection_that_asked_even_with_a_shared_claim,
);

/// Connects with a fresh claim certificate and subscribes to every provisioning answer.
async fn claim_session(emulator: &Emulator) -> Mqtt {
    let claim = emulator.create_claim().await;
    let mut mqtt = emulator.connect("claim-session", &claim).await;
    mqtt.subscribe_ok(&[
        "$aws/certificates/create-from-csr/json/accepted",
        "$aws/certificates/create-from-csr/json/rejected",
        "$aws/certificates/create/json/accepted",
        "$aws/certificates/create/json/rejected",
        &format!("{}/accepted", provision_topic()),
        &format!("{}/rejected", provision_topic()),
    ])
    .await;
    mqtt
}

async fn create_from_csr(mqtt: &mut Mqtt) -> (Value, String) {
    let (csr, key) = new_csr();
    mqtt.publish(
        "$aws/certificates/create-from-csr/json",
        json!({"certificateSigningRequest": csr}).to_string(),
    )
    .await;
    let answer = mqtt
        .expect_json("$aws/certificates/create-from-csr/json/accepted")
        .await;
    (answer, key)
}

async fn provision(mqtt: &mut Mqtt, token: &str, serial: &str, code: &str) -> Result<Value, Value> {
    mqtt.publish(
        &provision_topic(),
        json!({
            "certificateOwnershipToken": token,
            "parameters": {"SerialNumber": serial, "ActivationCode": code}
        })
        .to_string(),
    )
    .await;
    let accepted = format!("{}/accepted", provision_topic());
    let rejected = format!("{}/rejected", provision_topic());
    loop {
        match mqtt.next_event().await {
            Ok(rumqttc::Packet::Publish(p)) if p.topic == accepted => {
                return Ok(serde_json::from_slice(&p.payload).expect("JSON"))
            }
            Ok(rumqttc::Packet::Publish(p)) if p.topic == rejected => {
                return Err(serde_json::from_slice(&p.payload).expect("JSON"))
            }
            Ok(_) => {}
            Err(e) => panic!("no provisioning answer: {e}"),
        }
    }
}

async fn csr_claim_flow_registers_a_thing_that_can_connect_with_its_new_certificate(
    broker: Broker,
) {
    let emulator = Emulator::start_on(broker).await;
    let mut mqtt = claim_session(&emulator).await;
    let (created, key) = create_from_csr(&mut mqtt).await;
    assert!(created["certificateId"]
        .as_str()
        .is_some_and(|id| id.len() == 64));
    assert!(
        created.get("privateKey").is_none(),
        "the key never leaves the device"
    );
    let token = created["certificateOwnershipToken"]
        .as_str()
        .expect("token");

    let code = emulator.activation_code(3600).await;
    let registered = provision(&mut mqtt, token, "SN1001", &code)
        .await
        .expect("provisioning accepted");
    assert_eq!(registered["thingName"], "devicehub-SN1001");
    let signature = registered["deviceConfiguration"]["deviceSignature"]
        .as_str()
        .expect("device signature");
    assert_eq!(signature.len(), 64);

    let thing = Credentials {
        certificate_pem: created["certificatePem"].as_str().expect("PEM").to_string(),
        private_key_pem: key,
        device_signature: Some(signature.to_string()),
    };
    let mut device = emulator.connect("devicehub-SN1001", &thing).await;
    // A new thing has no shadow yet: the point is that the thing's topics are reachable.
    device
        .subscribe_ok(&["$aws/things/devicehub-SN1001/shadow/get/rejected"])
        .await;
    device
        .publish("$aws/things/devicehub-SN1001/shadow/get", "{}")
        .await;
    let rejected = device
        .expect_json("$aws/things/devicehub-SN1001/shadow/get/rejected")
        .await;
    assert_eq!(rejected["code"], 404);

    if broker == Broker::Mosquitto {
        // Mosquitto publishes no lifecycle events: the thing shows as connected once the
        // services have received a heartbeat from it.
        device
            .publish("devicehub/devicehub-SN1001/heartbeat", r#"{"uptimeS":1}"#)
            .await;
    }
    let listed = eventually(|| async {
        let listed: Value = emulator
            .http()
            .get(emulator.api("/things/devicehub-SN1001"))
            .send()
            .await
            .expect("GET thing")
            .json()
            .await
            .expect("JSON");
        (listed["connected"] == true).then_some(listed)
    })
    .await;
    assert_eq!(listed["attributes"]["serialNumber"], "SN1001");
    assert!(
        listed.get("deviceSignature").is_none(),
        "the secret is never listed"
    );
}

#[tokio::test]
async fn create_keys_and_certificate_returns_a_key_and_an_unregistered_certificate_cannot_connect()
{
    let emulator = Emulator::start().await;
    let mut mqtt = claim_session(&emulator).await;
    mqtt.publish("$aws/certificates/create/json", "{}").await;
    let created = mqtt
        .expect_json("$aws/certificates/create/json/accepted")
        .await;
    for field in [
        "certificateId",
        "certificatePem",
        "privateKey",
        "certificateOwnershipToken",
    ] {
        assert!(created[field].is_string(), "{field} missing in {created}");
    }
    let pending = Credentials::from_answer(&created);
    let refused = Mqtt::connect(&emulator, "pending-thing", &pending, Via::MutualTls, true).await;
    assert!(
        refused.is_err(),
        "a PENDING_ACTIVATION certificate connected"
    );
}

async fn activation_codes_unknown_used_or_expired_are_refused_by_the_hook(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let mut mqtt = claim_session(&emulator).await;

    let (created, _) = create_from_csr(&mut mqtt).await;
    let token = created["certificateOwnershipToken"]
        .as_str()
        .expect("token");
    let refusal = provision(&mut mqtt, token, "SN1", "NOSUCHCODE")
        .await
        .expect_err("unknown code");
    assert_eq!(refusal["statusCode"], 403);
    assert_eq!(refusal["errorCode"], "AccessDenied");
    assert!(refusal["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("unknown")));

    let code = emulator.activation_code(3600).await;
    provision(&mut mqtt, token, "SN1", &code)
        .await
        .expect("first use accepted");
    let (again, _) = create_from_csr(&mut mqtt).await;
    let token = again["certificateOwnershipToken"].as_str().expect("token");
    let refusal = provision(&mut mqtt, token, "SN2", &code)
        .await
        .expect_err("used code");
    assert!(refusal["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("already been used")));

    let short = emulator.activation_code(60).await;
    emulator.clock.advance(61);
    let refusal = provision(&mut mqtt, token, "SN2", &short)
        .await
        .expect_err("expired code");
    assert!(refusal["errorMessage"]
        .as_str()
        .is_some_and(|m| m.contains("expired")));
}

async fn ownership_tokens_expire_after_one_hour_and_bad_requests_are_rejected(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let mut mqtt = claim_session(&emulator).await;
    let code = emulator.activation_code(7 * 24 * 3600).await;

    let (created, _) = create_from_csr(&mut mqtt).await;
    let token = created["certificateOwnershipToken"]
        .as_str()
        .expect("token");
    emulator.clock.advance(3601);
    let refusal = provision(&mut mqtt, token, "SN7", &code)
        .await
        .expect_err("expired token");
    assert_eq!(refusal["statusCode"], 400);
    assert_eq!(refusal["errorCode"], "InvalidCertificateOwnershipToken");

    let refusal = provision(&mut mqtt, "not-a-token", "SN7", &code)
        .await
        .expect_err("unknown token");
    assert_eq!(refusal["errorCode"], "InvalidCertificateOwnershipToken");

    mqtt.publish(
        "$aws/certificates/create-from-csr/json",
        json!({"certificateSigningRequest": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}).to_string(),
    )
    .await;
    let refusal = mqtt
        .expect_json("$aws/certificates/create-from-csr/json/rejected")
        .await;
    assert_eq!(refusal["statusCode"], 400);
    assert!(refusal["errorMessage"].is_string());

    mqtt.publish("$aws/certificates/create-from-csr/json", "not json")
        .await;
    let refusal = mqtt
        .expect_json("$aws/certificates/create-from-csr/json/rejected")
        .await;
    assert_eq!(refusal["errorCode"], "InvalidPayload");

    // A missing required parameter (no SerialNumber, no default) is refused before the hook.
    let (created, _) = create_from_csr(&mut mqtt).await;
    mqtt.publish(
        &provision_topic(),
        json!({
            "certificateOwnershipToken": created["certificateOwnershipToken"],
            "parameters": {"ActivationCode": code}
        })
        .to_string(),
    )
    .await;
    let refusal = mqtt
        .expect_json(&format!("{}/rejected", provision_topic()))
        .await;
    assert_eq!(refusal["errorCode"], "InvalidParameters");
}

async fn answers_go_only_to_the_connection_that_asked_even_with_a_shared_claim(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let claim = emulator.create_claim().await;
    let topics = [
        "$aws/certificates/create/json/accepted",
        "$aws/certificates/create/json/rejected",
    ];
    let mut first = emulator.connect("factory-line-1", &claim).await;
    first.subscribe_ok(&topics).await;
    let mut second = emulator.connect("factory-line-2", &claim).await;
    second.subscribe_ok(&topics).await;

    first.publish("$aws/certificates/create/json", "{}").await;
    let for_first = first
        .expect_json("$aws/certificates/create/json/accepted")
        .await;
    second.publish("$aws/certificates/create/json", "{}").await;
    // Had the first answer been broadcast, it would reach the second device before its own.
    let for_second = second
        .expect_json("$aws/certificates/create/json/accepted")
        .await;
    match broker {
        Broker::Embedded => assert_ne!(
            for_first["certificateId"], for_second["certificateId"],
            "the second device received the first device's private key"
        ),
        // A stock Mosquitto has no notion of the requesting connection: the services publish
        // the answer on the shared topic and every subscribed claim client receives it (the
        // difference docs/emulator.md lists). What still holds is that the asker got its answer;
        // this asserts the difference itself so that the documentation is revisited if it ends.
        Broker::Mosquitto => assert_eq!(
            for_first["certificateId"], for_second["certificateId"],
            "Mosquitto delivered the first answer to the second claim client"
        ),
    }
}
