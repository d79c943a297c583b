//! The three listeners (mutual TLS, ALPN `x-amzn-mqtt-ca`, WebSocket at `/mqtt`) and what
//! they refuse.

use crate::support::{eventually, Credentials, Emulator, Mqtt, Via};

async fn round_trip(mut mqtt: Mqtt, thing: &str) {
    let topic = format!("devicehub/{thing}/heartbeat");
    mqtt.subscribe_ok(&[&topic]).await;
    mqtt.publish(&topic, r#"{"uptime":1}"#).await;
    assert_eq!(mqtt.expect_message(&topic).await, br#"{"uptime":1}"#);
}

#[tokio::test]
async fn every_listener_carries_mqtt_with_a_thing_certificate() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    for via in [
        Via::MutualTls,
        Via::Alpn { offer_alpn: true },
        Via::WebSocket,
    ] {
        let mqtt = Mqtt::connect(&emulator, "desk-1", &thing, via, true)
            .await
            .unwrap_or_else(|e| panic!("{via:?}: {e}"));
        round_trip(mqtt, "desk-1").await;
    }
}

#[tokio::test]
async fn the_alpn_port_refuses_clients_that_do_not_offer_x_amzn_mqtt_ca() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let refused = Mqtt::connect(
        &emulator,
        "desk-1",
        &thing,
        Via::Alpn { offer_alpn: false },
        true,
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_on_every_listener() {
    let emulator = Emulator::start().await;
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["desk-1".to_string()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "desk-1");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let foreign = params.self_signed(&key).expect("self-signed certificate");
    let credentials = Credentials {
        certificate_pem: foreign.pem(),
        private_key_pem: key.serialize_pem(),
        device_signature: None,
    };
    for via in [
        Via::MutualTls,
        Via::Alpn { offer_alpn: true },
        Via::WebSocket,
    ] {
        let result = Mqtt::connect(&emulator, "desk-1", &credentials, via, true).await;
        assert!(result.is_err(), "{via:?} accepted a foreign certificate");
    }
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_drops_the_first() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let mut first = emulator.connect("desk-1", &thing).await;
    let _ = first.next_event().await.expect("CONNACK queued");
    let second = emulator.connect("desk-1", &thing).await;
    first.expect_closed().await;
    // The first connection's disconnection is reported after the second's connection; the
    // thing must still show as connected once it has been recorded.
    let view = eventually(|| async {
        let view: serde_json::Value = emulator
            .http()
            .get(emulator.api("/things/desk-1"))
            .send()
            .await
            .expect("GET thing")
            .json()
            .await
            .expect("JSON");
        (view["lastDisconnectReason"] == "DUPLICATE_CLIENTID").then_some(view)
    })
    .await;
    assert_eq!(view["connected"], true);
    round_trip(second, "desk-1").await;
}

#[tokio::test]
async fn a_persistent_session_keeps_subscriptions_and_queued_messages() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let topic = "$aws/things/desk-1/jobs/notify-next";
    {
        let mut session = Mqtt::connect(&emulator, "desk-1", &thing, Via::MutualTls, false)
            .await
            .expect("connect");
        session.subscribe_ok(&[topic]).await;
        session
            .client
            .disconnect()
            .await
            .expect("disconnect queued");
        session.expect_closed().await;
    }
    // While desk-1 is offline the cloud queues a job, whose notification is published at QoS 1.
    let secret = thing.device_signature.clone().expect("device signature");
    let created = emulator
        .signed(
            reqwest::Method::POST,
            "/things/desk-1/scale-requests",
            "",
            "application/json",
            b"{}".to_vec(),
            &secret,
        )
        .await;
    assert_eq!(created.status(), 201);
    let mut back = Mqtt::connect(&emulator, "desk-1", &thing, Via::MutualTls, false)
        .await
        .expect("reconnect");
    match back.next_event().await.expect("CONNACK") {
        rumqttc::Packet::ConnAck(ack) => assert!(ack.session_present, "session not kept"),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    let notify = back.expect_json(topic).await;
    assert_eq!(
        notify["execution"]["jobDocument"]["operation"],
        "scale.read"
    );
}
