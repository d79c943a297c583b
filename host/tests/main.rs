//! DeviceHub's integration tests: real plugin libraries loaded from disk, real printer
//! simulators over TCP, the real `devicehub` binary.
//!
//! One test binary for the crate; each module covers one area:

/// Shared fixtures: plugin libraries, plugin folders, the printer simulator process.
mod support;

/// Loading plugins: good, incompatible, panicking, foreign, truncated and duplicate files.
mod plugin_loading;

/// Printing through the Zebra plugin into the simulator, compared pixel for pixel.
mod zebra_printing;

/// The `devicehub` command line.
mod cli;

/// Repository hygiene: module docs on every source file.
mod tidy;

/// The MQTT link against the emulator: transports, refusals, reconnects, persistent sessions.
mod mqtt_link;

/// Fixtures for the cloud tests: the emulator's cloud as a child process, link helpers.
mod support_cloud;

/// A shipping desk registered with the emulator cloud.
mod support_desk;

/// Registration by fleet provisioning against the emulator: the `register` command end to end,
/// refused codes, an untrusted server, a wrong clock.
mod registration;

/// Print jobs from the cloud with `devicehub run`: printed once and reported, paper out,
/// refused documents, and jobs interrupted mid-print never printed twice.
mod jobs;

/// The Device Shadow, heartbeats and events with `devicehub run`: what is reported, desired
/// settings applied while running and after a stop, heartbeats in the cloud.
mod shadow_events;

/// Sheet printing over IPP against `ippeveprinter` on loopback: PDFs passed through, job
/// options, indicia composed onto envelopes, and the errors of stopped, unreachable and
/// failing printers.
mod sheets;
