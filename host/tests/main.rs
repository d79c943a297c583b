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

/// The local RPC over ZeroMQ with `devicehub run`: methods, refusals, the publish socket, the
/// command line on top of it, libzmq interoperability (pyzmq) and loopback-only listening.
mod rpc;
/// Scanners: the text scanner simulator on a pseudo-terminal through the real text-scanner
/// plugin (every block ending, ASCII normalising), the scanner poller publishing scans to live
/// subscribers, and the OCR device attached as `none://`.
mod scanners;
/// Sheet printing over IPP against `ippeveprinter` on loopback: PDFs passed through, job
/// options, indicia composed onto envelopes, and the errors of stopped, unreachable and
/// failing printers.
mod sheets;
/// The registration and status pages: Host, Origin and CSRF checks, loopback only, registration
/// through the API, and headless Chromium walking the pages (screenshots in docs/screenshots).
mod web;
/// The local WebSocket server with a real client against `devicehub run` and a serial scale
/// simulator: subscriptions, requests, refused origins, bad messages, a client that never reads.
mod ws;

/// Plugin bundle updates with `devicehub run`: only changed plugins downloaded, the restart on
/// the new set, a tampered bundle refused, a cut download resumed without touching what runs.
mod bundle_update;
/// Privacy: a scan-and-weigh flow through `devicehub run` at trace level leaves the address in
/// no log and no file of the data directory.
mod privacy;
/// `devicehub sandbox` as a new user runs it: every process started, the demo labels printed
/// and shown by the emulator page, and every process gone after SIGTERM.
mod sandbox;

/// Drop-in drivers with `devicehub run`: a signed plugin copied into the running agent's folder
/// drives its device without a restart; unsigned, untrusted and tampered copies are refused;
/// trust by hash; the development flag in the status.
mod drop_in;
/// The plugin author's kit: the template and ESC/POS plugins loaded from disk, matched by USB
/// and IEEE-1284 ID, their labels decoded back to the host's rendering dot for dot, and the
/// ESC/POS plugin printing into the ESC/POS simulator over TCP, faults included.
mod plugin_kit;

/// A small Marionette client: the browser tests drive headless Firefox with it.
mod support_marionette;
