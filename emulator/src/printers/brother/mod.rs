//! The Brother QL label printer simulator: a network QL-700, QL-800, QL-820NWB or QL-1100 with
//! one DK roll loaded, decoding Brother's raster command protocol on its print port, plus the
//! common control API.
//!
//! # Layout
//! - `raster`: the raster stream decoder (commands, PackBits lines, pages).
//!
//! This file holds the configuration, the models and rolls the simulator knows, and the
//! 32-byte status reply. Everything here comes from Brother's Raster Command References
//! (QL-700 series, QL-710W/720NW, QL-800 series, QL-1100 series) and is written out again
//! rather than shared with the driver: the two meet only on the wire.
//!
//! Faults: unlike a Zebra, a QL does not hold jobs while it cannot print. With `paper_out`
//! ("no media") or `head_open` ("cover open") set, a page's print command is answered with an
//! "error occurred" status carrying the error bit, the job is recorded as refused and the rest
//! of it is skipped until the host sends invalidate and initialize again. `paused` plays a
//! printer cooling its head: the status shows the printing phase with the "cooling started"
//! notification, pages are held and printed when it clears. A job whose `ESC i z` names other
//! media than the loaded roll is refused with the "replace media" error bit, as the reference
//! describes for the print information command.
//!
//! By default the simulator answers like a QL on USB. With `silent` it answers nothing, like a
//! QL on its network port, where the references' flow has no status exchange.

mod raster;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::{PrinterInfo, PrinterState};
use super::{
    start_printer, DecoderFactory, PrintStreamDecoder, RunningPrinter, ServerConfig, StartError,
};

/// The models the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BrotherModel {
    /// QL-700: 720-dot head, no compression, always in raster mode.
    #[value(name = "ql-700")]
    Ql700,
    /// QL-800: 720-dot head, no compression.
    #[value(name = "ql-800")]
    Ql800,
    /// QL-820NWB: 720-dot head, PackBits.
    #[value(name = "ql-820nwb")]
    Ql820nwb,
    /// QL-1100: 1296-dot head (162-byte lines), PackBits, 102 mm rolls.
    #[value(name = "ql-1100")]
    Ql1100,
}

/// What differs between the models on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ModelSpec {
    pub(crate) name: &'static str,
    /// Bytes in one raster line.
    pub(crate) bytes_per_line: usize,
    /// Dots added to every roll's right margin on the wider head.
    pub(crate) extra_right_margin: u32,
    /// Whether `M 02` (PackBits) is accepted.
    pub(crate) compression: bool,
    /// Whether 102 mm rolls fit.
    pub(crate) wide: bool,
    /// Status bytes 3 and 4, series and model code. The QL-710W/720NW reference documents
    /// series "4" with model codes "6" and "7"; the codes used for these models are the
    /// simulator's own, and the driver does not read them.
    pub(crate) code: [u8; 2],
}

impl BrotherModel {
    pub(crate) fn spec(self) -> ModelSpec {
        let narrow = ModelSpec {
            name: "QL-700",
            bytes_per_line: 90,
            extra_right_margin: 0,
            compression: false,
            wide: false,
            code: [b'4', b'5'],
        };
        match self {
            BrotherModel::Ql700 => narrow,
            BrotherModel::Ql800 => ModelSpec {
                name: "QL-800",
                code: [b'4', b'8'],
                ..narrow
            },
            BrotherModel::Ql820nwb => ModelSpec {
                name: "QL-820NWB",
                compression: true,
                code: [b'4', b'A'],
                ..narrow
            },
            BrotherModel::Ql1100 => ModelSpec {
                name: "QL-1100",
                bytes_per_line: 162,
                extra_right_margin: 44,
                compression: true,
                wide: true,
                code: [b'4', b'C'],
            },
        }
    }
}

/// A DK roll: continuous tape or die-cut labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Roll {
    /// The name used on the command line, e.g. `62` or `29x90`.
    pub(crate) id: &'static str,
    /// Whether the labels are die-cut (media type 0Bh) rather than continuous (0Ah).
    pub(crate) die_cut: bool,
    pub(crate) width_mm: u8,
    /// 0 for continuous tape.
    pub(crate) length_mm: u8,
    pub(crate) printable_width: u32,
    /// 0 for continuous tape.
    pub(crate) printable_length: u32,
    /// Dots from the right-hand end of a raster line to the first printable dot.
    pub(crate) right_margin: u32,
    /// Only the QL-1100 family takes it.
    pub(crate) wide_only: bool,
}

impl Roll {
    /// The media type byte.
    pub(crate) fn type_code(&self) -> u8 {
        if self.die_cut {
            0x0B
        } else {
            0x0A
        }
    }

    /// How the roll reads in messages.
    pub(crate) fn describe(&self) -> String {
        if self.die_cut {
            format!("{} x {} mm die-cut labels", self.width_mm, self.length_mm)
        } else {
            format!("{} mm continuous tape", self.width_mm)
        }
    }
}

const fn tape(id: &'static str, width_mm: u8, printable: u32, margin: u32, wide: bool) -> Roll {
    Roll {
        id,
        die_cut: false,
        width_mm,
        length_mm: 0,
        printable_width: printable,
        printable_length: 0,
        right_margin: margin,
        wide_only: wide,
    }
}

const fn labels(
    id: &'static str,
    (width_mm, length_mm): (u8, u8),
    (printable_width, printable_length): (u32, u32),
    margin: u32,
    wide: bool,
) -> Roll {
    Roll {
        id,
        die_cut: true,
        width_mm,
        length_mm,
        printable_width,
        printable_length,
        right_margin: margin,
        wide_only: wide,
    }
}

