//! Device Shadow rows from the reference, over the wire, each against the embedded broker and
//! against Mosquitto. The shadow service publishes its answers on the answer topics, which AWS
//! and both brokers deliver to every subscriber of the thing, so every row holds on both.

use serde_json::{json, Value};

use crate::support::{on_both_brokers, Broker, Emulator, Mqtt};

on_both_brokers!(
    update_answers_accepted_delta_and_documents_then_get_returns_the_full_document,
    a_stale_version_is_a_409_and_delete_keeps_the_version_count,
    malformed_updates_are_400_and_create_no_shadow,
    a_document_over_8_kb_is_413_counting_desired_and_reported_together,
    every_answer_echoes_the_client_token,
    named_shadows_are_independent_of_the_classic_shadow_and_of_each_other,
    the_delta_keeps_nested_paths_compares_arrays_whole_and_ignores_reported_only_fields,
    null_deletes_a_key_and_a_null_desired_deletes_the_section,
    a_payload_that_is_not_utf8_is_415,
    more_than_ten_requests_within_one_second_are_429_until_the_clock_moves,
);

/// Publishes a shadow request one second of the emulator's clock after the previous one: the
/// service allows ten requests per thing within one second of its clock (its 429), and the
/// manual clock would otherwise keep every request of a test inside the same second.
async fn request(emulator: &Emulator, mqtt: &Mqtt, topic: &str, payload: impl Into<Vec<u8>>) {
    emulator.clock.advance(1);
    mqtt.publish(topic, payload).await;
}

/// Connects `desk-1` and subscribes to everything under `prefix`.
async fn shadow_session(emulator: &Emulator, prefix: &str) -> Mqtt {
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    mqtt.subscribe_ok(&[&format!("{prefix}/#")]).await;
    mqtt
}

/// Sends an update and returns the answers it produced, up to `update/documents`, by topic.
async fn accepted_update(
    emulator: &Emulator,
    mqtt: &mut Mqtt,
    prefix: &str,
    body: Value,
) -> Vec<(String, Value)> {
    request(
        emulator,
        mqtt,
        &format!("{prefix}/update"),
        body.to_string(),
    )
    .await;
    let answers = mqtt.json_until(&format!("{prefix}/update/documents")).await;
    assert!(
        answers
            .iter()
            .any(|(topic, _)| *topic == format!("{prefix}/update/accepted")),
        "the update was not accepted: {answers:?}"
    );
    answers
}

/// The payload of the answer on `prefix/suffix` among `answers`, if there was one.
fn answer<'a>(answers: &'a [(String, Value)], prefix: &str, suffix: &str) -> Option<&'a Value> {
    let topic = format!("{prefix}/{suffix}");
    answers.iter().find(|(t, _)| *t == topic).map(|(_, v)| v)
}

