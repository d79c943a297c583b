//! Tests of the Device Shadow engine: every request and answer shape, every error, the delta
//! rules, versions, throttling, and durability across a restart. Time is passed in, so every
//! test is deterministic.

use std::path::Path;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;

/// A fixed, realistic clock value (epoch seconds).
const T0: u64 = 1_700_000_000;
const CLASSIC: &str = "$aws/things/desk-1/shadow";
const NAMED: &str = "$aws/things/desk-1/shadow/name/printer-1";

fn open(dir: &Path) -> ShadowService {
    ShadowService::open(dir).expect("the shadow state opens")
}

fn decode(messages: Vec<Outgoing>) -> Vec<(String, Value)> {
    messages
        .into_iter()
        .map(|message| {
            let payload = serde_json::from_slice(&message.payload).expect("every answer is JSON");
            (message.topic, payload)
        })
        .collect()
}

fn send(service: &mut ShadowService, topic: &str, body: Value, now: u64) -> Vec<(String, Value)> {
    let bytes = serde_json::to_vec(&body).expect("test bodies serialise");
    decode(service.handle(topic, &bytes, now))
}

fn send_raw(
    service: &mut ShadowService,
    topic: &str,
    payload: &[u8],
    now: u64,
) -> Vec<(String, Value)> {
    decode(service.handle(topic, payload, now))
}

/// Asserts that `messages` is exactly one message on `topic` and returns its payload.
fn single(messages: &[(String, Value)], topic: &str) -> Value {
    assert_eq!(
        messages.len(),
        1,
        "expected one message on {topic}, got {messages:#?}"
    );
    assert_eq!(messages[0].0, topic);
    messages[0].1.clone()
}

fn find<'a>(messages: &'a [(String, Value)], topic: &str) -> Option<&'a Value> {
    messages
        .iter()
        .find(|(t, _)| t == topic)
        .map(|(_, payload)| payload)
}

fn topics(messages: &[(String, Value)]) -> Vec<&str> {
    messages.iter().map(|(topic, _)| topic.as_str()).collect()
}

/// Sends an update that must be accepted and returns all answers.
fn update_ok(
    service: &mut ShadowService,
    prefix: &str,
    body: Value,
    now: u64,
) -> Vec<(String, Value)> {
    let messages = send(service, &format!("{prefix}/update"), body, now);
    assert!(
        find(&messages, &format!("{prefix}/update/accepted")).is_some(),
        "update was not accepted: {messages:#?}"
    );
    messages
}

fn get_document(service: &mut ShadowService, prefix: &str, now: u64) -> Value {
    single(
        &send_raw(service, &format!("{prefix}/get"), b"", now),
        &format!("{prefix}/get/accepted"),
    )
}

fn rejected(service: &mut ShadowService, topic: &str, payload: &[u8], now: u64) -> Value {
    single(
        &send_raw(service, topic, payload, now),
        &format!("{topic}/rejected"),
    )
}

fn assert_rejection(answer: &Value, code: u16, message: &str) {
    assert_eq!(answer["code"], json!(code), "{answer}");
    assert_eq!(answer["message"], json!(message), "{answer}");
    assert!(answer["timestamp"].is_u64(), "{answer}");
}

#[test]
fn first_update_answers_accepted_delta_and_documents_in_that_order() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let messages = send(
        &mut service,
        &format!("{CLASSIC}/update"),
        json!({"state": {"desired": {"darkness": 20, "media": {"width": 4}}}, "clientToken": "tok-1"}),
        T0,
    );
    assert_eq!(
        topics(&messages),
        [
            format!("{CLASSIC}/update/accepted"),
            format!("{CLASSIC}/update/delta"),
            format!("{CLASSIC}/update/documents")
        ]
    );
    assert_eq!(
        messages[0].1,
        json!({
            "state": {"desired": {"darkness": 20, "media": {"width": 4}}},
            "metadata": {"desired": {"darkness": {"timestamp": T0}, "media": {"width": {"timestamp": T0}}}},
            "version": 1,
            "timestamp": T0,
            "clientToken": "tok-1"
        })
    );
    assert_eq!(
        messages[1].1,
        json!({
            "state": {"darkness": 20, "media": {"width": 4}},
            "metadata": {"darkness": {"timestamp": T0}, "media": {"width": {"timestamp": T0}}},
            "version": 1,
            "timestamp": T0,
            "clientToken": "tok-1"
        })
    );
    assert_eq!(
        messages[2].1,
        json!({
            "current": {
                "state": {"desired": {"darkness": 20, "media": {"width": 4}}},
                "metadata": {"desired": {"darkness": {"timestamp": T0}, "media": {"width": {"timestamp": T0}}}},
                "version": 1
            },
            "timestamp": T0,
            "clientToken": "tok-1"
        })
    );
}

