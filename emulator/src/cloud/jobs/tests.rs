//! Tests of the Jobs engine: every request and answer shape, every error code, the execution
//! state machine with step timeouts on an injected clock, notifications, throttling, and
//! durability across a restart.

use std::path::Path;

use serde_json::{json, Value};
use tempfile::TempDir;

use super::*;

/// A fixed, realistic clock value (epoch seconds).
const T0: u64 = 1_700_000_000;
const THING: &str = "desk-1";
const JOBS: &str = "$aws/things/desk-1/jobs";

fn open(dir: &Path) -> JobsService {
    JobsService::open(dir).expect("the jobs state opens")
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

fn send(service: &mut JobsService, topic: &str, body: Value, now: u64) -> Vec<(String, Value)> {
    let bytes = serde_json::to_vec(&body).expect("test bodies serialise");
    decode(service.handle(topic, &bytes, now))
}

fn topics(messages: &[(String, Value)]) -> Vec<&str> {
    messages.iter().map(|(topic, _)| topic.as_str()).collect()
}

fn find<'a>(messages: &'a [(String, Value)], topic: &str) -> Option<&'a Value> {
    messages
        .iter()
        .find(|(t, _)| t == topic)
        .map(|(_, payload)| payload)
}

/// The payload on `topic`, which must be the first message.
fn first_on(messages: &[(String, Value)], topic: &str) -> Value {
    assert!(!messages.is_empty(), "no answer on {topic}");
    assert_eq!(messages[0].0, topic, "{messages:#?}");
    messages[0].1.clone()
}

fn create(service: &mut JobsService, job_id: &str, now: u64) -> Vec<(String, Value)> {
    decode(
        service
            .create_job(
                THING,
                job_id,
                json!({"operation": "print", "url": format!("https://files/{job_id}")}),
                None,
                now,
            )
            .expect("job created"),
    )
}

fn update(service: &mut JobsService, job_id: &str, body: Value, now: u64) -> Vec<(String, Value)> {
    send(service, &format!("{JOBS}/{job_id}/update"), body, now)
}

fn accepted_update(
    service: &mut JobsService,
    job_id: &str,
    body: Value,
    now: u64,
) -> Vec<(String, Value)> {
    let messages = update(service, job_id, body, now);
    first_on(&messages, &format!("{JOBS}/{job_id}/update/accepted"));
    messages
}

fn rejected_update(service: &mut JobsService, job_id: &str, body: Value, now: u64) -> Value {
    let messages = update(service, job_id, body, now);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    first_on(&messages, &format!("{JOBS}/{job_id}/update/rejected"))
}

fn status_of(service: &JobsService, job_id: &str) -> Value {
    service.execution(THING, job_id).expect("execution exists")["status"].clone()
}

#[test]
fn creating_a_job_queues_an_execution_and_notifies_list_and_next() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let messages = create(&mut service, "job-1", T0);
    assert_eq!(
        topics(&messages),
        [format!("{JOBS}/notify"), format!("{JOBS}/notify-next")]
    );
    let summary = json!({
        "jobId": "job-1", "queuedAt": T0, "lastUpdatedAt": T0, "versionNumber": 1, "executionNumber": 1
    });
    assert_eq!(
        messages[0].1,
        json!({"timestamp": T0, "jobs": {"QUEUED": [summary]}})
    );
    let execution = json!({
        "jobId": "job-1",
        "thingName": "desk-1",
        "jobDocument": {"operation": "print", "url": "https://files/job-1"},
        "status": "QUEUED",
        "statusDetails": {},
        "queuedAt": T0,
        "lastUpdatedAt": T0,
        "versionNumber": 1,
        "executionNumber": 1
    });
    assert_eq!(
        messages[1].1,
        json!({"timestamp": T0, "execution": execution})
    );
    assert_eq!(service.execution(THING, "job-1"), Some(execution.clone()));
    assert_eq!(service.list(THING), [execution]);
    assert_eq!(service.execution(THING, "job-2"), None);
    assert!(service.list("desk-2").is_empty());

    // A second job changes the list but not its head.
    let messages = create(&mut service, "job-2", T0 + 1);
    assert_eq!(topics(&messages), [format!("{JOBS}/notify")]);
    assert_eq!(
        messages[0].1["jobs"]["QUEUED"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn get_lists_pending_executions_as_summaries() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/get"),
            json!({"clientToken": "l0"}),
            T0,
        ),
        &format!("{JOBS}/get/accepted"),
    );
    assert_eq!(
        answer,
        json!({"inProgressJobs": [], "queuedJobs": [], "timestamp": T0, "clientToken": "l0"})
    );
    create(&mut service, "job-1", T0);
    create(&mut service, "job-2", T0 + 1);
    create(&mut service, "job-3", T0 + 2);
    accepted_update(
        &mut service,
        "job-2",
        json!({"status": "IN_PROGRESS"}),
        T0 + 3,
    );
    accepted_update(
        &mut service,
        "job-3",
        json!({"status": "SUCCEEDED"}),
        T0 + 4,
    );
    let messages = send(
        &mut service,
        &format!("{JOBS}/get"),
        json!({"clientToken": "l1"}),
        T0 + 5,
    );
    assert_eq!(messages.len(), 1);
    let answer = first_on(&messages, &format!("{JOBS}/get/accepted"));
    assert_eq!(
        answer,
        json!({
            "inProgressJobs": [{
                "jobId": "job-2", "queuedAt": T0 + 1, "startedAt": T0 + 3, "lastUpdatedAt": T0 + 3,
                "versionNumber": 2, "executionNumber": 1
            }],
            "queuedJobs": [{
                "jobId": "job-1", "queuedAt": T0, "lastUpdatedAt": T0, "versionNumber": 1, "executionNumber": 1
            }],
            "timestamp": T0 + 5,
            "clientToken": "l1"
        })
    );
}

