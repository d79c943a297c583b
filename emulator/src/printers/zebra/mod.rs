//! The Zebra label printer simulator: a network Zebra speaking ZPL II (like a ZD620) or EPL2
//! (like an LP2844) on its print port, plus the common control API.
//!
//! # Layout
//! - [`graphic`]: `^GF` data decoding (hex, ACS, `:Z64:`, `:B64:`, binary, compressed binary).
//! - `zpl`: the ZPL II stream decoder.
//! - `epl`: the EPL2 stream decoder.
//!
//! This file holds the configuration, the state both languages share across connections
//! (settings that stay in force between formats, such as `^LL`), and the status answers.
//!
//! Faults: while paper out, head open or paused is set, complete labels are held (they stay
//! in the printer's buffer, counted by `~HS`) and printed when the last fault clears, as a real
//! printer prints its buffered formats once it is ready again. `~JA` discards them.

mod epl;
pub mod graphic;
mod zpl;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::store::{PrinterInfo, PrinterState};
use super::{
    start_printer, DecoderFactory, PrintStreamDecoder, RunningPrinter, ServerConfig, StartError,
};

/// The printer language the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ZebraLanguage {
    /// ZPL II, as every current Zebra speaks.
    Zpl,
    /// EPL2, as the LP2844 and other older desktop models speak.
    Epl2,
}

impl ZebraLanguage {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            ZebraLanguage::Zpl => "zpl",
            ZebraLanguage::Epl2 => "epl2",
        }
    }
}

/// How to start a Zebra simulator.
#[derive(Debug, Clone)]
pub struct ZebraConfig {
    /// ZPL or EPL2.
    pub language: ZebraLanguage,
    /// 203 or 300 dots per inch.
    pub dpi: u32,
    /// Print head width in dots; `None` means 4 inches at `dpi` (812 or 1200 dots).
    pub width_dots: Option<u32>,
    /// The print port (port 0 picks a free port). Real printers use 9100.
    pub listen: SocketAddr,
    /// The control API (port 0 picks a free port).
    pub control: SocketAddr,
    /// When set, every printed label is also written there as `label-NNNN.png`.
    pub out_dir: Option<PathBuf>,
}

impl Default for ZebraConfig {
    fn default() -> Self {
        Self {
            language: ZebraLanguage::Zpl,
            dpi: 203,
            width_dots: None,
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            control: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            out_dir: None,
        }
    }
}

/// Settings that stay in force from one format to the next until changed, as on the printer
/// (`^PW`, `^LL`, `^LH`, `^PO` and the recorded setting commands; EPL2 `q` and `Q`).
#[derive(Debug, Clone)]
pub(crate) struct ZplSettings {
    /// Label width in dots.
    pub(crate) width: u32,
    /// Label length in dots.
    pub(crate) length: u32,
    /// `^LH` label home.
    pub(crate) home: (u32, u32),
    /// `^POI`: the label prints turned by 180 degrees.
    pub(crate) inverted: bool,
    /// Raw parameters of recorded setting commands, keyed by command.
    pub(crate) values: BTreeMap<String, String>,
}

/// What every connection of one Zebra simulator shares.
#[derive(Debug)]
pub(crate) struct ZebraShared {
    info: PrinterInfo,
    settings: Mutex<ZplSettings>,
}

impl ZebraShared {
    /// A copy of the settings in force.
    pub(crate) fn settings(&self) -> ZplSettings {
        self.lock().clone()
    }

    /// Keeps the settings a finished job left in force.
    pub(crate) fn store_settings(&self, settings: &ZplSettings) {
        *self.lock() = settings.clone();
    }

