//! The Mosquitto configuration the emulator writes: mutual TLS with the emulator's CA and
//! per-thing ACLs, with the emulator's services running against it as an external broker.

use std::time::Duration;

use serde_json::json;

use crate::support::{Broker, Emulator, Mqtt};

#[tokio::test]
async fn mosquitto_with_the_generated_configuration_confines_each_thing_to_its_topics() {
    let mut emulator = Emulator::start_on(Broker::Mosquitto).await;
    let via = emulator.via();

    let desk1 = emulator.create_thing("desk-1").await;
    let desk2 = emulator.create_thing("desk-2").await;
    let mut intruder = Mqtt::connect(&emulator, "desk-1", &desk1, via, true)
        .await
        .expect("desk-1 connects to mosquitto");
    let mut victim = Mqtt::connect(&emulator, "desk-2", &desk2, via, true)
        .await
        .expect("desk-2 connects to mosquitto");

    // Mosquitto 2.0 grants any subscription and applies the read ACL when delivering, so what
    // matters is what desk-1 receives: none of desk-2's shadow traffic.
    intruder
        .subscribe_ok(&[
            "$aws/things/desk-2/shadow/#",
            "devicehub/desk-1/#",
            "$aws/things/desk-1/shadow/#",
        ])
        .await;
    victim
        .subscribe_ok(&[
            "$aws/things/desk-2/shadow/update/accepted",
            "devicehub/desk-2/#",
        ])
        .await;
    victim
        .publish(
            "$aws/things/desk-2/shadow/update",
            json!({"state": {"reported": {"secret": 1}}}).to_string(),
        )
        .await;
    // Once desk-2 has its answer, Mosquitto has already delivered (or withheld) the request.
    victim
        .expect_json("$aws/things/desk-2/shadow/update/accepted")
        .await;
    intruder
        .publish("devicehub/desk-1/heartbeat", "marker")
        .await;
    loop {
        if let rumqttc::Packet::Publish(p) = intruder.next_event().await.expect("desk-1 connected")
        {
            assert_eq!(
                p.topic, "devicehub/desk-1/heartbeat",
                "desk-1 received {p:?}"
            );
            break;
        }
    }

    // A forbidden publish is dropped by Mosquitto; desk-2 then sees only its own message.
    intruder
        .publish("devicehub/desk-2/commands", "spoofed")
        .await;
    intruder.publish("devicehub/desk-1/heartbeat", "{}").await;
    intruder.expect_message("devicehub/desk-1/heartbeat").await;
    victim.publish("devicehub/desk-2/heartbeat", "own").await;
    loop {
        if let rumqttc::Packet::Publish(p) = victim.next_event().await.expect("victim connected") {
            assert_eq!(p.topic, "devicehub/desk-2/heartbeat", "received {p:?}");
            break;
        }
    }

    // The shadow service answers through Mosquitto as it does on the embedded broker.
    let prefix = "$aws/things/desk-1/shadow";
    intruder
        .publish(
            &format!("{prefix}/update"),
            json!({"state": {"reported": {"online": true}}}).to_string(),
        )
        .await;
    let accepted = intruder
        .expect_json(&format!("{prefix}/update/accepted"))
        .await;
    assert_eq!(accepted["version"], 1);

    if let Some(cloud) = emulator.cloud.take() {
        cloud.shutdown(Duration::from_secs(10)).await;
    }
}