#[test]
fn start_next_starts_the_oldest_queued_execution_and_then_returns_the_running_one() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/start-next"),
            json!({"clientToken": "s0"}),
            T0,
        ),
        &format!("{JOBS}/start-next/accepted"),
    );
    assert_eq!(
        answer,
        json!({"timestamp": T0, "clientToken": "s0"}),
        "no execution when nothing is pending"
    );

    create(&mut service, "job-1", T0);
    create(&mut service, "job-2", T0);
    let messages = send(
        &mut service,
        &format!("{JOBS}/start-next"),
        json!({"clientToken": "s1", "statusDetails": {"step": "downloading"}}),
        T0 + 10,
    );
    assert_eq!(
        topics(&messages),
        [
            format!("{JOBS}/start-next/accepted"),
            format!("{JOBS}/notify")
        ],
        "the head stays job-1, so no notify-next"
    );
    let execution = &messages[0].1["execution"];
    assert_eq!(execution["jobId"], json!("job-1"));
    assert_eq!(execution["status"], json!("IN_PROGRESS"));
    assert_eq!(execution["statusDetails"], json!({"step": "downloading"}));
    assert_eq!(execution["startedAt"], json!(T0 + 10));
    assert_eq!(execution["versionNumber"], json!(2));
    assert_eq!(execution["jobDocument"]["operation"], json!("print"));
    assert_eq!(messages[0].1["clientToken"], json!("s1"));
    assert_eq!(
        messages[1].1["jobs"]["IN_PROGRESS"][0]["jobId"],
        json!("job-1")
    );
    assert_eq!(messages[1].1["jobs"]["QUEUED"][0]["jobId"], json!("job-2"));

    // Asking again returns the running execution unchanged.
    let messages = send(
        &mut service,
        &format!("{JOBS}/start-next"),
        json!({"statusDetails": {"x": "y"}}),
        T0 + 11,
    );
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].1["execution"]["jobId"], json!("job-1"));
    assert_eq!(messages[0].1["execution"]["versionNumber"], json!(2));
    assert_eq!(
        messages[0].1["execution"]["statusDetails"],
        json!({"step": "downloading"})
    );
}

#[test]
fn start_next_validates_its_request_before_starting_anything() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    for body in [
        json!({"statusDetails": {"k": 1}}),
        json!({"statusDetails": ["k"]}),
        json!({"stepTimeoutInMinutes": 0}),
        json!({"stepTimeoutInMinutes": 10_081}),
    ] {
        let messages = send(
            &mut service,
            &format!("{JOBS}/start-next"),
            body.clone(),
            T0 + 1,
        );
        assert_eq!(messages.len(), 1, "{messages:#?}");
        let answer = first_on(&messages, &format!("{JOBS}/start-next/rejected"));
        assert_eq!(answer["code"], json!("InvalidRequest"), "{body}");
    }
    assert_eq!(status_of(&service, "job-1"), json!("QUEUED"));
}

#[test]
fn in_progress_executions_come_before_older_queued_ones() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-old", T0);
    create(&mut service, "job-new", T0 + 1);
    let messages = accepted_update(
        &mut service,
        "job-new",
        json!({"status": "IN_PROGRESS"}),
        T0 + 2,
    );
    let next = find(&messages, &format!("{JOBS}/notify-next")).expect("the head changed");
    assert_eq!(next["execution"]["jobId"], json!("job-new"));
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/$next/get"),
            json!({}),
            T0 + 3,
        ),
        &format!("{JOBS}/$next/get/accepted"),
    );
    assert_eq!(answer["execution"]["jobId"], json!("job-new"));
}

#[test]
fn describe_returns_the_execution_with_or_without_its_document() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/job-1/get"),
            json!({"clientToken": "d1"}),
            T0 + 1,
        ),
        &format!("{JOBS}/job-1/get/accepted"),
    );
    assert_eq!(
        answer["execution"],
        service.execution(THING, "job-1").expect("exists")
    );
    assert_eq!(answer["timestamp"], json!(T0 + 1));
    assert_eq!(answer["clientToken"], json!("d1"));

    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/job-1/get"),
            json!({"includeJobDocument": false, "executionNumber": 1}),
            T0,
        ),
        &format!("{JOBS}/job-1/get/accepted"),
    );
    assert!(answer["execution"].get("jobDocument").is_none(), "{answer}");
    assert_eq!(answer["execution"]["jobId"], json!("job-1"));

    // An empty payload is a request with every field left out.
    let messages = decode(service.handle(&format!("{JOBS}/$next/get"), b"", T0));
    assert_eq!(
        first_on(&messages, &format!("{JOBS}/$next/get/accepted"))["execution"]["jobId"],
        json!("job-1")
    );
}

#[test]
fn describe_rejects_unknown_mismatched_and_finished_executions() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/nope/get"),
            json!({"clientToken": "n"}),
            T0,
        ),
        &format!("{JOBS}/nope/get/rejected"),
    );
    assert_eq!(answer["code"], json!("ResourceNotFound"));
    assert_eq!(answer["clientToken"], json!("n"));
    assert_eq!(answer["timestamp"], json!(T0));
    assert!(answer["message"].is_string());

    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/job-1/get"),
            json!({"executionNumber": 2}),
            T0,
        ),
        &format!("{JOBS}/job-1/get/rejected"),
    );
    assert_eq!(answer["code"], json!("ResourceNotFound"));
    for bad in [
        json!({"executionNumber": 0}),
        json!({"executionNumber": "1"}),
        json!({"includeJobDocument": "yes"}),
    ] {
        let answer = first_on(
            &send(&mut service, &format!("{JOBS}/job-1/get"), bad, T0),
            &format!("{JOBS}/job-1/get/rejected"),
        );
        assert_eq!(answer["code"], json!("InvalidRequest"));
    }

    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "SUCCEEDED"}),
        T0 + 1,
    );
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/job-1/get"),
            json!({}),
            T0 + 2,
        ),
        &format!("{JOBS}/job-1/get/rejected"),
    );
    assert_eq!(answer["code"], json!("TerminalStateReached"));
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/$next/get"),
            json!({"clientToken": "e"}),
            T0 + 2,
        ),
        &format!("{JOBS}/$next/get/accepted"),
    );
    assert_eq!(
        answer,
        json!({"timestamp": T0 + 2, "clientToken": "e"}),
        "nothing pending: no execution"
    );
}