#[test]
fn documents_carry_previous_and_current() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"online": true}}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"online": false}}}),
        T0 + 5,
    );
    let documents =
        find(&messages, &format!("{CLASSIC}/update/documents")).expect("documents published");
    assert_eq!(
        *documents,
        json!({
            "previous": {
                "state": {"reported": {"online": true}},
                "metadata": {"reported": {"online": {"timestamp": T0}}},
                "version": 1
            },
            "current": {
                "state": {"reported": {"online": false}},
                "metadata": {"reported": {"online": {"timestamp": T0 + 5}}},
                "version": 2
            },
            "timestamp": T0 + 5
        })
    );
    assert!(
        documents.get("clientToken").is_none(),
        "no token was sent, none is echoed"
    );
}

#[test]
fn get_returns_the_full_document_with_delta_only_when_sections_differ() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"speed": 4, "mode": "thermal"}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"speed": 3, "mode": "thermal", "fw": "1.2"}}}),
        T0 + 1,
    );
    let document = single(
        &send(
            &mut service,
            &format!("{CLASSIC}/get"),
            json!({"clientToken": "g"}),
            T0 + 2,
        ),
        &format!("{CLASSIC}/get/accepted"),
    );
    assert_eq!(
        document,
        json!({
            "state": {
                "desired": {"speed": 4, "mode": "thermal"},
                "reported": {"speed": 3, "mode": "thermal", "fw": "1.2"},
                "delta": {"speed": 4}
            },
            "metadata": {
                "desired": {"speed": {"timestamp": T0}, "mode": {"timestamp": T0}},
                "reported": {"speed": {"timestamp": T0 + 1}, "mode": {"timestamp": T0 + 1}, "fw": {"timestamp": T0 + 1}}
            },
            "version": 2,
            "timestamp": T0 + 2,
            "clientToken": "g"
        })
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"speed": 4}}}),
        T0 + 3,
    );
    let document = get_document(&mut service, CLASSIC, T0 + 4);
    assert!(
        document["state"].get("delta").is_none(),
        "in sync: no delta in {document}"
    );
    assert!(document.get("clientToken").is_none());
}

#[test]
fn delta_keeps_nested_paths_compares_arrays_whole_and_ignores_reported_only_fields() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {
            "media": {"width": 4, "height": 6, "type": "label"},
            "trays": [1, 2, 3],
            "serial": "ZB123"
        }}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {
            "media": {"width": 4, "height": 8},
            "trays": [1, 2],
            "darkness": 15
        }}}),
        T0 + 1,
    );
    let delta = find(&messages, &format!("{CLASSIC}/update/delta")).expect("delta published");
    assert_eq!(
        delta["state"],
        json!({"media": {"height": 8}, "trays": [1, 2], "darkness": 15})
    );
    assert_eq!(
        delta["metadata"],
        json!({
            "media": {"height": {"timestamp": T0 + 1}},
            "trays": [{"timestamp": T0 + 1}, {"timestamp": T0 + 1}],
            "darkness": {"timestamp": T0 + 1}
        })
    );
    assert_eq!(delta["version"], json!(2));

    // An array equal element for element is in sync; the same elements in another order are not.
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"trays": [2, 1]}}}),
        T0 + 2,
    );
    let delta = find(&messages, &format!("{CLASSIC}/update/delta")).expect("still out of sync");
    assert_eq!(delta["state"]["trays"], json!([1, 2]));
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"trays": [1, 2], "media": {"height": 8}, "darkness": 15}}}),
        T0 + 3,
    );
    assert!(
        find(&messages, &format!("{CLASSIC}/update/delta")).is_none(),
        "in sync: {messages:#?}"
    );
}

#[test]
fn delta_takes_the_whole_desired_object_when_reported_is_not_an_object() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"media": "unknown"}}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"media": {"width": 4}}}}),
        T0 + 1,
    );
    let delta = find(&messages, &format!("{CLASSIC}/update/delta")).expect("delta published");
    assert_eq!(delta["state"], json!({"media": {"width": 4}}));
}

