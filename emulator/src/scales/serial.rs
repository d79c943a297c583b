//! A serial scale on a pseudo-terminal: the MT-SICS and NCI command handlers, and the thread
//! that serves them on the pseudo-terminal's master side.
//!
//! The pseudo-terminal's slave side (`/dev/pts/N`) is what DeviceHub opens as a serial port.
//! The simulator keeps its own descriptor of the slave open for its whole life, so that the
//! terminal survives DeviceHub closing and reopening the port, and sets it to raw mode, so that
//! no line discipline rewrites CR into LF or echoes answers back as commands.
//!
//! # MT-SICS (commands end with CR LF)
//! - `SI`: `S S <weight> <unit>`, or `S D ...` while the load moves (each `SI` consumes one
//!   motion read), `S +` over capacity, `S -` under capacity, `S I` on a fault.
//! - `S`: like `SI` but waits out the motion, as a balance holds its answer until stable.
//! - `Z`: `Z A` (the gross load becomes the tare), `Z +` over capacity, `Z -` under capacity.
//! - anything else: `ES`.
//!
//! # NCI (commands end with CR)
//! - `W`: `<LF>weight<CR><LF>status<CR><ETX>`; `H`: the same with one more digit.
//! - `S`: the status only; `Z`: zeroes, then the status; anything else: `<LF>?<CR><ETX>`.
//! - The weight is zero-padded to seven characters (`0001.25lb`, `-001.25lb`); `lb-oz` shows
//!   `  2lb   3.5oz`. Over capacity shows carets, under capacity and faults dashes.
//! - Status byte 1: `0x30` + motion (bit 0), at zero (bit 1), RAM error (bit 2, a fault);
//!   byte 2: `0x30` + under capacity (bit 0), over capacity (bit 1), faulty calibration (bit 3).

use std::{
    fs::File,
    io::{Read, Write},
    net::SocketAddr,
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use crate::pty::{PtySimulator, PtyStartError};

use super::{control, Condition, DisplayNumber, LoadError, ScaleLoad, ScaleUpdate, ScaleView};

/// The serial protocols the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SerialProtocol {
    /// Mettler Toledo MT-SICS.
    MtSics,
    /// The NCI general serial protocol (NCI, Avery Weigh-Tronix, Brecknell).
    Nci,
}

const MT_SICS_UNITS: &[&str] = &["g", "kg", "mg", "lb", "oz", "ct"];
const NCI_UNITS: &[&str] = &["lb", "kg", "oz", "g", "lb-oz"];
const ETX: char = '\u{3}';

impl SerialProtocol {
    /// The protocol's name as the command line and the announcement spell it.
    pub fn name(self) -> &'static str {
        match self {
            SerialProtocol::MtSics => "mt-sics",
            SerialProtocol::Nci => "nci",
        }
    }

    /// An empty scale as this protocol's scales usually come: grams with two decimals for a
    /// balance, pounds with two decimals for a shipping bench scale.
    pub fn empty_scale(self) -> ScaleLoad {
        match self {
            SerialProtocol::MtSics => ScaleLoad::new("g", 2, MT_SICS_UNITS),
            SerialProtocol::Nci => ScaleLoad::new("lb", 2, NCI_UNITS),
        }
    }

    /// The answer to one command (given without its line ending), bytes as sent.
    pub fn answer(self, command: &str, load: &mut ScaleLoad) -> Vec<u8> {
        load.commands.push(command.to_string());
        match self {
            SerialProtocol::MtSics => format!("{}\r\n", mt_sics(command, load)).into_bytes(),
            SerialProtocol::Nci => nci(command, load).into_bytes(),
        }
    }
}

fn mt_sics(command: &str, load: &mut ScaleLoad) -> String {
    let family = if command == "Z" { "Z" } else { "S" };
    if let Some(reply) = &load.fail_with {
        return if reply == "I" {
            format!("{family} I")
        } else {
            reply.clone()
        };
    }
    match command {
        "SI" | "S" => {
            match load.condition {
                Condition::OverCapacity => return "S +".into(),
                Condition::UnderCapacity => return "S -".into(),
                Condition::Fault => return "S I".into(),
                Condition::Normal | Condition::NeedsCalibration => {}
            }
            let moving = if command == "SI" {
                load.take_motion()
            } else {
                // `S` answers once the load is stable.
                load.motion_reads = 0;
                false
            };
            match load.net() {
                Ok(net) => format!(
                    "S {} {:>10} {}",
                    if moving { 'D' } else { 'S' },
                    net.text(),
                    load.unit
                ),
                Err(_) => "EL".into(),
            }
        }
        "Z" => match load.condition {
            Condition::OverCapacity => "Z +".into(),
            Condition::UnderCapacity => "Z -".into(),
            Condition::Fault => "Z I".into(),
            Condition::Normal | Condition::NeedsCalibration => {
                // A balance zeroes once stable.
                load.motion_reads = 0;
                load.zero();
                "Z A".into()
            }
        },
        _ => "ES".into(),
    }
}

