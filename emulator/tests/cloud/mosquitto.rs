//! The Mosquitto configuration the emulator writes: mutual TLS with the emulator's CA and
//! per-thing ACLs, with the emulator's services running against it as an external broker.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use devicehub_emulator::cloud::pki::CertificateAuthority;
use devicehub_emulator::cloud::{mosquitto, start, BrokerMode, CloudConfig, ManualClock};
use serde_json::json;

use crate::support::{Emulator, Mqtt, Via, CLOCK_START};

/// A Mosquitto process that is killed when the test ends.
struct MosquittoProcess(Child);

impl Drop for MosquittoProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    // Mosquitto cannot report a port it picked itself, so one is reserved and released here.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn mosquitto_binary() -> String {
    let candidates = [
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
        "/usr/bin/mosquitto",
    ];
    candidates
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.to_string())
        .unwrap_or_else(|| {
            panic!("mosquitto is not installed: install it (Debian/Ubuntu: `apt-get install mosquitto`) to run the external-broker tests")
        })
}

#[tokio::test]
async fn mosquitto_with_the_generated_configuration_confines_each_thing_to_its_topics() {
    let dir = tempfile::tempdir().expect("temporary data directory");
    let port = free_port();
    let ca = CertificateAuthority::open(dir.path()).expect("CA");
    let config = mosquitto::write_config(dir.path(), &ca, port).expect("mosquitto.conf");
    let child = Command::new(mosquitto_binary())
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto starts");
    let mut broker = MosquittoProcess(child);

    // Wait until Mosquitto listens (or report why it exited).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = broker.0.try_wait() {
            let mut stderr = String::new();
            if let Some(mut e) = broker.0.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut stderr);
            }
            panic!("mosquitto exited ({status}): {stderr}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let clock = ManualClock::new(CLOCK_START);
    let mut cloud_config = CloudConfig::with_free_ports(dir.path().to_path_buf());
    cloud_config.broker = BrokerMode::External {
        host: "localhost".into(),
        port,
    };
    cloud_config.clock = Arc::new(clock.clone());
    let cloud = start(cloud_config)
        .await
        .expect("the services connect to mosquitto");
    let endpoints = cloud.endpoints().clone();
    let emulator = Emulator {
        dir,
        clock,
        cloud: Some(cloud),
        endpoints,
    };

    let desk1 = emulator.create_thing("desk-1").await;
    let desk2 = emulator.create_thing("desk-2").await;
    let mut intruder = Mqtt::connect(&emulator, "desk-1", &desk1, Via::External(port), true)
        .await
        .expect("desk-1 connects to mosquitto");
    let mut victim = Mqtt::connect(&emulator, "desk-2", &desk2, Via::External(port), true)
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

    if let Some(cloud) = emulator.cloud {
        cloud.shutdown(Duration::from_secs(10)).await;
    }
    drop(broker);
}
