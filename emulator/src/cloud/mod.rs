//! The AWS IoT Core role: broker, device shadow, jobs, fleet provisioning and the shipping
//! application's HTTP API.
//!
//! # Layout
//! - [`runtime`]: starts and stops everything ([`start`], [`CloudConfig`], [`Endpoints`]).
//! - [`pki`]: the emulator's CA, server certificate and the client certificates it issues.
//! - [`broker`], [`wire`], [`listeners`], [`topics`]: the embedded MQTT 3.1.1 / 5 broker, its
//!   framing, its TLS / ALPN / WebSocket front, and AWS IoT Core's topic rules and
//!   per-certificate authorization.
//! - [`mosquitto`]: configuration for running against an external Mosquitto instead.
//! - [`shadow`], [`jobs`], [`provisioning`]: the AWS IoT services, synchronous engines that the
//!   runtime feeds with what arrives on their topics.
//! - [`registry`]: things, certificates and activation codes (`things.json`).
//! - [`api`], [`signing`], [`activity`]: the shipping application's HTTP API, its request and
//!   URL signatures, and what each thing has published.
//! - [`files`]: atomic writes for everything in the data directory.
//! - [`bundles`]: plugin bundles published for updates, served with ranges, counters and cuts.
//! - [`page`]: the page a person uses as the shipping application, and the printer simulators
//!   it shows labels from.

/// A message a cloud service wants published, in answer to a request or on its own (a timer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full MQTT topic, e.g. `$aws/things/desk-1/shadow/update/accepted`.
    pub topic: String,
    /// The payload bytes (JSON for every AWS IoT service the emulator implements).
    pub payload: Vec<u8>,
}

pub mod activity;
pub mod api;
pub mod broker;
pub mod bundles;
pub mod cli;
pub mod files;
pub mod jobs;
pub mod listeners;
pub mod mosquitto;
pub mod page;
pub mod pki;
pub mod provisioning;
pub mod registry;
pub mod runtime;
pub mod shadow;
pub mod signing;
pub mod throttle;
pub mod topics;
pub mod wire;

pub use runtime::{
    start, BrokerMode, Clock, CloudConfig, CloudError, Endpoints, ManualClock, RunningCloud,
    Shutdown, ShutdownTrigger, SystemClock,
};
