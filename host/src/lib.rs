//! DeviceHub: the agent that connects a shipping desk's printers, scales and scanners to a cloud
//! shipping application.

pub mod render;