    fn lock(&self) -> MutexGuard<'_, ZplSettings> {
        // Plain data: a panic elsewhere cannot leave it half-updated in a harmful way.
        self.settings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The `^HH` answer: the configuration listing the printer returns to the host, framed
    /// STX ... ETX like every Zebra answer, one setting per CR LF line. `settings` are the
    /// ones in force where the command stands (inside a format, its own changes count).
    pub(crate) fn configuration_report(
        &self,
        printer: &PrinterState,
        settings: &ZplSettings,
    ) -> Vec<u8> {
        let faults = printer.faults();
        let value = |key: &str, default: &str| {
            settings
                .values
                .get(key)
                .map(|raw| raw.split(',').next().unwrap_or_default().to_owned())
                .filter(|first| !first.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        let media = match value("^MN", "Y").to_ascii_uppercase().as_str() {
            "N" => "CONTINUOUS",
            "M" => "MARK",
            _ => "GAP/NOTCH",
        };
        let lines = [
            (format!("+{}.0", value("^MD", "0")), "DARKNESS"),
            (format!("{} IPS", value("^PR", "4")), "PRINT SPEED"),
            ("TEAR OFF".to_owned(), "PRINT MODE"),
            (media.to_owned(), "MEDIA TYPE"),
            ("DIRECT-THERMAL".to_owned(), "PRINT METHOD"),
            (format!("{}", settings.width), "PRINT WIDTH"),
            (format!("{}", settings.length), "LABEL LENGTH"),
            (
                if settings.inverted {
                    "INVERTED"
                } else {
                    "NORMAL"
                }
                .to_owned(),
                "PRINT ORIENTATION",
            ),
            (value("^CI", "0"), "CHARACTER SET"),
            (format!("{} DPI", self.info.dpi), "RESOLUTION"),
            (
                if faults.head_open { "OPEN" } else { "CLOSED" }.to_owned(),
                "HEAD",
            ),
            (
                if faults.paper_out { "OUT" } else { "OK" }.to_owned(),
                "MEDIA",
            ),
            (self.info.model.clone(), "MODEL"),
            ("V84.20.21Z".to_owned(), "FIRMWARE"),
        ];
        let mut report = vec![0x02];
        for (value, name) in lines {
            report.extend(format!("  {value:<20}{name}\r\n").bytes());
        }
        report.extend(b"\x03\r\n");
        report
    }
}

/// The `~HS` answer: three STX ... ETX CR LF strings, laid out as the ZPL manual specifies.
/// Faults map to their own flags; the formats held by a fault are the formats in the receive
/// buffer, and their copies the labels remaining in the batch.
pub(crate) fn host_status(
    printer: &PrinterState,
    label_length: u32,
    partial_format: bool,
) -> Vec<u8> {
    let faults = printer.faults();
    let (held, copies) = printer.held_summary();
    let flag = |on: bool| if on { '1' } else { '0' };
    format!(
        "\x02030,{},{},{:04},{:03},0,0,{},000,0,0,0\x03\r\n\
         \x02001,0,{},0,1,2,4,0,{:08},1,000\x03\r\n\
         \x021234,0\x03\r\n",
        flag(faults.paper_out),
        flag(faults.paused),
        label_length.min(9999),
        held.min(999),
        flag(partial_format),
        flag(faults.head_open),
        copies.min(99_999_999),
    )
    .into_bytes()
}

/// The EPL2 `^ee` answer: a two-digit error code and CR LF. Head open wins over paper out, as
/// the printer checks the head first; EPL2 has no pause report.
pub(crate) fn epl_status(printer: &PrinterState) -> Vec<u8> {
    let faults = printer.faults();
    let code = if faults.head_open {
        "07"
    } else if faults.paper_out {
        "08"
    } else {
        "00"
    };
    format!("{code}\r\n").into_bytes()
}

/// Starts Zebra simulators.
#[derive(Debug)]
pub struct ZebraSimulator;

impl ZebraSimulator {
    /// Binds the print port and the control API and serves until the returned handle is shut
    /// down or dropped. Must be called inside a tokio runtime.
    pub async fn start(config: ZebraConfig) -> Result<RunningPrinter, StartError> {
        if config.dpi != 203 && config.dpi != 300 {
            return Err(StartError::Config(format!(
                "dpi must be 203 or 300, not {}",
                config.dpi
            )));
        }
        let width = config.width_dots.unwrap_or(config.dpi * 4);
        if !(8..=32_000).contains(&width) {
            return Err(StartError::Config(format!(
                "width must be 8 to 32000 dots, not {width}"
            )));
        }
        // A 4 x 6 inch shipping label: 1218 dots at 203 dpi, 1800 at 300 dpi.
        let length = if config.dpi == 203 { 1218 } else { 1800 };
        let model = match config.language {
            ZebraLanguage::Zpl => "ZD620",
            ZebraLanguage::Epl2 => "LP2844",
        };
        let info = PrinterInfo {
            family: "zebra".to_owned(),
            model: model.to_owned(),
            language: config.language.name().to_owned(),
            dpi: config.dpi,
            width_dots: width,
        };
        let zebra = Arc::new(ZebraShared {
            info: info.clone(),
            settings: Mutex::new(ZplSettings {
                width,
                length,
                home: (0, 0),
                inverted: false,
                values: BTreeMap::new(),
            }),
        });
        let language = config.language;
        let decoders: DecoderFactory = Arc::new(move || -> Box<dyn PrintStreamDecoder> {
            match language {
                ZebraLanguage::Zpl => Box::new(zpl::ZplDecoder::new(Arc::clone(&zebra))),
                ZebraLanguage::Epl2 => Box::new(epl::EplDecoder::new(Arc::clone(&zebra))),
            }
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

#[cfg(test)]
impl ZebraShared {
    /// A 203-dpi ZPL printer's shared state with the given default label size.
    pub(crate) fn for_tests(width: u32, length: u32) -> Arc<Self> {
        Arc::new(Self {
            info: PrinterInfo {
                family: "zebra".to_owned(),
                model: "ZD620".to_owned(),
                language: "zpl".to_owned(),
                dpi: 203,
                width_dots: width,
            },
            settings: Mutex::new(ZplSettings {
                width,
                length,
                home: (0, 0),
                inverted: false,
                values: BTreeMap::new(),
            }),
        })
    }
}