fn nci(command: &str, load: &mut ScaleLoad) -> String {
    if load.fail_with.is_some() {
        return format!("\n?\r{ETX}");
    }
    match command {
        "W" | "H" => {
            let moving = load.take_motion();
            let field = match (load.condition, load.net()) {
                (Condition::OverCapacity, _) => format!("^^^^^^^{}", unit_text(&load.unit)),
                (Condition::UnderCapacity | Condition::Fault, _) | (_, Err(_)) => {
                    "-------".to_string()
                }
                (_, Ok(net)) => {
                    let net = if command == "H" {
                        net.with_decimals(net.decimals + 1).unwrap_or(net)
                    } else {
                        net
                    };
                    nci_weight(net, &load.unit)
                }
            };
            format!("\n{field}\r\n{}\r{ETX}", nci_status(load, moving))
        }
        "S" => {
            let moving = load.motion_reads > 0;
            format!("\n{}\r{ETX}", nci_status(load, moving))
        }
        "Z" => {
            if matches!(
                load.condition,
                Condition::Normal | Condition::NeedsCalibration
            ) {
                load.motion_reads = 0;
                load.zero();
            }
            format!("\n{}\r{ETX}", nci_status(load, false))
        }
        _ => format!("\n?\r{ETX}"),
    }
}

fn unit_text(unit: &str) -> &str {
    if unit == "lb-oz" {
        "lb"
    } else {
        unit
    }
}

fn nci_weight(net: DisplayNumber, unit: &str) -> String {
    let sign = if net.is_negative() { "-" } else { "" };
    if unit == "lb-oz" {
        // The weight is kept in ounces; the display splits off whole pounds.
        let per_pound = 16 * 10u64.pow(net.decimals);
        let magnitude = net.mantissa.unsigned_abs();
        let ounces = DisplayNumber {
            mantissa: i64::try_from(magnitude % per_pound).unwrap_or(0),
            decimals: net.decimals,
        };
        let sign = if net.is_negative() { "-" } else { " " };
        return format!(
            "{sign}{:>2}lb {:>5}oz",
            magnitude / per_pound,
            ounces.magnitude_text()
        );
    }
    let width = 7 - sign.len();
    format!("{sign}{:0>width$}{unit}", net.magnitude_text())
}

fn nci_status(load: &ScaleLoad, moving: bool) -> String {
    let at_zero = load.net().is_ok_and(|n| n.mantissa == 0);
    let mut first = 0x30u8;
    let mut second = 0x30u8;
    if moving {
        first |= 0x01;
    }
    if at_zero && load.condition == Condition::Normal {
        first |= 0x02;
    }
    match load.condition {
        Condition::Fault => first |= 0x04,
        Condition::UnderCapacity => second |= 0x01,
        Condition::OverCapacity => second |= 0x02,
        Condition::NeedsCalibration => second |= 0x08,
        Condition::Normal => {}
    }
    format!("{}{}", first as char, second as char)
}

/// Splits the bytes DeviceHub writes into commands.
#[derive(Debug)]
pub struct CommandSplitter {
    protocol: SerialProtocol,
    pending: Vec<u8>,
}

impl CommandSplitter {
    pub fn new(protocol: SerialProtocol) -> CommandSplitter {
        CommandSplitter {
            protocol,
            pending: Vec::new(),
        }
    }

    /// Feeds bytes; returns the commands completed by them. MT-SICS commands end with LF (the
    /// CR before it is dropped); NCI commands end with CR (a stray LF is dropped).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut commands = Vec::new();
        for &byte in bytes {
            let end = match self.protocol {
                SerialProtocol::MtSics => byte == b'\n',
                SerialProtocol::Nci => byte == b'\r',
            };
            if end {
                let text = String::from_utf8_lossy(&self.pending)
                    .trim_matches(['\r', '\n'])
                    .to_string();
                self.pending.clear();
                commands.push(text);
            } else if !(self.protocol == SerialProtocol::Nci && byte == b'\n') {
                self.pending.push(byte);
            }
            // A line this long is no command; keep memory bounded.
            if self.pending.len() > 256 {
                self.pending.clear();
            }
        }
        commands
    }
}

