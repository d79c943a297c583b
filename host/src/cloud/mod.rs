//! The cloud side of DeviceHub: the MQTT link to AWS IoT Core (or the emulator).
//!
//! # Layout
//! - [`link`]: the MQTT connection task, its handle, transports and reconnect policy.
//! - [`tls`]: the TLS client configuration (CA bundle, client certificate, ALPN).
//! - [`registration`]: registering the device by fleet provisioning by claim.
//! - [`jobs`]: print jobs over AWS IoT Jobs, each printed at most once.
//! - [`dispatch`]: the one reader of the link's messages, routing them to jobs and shadow.
//! - [`shadow`]: the Device Shadow: what DeviceHub reports, the settings the cloud wants.
//! - [`events`]: heartbeats and device, job and upgrade events on `devicehub/{thing}/...`.
//! - [`upgrades`]: newer agent and plugin versions announced by the cloud, per channel.
//! - [`bundle_update`]: plugin bundle updates announced in `desired.bundle`.

pub mod bundle_update;
pub mod dispatch;
pub mod events;
pub mod jobs;
pub mod link;
pub mod registration;
pub mod shadow;
pub mod tls;
pub mod upgrades;
