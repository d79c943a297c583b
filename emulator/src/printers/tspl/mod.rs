//! The TSPL label printer simulator: a TSC desktop printer (like a TE200 or TE300) on a raw TCP
//! print port, decoding TSPL/TSPL2 back into bitmaps, plus the common control API.
//!
//! # Layout
//! - `decoder`: the TSPL stream decoder (text commands, `BITMAP` binary payloads, `<ESC>!?`).
//!
//! This file holds the configuration, the settings that stay in force across connections
//! (`SIZE`, `GAP`/`BLINE`, `DIRECTION`, `REFERENCE`, `DENSITY`, `SPEED`: TSPL printers keep
//! them until changed), and the status byte.
//!
//! Faults: while paper out, head open or paused is set, printed labels are held and come out
//! when the last fault clears, as on the real printer, and `<ESC>!?` reports the fault bits.

mod decoder;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use super::store::{PrinterInfo, PrinterState};
use super::{
    start_printer, DecoderFactory, PrintStreamDecoder, RunningPrinter, ServerConfig, StartError,
};

/// The language name in announcements, label records and errors.
pub const LANGUAGE: &str = "tspl";

/// How to start a TSPL simulator.
#[derive(Debug, Clone)]
pub struct TsplConfig {
    /// 203 or 300 dots per inch.
    pub dpi: u32,
    /// Print head width in dots; `None` means the TE200's 108 mm at 203 dpi (864 dots) or the
    /// TE300's 105.7 mm at 300 dpi (1248 dots).
    pub width_dots: Option<u32>,
    /// The print port (port 0 picks a free port). Real printers use 9100.
    pub listen: SocketAddr,
    /// The control API (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
}

impl Default for TsplConfig {
    fn default() -> Self {
        Self {
            dpi: 203,
            width_dots: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            out_dir: None,
        }
    }
}

/// The setup a TSPL printer keeps between jobs and connections until a command changes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TsplSettings {
    /// Label width in dots (`SIZE`).
    pub(crate) width: u32,
    /// Label length in dots (`SIZE`).
    pub(crate) length: u32,
    /// `DIRECTION n`: 1 prints the label turned by 180 degrees.
    pub(crate) direction: u8,
    /// `DIRECTION n,m`: 1 prints the label mirrored left to right.
    pub(crate) mirror: bool,
    /// `REFERENCE x,y`: the origin every position is measured from.
    pub(crate) reference: (u32, u32),
}

/// What every connection of one TSPL simulator shares.
#[derive(Debug)]
pub(crate) struct TsplShared {
    /// Resolution, to turn millimetres and inches into dots.
    pub(crate) dpi: u32,
    /// Print head width in dots: nothing is printed beyond it.
    pub(crate) head_width: u32,
    settings: Mutex<TsplSettings>,
}

impl TsplShared {
    pub(crate) fn new(dpi: u32, head_width: u32) -> Self {
        // A 4 x 6 inch shipping label until a SIZE says otherwise.
        Self {
            dpi,
            head_width,
            settings: Mutex::new(TsplSettings {
                width: (dpi * 4).min(head_width),
                length: dpi * 6,
                direction: 0,
                mirror: false,
                reference: (0, 0),
            }),
        }
    }

    /// A copy of the settings in force.
    pub(crate) fn settings(&self) -> TsplSettings {
        self.lock().clone()
    }

    /// Changes the settings in force.
    pub(crate) fn update(&self, change: impl FnOnce(&mut TsplSettings)) {
        change(&mut self.lock());
    }

    fn lock(&self) -> MutexGuard<'_, TsplSettings> {
        // Plain data: a panic elsewhere cannot leave it half-updated in a harmful way.
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `<ESC>!?` answer: one byte, as TSC's "TSPL/TSPL2 Programming Manual" specifies under
/// "Status Polling Commands": bit 0 head opened, bit 2 out of paper, bit 4 pause. The simulator
/// prints instantly, so bit 5 (printing) never shows, and it has no jam, ribbon, cover or
/// temperature faults to report.
pub(crate) fn status_byte(printer: &PrinterState) -> u8 {
    let faults = printer.faults();
    let mut byte = 0;
    if faults.head_open {
        byte |= 0x01;
    }
    if faults.paper_out {
        byte |= 0x04;
    }
    if faults.paused {
        byte |= 0x10;
    }
    byte
}

/// Starts TSPL simulators.
#[derive(Debug)]
pub struct TsplSimulator;

impl TsplSimulator {
    /// Binds the print port and the control API and serves until the returned handle is shut
    /// down or dropped. Must be called inside a tokio runtime.
    pub async fn start(config: TsplConfig) -> Result<RunningPrinter, StartError> {
        let (model, default_width) = match config.dpi {
            203 => ("TE200", 864),
            300 => ("TE300", 1248),
            other => {
                return Err(StartError::Config(format!(
                    "dpi must be 203 or 300, not {other}"
                )))
            }
        };
        let width = config.width_dots.unwrap_or(default_width);
        if !(8..=32_000).contains(&width) {
            return Err(StartError::Config(format!(
                "width must be 8 to 32000 dots, not {width}"
            )));
        }
        let info = PrinterInfo {
            family: "tspl".to_owned(),
            model: model.to_owned(),
            language: LANGUAGE.to_owned(),
            dpi: config.dpi,
            width_dots: width,
        };
        let shared = Arc::new(TsplShared::new(config.dpi, width));
        let decoders: DecoderFactory = Arc::new(move || -> Box<dyn PrintStreamDecoder> {
            Box::new(decoder::TsplDecoder::new(Arc::clone(&shared)))
        });
        start_printer(
            info,
            ServerConfig {
                listen: config.listen,
                control: config.control,
                out_dir: config.out_dir,
            },
            decoders,
        )
        .await
    }
}
