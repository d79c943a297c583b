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

/// Printing through the Brother QL plugin into its simulator, compared pixel for pixel; media
/// checks, faults and dropped connections.
mod brother_printing;

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

/// Printing through the TSPL plugin into the TSPL simulator, compared pixel for pixel, and USB
/// printers matched by their IEEE-1284 device ID.
mod tspl_printing;

/// Printing through the DYMO plugin into the LabelWriter simulator (450 raster and 5XL), compared
/// pixel for pixel; paper out, labels that do not fit, dropped connections.
mod dymo_printing;

/// Scales: MT-SICS and NCI serial scales on pseudo-terminals (the simulator process) and HID
/// point-of-sale scales (the emulator's model behind a test HID transport), through the real
/// plugin libraries: exact weights in every unit, motion, over capacity, zeroing.
mod scales;

/// `devicehub sandbox` as a new user runs it: every process started, the demo labels printed
/// and shown by the emulator page, and every process gone after SIGTERM.
mod sandbox;