#[test]
fn update_moves_through_the_device_statuses_and_answers_what_was_asked() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let messages = accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "statusDetails": {"progress": "10%"}, "clientToken": "u1"}),
        T0 + 1,
    );
    assert_eq!(
        messages[0].1,
        json!({"timestamp": T0 + 1, "clientToken": "u1"}),
        "neither state nor document unless asked"
    );
    assert_eq!(
        topics(&messages),
        [
            format!("{JOBS}/job-1/update/accepted"),
            format!("{JOBS}/notify")
        ],
        "QUEUED to IN_PROGRESS changes the list but not its head"
    );

    // Progress reports change neither the list nor its head: no notifications.
    let messages = accepted_update(
        &mut service,
        "job-1",
        json!({
            "status": "IN_PROGRESS", "statusDetails": {"progress": "50%"}, "expectedVersion": 2,
            "executionNumber": 1, "includeJobExecutionState": true, "includeJobDocument": true
        }),
        T0 + 2,
    );
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].1,
        json!({
            "executionState": {"status": "IN_PROGRESS", "statusDetails": {"progress": "50%"}, "versionNumber": 3},
            "jobDocument": {"operation": "print", "url": "https://files/job-1"},
            "timestamp": T0 + 2
        })
    );

    let messages = accepted_update(
        &mut service,
        "job-1",
        json!({"status": "SUCCEEDED"}),
        T0 + 3,
    );
    assert_eq!(
        topics(&messages),
        [
            format!("{JOBS}/job-1/update/accepted"),
            format!("{JOBS}/notify"),
            format!("{JOBS}/notify-next")
        ]
    );
    assert_eq!(
        find(&messages, &format!("{JOBS}/notify")).expect("notify")["jobs"],
        json!({})
    );
    assert_eq!(
        *find(&messages, &format!("{JOBS}/notify-next")).expect("notify-next"),
        json!({"timestamp": T0 + 3}),
        "no execution when nothing is pending"
    );
    let execution = service
        .execution(THING, "job-1")
        .expect("kept after finishing");
    assert_eq!(execution["status"], json!("SUCCEEDED"));
    assert_eq!(
        execution["statusDetails"],
        json!({"progress": "50%"}),
        "details unchanged when not sent"
    );
    assert_eq!(execution["versionNumber"], json!(4));
    assert_eq!(execution["startedAt"], json!(T0 + 1));
    assert_eq!(execution["lastUpdatedAt"], json!(T0 + 3));
}

#[test]
fn a_queued_execution_can_be_rejected_or_failed_directly() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    create(&mut service, "job-2", T0);
    accepted_update(&mut service, "job-1", json!({"status": "REJECTED"}), T0 + 1);
    accepted_update(
        &mut service,
        "job-2",
        json!({"status": "FAILED", "statusDetails": {"reason": "no media"}}),
        T0 + 1,
    );
    assert_eq!(status_of(&service, "job-1"), json!("REJECTED"));
    assert_eq!(status_of(&service, "job-2"), json!("FAILED"));
    assert!(service
        .execution(THING, "job-2")
        .expect("exists")
        .get("startedAt")
        .is_none());
}

#[test]
fn an_expected_version_mismatch_is_rejected_with_the_current_state() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "expectedVersion": 7, "clientToken": "vm"}),
        T0 + 1,
    );
    assert_eq!(answer["code"], json!("VersionMismatch"));
    assert_eq!(answer["clientToken"], json!("vm"));
    assert_eq!(answer["timestamp"], json!(T0 + 1));
    assert_eq!(
        answer["executionState"],
        json!({"status": "QUEUED", "statusDetails": {}, "versionNumber": 1})
    );
    assert_eq!(status_of(&service, "job-1"), json!("QUEUED"), "not applied");
}

#[test]
fn a_finished_execution_cannot_change_again() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "SUCCEEDED", "statusDetails": {"pages": "3"}}),
        T0 + 1,
    );
    for status in ["IN_PROGRESS", "FAILED", "SUCCEEDED"] {
        let answer = rejected_update(
            &mut service,
            "job-1",
            json!({"status": status, "clientToken": "t"}),
            T0 + 2,
        );
        assert_eq!(answer["code"], json!("InvalidStateTransition"), "{status}");
        assert_eq!(
            answer["executionState"],
            json!({"status": "SUCCEEDED", "statusDetails": {"pages": "3"}, "versionNumber": 2})
        );
        assert_eq!(answer["clientToken"], json!("t"));
    }
}

#[test]
fn a_device_cannot_set_the_statuses_only_the_service_sets() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    for status in ["QUEUED", "TIMED_OUT", "CANCELED", "REMOVED"] {
        let answer = rejected_update(&mut service, "job-1", json!({"status": status}), T0 + 1);
        assert_eq!(answer["code"], json!("InvalidStateTransition"), "{status}");
        assert_eq!(answer["executionState"]["status"], json!("QUEUED"));
    }
}

#[test]
fn invalid_update_requests_are_rejected_with_invalid_request() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let cases = [
        json!({}),
        json!({"status": 3}),
        json!({"status": "DONE"}),
        json!({"status": "IN_PROGRESS", "statusDetails": "50%"}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"progress": 50}}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"bad key": "x"}}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"k": ""}}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"k": "line\nbreak"}}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"k": "v".repeat(1025)}}),
        json!({"status": "IN_PROGRESS", "statusDetails": {"k".repeat(129): "v"}}),
        json!({"status": "IN_PROGRESS", "expectedVersion": "1"}),
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 0}),
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10081}),
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": -2}),
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": "5"}),
        json!({"status": "IN_PROGRESS", "includeJobExecutionState": 1}),
        json!({"status": "IN_PROGRESS", "executionNumber": -1}),
    ];
    for body in cases {
        let answer = rejected_update(&mut service, "job-1", body.clone(), T0 + 1);
        assert_eq!(answer["code"], json!("InvalidRequest"), "{body}");
        assert!(answer.get("executionState").is_none());
    }
    assert_eq!(
        service.execution(THING, "job-1").expect("exists")["versionNumber"],
        json!(1),
        "nothing applied"
    );
    // The longest legal details are accepted.
    let details = json!({"k".repeat(128): "v".repeat(1024), "unicode": "résumé ✓"});
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "statusDetails": details}),
        T0 + 2,
    );
}