#[test]
fn reported_only_update_publishes_no_delta_when_nothing_is_desired() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"online": true}}}),
        T0,
    );
    assert_eq!(
        topics(&messages),
        [
            format!("{CLASSIC}/update/accepted"),
            format!("{CLASSIC}/update/documents")
        ]
    );
}

#[test]
fn null_deletes_a_key_and_its_metadata_and_emptied_objects_disappear() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"a": 1, "media": {"width": 4}}, "reported": {"a": 1}}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"media": {"width": null}, "missing": null}}}),
        T0 + 1,
    );
    let accepted = find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted");
    assert_eq!(
        accepted["state"],
        json!({"desired": {"media": {"width": null}, "missing": null}})
    );
    assert_eq!(
        accepted["metadata"],
        json!({"desired": {"media": {"width": {"timestamp": T0 + 1}}, "missing": {"timestamp": T0 + 1}}})
    );
    let document = get_document(&mut service, CLASSIC, T0 + 2);
    assert_eq!(
        document["state"],
        json!({"desired": {"a": 1}, "reported": {"a": 1}})
    );
    assert_eq!(
        document["metadata"],
        json!({"desired": {"a": {"timestamp": T0}}, "reported": {"a": {"timestamp": T0}}})
    );

    // Deleting the last desired key removes the section itself.
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"a": null}}}),
        T0 + 3,
    );
    let document = get_document(&mut service, CLASSIC, T0 + 4);
    assert_eq!(document["state"], json!({"reported": {"a": 1}}));
    assert_eq!(
        document["metadata"],
        json!({"reported": {"a": {"timestamp": T0}}})
    );
}

#[test]
fn desired_null_deletes_the_whole_section_and_keeps_reported() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"x": 1, "y": {"z": 2}}, "reported": {"x": 0}}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": null, "reported": {"x": 1}}, "clientToken": "sync"}),
        T0 + 1,
    );
    assert!(find(&messages, &format!("{CLASSIC}/update/delta")).is_none());
    let accepted = find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted");
    assert_eq!(
        accepted["state"],
        json!({"desired": null, "reported": {"x": 1}})
    );
    assert_eq!(
        accepted["metadata"],
        json!({"desired": {"timestamp": T0 + 1}, "reported": {"x": {"timestamp": T0 + 1}}})
    );
    let document = get_document(&mut service, CLASSIC, T0 + 2);
    assert_eq!(document["state"], json!({"reported": {"x": 1}}));
    assert_eq!(document["version"], json!(2));
}

#[test]
fn a_scalar_replaced_by_an_object_and_back_keeps_consistent_metadata() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"media": "label"}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"media": {"width": 4}}}}),
        T0 + 1,
    );
    let document = get_document(&mut service, CLASSIC, T0 + 2);
    assert_eq!(
        document["state"]["reported"],
        json!({"media": {"width": 4}})
    );
    assert_eq!(
        document["metadata"]["reported"],
        json!({"media": {"width": {"timestamp": T0 + 1}}})
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"media": [{"w": 4}, 5]}}}),
        T0 + 3,
    );
    let document = get_document(&mut service, CLASSIC, T0 + 4);
    assert_eq!(
        document["state"]["reported"],
        json!({"media": [{"w": 4}, 5]})
    );
    assert_eq!(
        document["metadata"]["reported"],
        json!({"media": [{"w": {"timestamp": T0 + 3}}, {"timestamp": T0 + 3}]})
    );
}

#[test]
fn merging_keeps_untouched_fields_and_their_timestamps() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1, "n": {"b": 2, "c": 3}}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"n": {"c": 4}}}}),
        T0 + 10,
    );
    let document = get_document(&mut service, CLASSIC, T0 + 11);
    assert_eq!(
        document["state"]["reported"],
        json!({"a": 1, "n": {"b": 2, "c": 4}})
    );
    assert_eq!(
        document["metadata"]["reported"],
        json!({"a": {"timestamp": T0}, "n": {"b": {"timestamp": T0}, "c": {"timestamp": T0 + 10}}})
    );
}

