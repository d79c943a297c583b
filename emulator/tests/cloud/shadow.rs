//! Device Shadow rows from the reference, over the wire.

use serde_json::json;

use crate::support::Emulator;

#[tokio::test]
async fn update_answers_accepted_delta_and_documents_then_get_returns_the_full_document() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    let prefix = "$aws/things/desk-1/shadow";
    mqtt.subscribe_ok(&[&format!("{prefix}/#")]).await;

    mqtt.publish(
        &format!("{prefix}/update"),
        json!({"state": {"desired": {"darkness": 20}, "reported": {"darkness": 15}}, "clientToken": "t-1"}).to_string(),
    )
    .await;
    let accepted = mqtt.expect_json(&format!("{prefix}/update/accepted")).await;
    assert_eq!(accepted["version"], 1);
    assert_eq!(accepted["clientToken"], "t-1");
    assert_eq!(accepted["state"]["desired"]["darkness"], 20);
    assert!(accepted["metadata"]["desired"]["darkness"]["timestamp"].is_u64());
    let delta = mqtt.expect_json(&format!("{prefix}/update/delta")).await;
    assert_eq!(
        delta["state"],
        json!({"darkness": 20}),
        "state IS the delta"
    );
    let documents = mqtt
        .expect_json(&format!("{prefix}/update/documents"))
        .await;
    assert!(
        documents.get("previous").is_none(),
        "no previous for a new shadow"
    );
    assert_eq!(documents["current"]["version"], 1);

    mqtt.publish(
        &format!("{prefix}/get"),
        json!({"clientToken": "g-1"}).to_string(),
    )
    .await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert_eq!(document["state"]["desired"]["darkness"], 20);
    assert_eq!(document["state"]["reported"]["darkness"], 15);
    assert_eq!(document["state"]["delta"]["darkness"], 20);
    assert_eq!(document["clientToken"], "g-1");
}

#[tokio::test]
async fn a_stale_version_is_a_409_and_delete_keeps_the_version_count() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    let prefix = "$aws/things/desk-1/shadow/name/printer-1";
    mqtt.subscribe_ok(&[&format!("{prefix}/#")]).await;

    mqtt.publish(
        &format!("{prefix}/update"),
        json!({"state": {"reported": {"online": true}}}).to_string(),
    )
    .await;
    let accepted = mqtt.expect_json(&format!("{prefix}/update/accepted")).await;
    assert_eq!(accepted["version"], 1);

    mqtt.publish(
        &format!("{prefix}/update"),
        json!({"state": {"reported": {"online": false}}, "version": 7, "clientToken": "stale"})
            .to_string(),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(rejected["code"], 409);
    assert_eq!(rejected["clientToken"], "stale");

    mqtt.publish(&format!("{prefix}/update"), "{not json").await;
    let rejected = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(rejected["code"], 400);

    mqtt.publish(&format!("{prefix}/delete"), "").await;
    let deleted = mqtt.expect_json(&format!("{prefix}/delete/accepted")).await;
    assert_eq!(deleted["version"], 1);
    mqtt.publish(&format!("{prefix}/get"), "").await;
    let missing = mqtt.expect_json(&format!("{prefix}/get/rejected")).await;
    assert_eq!(missing["code"], 404);

    mqtt.publish(
        &format!("{prefix}/update"),
        json!({"state": {"reported": {"online": true}}}).to_string(),
    )
    .await;
    let accepted = mqtt.expect_json(&format!("{prefix}/update/accepted")).await;
    assert_eq!(
        accepted["version"], 2,
        "the version does not restart after a delete"
    );
}

#[tokio::test]
async fn a_payload_over_128_kb_is_refused_but_a_large_one_under_it_travels() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    let topic = "devicehub/desk-1/events/large";
    mqtt.subscribe_ok(&[topic]).await;
    let large = vec![b'x'; 120 * 1024];
    mqtt.publish(topic, large.clone()).await;
    assert_eq!(mqtt.expect_message(topic).await.len(), large.len());
    mqtt.publish(topic, vec![b'x'; 129 * 1024]).await;
    mqtt.expect_closed().await;
}