async fn update_answers_accepted_delta_and_documents_then_get_returns_the_full_document(
    broker: Broker,
) {
    let emulator = Emulator::start_on(broker).await;
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

async fn a_stale_version_is_a_409_and_delete_keeps_the_version_count(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
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

/// Embedded broker only: Mosquitto limits whole packets (`max_packet_size` in the generated
/// configuration leaves room for the topic and headers above 128 KB), so a 129 KB payload still
/// passes there; the payload limit is the embedded broker's own check.
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

async fn malformed_updates_are_400_and_create_no_shadow(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;
    let update = format!("{prefix}/update");
    let rejected = format!("{prefix}/update/rejected");

    let mut nested = json!({"leaf": 1});
    for level in 0..6 {
        nested = json!({ format!("level{level}"): nested });
    }
    let cases = [
        ("invalid JSON", "{\"state\": {".to_string()),
        ("missing state", json!({"clientToken": "c"}).to_string()),
        (
            "a state node that is not an object",
            json!({"state": {"desired": 5}}).to_string(),
        ),
        (
            "nesting deeper than 6",
            json!({"state": {"desired": nested}}).to_string(),
        ),
        (
            "a clientToken over 64 bytes",
            json!({"state": {"reported": {"a": 1}}, "clientToken": "t".repeat(65)}).to_string(),
        ),
        (
            "state holding a node other than desired and reported",
            json!({"state": {"reported": {"a": 1}, "delta": {"a": 2}}}).to_string(),
        ),
        (
            "a version that is not a number",
            json!({"state": {"reported": {"a": 1}}, "version": "one"}).to_string(),
        ),
    ];
    for (case, payload) in cases {
        request(&emulator, &mqtt, &update, payload).await;
        let error = mqtt.expect_json(&rejected).await;
        assert_eq!(error["code"], 400, "{case}: {error}");
        assert!(error["message"].is_string(), "{case}: {error}");
        assert!(error["timestamp"].is_u64(), "{case}: {error}");
    }

    // Six levels are still allowed: the limit is on what lies beyond them.
    let mut deepest = json!({"leaf": 1});
    for level in 0..5 {
        deepest = json!({ format!("level{level}"): deepest });
    }
    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/name/deep/update"),
        json!({"state": {"desired": deepest}}).to_string(),
    )
    .await;
    mqtt.expect_json(&format!("{prefix}/name/deep/update/accepted"))
        .await;

    // None of the refused updates created the classic shadow.
    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let missing = mqtt.expect_json(&format!("{prefix}/get/rejected")).await;
    assert_eq!(missing["code"], 404, "{missing}");
    request(&emulator, &mqtt, &format!("{prefix}/delete"), "").await;
    let missing = mqtt.expect_json(&format!("{prefix}/delete/rejected")).await;
    assert_eq!(missing["code"], 404, "{missing}");
}

async fn a_document_over_8_kb_is_413_counting_desired_and_reported_together(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;
    let update = format!("{prefix}/update");

    request(
        &emulator,
        &mqtt,
        &update,
        json!({"state": {"desired": {"label": "x".repeat(9 * 1024)}}, "clientToken": "big"})
            .to_string(),
    )
    .await;
    let error = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(error["code"], 413, "{error}");
    assert_eq!(error["clientToken"], "big");

    // Each half fits alone; together they pass the limit.
    accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"reported": {"log": "r".repeat(5 * 1024)}}}),
    )
    .await;
    request(
        &emulator,
        &mqtt,
        &update,
        json!({"state": {"desired": {"note": "d".repeat(4 * 1024)}}}).to_string(),
    )
    .await;
    let error = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(error["code"], 413, "{error}");

    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert_eq!(document["version"], 1, "the refused update changed nothing");
    assert!(document["state"].get("desired").is_none(), "{document}");
}

async fn every_answer_echoes_the_client_token(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;

    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/get"),
        json!({"clientToken": "get-missing"}).to_string(),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{prefix}/get/rejected")).await;
    assert_eq!(rejected["code"], 404);
    assert_eq!(rejected["clientToken"], "get-missing");

    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"desired": {"speed": 4}}, "clientToken": "upd-1"}),
    )
    .await;
    let accepted = answer(&answers, prefix, "update/accepted").expect("accepted");
    assert_eq!(accepted["clientToken"], "upd-1");
    let documents = answer(&answers, prefix, "update/documents").expect("documents");
    assert_eq!(documents["current"]["state"]["desired"]["speed"], 4);

    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/update"),
        json!({"state": {"desired": {"speed": 5}}, "version": 9, "clientToken": "upd-stale"})
            .to_string(),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(rejected["code"], 409);
    assert_eq!(rejected["clientToken"], "upd-stale");

    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/get"),
        json!({"clientToken": "get-1"}).to_string(),
    )
    .await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert_eq!(document["clientToken"], "get-1");

    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/delete"),
        json!({"clientToken": "del-1"}).to_string(),
    )
    .await;
    let deleted = mqtt.expect_json(&format!("{prefix}/delete/accepted")).await;
    assert_eq!(deleted["clientToken"], "del-1");
    assert_eq!(deleted["version"], 1);
    assert!(deleted["timestamp"].is_u64());

    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/delete"),
        json!({"clientToken": "del-2"}).to_string(),
    )
    .await;
    let rejected = mqtt.expect_json(&format!("{prefix}/delete/rejected")).await;
    assert_eq!(rejected["code"], 404);
    assert_eq!(rejected["clientToken"], "del-2");
}

