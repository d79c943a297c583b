//! The DYMO LabelWriter simulator: a LabelWriter on a raw TCP print port (as the LabelWriter
//! print servers and the wireless models offer), speaking the 450 series raster protocol
//! (450, 450 Turbo, 4XL) or the 550 series protocol (550, 5XL), plus the common control API.
//!
//! # Layout
//! - `decoder`: the print stream decoder for both protocols.
//!
//! This file holds the configuration, the models, and the status answers, built from DYMO's
//! technical references (see `docs/emulator-printers.md`):
//! - 450 series `ESC A`: one byte; bit 0 ready (always 1), bit 1 top of form, bit 5 out of
//!   paper, bit 6 paper jam, bit 7 error (also set with out of paper).
//! - 550 series `ESC A n`: 32 bytes (print engine state, job ID, label index, head status,
//!   density, main bay state, SKU, error, labels left, power, head voltage).
//! - 550 series `ESC U`: the 64-byte SKU record of the loaded roll, read from its NFC tag.
//!
//! Faults: paper out, head open (the cover; on the 450 series, which has no cover sensor, it
//! shows as the error bit) and paused hold complete labels like the other simulators; the
//! fault's `loaded_media` replaces the loaded roll a 550 reports, and with `unrecognized` set
//! the 550 reports counterfeit labels and refuses to print.

mod decoder;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::store::{MediaSize, PrinterInfo, PrinterState};
use super::{
    start_printer, DecoderFactory, PrintStreamDecoder, RunningPrinter, ServerConfig, StartError,
};

/// Every LabelWriter prints at 300 dpi.
pub const DPI: u32 = 300;

/// The LabelWriter model the simulator plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum DymoModel {
    /// LabelWriter 450: 672-dot head, raster protocol.
    #[value(name = "450")]
    #[serde(rename = "450")]
    Lw450,
    /// LabelWriter 450 Turbo: as the 450, faster.
    #[value(name = "450turbo")]
    #[serde(rename = "450turbo")]
    Lw450Turbo,
    /// LabelWriter 4XL: 1248-dot head, raster protocol.
    #[value(name = "4xl")]
    #[serde(rename = "4xl")]
    Lw4xl,
    /// LabelWriter 550: 672-dot head, 550 protocol, NFC-tagged rolls.
    #[value(name = "550")]
    #[serde(rename = "550")]
    Lw550,
    /// LabelWriter 5XL: 1248-dot head, 550 protocol, NFC-tagged rolls.
    #[value(name = "5xl")]
    #[serde(rename = "5xl")]
    Lw5xl,
}

impl DymoModel {
    /// The marketing name, as `/status` reports it.
    pub fn name(self) -> &'static str {
        match self {
            DymoModel::Lw450 => "LabelWriter 450",
            DymoModel::Lw450Turbo => "LabelWriter 450 Turbo",
            DymoModel::Lw4xl => "LabelWriter 4XL",
            DymoModel::Lw550 => "LabelWriter 550",
            DymoModel::Lw5xl => "LabelWriter 5XL",
        }
    }

    /// Whether the model speaks the 550 series protocol.
    pub fn is_550_series(self) -> bool {
        matches!(self, DymoModel::Lw550 | DymoModel::Lw5xl)
    }

    /// The language name in `/status`, label records and the announcement line.
    pub fn language(self) -> &'static str {
        if self.is_550_series() {
            "lw550"
        } else {
            "lw-raster"
        }
    }

    /// Print head width in dots.
    pub fn head_dots(self) -> u32 {
        match self {
            DymoModel::Lw4xl | DymoModel::Lw5xl => 1248,
            _ => 672,
        }
    }

    /// The roll loaded when no fault says otherwise: 54 x 101 mm shipping labels (SKU 99014)
    /// on the narrow models, 4 x 6 in (104 x 159 mm, SKU 1744907) on the wide ones.
    pub fn default_media(self) -> MediaSize {
        match self {
            DymoModel::Lw4xl | DymoModel::Lw5xl => MediaSize {
                width_mm: 104,
                length_mm: 159,
                unrecognized: false,
            },
            _ => MediaSize {
                width_mm: 54,
                length_mm: 101,
                unrecognized: false,
            },
        }
    }
}

