//! DeviceHub: the agent that connects a shipping desk's printers, scales and scanners to a cloud
//! shipping application.
//!
//! # Layout
//! - [`config`]: the config file and the device table.
//! - [`plugins`]: loading driver plugins and choosing one for each device.
//! - [`devices`]: opening devices and running each on its own thread; USB discovery.
//! - [`transport`]: TCP, serial, USB and capture transports handed to plugins.
//! - [`render`]: GIF, PNG, JPEG and PDF to 1-bit bitmaps at a printer's resolution.
//! - [`print`]: from a print file to a printed label: render, encode, send.
//! - [`cli`]: the command-line interface the `devicehub` binary runs.
//! - [`logging`]: log output to standard error and files, with a filter changed at runtime.
//! - [`storage`]: the data directory: atomic writes, state files, job journal, certificates, logs.
//! - [`cloud`]: the link to AWS IoT Core (or the emulator) over MQTT.
//! - [`service`]: `devicehub run`: the agent that takes print jobs from the cloud.
//! - [`scales`]: scale readings in exact units, read while wanted and published when changed.
//! - [`ws`]: the local WebSocket server (port 10101) for desk tools and browser pages.
//! - [`agent`]: the running agent's shared state for the local servers: status, registration.
//! - [`install`]: `devicehub service install|uninstall` (systemd on Linux).
//! - [`rpc`]: the local RPC over ZeroMQ on 127.0.0.1 (requests on 4042, events on 4043).
//! - [`sheets`]: office printers over IPP (configured URIs and CUPS queues), indicia on envelopes.
//! - [`web`]: the registration and status pages on 127.0.0.1:8091.
//! - [`scanning`]: polling text scanners and publishing their address blocks.
//! - [`sandbox`]: `devicehub sandbox`: DeviceHub, the emulator cloud and simulated devices on one machine.

pub mod agent;
pub mod cli;
pub mod cloud;
pub mod config;
pub mod devices;
pub mod install;
pub mod logging;
pub mod memory;
pub mod plugins;
pub mod print;
pub mod render;
pub mod rpc;
pub mod sandbox;
pub mod scales;
pub mod scanning;
pub mod service;
pub mod sheets;
pub mod storage;
pub mod transport;
pub mod web;
pub mod ws;
