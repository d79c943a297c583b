//! Per-certificate authorization on the embedded broker: a thing uses only its own topics under
//! its own client id; a claim certificate only the fleet provisioning topics.

use rumqttc::SubscribeReasonCode;

use crate::support::{Emulator, Mqtt, Via};

#[tokio::test]
async fn a_thing_must_connect_with_its_own_name_as_client_id() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let refused = Mqtt::connect(&emulator, "desk-2", &thing, Via::MutualTls, true).await;
    assert!(refused.is_err_and(|e| e.contains("NotAuthorized")));
}

#[tokio::test]
async fn a_thing_cannot_subscribe_to_another_things_topics_or_wildcards_above_its_own() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let mut mqtt = emulator.connect("desk-1", &thing).await;
    let codes = mqtt
        .subscribe(&[
            "$aws/things/desk-1/shadow/#",
            "$aws/things/desk-2/shadow/#",
            "$aws/things/+/jobs/notify",
            "devicehub/#",
            "devicehub/desk-1/#",
        ])
        .await;
    assert!(matches!(codes[0], SubscribeReasonCode::Success(_)));
    assert_eq!(codes[1], SubscribeReasonCode::Failure);
    assert_eq!(codes[2], SubscribeReasonCode::Failure);
    assert_eq!(codes[3], SubscribeReasonCode::Failure);
    assert!(matches!(codes[4], SubscribeReasonCode::Success(_)));
}

#[tokio::test]
async fn publishing_to_another_things_topic_closes_the_connection_and_delivers_nothing() {
    let emulator = Emulator::start().await;
    let desk1 = emulator.create_thing("desk-1").await;
    let desk2 = emulator.create_thing("desk-2").await;
    let mut victim = emulator.connect("desk-2", &desk2).await;
    victim.subscribe_ok(&["devicehub/desk-2/#"]).await;
    let mut intruder = emulator.connect("desk-1", &desk1).await;
    intruder
        .publish("devicehub/desk-2/commands", "spoofed")
        .await;
    intruder.expect_closed().await;
    // desk-2's own message arrives, and nothing published by desk-1 came before it.
    victim.publish("devicehub/desk-2/heartbeat", "own").await;
    loop {
        match victim.next_event().await.expect("victim still connected") {
            rumqttc::Packet::Publish(p) => {
                assert_eq!(p.topic, "devicehub/desk-2/heartbeat", "received {p:?}");
                break;
            }
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_claim_certificate_reaches_only_the_provisioning_topics() {
    let emulator = Emulator::start().await;
    let claim = emulator.create_claim().await;
    let mut mqtt = emulator.connect("any-claim-client", &claim).await;
    let codes = mqtt
        .subscribe(&[
            "$aws/certificates/create/json/accepted",
            "$aws/provisioning-templates/DeviceHubFleet/provision/json/+",
            "$aws/things/desk-1/shadow/#",
            "$aws/certificates/#",
        ])
        .await;
    assert!(matches!(codes[0], SubscribeReasonCode::Success(_)));
    assert!(matches!(codes[1], SubscribeReasonCode::Success(_)));
    assert_eq!(codes[2], SubscribeReasonCode::Failure);
    assert_eq!(codes[3], SubscribeReasonCode::Failure);
    mqtt.publish("$aws/things/desk-1/shadow/update", "{}").await;
    mqtt.expect_closed().await;
}