#[test]
fn update_of_an_unknown_or_mismatched_execution_is_resource_not_found() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let answer = rejected_update(&mut service, "job-9", json!({"status": "IN_PROGRESS"}), T0);
    assert_eq!(answer["code"], json!("ResourceNotFound"));
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "executionNumber": 2}),
        T0,
    );
    assert_eq!(answer["code"], json!("ResourceNotFound"));
    let answer = rejected_update(&mut service, "$next", json!({"status": "IN_PROGRESS"}), T0);
    assert_eq!(answer["code"], json!("InvalidRequest"));
}

#[test]
fn malformed_payloads_are_invalid_json_and_long_client_tokens_invalid_requests() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let topic = format!("{JOBS}/job-1/update");
    for payload in [
        &b"{\"status\":"[..],
        b"[1]",
        b"\"IN_PROGRESS\"",
        &[0x7b, 0xff, 0x7d],
    ] {
        let messages = decode(service.handle(&topic, payload, T0));
        let answer = first_on(&messages, &format!("{topic}/rejected"));
        assert_eq!(answer["code"], json!("InvalidJson"), "{payload:?}");
        assert!(answer.get("clientToken").is_none());
    }
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "clientToken": "c".repeat(65)}),
        T0,
    );
    assert_eq!(answer["code"], json!("InvalidRequest"));
    assert!(
        answer.get("clientToken").is_none(),
        "an invalid token is not echoed"
    );
    let messages = accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "clientToken": "c".repeat(64)}),
        T0,
    );
    assert_eq!(messages[0].1["clientToken"], json!("c".repeat(64)));
}

#[test]
fn topics_without_an_api_are_invalid_topic_and_the_services_own_topics_are_ignored() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for topic in [
        format!("{JOBS}/list"),
        format!("{JOBS}/job-1/describe"),
        format!("{JOBS}/job-1/update/now"),
        format!("{JOBS}/a/b/c/d"),
    ] {
        let messages = send(&mut service, &topic, json!({"clientToken": "x"}), T0);
        let answer = first_on(&messages, &format!("{topic}/rejected"));
        assert_eq!(answer["code"], json!("InvalidTopic"), "{topic}");
    }
    let long_thing = "t".repeat(129);
    let topic = format!("$aws/things/{long_thing}/jobs/get");
    assert_eq!(
        first_on(
            &send(&mut service, &topic, json!({}), T0),
            &format!("{topic}/rejected")
        )["code"],
        json!("InvalidTopic")
    );
    for topic in [
        format!("{JOBS}/get/accepted"),
        format!("{JOBS}/get/rejected"),
        format!("{JOBS}/job-1/update/accepted"),
        format!("{JOBS}/$next/get/rejected"),
        format!("{JOBS}/notify"),
        format!("{JOBS}/notify-next"),
        "$aws/things/desk-1/shadow/get".to_owned(),
        "devicehub/desk-1/jobs/get".to_owned(),
    ] {
        assert!(
            service.handle(&topic, b"{}", T0).is_empty(),
            "{topic} must be ignored"
        );
    }
    assert_eq!(JobsService::SUBSCRIPTIONS, ["$aws/things/+/jobs/#"]);
}

#[test]
fn requests_beyond_the_per_thing_limit_in_one_second_are_throttled() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    service.set_requests_per_thing_per_second(3);
    for _ in 0..3 {
        first_on(
            &send(&mut service, &format!("{JOBS}/get"), json!({}), T0),
            &format!("{JOBS}/get/accepted"),
        );
    }
    let answer = first_on(
        &send(
            &mut service,
            &format!("{JOBS}/start-next"),
            json!({"clientToken": "busy"}),
            T0,
        ),
        &format!("{JOBS}/start-next/rejected"),
    );
    assert_eq!(answer["code"], json!("RequestThrottled"));
    assert_eq!(answer["clientToken"], json!("busy"));
    let other = "$aws/things/desk-2/jobs/get";
    first_on(
        &send(&mut service, other, json!({}), T0),
        &format!("{other}/accepted"),
    );
    first_on(
        &send(&mut service, &format!("{JOBS}/get"), json!({}), T0 + 1),
        &format!("{JOBS}/get/accepted"),
    );
}

#[test]
fn the_default_throttle_allows_a_normal_burst() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for _ in 0..DEFAULT_REQUESTS_PER_THING_PER_SECOND {
        first_on(
            &send(&mut service, &format!("{JOBS}/get"), json!({}), T0),
            &format!("{JOBS}/get/accepted"),
        );
    }
    let answer = first_on(
        &send(&mut service, &format!("{JOBS}/get"), json!({}), T0),
        &format!("{JOBS}/get/rejected"),
    );
    assert_eq!(answer["code"], json!("RequestThrottled"));
}