#[test]
fn every_accepted_update_increments_the_version_and_a_stale_version_is_a_conflict() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for expected in 1..=3u64 {
        let messages = update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"reported": {"same": 1}}}),
            T0,
        );
        let accepted = find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted");
        assert_eq!(
            accepted["version"],
            json!(expected),
            "a no-op update still counts"
        );
    }
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"v": 1}}, "version": 3}),
        T0,
    );
    assert_eq!(
        find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted")["version"],
        json!(4)
    );

    let answer = single(
        &send(
            &mut service,
            &format!("{CLASSIC}/update"),
            json!({"state": {"reported": {"v": 2}}, "version": 3, "clientToken": "late"}),
            T0,
        ),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(&answer, 409, "Version conflict");
    assert_eq!(answer["clientToken"], json!("late"));
    assert_eq!(
        get_document(&mut service, CLASSIC, T0)["state"]["reported"]["v"],
        json!(1),
        "not applied"
    );
    assert_eq!(get_document(&mut service, CLASSIC, T0)["version"], json!(4));
}

#[test]
fn a_version_on_a_new_shadow_must_be_zero() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let answer = rejected(
        &mut service,
        &format!("{CLASSIC}/update"),
        br#"{"state":{"reported":{}},"version":1}"#,
        T0,
    );
    assert_rejection(&answer, 409, "Version conflict");
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1}}, "version": 0}),
        T0,
    );
}

#[test]
fn invalid_versions_are_rejected_with_400() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for version in [
        json!("1"),
        json!(-1),
        json!(1.5),
        json!(null),
        json!({"v": 1}),
    ] {
        let body = json!({"state": {"reported": {"a": 1}}, "version": version, "clientToken": "v"});
        let answer = single(
            &send(&mut service, &format!("{CLASSIC}/update"), body, T0 + 100),
            &format!("{CLASSIC}/update/rejected"),
        );
        assert_rejection(&answer, 400, "Invalid version");
        assert_eq!(answer["clientToken"], json!("v"));
    }
}

#[test]
fn delete_answers_with_the_version_and_a_new_shadow_continues_it() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 2}}}),
        T0,
    );
    let answer = single(
        &send(
            &mut service,
            &format!("{CLASSIC}/delete"),
            json!({"clientToken": "del"}),
            T0 + 1,
        ),
        &format!("{CLASSIC}/delete/accepted"),
    );
    assert_eq!(
        answer,
        json!({"version": 2, "timestamp": T0 + 1, "clientToken": "del"})
    );
    assert_eq!(service.document("desk-1", None), None);

    let answer = rejected(&mut service, &format!("{CLASSIC}/get"), b"", T0 + 2);
    assert_rejection(&answer, 404, "No shadow exists with name: 'desk-1'");
    let answer = rejected(&mut service, &format!("{CLASSIC}/delete"), b"", T0 + 2);
    assert_rejection(&answer, 404, "No shadow exists with name: 'desk-1'");

    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"b": 1}}}),
        T0 + 3,
    );
    assert_eq!(
        find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted")["version"],
        json!(3)
    );
    let documents = find(&messages, &format!("{CLASSIC}/update/documents")).expect("documents");
    assert!(
        documents.get("previous").is_none(),
        "a re-created shadow has no previous: {documents}"
    );
    assert_eq!(
        get_document(&mut service, CLASSIC, T0 + 4)["state"],
        json!({"reported": {"b": 1}})
    );
}

#[test]
fn the_version_restarts_once_a_deleted_shadow_is_older_than_48_hours() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 2}}}),
        T0,
    );
    send_raw(&mut service, &format!("{CLASSIC}/delete"), b"", T0);
    let later = T0 + VERSION_KEPT_AFTER_DELETE_S + 1;
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 3}}}),
        later,
    );
    assert_eq!(
        find(&messages, &format!("{CLASSIC}/update/accepted")).expect("accepted")["version"],
        json!(1)
    );
}

#[test]
fn named_shadows_are_independent_of_the_classic_shadow_and_of_each_other() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        NAMED,
        json!({"state": {"desired": {"darkness": 9}}}),
        T0,
    );
    let messages = update_ok(
        &mut service,
        NAMED,
        json!({"state": {"desired": {"darkness": 10}}}),
        T0,
    );
    assert_eq!(
        find(&messages, &format!("{NAMED}/update/accepted")).expect("accepted")["version"],
        json!(2)
    );
    assert!(find(&messages, &format!("{NAMED}/update/delta")).is_some());
    let answer = rejected(&mut service, &format!("{CLASSIC}/get"), b"", T0);
    assert_rejection(&answer, 404, "No shadow exists with name: 'desk-1'");
    let other = "$aws/things/desk-1/shadow/name/scale-1";
    let answer = rejected(&mut service, &format!("{other}/get"), b"", T0);
    assert_rejection(&answer, 404, "No shadow exists with name: 'desk-1~scale-1'");
    update_ok(
        &mut service,
        "$aws/things/desk-1/shadow/name/$config:v2",
        json!({"state": {"reported": {}}}),
        T0,
    );
    assert_eq!(service.named_shadows("desk-1"), ["$config:v2", "printer-1"]);
    assert_eq!(
        get_document(&mut service, NAMED, T0)["state"]["desired"],
        json!({"darkness": 10})
    );
    let accepted = single(
        &send_raw(&mut service, &format!("{NAMED}/delete"), b"", T0),
        &format!("{NAMED}/delete/accepted"),
    );
    assert_eq!(accepted["version"], json!(2));
    assert_eq!(service.named_shadows("desk-1"), ["$config:v2"]);
}

