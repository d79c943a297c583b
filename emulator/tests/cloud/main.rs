//! Conformance suite for the emulator's cloud: starts the real emulator (library call, every
//! port 0) and drives it only over the wire, with an MQTT client over mutual TLS, ALPN and
//! WebSocket, and HTTP, as DeviceHub or an AWS SDK would.
//!
//! The shadow, jobs, provisioning and durability rows run twice, as `<row>::embedded` and `<row>::mosquitto`:
//! once on the embedded broker and once with the emulator's services connected to a Mosquitto
//! started from the configuration the emulator writes (Mosquitto must be installed).
//!
//! Modules:
//! - `cli`: the command line against a `serve` process.
//! - `support`: starting and restarting the emulator on either broker, MQTT and HTTP clients,
//!   fixtures, and the macro that runs a row on both brokers.
//! - `provisioning`: fleet provisioning by claim, valid and refused requests, token expiry.
//! - `transports`: the three listeners, a foreign CA refused, ALPN required on its port.
//! - `authorization`: per-thing and claim policies enforced by the embedded broker.
//! - `shadow`: Device Shadow rows from the reference over the wire.
//! - `jobs`: Jobs rows over the wire, signed print and scale jobs, signed print-file URLs.
//! - `durability`: things, shadows and jobs survive a restart on the same data directory.
//! - `mqtt5`: MQTT 5 clients: CONNACK properties, reason codes, no-local subscriptions.
//! - `page`: the emulator page, its token and origin checks, printers and their labels.
//! - `mosquitto`: the generated Mosquitto configuration enforces per-thing ACLs.

mod authorization;
mod cli;
mod durability;
mod jobs;
mod mosquitto;
mod mqtt5;
mod page;
mod provisioning;
mod shadow;
mod support;
mod transports;
