//! The cloud side of DeviceHub: the MQTT link to AWS IoT Core (or the emulator).
//!
//! # Layout
//! - [`link`]: the MQTT connection task, its handle, transports and reconnect policy.
//! - [`tls`]: the TLS client configuration (CA bundle, client certificate, ALPN).
//! - [`registration`]: registering the device by fleet provisioning by claim.
//! - [`jobs`]: print jobs over AWS IoT Jobs, each printed at most once.

pub mod jobs;
pub mod link;
pub mod registration;
pub mod tls;