#[test]
fn thing_and_shadow_names_are_validated() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let long_thing = "t".repeat(129);
    let topic = format!("$aws/things/{long_thing}/shadow/get");
    assert_rejection(
        &rejected(&mut service, &topic, b"", T0),
        400,
        "Invalid thing name",
    );
    let topic = "$aws/things/desk.1/shadow/update";
    assert_rejection(
        &rejected(&mut service, topic, br#"{"state":{}}"#, T0),
        400,
        "Invalid thing name",
    );
    let topic = "$aws/things/desk-1/shadow/name/bad.name/get";
    assert_rejection(
        &rejected(&mut service, topic, b"", T0),
        400,
        "Invalid shadow name",
    );
    let long_shadow = "s".repeat(65);
    let topic = format!("$aws/things/desk-1/shadow/name/{long_shadow}/get");
    assert_rejection(
        &rejected(&mut service, &topic, b"", T0),
        400,
        "Invalid shadow name",
    );
    let topic = "$aws/things/desk-1/shadow/name//get";
    assert_rejection(
        &rejected(&mut service, topic, b"", T0),
        400,
        "Invalid shadow name",
    );
    // The longest legal names work.
    let topic = format!(
        "$aws/things/{}/shadow/name/{}",
        "t".repeat(128),
        "s".repeat(64)
    );
    update_ok(
        &mut service,
        &topic,
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    assert!(is_valid_thing_name("a:b_c-D9"));
    assert!(!is_valid_thing_name(""));
    assert!(is_valid_shadow_name("$a:b_c-D9"));
    assert!(!is_valid_shadow_name(""));
}

#[test]
fn malformed_requests_are_rejected_with_400_and_the_guides_messages() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let update = format!("{CLASSIC}/update");
    let cases: &[(&[u8], &str)] = &[
        (b"{not json", "Invalid JSON"),
        (b"", "Invalid JSON"),
        (b"[1,2]", "Invalid JSON"),
        (br#"{"clientToken":"c"}"#, "Missing required node: state"),
        (br#"{"state":5}"#, "State node must be an object"),
        (br#"{"state":null}"#, "State node must be an object"),
        (
            br#"{"state":{"delta":{"a":1}}}"#,
            "State contains an invalid node",
        ),
        (
            br#"{"state":{"desired":{},"extra":{}}}"#,
            "State contains an invalid node",
        ),
        (
            br#"{"state":{"desired":[1]}}"#,
            "Desired node must be an object",
        ),
        (
            br#"{"state":{"desired":"on"}}"#,
            "Desired node must be an object",
        ),
        (
            br#"{"state":{"reported":7}}"#,
            "Reported node must be an object",
        ),
        (
            br#"{"state":{"reported":{}},"clientToken":5}"#,
            "Invalid clientToken",
        ),
    ];
    for (payload, message) in cases {
        let answer = rejected(&mut service, &update, payload, T0);
        assert_rejection(&answer, 400, message);
    }
    assert_eq!(
        service.document("desk-1", None),
        None,
        "nothing was created"
    );
    for operation in ["get", "delete"] {
        let answer = rejected(
            &mut service,
            &format!("{CLASSIC}/{operation}"),
            b"{oops",
            T0,
        );
        assert_rejection(&answer, 400, "Invalid JSON");
    }
}

#[test]
fn the_client_token_is_echoed_when_valid_and_refused_over_64_bytes() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let token_64 = "k".repeat(64);
    let messages = update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"desired": {"a": 1}}, "clientToken": token_64}),
        T0,
    );
    for (_, payload) in &messages {
        assert_eq!(
            payload["clientToken"],
            json!(token_64),
            "every answer echoes the token"
        );
    }
    let token_65 = "k".repeat(65);
    let body = json!({"state": {"desired": {"a": 2}}, "clientToken": token_65});
    let answer = single(
        &send(&mut service, &format!("{CLASSIC}/update"), body, T0),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(&answer, 400, "Invalid clientToken");
    assert!(
        answer.get("clientToken").is_none(),
        "an invalid token is not echoed"
    );
    // Errors after the body was read echo the token.
    let answer = single(
        &send(
            &mut service,
            "$aws/things/desk-2/shadow/get",
            json!({"clientToken": "g2"}),
            T0,
        ),
        "$aws/things/desk-2/shadow/get/rejected",
    );
    assert_eq!(answer["clientToken"], json!("g2"));
}

