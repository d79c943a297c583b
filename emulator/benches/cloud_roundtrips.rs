//! Benchmark of the emulator's cloud over the wire: Device Shadow update round trips per second
//! and complete job executions per second, each measured by a device connected over mutual TLS
//! exactly as DeviceHub connects. Prints its figures; run with
//! `cargo bench -p devicehub-emulator --bench cloud_roundtrips`.
//!
//! Both figures are sequential (one request in flight), so they measure latency through the
//! whole path: TLS, broker, the services' MQTT client, the engine with its fsync'd state file,
//! and back. The engines' per-thing throttle is lifted for the run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devicehub_emulator::cloud::{listeners, signing, start, Clock, CloudConfig, SystemClock};
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

const SHADOW_UPDATES: usize = 2000;
const JOB_EXECUTIONS: usize = 300;
const WAIT: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and expects a quick
    // check, which one short round of each measurement gives.
    let quick = !std::env::args().any(|a| a == "--bench");
    let (updates, executions) = if quick {
        (20, 5)
    } else {
        (SHADOW_UPDATES, JOB_EXECUTIONS)
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(updates, executions))
}

/// Waits for the next publish on `topic`, driving the event loop.
async fn expect(
    eventloop: &mut EventLoop,
    topic: &str,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, eventloop.poll()).await??;
        if let Event::Incoming(Packet::Publish(p)) = event {
            if p.topic == topic {
                return Ok(p.payload.to_vec());
            }
            if p.topic.ends_with("/rejected") {
                return Err(format!(
                    "rejected on {}: {}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload)
                )
                .into());
            }
        }
    }
}

async fn until_suback(eventloop: &mut EventLoop) -> Result<(), Box<dyn std::error::Error>> {
    loop {
        if let Event::Incoming(Packet::SubAck(_)) =
            tokio::time::timeout(WAIT, eventloop.poll()).await??
        {
            return Ok(());
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, count: usize, total: Duration, mut latencies: Vec<Duration>) {
    latencies.sort();
    println!(
        "{name}: {count} in {:.2} s = {:.0}/s; latency p50 {:.2} ms, p99 {:.2} ms",
        total.as_secs_f64(),
        count as f64 / total.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
    );
}

async fn run(updates: usize, executions: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut config = CloudConfig::with_free_ports(dir.path().to_path_buf());
    config.requests_per_thing_per_second = Some(u32::MAX);
    let cloud = start(config).await?;
    let endpoints = cloud.endpoints().clone();
    let ca_pem = std::fs::read(&endpoints.ca_certificate)?;
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(listeners::client_config_trusting(&ca_pem)?)
        .build()?;
    let thing: Value = http
        .post(format!("{}/things", endpoints.api_url))
        .json(&json!({"thingName": "bench-1"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let secret = thing["deviceSignature"]
        .as_str()
        .ok_or("no device signature")?
        .to_string();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(&ca_pem)?)?;
    let certificate = CertificateDer::from_pem_slice(
        thing["certificatePem"]
            .as_str()
            .ok_or("no certificate")?
            .as_bytes(),
    )?;
    let key =
        PrivateKeyDer::from_pem_slice(thing["privateKey"].as_str().ok_or("no key")?.as_bytes())?;
    let tls = rustls::ClientConfig::builder_with_provider(listeners::crypto_provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![certificate], key)?;
    let mut options = MqttOptions::new("bench-1", "localhost", endpoints.mqtt_port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(140 * 1024, 140 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    client
        .subscribe("$aws/things/bench-1/shadow/update/+", QoS::AtLeastOnce)
        .await?;
    until_suback(&mut eventloop).await?;
    client
        .subscribe("$aws/things/bench-1/jobs/#", QoS::AtLeastOnce)
        .await?;
    until_suback(&mut eventloop).await?;

    let mut latencies = Vec::with_capacity(updates);
    let started = Instant::now();
    for i in 0..updates {
        let sent = Instant::now();
        let body =
            json!({"state": {"reported": {"labelsPrinted": i}}, "clientToken": format!("b{i}")});
        client
            .publish(
                "$aws/things/bench-1/shadow/update",
                QoS::AtLeastOnce,
                false,
                body.to_string(),
            )
            .await?;
        expect(&mut eventloop, "$aws/things/bench-1/shadow/update/accepted").await?;
        latencies.push(sent.elapsed());
    }
    report(
        "shadow update round trips",
        updates,
        started.elapsed(),
        latencies,
    );

    let mut latencies = Vec::with_capacity(executions);
    let started = Instant::now();
    for i in 0..executions {
        let sent = Instant::now();
        let path = "/things/bench-1/scale-requests";
        let timestamp = SystemClock.now_epoch_s();
        let signature = signing::sign_request(&secret, "POST", path, timestamp, b"{}");
        let created: Value = http
            .post(format!("{}{path}", endpoints.api_url))
            .header("content-type", "application/json")
            .header(signing::TIMESTAMP_HEADER, timestamp.to_string())
            .header(signing::SIGNATURE_HEADER, signature)
            .body("{}")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let job_id = created["jobId"].as_str().ok_or("no job id")?.to_string();
        expect(&mut eventloop, "$aws/things/bench-1/jobs/notify-next").await?;
        client
            .publish(
                "$aws/things/bench-1/jobs/start-next",
                QoS::AtLeastOnce,
                false,
                json!({"clientToken": format!("s{i}")}).to_string(),
            )
            .await?;
        expect(
            &mut eventloop,
            "$aws/things/bench-1/jobs/start-next/accepted",
        )
        .await?;
        let update = format!("$aws/things/bench-1/jobs/{job_id}/update");
        client
            .publish(
                update.clone(),
                QoS::AtLeastOnce,
                false,
                json!({"status": "SUCCEEDED", "clientToken": format!("u{i}")}).to_string(),
            )
            .await?;
        expect(&mut eventloop, &format!("{update}/accepted")).await?;
        latencies.push(sent.elapsed());
    }
    report(
        "job executions (create over HTTP, notify-next, start-next, update SUCCEEDED)",
        executions,
        started.elapsed(),
        latencies,
    );

    cloud.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