/// How to start a DYMO simulator.
#[derive(Debug, Clone)]
pub struct DymoConfig {
    pub model: DymoModel,
    /// The print port (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The control API (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
}

impl Default for DymoConfig {
    fn default() -> Self {
        Self {
            model: DymoModel::Lw450,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            out_dir: None,
        }
    }
}

/// Labels on a full roll, for the "labels left" the 550 reports.
const ROLL_LABELS: u64 = 220;

/// The SKU a roll of `media` reports: DYMO's numbers for the sizes the simulator plays by
/// default, a made-up one for any other size.
fn sku_of(media: &MediaSize) -> String {
    match (media.width_mm, media.length_mm) {
        (54, 101) => "99014".to_owned(),
        (104, 159) => "1744907".to_owned(),
        (width, length) => format!("SIM{width}X{length}"),
    }
}

/// The roll a 550 reports now: the fault's override, else the model's default.
pub(crate) fn loaded_media(model: DymoModel, printer: &PrinterState) -> MediaSize {
    printer
        .faults()
        .loaded_media
        .unwrap_or_else(|| model.default_media())
}

/// The 450 series status byte.
pub(crate) fn lw450_status(printer: &PrinterState) -> u8 {
    let faults = printer.faults();
    let mut byte = 0x01; // ready: always set
    if faults.paper_out {
        byte |= 0x20 | 0x80;
    } else {
        byte |= 0x02; // top of form: the printer stops on a label's start between jobs
    }
    if faults.head_open {
        byte |= 0x80;
    }
    byte
}

/// What a 550 connection set for itself, for its status answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct JobProgress {
    /// The job in progress on this connection (`ESC s` seen, `ESC Q` not yet), if any.
    pub(crate) job_id: Option<u32>,
    /// The density set with `ESC C`, in percent.
    pub(crate) density_percent: u8,
}

/// The job the print engine is on, whichever connection sent it: a 550 is one printer shared
/// by every host, and its status shows the job holding it to all of them, which is how a host
/// asking for the print lock learns it must wait.
#[derive(Debug, Default)]
pub(crate) struct PrintEngine {
    active: Mutex<Option<ActiveJob>>,
}

/// A job holding the print engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ActiveJob {
    /// The connection that started it.
    pub(crate) connection: u64,
    pub(crate) job_id: u32,
    /// The last label index it set.
    pub(crate) label_index: u16,
}

impl PrintEngine {
    fn lock(&self) -> MutexGuard<'_, Option<ActiveJob>> {
        // Plain data: a panic elsewhere cannot leave it half-updated in a harmful way.
        self.active
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// `ESC s` on `connection`: the job takes the engine unless another connection's job holds
    /// it (that job keeps it; the simulator still decodes the newcomer's labels).
    pub(crate) fn begin(&self, connection: u64, job_id: u32) {
        let mut active = self.lock();
        if active.is_none_or(|job| job.connection == connection) {
            *active = Some(ActiveJob {
                connection,
                job_id,
                label_index: 0,
            });
        }
    }

    /// `ESC n` on `connection`.
    pub(crate) fn set_label_index(&self, connection: u64, index: u16) {
        if let Some(job) = self.lock().as_mut().filter(|j| j.connection == connection) {
            job.label_index = index;
        }
    }

    /// `ESC Q`, or the end of `connection`: its job releases the engine.
    pub(crate) fn end(&self, connection: u64) {
        let mut active = self.lock();
        if active.is_some_and(|job| job.connection == connection) {
            *active = None;
        }
    }