#[test]
fn nesting_deeper_than_six_levels_is_rejected() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let six = json!({"state": {"desired": {"l1": {"l2": {"l3": {"l4": {"l5": {"l6": 1}}}}}}}});
    update_ok(&mut service, CLASSIC, six, T0);
    let seven =
        json!({"state": {"reported": {"l1": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": 1}}}}}}}}});
    let answer = single(
        &send(&mut service, &format!("{CLASSIC}/update"), seven, T0),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(
        &answer,
        400,
        "JSON contains too many levels of nesting; maximum is 6",
    );
    let arrays = json!({"state": {"reported": {"l1": [[[[[[1]]]]]]}}});
    let answer = single(
        &send(&mut service, &format!("{CLASSIC}/update"), arrays, T0),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_eq!(answer["code"], json!(400), "arrays count as levels too");
}

#[test]
fn documents_over_8_kb_are_rejected_with_413_whether_in_one_request_or_accumulated() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let too_big = json!({"state": {"reported": {"blob": "x".repeat(MAX_DOCUMENT_BYTES)}}});
    let answer = single(
        &send(&mut service, &format!("{CLASSIC}/update"), too_big, T0),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(&answer, 413, "The payload exceeds the maximum size allowed");

    // `{"reported":{"a":"…"}}` is 20 bytes of framing around the string.
    let fits = MAX_DOCUMENT_BYTES - r#"{"reported":{"a":""}}"#.len();
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": "x".repeat(fits)}}}),
        T0,
    );
    let answer = single(
        &send(
            &mut service,
            &format!("{CLASSIC}/update"),
            json!({"state": {"desired": {"b": 1}}}),
            T0,
        ),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(&answer, 413, "The payload exceeds the maximum size allowed");
    assert_eq!(
        get_document(&mut service, CLASSIC, T0)["version"],
        json!(1),
        "not applied"
    );
    // Metadata does not count: many small leaves with large metadata still fit.
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": null}}}),
        T0,
    );
    let leaves: serde_json::Map<String, Value> =
        (0..500).map(|i| (format!("k{i}"), json!(1))).collect();
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": leaves}}),
        T0,
    );
}

#[test]
fn payloads_that_are_not_utf8_are_rejected_with_415() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let answer = rejected(
        &mut service,
        &format!("{CLASSIC}/update"),
        &[0x7b, 0xff, 0xfe, 0x7d],
        T0,
    );
    assert_rejection(
        &answer,
        415,
        "Unsupported documented encoding; supported encoding is UTF-8",
    );
}

#[test]
fn more_than_ten_requests_from_one_thing_in_one_instant_are_throttled() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for i in 0..DEFAULT_REQUESTS_PER_THING_PER_SECOND {
        update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"reported": {"i": i}}}),
            T0,
        );
    }
    let body = json!({"state": {"reported": {"i": 99}}, "clientToken": "burst"});
    let answer = single(
        &send(&mut service, &format!("{NAMED}/update"), body, T0),
        &format!("{NAMED}/update/rejected"),
    );
    assert_rejection(&answer, 429, "Too Many Requests");
    assert_eq!(answer["clientToken"], json!("burst"));
    let answer = rejected(&mut service, &format!("{CLASSIC}/get"), b"", T0);
    assert_eq!(
        answer["code"],
        json!(429),
        "gets count against the same thing"
    );
    // Another thing is not affected, and the next second starts afresh.
    update_ok(
        &mut service,
        "$aws/things/desk-2/shadow",
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"i": 100}}}),
        T0 + 1,
    );
    assert_eq!(
        get_document(&mut service, CLASSIC, T0 + 1)["version"],
        json!(11)
    );
}

#[test]
fn the_throttle_limit_can_be_changed() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    service.set_requests_per_thing_per_second(2);
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    get_document(&mut service, CLASSIC, T0);
    assert_eq!(
        rejected(&mut service, &format!("{CLASSIC}/get"), b"", T0)["code"],
        json!(429)
    );
}