/// The state the pseudo-terminal thread and the control API share.
#[derive(Debug)]
pub struct SerialScaleShared {
    pub protocol: SerialProtocol,
    load: Mutex<ScaleLoad>,
}

impl SerialScaleShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, ScaleLoad> {
        // A panic while holding the lock leaves a usable load behind: keep serving.
        self.load.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The control API's view.
    pub fn view(&self) -> ScaleView {
        self.lock().view(self.protocol.name())
    }

    /// Applies a control API change.
    pub fn update(&self, update: ScaleUpdate) -> Result<ScaleView, LoadError> {
        let mut load = self.lock();
        load.update(update)?;
        Ok(load.view(self.protocol.name()))
    }

    /// Forgets the commands received so far.
    pub fn clear_commands(&self) {
        self.lock().commands.clear();
    }
}

/// Why a serial scale simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SerialScaleStartError {
    #[error(transparent)]
    Start(#[from] PtyStartError),
    #[error("the initial weight is not usable")]
    Load(#[from] LoadError),
}

/// Where and how a serial scale simulator starts.
#[derive(Debug, Clone)]
pub struct SerialScaleConfig {
    pub protocol: SerialProtocol,
    /// The control API's address (loopback; port 0 picks a free port).
    pub control: SocketAddr,
    /// The initial load and unit.
    pub initial: ScaleUpdate,
}

/// A started serial scale. Dropping it stops the pseudo-terminal thread and the control API.
#[derive(Debug)]
pub struct SerialScaleSimulator {
    simulator: PtySimulator,
    shared: Arc<SerialScaleShared>,
}

impl SerialScaleSimulator {
    /// Creates the pseudo-terminal and starts serving; must be called inside a tokio runtime.
    pub async fn start(config: SerialScaleConfig) -> Result<Self, SerialScaleStartError> {
        let mut load = config.protocol.empty_scale();
        load.update(config.initial)?;
        let shared = Arc::new(SerialScaleShared {
            protocol: config.protocol,
            load: Mutex::new(load),
        });
        let app = control::router(Arc::clone(&shared));
        let serving = Arc::clone(&shared);
        let simulator =
            PtySimulator::start("scale", config.control, app, move |master, slave, stop| {
                serve_pty(master, slave, &serving, stop)
            })
            .await?;
        tracing::info!(pty = %simulator.pty_path().display(), control_addr = %simulator.control_addr(), protocol = config.protocol.name(), "serial scale simulator started");
        Ok(SerialScaleSimulator { simulator, shared })
    }

    /// The pseudo-terminal DeviceHub opens, e.g. `/dev/pts/5`.
    pub fn pty_path(&self) -> &std::path::Path {
        self.simulator.pty_path()
    }

    /// The control API's base URL.
    pub fn control_url(&self) -> String {
        format!("http://{}", self.simulator.control_addr())
    }

    /// The shared scale state.
    pub fn shared(&self) -> &Arc<SerialScaleShared> {
        &self.shared
    }

    /// Stops the control API and the pseudo-terminal thread and waits for both.
    pub async fn shutdown(self) {
        self.simulator.shutdown().await;
    }
}

/// Answers commands on the master side until `stop` is set. `_slave` is held so the terminal
/// stays usable while DeviceHub has it closed.
fn serve_pty(master: OwnedFd, _slave: OwnedFd, shared: &SerialScaleShared, stop: &AtomicBool) {
    let fd = master.as_raw_fd();
    let mut port = File::from(master);
    let mut splitter = CommandSplitter::new(shared.protocol);
    let mut buffer = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for an open descriptor, count 1.
        let ready = unsafe { libc::poll(&mut poll, 1, 50) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(%error, "polling the scale pseudo-terminal failed");
            return;
        }
        if ready == 0 || poll.revents & libc::POLLIN == 0 {
            if poll.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                // Nobody has the terminal open right now; wait for the next opener.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            continue;
        }
        let read = match port.read(&mut buffer) {
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                // Linux reports EIO while no process has the slave side open.
                tracing::debug!(%error, "reading the scale pseudo-terminal failed");
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
        };
        for command in splitter.feed(&buffer[..read]) {
            let answer = shared.protocol.answer(&command, &mut shared.lock());
            if let Err(error) = port.write_all(&answer).and_then(|()| port.flush()) {
                tracing::warn!(%error, "answering on the scale pseudo-terminal failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scale(protocol: SerialProtocol, weight: &str, unit: &str) -> ScaleLoad {
        let mut load = protocol.empty_scale();
        load.update(ScaleUpdate {
            weight: Some(weight.into()),
            unit: Some(unit.into()),
            ..ScaleUpdate::default()
        })
        .unwrap();
        load
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn mt_sics_answers_as_the_manual_shows() {
        let p = SerialProtocol::MtSics;
        let mut load = scale(p, "100.00", "g");
        assert_eq!(text(p.answer("SI", &mut load)), "S S     100.00 g\r\n");
        load.motion_reads = 1;
        assert_eq!(text(p.answer("SI", &mut load)), "S D     100.00 g\r\n");
        assert_eq!(text(p.answer("SI", &mut load)), "S S     100.00 g\r\n");
        load.motion_reads = 3;
        assert_eq!(text(p.answer("S", &mut load)), "S S     100.00 g\r\n");
        assert_eq!(text(p.answer("Z", &mut load)), "Z A\r\n");
        assert_eq!(text(p.answer("SI", &mut load)), "S S       0.00 g\r\n");
        load.condition = Condition::OverCapacity;
        assert_eq!(text(p.answer("SI", &mut load)), "S +\r\n");
        assert_eq!(text(p.answer("Z", &mut load)), "Z +\r\n");
        load.condition = Condition::UnderCapacity;
        assert_eq!(text(p.answer("SI", &mut load)), "S -\r\n");
        assert_eq!(text(p.answer("XYZ", &mut load)), "ES\r\n");
        load.fail_with = Some("I".into());
        assert_eq!(text(p.answer("SI", &mut load)), "S I\r\n");
        assert_eq!(text(p.answer("Z", &mut load)), "Z I\r\n");
        load.fail_with = Some("ET".into());
        assert_eq!(text(p.answer("SI", &mut load)), "ET\r\n");
        assert_eq!(load.commands.len(), 13);
    }

    #[test]
    fn nci_answers_as_the_protocol_shows() {
        let p = SerialProtocol::Nci;
        let mut load = scale(p, "1.25", "lb");
        assert_eq!(text(p.answer("W", &mut load)), "\n0001.25lb\r\n00\r\x03");
        assert_eq!(text(p.answer("H", &mut load)), "\n001.250lb\r\n00\r\x03");
        load.motion_reads = 1;
        assert_eq!(text(p.answer("S", &mut load)), "\n10\r\x03");
        assert_eq!(text(p.answer("W", &mut load)), "\n0001.25lb\r\n10\r\x03");
        assert_eq!(text(p.answer("Z", &mut load)), "\n20\r\x03");
        assert_eq!(text(p.answer("W", &mut load)), "\n0000.00lb\r\n20\r\x03");
        load.update(ScaleUpdate {
            weight: Some("0.75".into()),
            ..ScaleUpdate::default()
        })
        .unwrap();
        assert_eq!(text(p.answer("W", &mut load)), "\n-000.50lb\r\n00\r\x03");
        load.condition = Condition::OverCapacity;
        assert_eq!(text(p.answer("W", &mut load)), "\n^^^^^^^lb\r\n02\r\x03");
        load.condition = Condition::Fault;
        assert_eq!(text(p.answer("W", &mut load)), "\n-------\r\n40\r\x03");
        assert_eq!(text(p.answer("Q", &mut load)), "\n?\r\x03");
        let mut load = scale(p, "35.5", "lb-oz");
        assert_eq!(
            text(p.answer("W", &mut load)),
            "\n  2lb   3.5oz\r\n00\r\x03"
        );
    }

    #[test]
    fn commands_split_on_their_line_endings() {
        let mut mt = CommandSplitter::new(SerialProtocol::MtSics);
        assert!(mt.feed(b"S").is_empty());
        assert_eq!(mt.feed(b"I\r\nZ\r\n"), vec!["SI", "Z"]);
        let mut nci = CommandSplitter::new(SerialProtocol::Nci);
        assert_eq!(nci.feed(b"W\r\nZ\r"), vec!["W", "Z"]);
    }
}
