//! The MQTT link against the real emulator over the wire: each transport, publish/subscribe
//! round trips, refusals with a clear reason, reconnection after a broker restart and the
//! persistent session.

use std::time::Duration;

use devicehub::cloud::link::{Backoff, FailureKind, LinkState, Qos};
use devicehub::storage::DeviceIdentity;

use crate::support_cloud::{next_on, start_link, wait_connected, wait_for_state, Cloud};

/// Connects over `transport`, subscribes, publishes to its own topic and receives it back.
async fn round_trip_over(cloud: &Cloud, thing: &str, transport_name: &str) {
    let identity = cloud.thing(thing);
    let transport = match transport_name {
        "mtls" => cloud.mutual_tls(),
        "alpn" => cloud.alpn(),
        _ => cloud.websocket(),
    };
    let (mut link, shutdown) = start_link(cloud.link_config(identity, transport));
    let mut state = link.handle.state();
    let filter = format!("devicehub/{thing}/test/#");
    link.handle
        .subscribe(&filter, Qos::AtLeastOnce)
        .await
        .expect("subscribe");
    assert!(
        !wait_connected(&mut state).await,
        "a new client has no session"
    );
    let topic = format!("devicehub/{thing}/test/ping");
    link.handle
        .publish(&topic, br#"{"n":1}"#.to_vec(), Qos::AtLeastOnce)
        .await
        .expect("publish");
    let message = next_on(&mut link.incoming, &topic).await;
    assert_eq!(&message.payload[..], br#"{"n":1}"#);
    assert_eq!(message.qos, Qos::AtLeastOnce);
    shutdown.cancel();
    link.task.await.expect("the link task ends");
    assert_eq!(*state.borrow(), LinkState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_mutual_tls() {
    let cloud = Cloud::start();
    round_trip_over(&cloud, "desk-mtls", "mtls").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_alpn_x_amzn_mqtt_ca() {
    let cloud = Cloud::start();
    round_trip_over(&cloud, "desk-alpn", "alpn").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_over_websocket() {
    let cloud = Cloud::start();
    round_trip_over(&cloud, "desk-wss", "wss").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outside_the_ca_bundle_is_refused_as_untrusted() {
    let cloud = Cloud::start();
    let mut identity = cloud.thing("desk-ca");
    // No CA bundle means Amazon's roots, which did not sign the emulator's server certificate.
    identity.ca_bundle_pem = None;
    let (link, shutdown) = start_link(cloud.link_config(identity, cloud.mutual_tls()));
    let mut state = link.handle.state();
    let refused = wait_for_state(&mut state, "a refusal", |s| {
        matches!(s, LinkState::Reconnecting { .. })
    })
    .await;
    let LinkState::Reconnecting { failure, .. } = refused else {
        unreachable!()
    };
    assert_eq!(failure.kind, FailureKind::ServerNotTrusted, "{failure:?}");
    assert!(
        failure.message.contains("CA bundle"),
        "the message says what to check: {}",
        failure.message
    );
    shutdown.cancel();
    link.task.await.expect("the link task ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_the_cloud_never_issued_is_refused() {
    let cloud = Cloud::start();
    let registered = cloud.thing("desk-forged");
    // A self-signed certificate for the same thing name: the server must not accept it.
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec!["desk-forged".into()]).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "desk-forged");
    let cert = params.self_signed(&key).expect("self-signed");
    let forged = DeviceIdentity {
        thing_name: "desk-forged".into(),
        certificate_pem: cert.pem(),
        private_key_pem: key.serialize_pem(),
        ca_bundle_pem: registered.ca_bundle_pem,
    };
    let (link, shutdown) = start_link(cloud.link_config(forged, cloud.mutual_tls()));
    let mut state = link.handle.state();
    let refused = wait_for_state(&mut state, "a refusal", |s| {
        matches!(s, LinkState::Reconnecting { .. })
    })
    .await;
    let LinkState::Reconnecting { failure, .. } = refused else {
        unreachable!()
    };
    assert_eq!(
        failure.kind,
        FailureKind::ClientCertificateRefused,
        "{failure:?}"
    );
    shutdown.cancel();
    link.task.await.expect("the link task ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_resubscribes_after_the_broker_restarts() {
    let mut cloud = Cloud::start();
    let identity = cloud.thing("desk-restart");
    let mut config = cloud.link_config(identity, cloud.mutual_tls());
    // Retries half a second apart at least, so that the test sees the first failure of an
    // outage before a second one replaces it on the watch channel.
    config.backoff = Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(1),
    };
    let (mut link, shutdown) = start_link(config);
    let mut state = link.handle.state();
    link.handle
        .subscribe("devicehub/desk-restart/test/#", Qos::AtLeastOnce)
        .await
        .expect("subscribe");
    wait_connected(&mut state).await;
    let topic = "devicehub/desk-restart/test/ping";
    link.handle
        .publish(topic, b"before".to_vec(), Qos::AtLeastOnce)
        .await
        .expect("publish");
    assert_eq!(
        &next_on(&mut link.incoming, topic).await.payload[..],
        b"before"
    );

    cloud.kill();
    wait_for_state(&mut state, "reconnecting", |s| {
        matches!(s, LinkState::Reconnecting { .. })
    })
    .await;
    cloud.restart();
    // The emulator keeps sessions in memory: after its restart the session is gone, so the
    // link must subscribe again by itself for the next message to arrive.
    let session_present = wait_connected(&mut state).await;
    assert!(!session_present, "a restarted broker has no session");
    link.handle
        .publish(topic, b"after".to_vec(), Qos::AtLeastOnce)
        .await
        .expect("publish");
    assert_eq!(
        &next_on(&mut link.incoming, topic).await.payload[..],
        b"after"
    );

    // The reconnect reset the backoff: the next outage starts again at the first attempt.
    cloud.kill();
    let down = wait_for_state(&mut state, "reconnecting", |s| {
        matches!(s, LinkState::Reconnecting { .. })
    })
    .await;
    assert!(
        matches!(down, LinkState::Reconnecting { attempt: 1, .. }),
        "{down:?}"
    );
    shutdown.cancel();
    link.task.await.expect("the link task ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_keeps_subscriptions_and_queued_messages_while_offline() {
    let cloud = Cloud::start();
    let identity = cloud.thing("desk-session");
    let notify = "$aws/things/desk-session/jobs/notify";

    let (first, shutdown) = start_link(cloud.link_config(identity.clone(), cloud.mutual_tls()));
    let mut state = first.handle.state();
    first
        .handle
        .subscribe(notify, Qos::AtLeastOnce)
        .await
        .expect("subscribe");
    wait_connected(&mut state).await;
    // A round trip on the link's own topic proves the subscription above reached the broker
    // (requests are handled in order) before the link goes away.
    first
        .handle
        .subscribe("devicehub/desk-session/test/#", Qos::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut incoming = first.incoming;
    first
        .handle
        .publish(
            "devicehub/desk-session/test/ping",
            b"x".to_vec(),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    next_on(&mut incoming, "devicehub/desk-session/test/ping").await;
    shutdown.cancel();
    first.task.await.expect("the first link ends");

    // While the device is offline the cloud sends it a job: the broker queues the QoS 1
    // notification in the persistent session.
    cloud.scale_job("desk-session");

    let (mut second, shutdown) = start_link(cloud.link_config(identity, cloud.mutual_tls()));
    let mut state = second.handle.state();
    assert!(
        wait_connected(&mut state).await,
        "the broker kept the session of a clean_session=false client"
    );
    let message = next_on(&mut second.incoming, notify).await;
    let body: serde_json::Value = serde_json::from_slice(&message.payload).expect("JSON");
    assert!(body["jobs"].is_object(), "a jobs notification: {body}");
    shutdown.cancel();
    second.task.await.expect("the second link ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_registered_before_connecting_are_sent_even_when_the_broker_kept_the_session() {
    let cloud = Cloud::start();
    let identity = cloud.thing("desk-kept");

    // A first program leaves a persistent session on the broker without this filter.
    let (first, shutdown) = start_link(cloud.link_config(identity.clone(), cloud.mutual_tls()));
    let mut state = first.handle.state();
    wait_connected(&mut state).await;
    shutdown.cancel();
    first.task.await.expect("the first link ends");

    // The next one registers its filter before it has connected; the broker answers that the
    // session is present, yet this filter was never part of it.
    let (mut second, shutdown) = start_link(cloud.link_config(identity, cloud.mutual_tls()));
    second
        .handle
        .subscribe("devicehub/desk-kept/test/#", Qos::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut state = second.handle.state();
    assert!(
        wait_connected(&mut state).await,
        "the broker kept the session"
    );
    second
        .handle
        .publish(
            "devicehub/desk-kept/test/ping",
            b"x".to_vec(),
            Qos::AtLeastOnce,
        )
        .await
        .expect("publish");
    next_on(&mut second.incoming, "devicehub/desk-kept/test/ping").await;
    shutdown.cancel();
    second.task.await.expect("the second link ends");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_publishes_the_last_will_and_a_clean_stop_does_not() {
    let cloud = Cloud::start();
    let identity = cloud.thing("desk-will");

    // A clean stop: a "shutdown" event, and no will.
    let (link, shutdown) = start_link(cloud.link_config(identity.clone(), cloud.mutual_tls()));
    wait_connected(&mut link.handle.state()).await;
    shutdown.cancel();
    link.task.await.expect("the link ends");

    // A lost connection: aborting the task drops the socket without DISCONNECT.
    let (link, _shutdown) = start_link(cloud.link_config(identity, cloud.mutual_tls()));
    wait_connected(&mut link.handle.state()).await;
    link.task.abort();
    let _ = link.task.await;

    let reasons = tokio::time::timeout(crate::support_cloud::WAIT, async {
        loop {
            let reasons: Vec<String> = cloud
                .messages("desk-will")
                .await
                .iter()
                .filter(|m| m["topic"] == "devicehub/desk-will/events/connection")
                .filter_map(|m| m["payload"]["reason"].as_str().map(str::to_string))
                .collect();
            if reasons.len() >= 2 {
                return reasons;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both connection events recorded");
    assert_eq!(reasons, vec!["shutdown", "connection lost"]);
}