#[test]
fn get_and_delete_accept_an_empty_payload_or_a_client_token() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        CLASSIC,
        json!({"state": {"reported": {"a": 1}}}),
        T0,
    );
    let answer = single(
        &send_raw(&mut service, &format!("{CLASSIC}/get"), b"{}", T0),
        &format!("{CLASSIC}/get/accepted"),
    );
    assert_eq!(answer["version"], json!(1));
    let answer = single(
        &send_raw(&mut service, &format!("{CLASSIC}/delete"), b"", T0),
        &format!("{CLASSIC}/delete/accepted"),
    );
    assert_eq!(answer, json!({"version": 1, "timestamp": T0}));
}

#[test]
fn topics_that_are_not_shadow_requests_are_ignored() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for topic in [
        "$aws/things/desk-1/shadow/update/accepted",
        "$aws/things/desk-1/shadow/update/delta",
        "$aws/things/desk-1/shadow/name/p/get/accepted",
        "$aws/things/desk-1/shadow/list",
        "$aws/things/desk-1/jobs/get",
        "devicehub/desk-1/telemetry",
    ] {
        assert!(
            service.handle(topic, b"{}", T0).is_empty(),
            "{topic} must be ignored"
        );
    }
}

#[test]
fn every_subscription_filter_matches_its_request_topics() {
    let expected = [
        "$aws/things/+/shadow/get",
        "$aws/things/+/shadow/update",
        "$aws/things/+/shadow/delete",
        "$aws/things/+/shadow/name/+/get",
        "$aws/things/+/shadow/name/+/update",
        "$aws/things/+/shadow/name/+/delete",
    ];
    assert_eq!(ShadowService::SUBSCRIPTIONS, expected);
    assert_eq!(
        ShadowService::request_topic("desk-1", None, ShadowOperation::Update),
        "$aws/things/desk-1/shadow/update"
    );
    assert_eq!(
        ShadowService::request_topic("desk-1", Some("printer-1"), ShadowOperation::Get),
        "$aws/things/desk-1/shadow/name/printer-1/get"
    );
}

#[test]
fn document_accessor_matches_get_accepted() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    update_ok(
        &mut service,
        NAMED,
        json!({"state": {"desired": {"a": 2}, "reported": {"a": 1}}}),
        T0,
    );
    let document = service
        .document("desk-1", Some("printer-1"))
        .expect("exists");
    assert_eq!(document, get_document(&mut service, NAMED, T0));
    assert_eq!(document["state"]["delta"], json!({"a": 2}));
}

#[test]
fn shadows_and_deleted_versions_survive_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"desired": {"a": 2}, "reported": {"a": 1, "l": [1]}}}),
            T0,
        );
        update_ok(
            &mut service,
            NAMED,
            json!({"state": {"reported": {"x": "y"}}}),
            T0,
        );
        update_ok(
            &mut service,
            NAMED,
            json!({"state": {"reported": {"x": "z"}}}),
            T0,
        );
        send_raw(&mut service, &format!("{NAMED}/delete"), b"", T0 + 1);
    }
    let mut service = open(dir.path());
    assert!(service.quarantined().is_empty());
    let document = get_document(&mut service, CLASSIC, T0 + 2);
    assert_eq!(
        document["state"],
        json!({"desired": {"a": 2}, "reported": {"a": 1, "l": [1]}, "delta": {"a": 2}})
    );
    assert_eq!(
        document["metadata"]["reported"]["l"],
        json!([{"timestamp": T0}])
    );
    assert_eq!(document["version"], json!(1));
    assert_eq!(
        rejected(&mut service, &format!("{NAMED}/get"), b"", T0 + 2)["code"],
        json!(404)
    );
    let messages = update_ok(
        &mut service,
        NAMED,
        json!({"state": {"reported": {"x": 1}}}),
        T0 + 3,
    );
    assert_eq!(
        find(&messages, &format!("{NAMED}/update/accepted")).expect("accepted")["version"],
        json!(3),
        "the deleted shadow's version survived the restart"
    );
}