/// The rolls the simulator can have loaded: the "page size" tables of the references. The
/// 102 x 152 mm labels report 153 mm, as the printer measures them.
pub(crate) const ROLLS: &[Roll] = &[
    tape("12", 12, 106, 29, false),
    tape("29", 29, 306, 6, false),
    tape("38", 38, 413, 12, false),
    tape("50", 50, 554, 12, false),
    tape("54", 54, 590, 0, false),
    tape("62", 62, 696, 12, false),
    tape("102", 102, 1164, 12, true),
    labels("17x54", (17, 54), (165, 566), 0, false),
    labels("17x87", (17, 87), (165, 956), 0, false),
    labels("23x23", (23, 23), (202, 202), 42, false),
    labels("29x42", (29, 42), (306, 425), 6, false),
    labels("29x90", (29, 90), (306, 991), 6, false),
    labels("38x90", (38, 90), (413, 991), 12, false),
    labels("39x48", (39, 48), (425, 495), 6, false),
    labels("52x29", (52, 29), (578, 271), 0, false),
    labels("62x29", (62, 29), (696, 271), 12, false),
    labels("62x100", (62, 100), (696, 1109), 12, false),
    labels("102x51", (102, 51), (1164, 526), 12, true),
    labels("102x152", (102, 153), (1164, 1660), 12, true),
];

/// The short names of the rolls the simulator knows, as `--media` takes them.
pub fn roll_ids() -> Vec<&'static str> {
    ROLLS.iter().map(|r| r.id).collect()
}

/// How to start a Brother QL simulator.
#[derive(Debug, Clone)]
pub struct BrotherConfig {
    pub model: BrotherModel,
    /// The loaded roll, by its short name (`62`, `29x90`, `102x152`...).
    pub media: String,
    /// The print port (port 0 picks a free port). Real printers use 9100.
    pub listen: SocketAddr,
    /// The control API (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
    /// Answer nothing on the print port, as a QL does on its network port (the references'
    /// "Normal flow for network (Standard TCP/IP port) connection" has no status exchange).
    /// By default the simulator answers like a QL over USB.
    pub silent: bool,
}

impl Default for BrotherConfig {
    fn default() -> Self {
        Self {
            model: BrotherModel::Ql820nwb,
            media: "62".to_owned(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            out_dir: None,
            silent: false,
        }
    }
}

/// What every connection of one simulator shares: who it is and what is loaded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BrotherShared {
    pub(crate) model: ModelSpec,
    pub(crate) roll: Roll,
    /// Whether the print port sends nothing back (a QL on its network port).
    pub(crate) silent: bool,
}

/// Status type byte (18).
pub(crate) mod status_type {
    pub(crate) const REPLY: u8 = 0x00;
    pub(crate) const PRINTING_COMPLETED: u8 = 0x01;
    pub(crate) const ERROR_OCCURRED: u8 = 0x02;
    pub(crate) const PHASE_CHANGE: u8 = 0x06;
}

/// Error information 2, "replace media".
pub(crate) const ERROR2_REPLACE_MEDIA: u8 = 0x01;

impl BrotherShared {
    /// The 32-byte status: the loaded roll (none while `paper_out`), the fault bits, and
    /// `status_type`. `phase_printing` sets phase type 01h; `extra_error2` adds error bits.
    pub(crate) fn status(
        &self,
        printer: &PrinterState,
        status_type: u8,
        phase_printing: bool,
        extra_error2: u8,
    ) -> [u8; 32] {
        let faults = printer.faults();
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&[
            0x80,
            0x20,
            b'B',
            self.model.code[0],
            self.model.code[1],
            b'0',
            b'0',
            0x00,
        ]);
        if faults.paper_out {
            bytes[8] |= 0x01;
        } else {
            bytes[10] = self.roll.width_mm;
            bytes[11] = self.roll.type_code();
            bytes[17] = self.roll.length_mm;
        }
        if faults.head_open {
            bytes[9] |= 0x10;
        }
        bytes[9] |= extra_error2;
        bytes[14] = 0x3F;
        bytes[18] = status_type;
        bytes[19] = u8::from(phase_printing || faults.paused);
        if faults.paused {
            // Notification 03h: cooling started.
            bytes[22] = 0x03;
        }
        bytes
    }
}

/// Starts Brother QL simulators.
#[derive(Debug)]
pub struct BrotherSimulator;

impl BrotherSimulator {
    /// Binds the print port and the control API and serves until the returned handle is shut
    /// down or dropped. Must be called inside a tokio runtime.
    pub async fn start(config: BrotherConfig) -> Result<RunningPrinter, StartError> {
        let model = config.model.spec();
        let roll = *ROLLS.iter().find(|r| r.id == config.media).ok_or_else(|| {
            StartError::Config(format!(
                "media {:?} is not one of {}",
                config.media,
                roll_ids().join(", ")
            ))
        })?;
        if roll.wide_only && !model.wide {
            return Err(StartError::Config(format!(
                "the {} takes no {} mm rolls",
                model.name, roll.width_mm
            )));
        }
        let info = PrinterInfo {
            family: "brother-ql".to_owned(),
            model: model.name.to_owned(),
            language: raster::LANGUAGE.to_owned(),
            dpi: 300,
            width_dots: roll.printable_width,
        };
        let shared = Arc::new(BrotherShared {
            model,
            roll,
            silent: config.silent,
        });
        let decoders: DecoderFactory = Arc::new(move || -> Box<dyn PrintStreamDecoder> {
            Box::new(raster::RasterDecoder::new(*shared))
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
