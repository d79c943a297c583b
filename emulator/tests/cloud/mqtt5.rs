//! MQTT 5 clients on the embedded broker: the same services and policies as MQTT 3.1.1, with
//! MQTT 5's reason codes, CONNACK properties and "no local" subscriptions.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, DisconnectReasonCode, Filter, Packet, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use rumqttc::{NetworkOptions, TlsConfiguration, Transport};
use serde_json::{json, Value};

use crate::support::{client_tls, Credentials, Emulator, ANSWER_TIMEOUT};

struct Mqtt5 {
    client: AsyncClient,
    eventloop: EventLoop,
}

impl Mqtt5 {
    async fn connect(
        emulator: &Emulator,
        client_id: &str,
        credentials: &Credentials,
    ) -> (Self, Packet) {
        let tls = client_tls(&emulator.ca_pem(), credentials, None);
        let mut options = MqttOptions::new(client_id, "localhost", emulator.endpoints.mqtt_port);
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        options.set_keep_alive(Duration::from_secs(10));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let connack = next(&mut eventloop).await.expect("CONNACK");
        (Self { client, eventloop }, connack)
    }
}

async fn next(eventloop: &mut EventLoop) -> Result<Packet, String> {
    loop {
        match tokio::time::timeout(ANSWER_TIMEOUT, eventloop.poll()).await {
            Err(_) => return Err("nothing received in time".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(packet))) => return Ok(packet),
            Ok(Ok(Event::Outgoing(_))) => {}
        }
    }
}

async fn expect_json(eventloop: &mut EventLoop, topic: &str) -> Value {
    loop {
        match next(eventloop).await {
            Ok(Packet::Publish(p)) if p.topic == topic.as_bytes() => {
                return serde_json::from_slice(&p.payload).expect("JSON payload")
            }
            Ok(_) => {}
            Err(e) => panic!("no message on {topic}: {e}"),
        }
    }
}

#[tokio::test]
async fn an_mqtt5_thing_gets_connack_properties_and_shadow_answers() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let (mut mqtt, connack) = Mqtt5::connect(&emulator, "desk-1", &thing).await;
    let Packet::ConnAck(connack) = connack else {
        panic!("expected CONNACK, got {connack:?}");
    };
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let properties = connack.properties.expect("CONNACK properties");
    assert_eq!(properties.retain_available, Some(0));
    assert_eq!(properties.max_qos, Some(1));
    assert_eq!(properties.topic_alias_max, Some(0));
    assert_eq!(
        properties.server_keep_alive,
        Some(30),
        "keepalive raised to AWS's minimum"
    );

    let prefix = "$aws/things/desk-1/shadow";
    mqtt.client
        .subscribe(format!("{prefix}/update/accepted"), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    loop {
        if let Packet::SubAck(ack) = next(&mut mqtt.eventloop).await.expect("SUBACK") {
            assert_eq!(
                ack.return_codes,
                [SubscribeReasonCode::Success(QoS::AtLeastOnce)]
            );
            break;
        }
    }
    mqtt.client
        .publish(
            format!("{prefix}/update"),
            QoS::AtLeastOnce,
            false,
            json!({"state": {"reported": {"mqtt": 5}}, "clientToken": "v5"}).to_string(),
        )
        .await
        .expect("publish queued");
    let accepted = expect_json(&mut mqtt.eventloop, &format!("{prefix}/update/accepted")).await;
    assert_eq!(accepted["clientToken"], "v5");
    assert_eq!(accepted["version"], 1);
}

#[tokio::test]
async fn mqtt5_reason_codes_report_refused_subscriptions_and_forbidden_publishes() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let (mut mqtt, _) = Mqtt5::connect(&emulator, "desk-1", &thing).await;
    mqtt.client
        .subscribe_many([
            Filter::new("$aws/things/desk-2/shadow/#", QoS::AtLeastOnce),
            Filter::new("devicehub/#", QoS::AtLeastOnce),
            Filter::new("devicehub/desk-1/#", QoS::AtMostOnce),
        ])
        .await
        .expect("subscribe queued");
    loop {
        if let Packet::SubAck(ack) = next(&mut mqtt.eventloop).await.expect("SUBACK") {
            assert_eq!(
                ack.return_codes,
                [
                    SubscribeReasonCode::NotAuthorized,
                    SubscribeReasonCode::NotAuthorized,
                    SubscribeReasonCode::Success(QoS::AtMostOnce)
                ]
            );
            break;
        }
    }
    mqtt.client
        .publish(
            "devicehub/desk-2/commands",
            QoS::AtLeastOnce,
            false,
            "spoofed",
        )
        .await
        .expect("publish queued");
    loop {
        match next(&mut mqtt.eventloop).await {
            Ok(Packet::Disconnect(d)) => {
                assert_eq!(d.reason_code, DisconnectReasonCode::NotAuthorized);
                break;
            }
            Ok(_) => {}
            // rumqttc reports a server DISCONNECT as the error that ends its event loop.
            Err(e) if e.contains("code 'NotAuthorized'") => break,
            Err(e) => panic!("expected a DISCONNECT with reason NotAuthorized, got {e}"),
        }
    }
}

#[tokio::test]
async fn a_no_local_subscription_does_not_return_the_clients_own_messages() {
    let emulator = Emulator::start().await;
    let thing = emulator.create_thing("desk-1").await;
    let (mut mqtt, _) = Mqtt5::connect(&emulator, "desk-1", &thing).await;
    let mut own = Filter::new("devicehub/desk-1/echo", QoS::AtLeastOnce);
    own.nolocal = true;
    mqtt.client
        .subscribe_many([
            own,
            Filter::new("devicehub/desk-1/marker", QoS::AtLeastOnce),
        ])
        .await
        .expect("subscribe queued");
    loop {
        if let Packet::SubAck(_) = next(&mut mqtt.eventloop).await.expect("SUBACK") {
            break;
        }
    }
    for topic in ["devicehub/desk-1/echo", "devicehub/desk-1/marker"] {
        mqtt.client
            .publish(topic, QoS::AtLeastOnce, false, "x")
            .await
            .expect("publish queued");
    }
    loop {
        if let Packet::Publish(p) = next(&mut mqtt.eventloop).await.expect("marker") {
            assert_eq!(
                p.topic,
                "devicehub/desk-1/marker".as_bytes(),
                "own message echoed"
            );
            break;
        }
    }
}