#[test]
fn the_job_step_timeout_starts_with_in_progress_and_expires_to_timed_out() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    decode(
        service
            .create_job(THING, "job-1", json!({"op": "print"}), Some(5), T0)
            .expect("created"),
    );
    create(&mut service, "job-2", T0);
    assert!(
        service.tick(T0 + 3600).is_empty(),
        "a queued execution has no step timer"
    );
    send(
        &mut service,
        &format!("{JOBS}/start-next"),
        json!({}),
        T0 + 100,
    );
    assert!(service.tick(T0 + 100 + 299).is_empty());
    let messages = decode(service.tick(T0 + 100 + 300));
    assert_eq!(
        topics(&messages),
        [format!("{JOBS}/notify"), format!("{JOBS}/notify-next")]
    );
    assert_eq!(messages[1].1["execution"]["jobId"], json!("job-2"));
    let execution = service.execution(THING, "job-1").expect("exists");
    assert_eq!(execution["status"], json!("TIMED_OUT"));
    assert_eq!(execution["versionNumber"], json!(3));
    assert_eq!(execution["lastUpdatedAt"], json!(T0 + 400));
    assert!(service.tick(T0 + 10_000).is_empty(), "times out once");
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "SUCCEEDED"}),
        T0 + 401,
    );
    assert_eq!(answer["code"], json!("InvalidStateTransition"));
    assert_eq!(answer["executionState"]["status"], json!("TIMED_OUT"));
}

#[test]
fn a_step_timeout_in_a_request_overrides_resets_and_minus_one_clears_the_timer() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    decode(
        service
            .create_job(THING, "job-1", json!({}), Some(60), T0)
            .expect("created"),
    );
    // start-next's own timeout wins over the job's.
    send(
        &mut service,
        &format!("{JOBS}/start-next"),
        json!({"stepTimeoutInMinutes": 2}),
        T0,
    );
    assert!(service.tick(T0 + 119).is_empty());
    // A progress update with a new timeout restarts the timer from now.
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 1}),
        T0 + 100,
    );
    assert!(service.tick(T0 + 159).is_empty());
    // A progress update without a timeout leaves the running timer as it is.
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS"}),
        T0 + 150,
    );
    assert!(service.tick(T0 + 159).is_empty());
    // -1 clears it.
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": -1}),
        T0 + 155,
    );
    assert!(service.tick(T0 + 100_000).is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("IN_PROGRESS"));
    // And a new one set later expires.
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "stepTimeoutInMinutes": 10}),
        T0 + 100_000,
    );
    assert!(!service.tick(T0 + 100_600).is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("TIMED_OUT"));
}

#[test]
fn a_progress_update_without_a_timeout_leaves_the_running_timer_alone() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    decode(
        service
            .create_job(THING, "job-1", json!({}), Some(60), T0)
            .expect("created"),
    );
    send(
        &mut service,
        &format!("{JOBS}/start-next"),
        json!({"stepTimeoutInMinutes": 2}),
        T0,
    );
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "statusDetails": {"p": "1"}}),
        T0 + 60,
    );
    assert!(service.tick(T0 + 119).is_empty());
    assert!(
        !service.tick(T0 + 120).is_empty(),
        "the timer set by start-next still runs"
    );
    assert_eq!(status_of(&service, "job-1"), json!("TIMED_OUT"));
}

#[test]
fn an_update_to_in_progress_starts_the_jobs_timer_and_a_terminal_status_stops_it() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    decode(
        service
            .create_job(THING, "job-1", json!({}), Some(1), T0)
            .expect("created"),
    );
    decode(
        service
            .create_job(THING, "job-2", json!({}), Some(1), T0)
            .expect("created"),
    );
    accepted_update(&mut service, "job-1", json!({"status": "IN_PROGRESS"}), T0);
    accepted_update(&mut service, "job-2", json!({"status": "IN_PROGRESS"}), T0);
    accepted_update(
        &mut service,
        "job-2",
        json!({"status": "SUCCEEDED"}),
        T0 + 30,
    );
    decode(service.tick(T0 + 60));
    assert_eq!(status_of(&service, "job-1"), json!("TIMED_OUT"));
    assert_eq!(status_of(&service, "job-2"), json!("SUCCEEDED"));
}

#[test]
fn cancel_moves_a_pending_execution_to_canceled_and_refuses_finished_ones() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    create(&mut service, "job-2", T0);
    send(&mut service, &format!("{JOBS}/start-next"), json!({}), T0);
    let messages = decode(
        service
            .cancel_job(THING, "job-1", T0 + 5)
            .expect("canceled"),
    );
    assert_eq!(
        topics(&messages),
        [format!("{JOBS}/notify"), format!("{JOBS}/notify-next")]
    );
    assert_eq!(messages[1].1["execution"]["jobId"], json!("job-2"));
    let execution = service.execution(THING, "job-1").expect("exists");
    assert_eq!(execution["status"], json!("CANCELED"));
    assert_eq!(execution["versionNumber"], json!(3));
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "SUCCEEDED"}),
        T0 + 6,
    );
    assert_eq!(answer["code"], json!("InvalidStateTransition"));
    assert_eq!(answer["executionState"]["status"], json!("CANCELED"));

    assert!(matches!(
        service.cancel_job(THING, "job-1", T0 + 7),
        Err(JobsError::AlreadyTerminal {
            status: JobExecutionStatus::Canceled,
            ..
        })
    ));
    assert!(matches!(
        service.cancel_job(THING, "job-9", T0),
        Err(JobsError::ExecutionNotFound { .. })
    ));
    // A canceled execution does not time out.
    assert!(service.tick(T0 + 1_000_000).is_empty());
}

#[test]
fn create_job_validates_its_arguments() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    assert!(matches!(
        service.create_job("bad thing", "j", json!({}), None, T0),
        Err(JobsError::InvalidThingName(_))
    ));
    assert!(matches!(
        service.create_job(THING, "bad/id", json!({}), None, T0),
        Err(JobsError::InvalidJobId(_))
    ));
    assert!(matches!(
        service.create_job(THING, &"j".repeat(65), json!({}), None, T0),
        Err(JobsError::InvalidJobId(_))
    ));
    assert!(matches!(
        service.create_job(THING, "j", json!([1]), None, T0),
        Err(JobsError::DocumentNotAnObject { .. })
    ));
    assert!(matches!(
        service.create_job(THING, "j", json!({}), Some(0), T0),
        Err(JobsError::InvalidStepTimeout(0))
    ));
    assert!(matches!(
        service.create_job(THING, "j", json!({}), Some(10_081), T0),
        Err(JobsError::InvalidStepTimeout(10_081))
    ));
    // `{"d":"…"}` is 8 bytes of framing around the string.
    let framing = r#"{"d":""}"#.len();
    let at_limit = json!({"d": "x".repeat(MAX_JOB_DOCUMENT_BYTES - framing)});
    service
        .create_job(THING, "at-limit", at_limit, Some(10_080), T0)
        .expect("exactly 32 KB is allowed");
    let over = json!({"d": "x".repeat(MAX_JOB_DOCUMENT_BYTES - framing + 1)});
    assert!(matches!(
        service.create_job(THING, "over", over, None, T0),
        Err(JobsError::DocumentTooLarge { size, limit: MAX_JOB_DOCUMENT_BYTES, .. }) if size == MAX_JOB_DOCUMENT_BYTES + 1
    ));
    assert!(matches!(
        service.create_job(THING, "at-limit", json!({}), None, T0),
        Err(JobsError::ExecutionExists { .. })
    ));
    assert_eq!(service.list(THING).len(), 1);
}