#[test]
fn a_corrupt_shadow_file_is_moved_aside_and_reported_and_the_others_still_load() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"reported": {"a": 1}}}),
            T0,
        );
        update_ok(
            &mut service,
            NAMED,
            json!({"state": {"reported": {"b": 1}}}),
            T0,
        );
    }
    let classic_file = dir.path().join("desk-1/classic.json");
    std::fs::write(&classic_file, b"{\"thing_name\": \"desk-1\", trunc").expect("damage the file");
    // A second copy damaged earlier must not be overwritten.
    let earlier = dir.path().join("desk-1/classic.json.corrupt");
    std::fs::write(&earlier, b"older damage").expect("write an older damaged copy");

    let mut service = open(dir.path());
    let quarantined = service.quarantined().to_vec();
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].original, classic_file);
    assert_eq!(
        quarantined[0].moved_to,
        dir.path().join("desk-1/classic.json.corrupt.1")
    );
    assert!(
        quarantined[0].reason.contains("not a valid record"),
        "{}",
        quarantined[0].reason
    );
    assert!(!classic_file.exists());
    assert_eq!(
        std::fs::read(&quarantined[0].moved_to).expect("the damaged bytes are kept"),
        b"{\"thing_name\": \"desk-1\", trunc"
    );
    assert_eq!(
        std::fs::read(&earlier).expect("older copy kept"),
        b"older damage"
    );
    assert_eq!(
        get_document(&mut service, NAMED, T0)["state"]["reported"],
        json!({"b": 1})
    );
    assert_eq!(
        rejected(&mut service, &format!("{CLASSIC}/get"), b"", T0)["code"],
        json!(404)
    );
}

#[test]
fn a_record_in_the_wrong_file_is_treated_as_damaged() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"reported": {"a": 1}}}),
            T0,
        );
    }
    let from = dir.path().join("desk-1/classic.json");
    let to = dir.path().join("desk-1/named-other.json");
    std::fs::rename(&from, &to).expect("move the record");
    let service = open(dir.path());
    assert_eq!(service.quarantined().len(), 1);
    assert_eq!(service.quarantined()[0].original, to);
    assert_eq!(service.document("desk-1", None), None);
}

#[test]
fn a_temporary_file_left_by_an_interrupted_write_is_discarded() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            CLASSIC,
            json!({"state": {"reported": {"a": 1}}}),
            T0,
        );
    }
    let temp = dir.path().join("desk-1/.classic.json.tmp4242");
    std::fs::write(&temp, b"{\"half").expect("write a torn temp file");
    let mut service = open(dir.path());
    assert!(!temp.exists());
    assert!(service.quarantined().is_empty());
    assert_eq!(
        get_document(&mut service, CLASSIC, T0)["state"]["reported"],
        json!({"a": 1})
    );
}

#[test]
fn names_with_colons_and_dollars_are_stored_under_encoded_file_names() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            "$aws/things/site:desk/shadow/name/$cfg",
            json!({"state": {"reported": {"a": 1}}}),
            T0,
        );
    }
    assert!(dir.path().join("site%3Adesk/named-%24cfg.json").is_file());
    let service = open(dir.path());
    assert!(service.document("site:desk", Some("$cfg")).is_some());
}

#[test]
fn thing_names_differing_only_in_case_never_share_a_file() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        update_ok(
            &mut service,
            "$aws/things/Desk-1/shadow",
            json!({"state": {"reported": {"who": "upper"}}}),
            T0,
        );
        update_ok(
            &mut service,
            "$aws/things/desk-1/shadow",
            json!({"state": {"reported": {"who": "lower"}}}),
            T0,
        );
    }
    assert!(dir.path().join("%44esk-1/classic.json").is_file());
    assert!(dir.path().join("desk-1/classic.json").is_file());
    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    let upper = service
        .document("Desk-1", None)
        .expect("upper-case thing kept");
    let lower = service
        .document("desk-1", None)
        .expect("lower-case thing kept");
    assert_eq!(upper["state"]["reported"]["who"], json!("upper"));
    assert_eq!(lower["state"]["reported"]["who"], json!("lower"));
}

#[test]
fn a_failed_save_is_answered_with_500_and_changes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    // A plain file where the thing's directory should be makes every save for it fail.
    std::fs::write(dir.path().join("desk-1"), b"in the way").expect("block the directory");
    let answer = single(
        &send(
            &mut service,
            &format!("{CLASSIC}/update"),
            json!({"state": {"reported": {"a": 1}}, "clientToken": "t"}),
            T0,
        ),
        &format!("{CLASSIC}/update/rejected"),
    );
    assert_rejection(&answer, 500, "Internal service failure");
    assert_eq!(answer["clientToken"], json!("t"));
    assert_eq!(service.document("desk-1", None), None);
}