async fn named_shadows_are_independent_of_the_classic_shadow_and_of_each_other(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let classic = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, classic).await;
    let printer = "$aws/things/desk-1/shadow/name/printer-1";
    let scale = "$aws/things/desk-1/shadow/name/scale_2";

    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        printer,
        json!({"state": {"reported": {"model": "ZD421"}}}),
    )
    .await;
    let accepted = answer(&answers, printer, "update/accepted").expect("accepted");
    assert_eq!(accepted["version"], 1);
    assert!(
        answers.iter().all(
            |(topic, _)| !topic.starts_with(&format!("{classic}/update/"))
                && !topic.starts_with(&format!("{scale}/"))
        ),
        "a named shadow's answers stay on its own topics: {answers:?}"
    );
    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        scale,
        json!({"state": {"reported": {"unit": "kg"}}}),
    )
    .await;
    let accepted = answer(&answers, scale, "update/accepted").expect("accepted");
    assert_eq!(
        accepted["version"], 1,
        "each named shadow counts on its own"
    );

    request(&emulator, &mqtt, &format!("{classic}/get"), "").await;
    let missing = mqtt.expect_json(&format!("{classic}/get/rejected")).await;
    assert_eq!(missing["code"], 404, "the classic shadow was never created");

    request(&emulator, &mqtt, &format!("{printer}/delete"), "").await;
    mqtt.expect_json(&format!("{printer}/delete/accepted"))
        .await;
    request(&emulator, &mqtt, &format!("{scale}/get"), "").await;
    let document = mqtt.expect_json(&format!("{scale}/get/accepted")).await;
    assert_eq!(document["state"]["reported"]["unit"], "kg");
    request(&emulator, &mqtt, &format!("{printer}/get"), "").await;
    let missing = mqtt.expect_json(&format!("{printer}/get/rejected")).await;
    assert_eq!(missing["code"], 404);

    // A shadow name outside the allowed characters is refused, not created.
    request(
        &emulator,
        &mqtt,
        &format!("{classic}/name/bad.name/update"),
        json!({"state": {"reported": {"a": 1}}}).to_string(),
    )
    .await;
    let refused = mqtt
        .expect_json(&format!("{classic}/name/bad.name/update/rejected"))
        .await;
    assert_eq!(refused["code"], 400, "{refused}");
}

async fn the_delta_keeps_nested_paths_compares_arrays_whole_and_ignores_reported_only_fields(
    broker: Broker,
) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;

    accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"reported": {
            "media": {"width": 4, "height": 4},
            "trays": [1, 2, 3],
            "firmware": "1.2"
        }}}),
    )
    .await;
    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"desired": {
            "media": {"width": 4, "height": 6},
            "trays": [1, 2]
        }}, "clientToken": "d-1"}),
    )
    .await;
    let delta = answer(&answers, prefix, "update/delta").expect("a delta");
    assert_eq!(
        delta["state"],
        json!({"media": {"height": 6}, "trays": [1, 2]}),
        "only the differing leaf of a nested object, the array whole, no reported-only field"
    );
    assert_eq!(delta["version"], 2);
    assert!(delta["metadata"]["media"]["height"]["timestamp"].is_u64());

    // Reporting what is desired empties the delta: no delta message, none in the document.
    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"reported": {"media": {"height": 6}, "trays": [1, 2]}}}),
    )
    .await;
    assert!(
        answer(&answers, prefix, "update/delta").is_none(),
        "no delta once reported matches desired: {answers:?}"
    );
    let documents = answer(&answers, prefix, "update/documents").expect("documents");
    assert_eq!(documents["previous"]["version"], 2);
    assert_eq!(documents["current"]["version"], 3);
    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert!(document["state"].get("delta").is_none(), "{document}");
    assert_eq!(
        document["state"]["desired"],
        json!({"media": {"width": 4, "height": 6}, "trays": [1, 2]}),
        "desired is never cleared automatically"
    );

    // An array that differs in one element is again delta'd whole.
    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"reported": {"trays": [1, 3]}}}),
    )
    .await;
    let delta = answer(&answers, prefix, "update/delta").expect("a delta");
    assert_eq!(delta["state"], json!({"trays": [1, 2]}));
}