#[test]
fn notify_lists_at_most_ten_executions_per_status() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    for i in 0..12 {
        create(&mut service, &format!("job-{i:02}"), T0 + i);
    }
    let messages = create(&mut service, "job-12", T0 + 12);
    let queued = messages[0].1["jobs"]["QUEUED"]
        .as_array()
        .expect("queued list")
        .clone();
    assert_eq!(queued.len(), MAX_NOTIFY_SUMMARIES);
    assert_eq!(queued[0]["jobId"], json!("job-00"), "oldest first");
    let answer = first_on(
        &send(&mut service, &format!("{JOBS}/get"), json!({}), T0 + 20),
        &format!("{JOBS}/get/accepted"),
    );
    assert_eq!(
        answer["queuedJobs"].as_array().map(Vec::len),
        Some(13),
        "get lists them all"
    );
}

#[test]
fn executions_and_timers_survive_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        decode(
            service
                .create_job(THING, "job-b", json!({"n": 1}), Some(5), T0)
                .expect("created"),
        );
        create(&mut service, "job-a", T0);
        send(
            &mut service,
            &format!("{JOBS}/start-next"),
            json!({"statusDetails": {"s": "1"}}),
            T0 + 10,
        );
        create(&mut service, "job-c", T0 + 20);
        accepted_update(
            &mut service,
            "job-c",
            json!({"status": "REJECTED"}),
            T0 + 21,
        );
    }
    let mut service = open(dir.path());
    assert!(service.quarantined().is_empty());
    let ids: Vec<Value> = service
        .list(THING)
        .iter()
        .map(|execution| execution["jobId"].clone())
        .collect();
    assert_eq!(
        ids,
        [json!("job-b"), json!("job-a"), json!("job-c")],
        "creation order survives"
    );
    let execution = service.execution(THING, "job-b").expect("exists");
    assert_eq!(execution["status"], json!("IN_PROGRESS"));
    assert_eq!(execution["statusDetails"], json!({"s": "1"}));
    assert_eq!(execution["versionNumber"], json!(2));
    assert_eq!(status_of(&service, "job-c"), json!("REJECTED"));
    // The step timer set before the restart still fires.
    assert!(service.tick(T0 + 309).is_empty());
    decode(service.tick(T0 + 310));
    assert_eq!(status_of(&service, "job-b"), json!("TIMED_OUT"));
    // Jobs created after the restart queue behind the old ones.
    create(&mut service, "job-0", T0 + 400);
    let answer = first_on(
        &send(&mut service, &format!("{JOBS}/get"), json!({}), T0 + 401),
        &format!("{JOBS}/get/accepted"),
    );
    let queued: Vec<Value> = answer["queuedJobs"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["jobId"].clone())
        .collect();
    assert_eq!(queued, [json!("job-a"), json!("job-0")]);
}

/// The jobs log of a state directory.
fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join(log::LOG_FILE_NAME)
}

fn log_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(log_path(dir)).expect("read the jobs log")
}

fn append_to_log(dir: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(log_path(dir))
        .expect("open the jobs log");
    file.write_all(bytes).expect("append to the jobs log");
}

