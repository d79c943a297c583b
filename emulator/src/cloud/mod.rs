//! The AWS IoT Core role: broker, device shadow, jobs, fleet provisioning and the shipping
//! application's HTTP API.

/// A message a cloud service wants published, in answer to a request or on its own (a timer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Full MQTT topic, e.g. `$aws/things/desk-1/shadow/update/accepted`.
    pub topic: String,
    /// The payload bytes (JSON for every AWS IoT service the emulator implements).
    pub payload: Vec<u8>,
}