    /// The job holding the engine now.
    pub(crate) fn active(&self) -> Option<ActiveJob> {
        *self.lock()
    }
}

/// The 550 series' 32-byte answer to `ESC A`.
pub(crate) fn lw550_status(
    model: DymoModel,
    printer: &PrinterState,
    active: Option<ActiveJob>,
    progress: &JobProgress,
) -> [u8; 32] {
    let faults = printer.faults();
    let media = loaded_media(model, printer);
    let mut answer = [0u8; 32];
    if let Some(job) = active {
        answer[0] = 1; // printing
        answer[1..5].copy_from_slice(&job.job_id.to_le_bytes());
        answer[5..7].copy_from_slice(&job.label_index.to_le_bytes());
    }
    answer[8] = 0; // print head temperature fine
    answer[9] = progress.density_percent;
    answer[10] = if faults.head_open {
        1 // bay open
    } else if faults.paper_out {
        5 // media present, empty
    } else if media.unrecognized {
        10 // counterfeit media
    } else {
        8 // media present, ok
    };
    if !media.unrecognized {
        let sku = sku_of(&media);
        let bytes = sku.as_bytes();
        let n = bytes.len().min(12);
        answer[11..11 + n].copy_from_slice(&bytes[..n]);
    }
    let printed = printer.status().counters.copies_printed;
    let left = if faults.paper_out {
        0
    } else {
        ROLL_LABELS.saturating_sub(printed % ROLL_LABELS)
    };
    answer[27..29].copy_from_slice(&(left as u16).to_le_bytes());
    answer[29] = 1; // external power supply present
    answer[30] = 1; // print head voltage ok
    answer
}

/// The 550 series' 64-byte answer to `ESC U`: the SKU record of the loaded roll, all zero when
/// there is no roll or its tag is not DYMO's.
pub(crate) fn sku_record(model: DymoModel, printer: &PrinterState) -> [u8; 64] {
    let faults = printer.faults();
    let media = loaded_media(model, printer);
    let mut record = [0u8; 64];
    if faults.paper_out || media.unrecognized {
        return record;
    }
    record[0..2].copy_from_slice(&0xCAB6u16.to_le_bytes()); // magic
    record[3] = 64; // record length
    let sku = sku_of(&media);
    let bytes = sku.as_bytes();
    let n = bytes.len().min(12);
    record[8..8 + n].copy_from_slice(&bytes[..n]);
    record[21] = 0xFF; // region: global
    record[22] = 3; // material: paper
    record[23] = if media.length_mm == 0 { 0 } else { 1 }; // continuous or die-cut
    record[24] = 1; // white labels
    record[40..42].copy_from_slice(&(media.length_mm.saturating_mul(10)).to_le_bytes());
    record[42..44].copy_from_slice(&(media.width_mm.saturating_mul(10)).to_le_bytes());
    record[50..52].copy_from_slice(&(ROLL_LABELS as u16).to_le_bytes());
    record
}

/// Starts DYMO simulators.
#[derive(Debug)]
pub struct DymoSimulator;

impl DymoSimulator {
    /// Binds the print port and the control API and serves until the returned handle is shut
    /// down or dropped. Must be called inside a tokio runtime.
    pub async fn start(config: DymoConfig) -> Result<RunningPrinter, StartError> {
        let model = config.model;
        let info = PrinterInfo {
            family: "dymo".to_owned(),
            model: model.name().to_owned(),
            language: model.language().to_owned(),
            dpi: DPI,
            width_dots: model.head_dots(),
        };
        let engine = Arc::new(PrintEngine::default());
        let connections = AtomicU64::new(0);
        let decoders: DecoderFactory = Arc::new(move || -> Box<dyn PrintStreamDecoder> {
            let connection = connections.fetch_add(1, Ordering::Relaxed);
            Box::new(decoder::DymoDecoder::new(
                model,
                Arc::clone(&engine),
                connection,
            ))
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