#[test]
fn reopening_gives_back_every_execution_of_every_thing_in_its_latest_state() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        create(&mut service, "job-1", T0);
        decode(
            service
                .create_job("desk-2", "job-1", json!({"n": 2}), None, T0 + 1)
                .expect("created"),
        );
        create(&mut service, "job-2", T0 + 2);
        accepted_update(
            &mut service,
            "job-1",
            json!({"status": "IN_PROGRESS", "statusDetails": {"step": "1"}}),
            T0 + 3,
        );
        accepted_update(
            &mut service,
            "job-1",
            json!({"status": "IN_PROGRESS", "statusDetails": {"step": "2"}}),
            T0 + 4,
        );
        accepted_update(
            &mut service,
            "job-1",
            json!({"status": "SUCCEEDED", "statusDetails": {"step": "3"}}),
            T0 + 5,
        );
        decode(
            service
                .cancel_job("desk-2", "job-1", T0 + 6)
                .expect("canceled"),
        );
    }
    for round in 0..2 {
        let mut service = open(dir.path());
        assert!(service.quarantined().is_empty());
        let execution = service.execution(THING, "job-1").expect("exists");
        assert_eq!(execution["status"], json!("SUCCEEDED"));
        assert_eq!(execution["statusDetails"], json!({"step": "3"}));
        assert_eq!(execution["versionNumber"], json!(4));
        assert_eq!(status_of(&service, "job-2"), json!("QUEUED"));
        let other = service.execution("desk-2", "job-1").expect("exists");
        assert_eq!(other["status"], json!("CANCELED"));
        assert_eq!(other["jobDocument"], json!({"n": 2}));
        let ids: Vec<Value> = service
            .list(THING)
            .iter()
            .map(|execution| execution["jobId"].clone())
            .collect();
        let expected = [json!("job-1"), json!("job-2"), json!("job-3")];
        assert_eq!(ids, expected[..2 + round]);
        // A job created after the restart is ordered after every earlier one.
        let sequence = |service: &JobsService, thing: &str, job: &str| {
            service.find(thing, job).expect("exists").sequence
        };
        assert!(sequence(&service, THING, "job-2") > sequence(&service, "desk-2", "job-1"));
        if round == 0 {
            create(&mut service, "job-3", T0 + 7);
        }
        assert!(sequence(&service, THING, "job-3") > sequence(&service, THING, "job-2"));
    }
    assert!(
        !dir.path().join("desk-1").exists(),
        "nothing but the log is written"
    );
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_next_change_appends_after_it() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        create(&mut service, "job-1", T0);
        create(&mut service, "job-2", T0);
    }
    let intact = log_bytes(dir.path());
    // A rewrite interrupted before its rename leaves a temporary file that open removes.
    let leftover = dir.path().join(format!(".{}.tmp1", log::LOG_FILE_NAME));
    std::fs::write(&leftover, b"partial").expect("write a leftover temporary file");
    // Half of a record, as a crash in the middle of an append leaves it.
    let last_line = intact[..intact.len() - 1]
        .rsplit(|&b| b == b'\n')
        .next()
        .expect("a record");
    append_to_log(dir.path(), &last_line[..last_line.len() / 2]);
    {
        let mut service = open(dir.path());
        assert!(service.quarantined().is_empty());
        assert_eq!(log_bytes(dir.path()), intact, "the torn record is cut off");
        assert!(!leftover.exists());
        assert_eq!(status_of(&service, "job-1"), json!("QUEUED"));
        assert_eq!(status_of(&service, "job-2"), json!("QUEUED"));
        accepted_update(
            &mut service,
            "job-2",
            json!({"status": "IN_PROGRESS"}),
            T0 + 1,
        );
    }
    // A complete last line whose checksum fails is a torn record too.
    let before_damage = log_bytes(dir.path());
    append_to_log(dir.path(), b"00000000 {\"thing_name\":\"desk-1\"}\n");
    {
        let mut service = open(dir.path());
        assert!(service.quarantined().is_empty());
        assert_eq!(log_bytes(dir.path()), before_damage);
        assert_eq!(status_of(&service, "job-2"), json!("IN_PROGRESS"));
        accepted_update(&mut service, "job-1", json!({"status": "FAILED"}), T0 + 2);
    }
    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("FAILED"));
    assert_eq!(status_of(&service, "job-2"), json!("IN_PROGRESS"));
}

#[test]
fn a_damaged_record_in_the_middle_moves_the_log_aside_and_keeps_the_good_records() {
    let dir = TempDir::new().expect("temp dir");
    {
        let mut service = open(dir.path());
        create(&mut service, "job-1", T0);
        create(&mut service, "job-2", T0);
        create(&mut service, "job-3", T0);
        accepted_update(
            &mut service,
            "job-2",
            json!({"status": "IN_PROGRESS"}),
            T0 + 1,
        );
        create(&mut service, "job-4", T0 + 2);
    }
    // One byte of the second record (the creation of job-2) changes on disk.
    let mut bytes = log_bytes(dir.path());
    let second = bytes
        .iter()
        .position(|&b| b == b'\n')
        .expect("a first record")
        + 1;
    let target = second + 20;
    bytes[target] = if bytes[target] == b'x' { b'y' } else { b'x' };
    std::fs::write(log_path(dir.path()), &bytes).expect("damage the log");

    let service = open(dir.path());
    assert_eq!(service.quarantined().len(), 1);
    let quarantined = &service.quarantined()[0];
    assert_eq!(quarantined.original, log_path(dir.path()));
    assert_eq!(
        std::fs::read(&quarantined.moved_to).expect("the damaged log is kept"),
        bytes
    );
    assert!(
        quarantined.reason.contains("checksum"),
        "{}",
        quarantined.reason
    );
    // The records before and after the damaged one are all there; job-2 comes back from its
    // later record.
    assert_eq!(status_of(&service, "job-1"), json!("QUEUED"));
    assert_eq!(status_of(&service, "job-2"), json!("IN_PROGRESS"));
    assert_eq!(status_of(&service, "job-3"), json!("QUEUED"));
    assert_eq!(status_of(&service, "job-4"), json!("QUEUED"));
    drop(service);
    // The rewritten log is clean.
    let mut service = open(dir.path());
    assert!(service.quarantined().is_empty());
    assert_eq!(service.list(THING).len(), 4);
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS"}),
        T0 + 3,
    );
    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("IN_PROGRESS"));
}

#[test]
fn many_updates_of_few_executions_compact_the_log_and_keep_everything() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    service.set_requests_per_thing_per_second(u32::MAX);
    create(&mut service, "job-1", T0);
    create(&mut service, "job-2", T0);
    let mut largest = 0;
    let updates = 1200;
    for step in 0..updates {
        let job = if step % 2 == 0 { "job-1" } else { "job-2" };
        accepted_update(
            &mut service,
            job,
            json!({"status": "IN_PROGRESS", "statusDetails": {"step": step.to_string()}}),
            T0 + 1,
        );
        largest = largest.max(log_bytes(dir.path()).len());
    }
    // 1202 records were appended; a compaction after the 1025th left one per execution.
    assert_eq!(service.log.records(), 2 + 1202 - 1025);
    let size = log_bytes(dir.path()).len();
    assert!(
        size * 4 < largest,
        "{size} bytes after compaction, {largest} at most before"
    );
    drop(service);
    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    let one = service.execution(THING, "job-1").expect("exists");
    let two = service.execution(THING, "job-2").expect("exists");
    assert_eq!(
        one["statusDetails"],
        json!({"step": (updates - 2).to_string()})
    );
    assert_eq!(
        two["statusDetails"],
        json!({"step": (updates - 1).to_string()})
    );
    assert_eq!(one["versionNumber"], json!(updates / 2 + 1));
    assert_eq!(two["versionNumber"], json!(updates / 2 + 1));
}