async fn null_deletes_a_key_and_a_null_desired_deletes_the_section(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;

    accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {
            "desired": {"darkness": 20, "speed": 4, "media": {"width": 4, "height": 6}},
            "reported": {"darkness": 15, "speed": 4}
        }}),
    )
    .await;
    let answers = accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"desired": {"darkness": null, "media": {"height": null}}}}),
    )
    .await;
    let delta = answer(&answers, prefix, "update/delta").expect("a delta");
    assert_eq!(delta["state"], json!({"media": {"width": 4}}));
    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert_eq!(
        document["state"]["desired"],
        json!({"speed": 4, "media": {"width": 4}})
    );
    assert!(document["metadata"]["desired"].get("darkness").is_none());

    accepted_update(
        &emulator,
        &mut mqtt,
        prefix,
        json!({"state": {"desired": null}}),
    )
    .await;
    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let document = mqtt.expect_json(&format!("{prefix}/get/accepted")).await;
    assert!(document["state"].get("desired").is_none(), "{document}");
    assert!(document["state"].get("delta").is_none(), "{document}");
    assert_eq!(document["state"]["reported"]["darkness"], 15);
    assert_eq!(document["version"], 3);
}

async fn a_payload_that_is_not_utf8_is_415(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;
    request(
        &emulator,
        &mqtt,
        &format!("{prefix}/update"),
        b"{\"state\":{\"reported\":{\"a\":\"\xff\xfe\"}}}".to_vec(),
    )
    .await;
    let error = mqtt.expect_json(&format!("{prefix}/update/rejected")).await;
    assert_eq!(error["code"], 415, "{error}");
}

async fn more_than_ten_requests_within_one_second_are_429_until_the_clock_moves(broker: Broker) {
    let emulator = Emulator::start_on(broker).await;
    let prefix = "$aws/things/desk-1/shadow";
    let mut mqtt = shadow_session(&emulator, prefix).await;

    // Eleven gets inside one second of the emulator's clock, across the classic shadow and a
    // named one: the limit is per thing. The clock does not move between them.
    for n in 0..11 {
        let shadow = if n % 2 == 0 {
            prefix.to_string()
        } else {
            format!("{prefix}/name/printer-1")
        };
        mqtt.publish(
            &format!("{shadow}/get"),
            json!({"clientToken": format!("g-{n}")}).to_string(),
        )
        .await;
    }
    let mut codes = Vec::new();
    while codes.len() < 11 {
        let (topic, answer) = mqtt
            .json_until_any(&[
                &format!("{prefix}/get/rejected"),
                &format!("{prefix}/name/printer-1/get/rejected"),
            ])
            .await;
        codes.push((topic, answer["clientToken"].clone(), answer["code"].clone()));
    }
    let throttled: Vec<_> = codes.iter().filter(|(_, _, code)| *code == 429).collect();
    assert_eq!(throttled.len(), 1, "{codes:?}");
    assert_eq!(
        throttled[0].1, "g-10",
        "the eleventh request is the one refused"
    );
    assert_eq!(
        codes.iter().filter(|(_, _, code)| *code == 404).count(),
        10,
        "{codes:?}"
    );

    // The next second admits requests again.
    request(&emulator, &mqtt, &format!("{prefix}/get"), "").await;
    let missing = mqtt.expect_json(&format!("{prefix}/get/rejected")).await;
    assert_eq!(missing["code"], 404);
}