#[test]
fn execution_files_of_an_earlier_version_are_moved_into_the_log() {
    let earlier = TempDir::new().expect("temp dir");
    let dir = TempDir::new().expect("temp dir");
    {
        // The executions are made by the engine and then written one file per execution, the
        // way earlier versions stored them.
        let mut service = open(earlier.path());
        create(&mut service, "job-1", T0);
        decode(
            service
                .create_job("Desk-2", "job-2", json!({"n": 2}), None, T0 + 1)
                .expect("created"),
        );
        accepted_update(
            &mut service,
            "job-1",
            json!({"status": "IN_PROGRESS"}),
            T0 + 2,
        );
        for execution in all_executions(&service.executions) {
            let path = legacy_execution_path(dir.path(), &execution.thing_name, &execution.job_id);
            std::fs::create_dir_all(path.parent().expect("a thing directory"))
                .expect("create the thing directory");
            std::fs::write(&path, serde_json::to_vec(execution).expect("encode"))
                .expect("write an execution file");
        }
    }
    let damaged = dir.path().join("desk-1/job-3.json");
    std::fs::write(&damaged, b"{\"job_id\":").expect("write a damaged execution file");

    let mut service = open(dir.path());
    assert_eq!(service.quarantined().len(), 1);
    assert_eq!(service.quarantined()[0].original, damaged);
    assert!(service.quarantined()[0].moved_to.exists());
    let execution = service.execution(THING, "job-1").expect("migrated");
    assert_eq!(execution["status"], json!("IN_PROGRESS"));
    assert_eq!(execution["versionNumber"], json!(2));
    assert_eq!(
        service.execution("Desk-2", "job-2").expect("migrated")["jobDocument"],
        json!({"n": 2})
    );
    assert!(!dir.path().join("desk-1/job-1.json").exists());
    assert!(
        !dir.path().join("%44esk-2").exists(),
        "an emptied thing directory is removed"
    );
    assert!(dir.path().join("desk-1").exists(), "the damaged file stays");
    assert_eq!(service.log.records(), 2);
    create(&mut service, "job-4", T0 + 3);
    drop(service);

    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("IN_PROGRESS"));
    assert!(service.execution("Desk-2", "job-2").is_some());
    let ids: Vec<Value> = service
        .list(THING)
        .iter()
        .map(|execution| execution["jobId"].clone())
        .collect();
    assert_eq!(ids, [json!("job-1"), json!("job-4")]);
}

/// A file that answers every write with "no space left on device", as a full disk does.
#[cfg(target_os = "linux")]
fn full_device() -> std::fs::File {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full exists on Linux")
}

#[cfg(target_os = "linux")]
#[test]
fn a_failed_save_is_internal_error_and_changes_nothing() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    create(&mut service, "job-1", T0);
    let saved = log_bytes(dir.path());
    service.log.replace_file_for_test(full_device());
    let answer = rejected_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS", "clientToken": "ie"}),
        T0 + 1,
    );
    assert_eq!(answer["code"], json!("InternalError"));
    assert_eq!(answer["clientToken"], json!("ie"));
    assert_eq!(status_of(&service, "job-1"), json!("QUEUED"));

    // The failed append could not be cut back (a device has no length), so the next change
    // rewrites the log; a directory where the log should be makes that fail too.
    std::fs::remove_file(log_path(dir.path())).expect("remove the log");
    std::fs::create_dir(log_path(dir.path())).expect("block the log");
    assert!(matches!(
        service.create_job(THING, "job-2", json!({}), None, T0),
        Err(JobsError::Save { .. })
    ));
    assert_eq!(service.list(THING).len(), 1);
    assert!(matches!(
        service.cancel_job(THING, "job-1", T0),
        Err(JobsError::Save { .. })
    ));
    assert_eq!(status_of(&service, "job-1"), json!("QUEUED"));

    // Once the log can be written again, the next change rewrites it with everything.
    std::fs::remove_dir(log_path(dir.path())).expect("unblock the log");
    accepted_update(
        &mut service,
        "job-1",
        json!({"status": "IN_PROGRESS"}),
        T0 + 2,
    );
    create(&mut service, "job-2", T0 + 3);
    drop(service);
    let service = open(dir.path());
    assert!(service.quarantined().is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("IN_PROGRESS"));
    assert_eq!(status_of(&service, "job-2"), json!("QUEUED"));
    assert_ne!(log_bytes(dir.path()), saved);
}

#[cfg(target_os = "linux")]
#[test]
fn a_timeout_that_cannot_be_saved_is_retried_on_the_next_tick() {
    let dir = TempDir::new().expect("temp dir");
    let mut service = open(dir.path());
    decode(
        service
            .create_job(THING, "job-1", json!({}), Some(1), T0)
            .expect("created"),
    );
    send(&mut service, &format!("{JOBS}/start-next"), json!({}), T0);
    service.log.replace_file_for_test(full_device());
    assert!(service.tick(T0 + 60).is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("IN_PROGRESS"));
    assert!(!service.tick(T0 + 61).is_empty());
    assert_eq!(status_of(&service, "job-1"), json!("TIMED_OUT"));
    drop(service);
    assert_eq!(status_of(&open(dir.path()), "job-1"), json!("TIMED_OUT"));
}

#[test]
fn status_names_round_trip() {
    for status in [
        JobExecutionStatus::Queued,
        JobExecutionStatus::InProgress,
        JobExecutionStatus::Succeeded,
        JobExecutionStatus::Failed,
        JobExecutionStatus::TimedOut,
        JobExecutionStatus::Rejected,
        JobExecutionStatus::Removed,
        JobExecutionStatus::Canceled,
    ] {
        assert_eq!(JobExecutionStatus::parse(status.as_str()), Some(status));
        assert_eq!(
            serde_json::to_value(status).expect("serialises"),
            json!(status.as_str())
        );
        assert_eq!(
            status.is_terminal(),
            !matches!(
                status,
                JobExecutionStatus::Queued | JobExecutionStatus::InProgress
            )
        );
    }
}
