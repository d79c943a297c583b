//! Sheet printing: stamp sheets, letters and envelopes on ordinary office printers, reached
//! over IPP (a network printer's `ipp://` or `ipps://` URI, or a queue of the local CUPS
//! server), with indicia composed onto the page first.
//!
//! # Layout
//! - [`http`]: a small blocking HTTP/1.1 client (TCP, TLS, Unix socket), bounded in time and size.
//! - [`ipp`]: the IPP operations: Get-Printer-Attributes, Print-Job, Get-Job-Attributes,
//!   CUPS-Get-Printers, and the precise errors they end in.
//! - [`media`]: IPP media names and sizes, orientations.
//! - [`compose`]: a GIF indicium onto a PDF page of the envelope or sheet (printpdf).
//! - [`discovery`]: the local CUPS server's queues as devices (Linux and macOS).
//!
//! # How a sheet printer fits the device model
//! A system printer is a device like any other: it has a [`DeviceSpec`](crate::devices::DeviceSpec)
//! whose driver is one of the host's built-in drivers ([`IPP_DRIVER`] for configured URIs,
//! [`SYSTEM_DRIVER`] for discovered CUPS queues), and it runs on its own device thread, where
//! [`SheetPrinter`] makes its blocking IPP calls. The built-in drivers' only profile takes
//! PDF, so the print path hands it `PrintInput::Pdf` unchanged; it never rasterises a PDF.
//!
//! # Sheet jobs
//! [`SheetJob`] is the typed request: a PDF, or an image placed at x/y mm on a page of a named
//! medium; the media, orientation and copies. [`SheetJob::into_print_job`] turns it into the
//! plugin-level `PrintJob` that `DeviceWorker::print` takes, with the IPP options in the job's
//! settings ([`SETTING_MEDIA`], [`SETTING_ORIENTATION`], [`SETTING_PRINT_SCALING`]).
//! The document stays in memory; nothing about it is written to disk or logged.

pub mod compose;
pub mod discovery;
pub mod http;
pub mod ipp;
pub mod media;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
    time::Duration,
};

use devicehub_plugin_api::{
    abi_stable::{
        prefix_type::PrefixTypeTrait,
        sabi_trait::TD_Opaque,
        std_types::{ROption, RResult, RVec},
    },
    setting, DeviceKind, ErrorKind, InputKind, LoadedMedia, MediaKind, OpenRequest, PluginError,
    PluginManifest, PluginMod, PrintInput, PrintJob, PrintReport, Printer, PrinterBox,
    PrinterGuard, PrinterProfile, PrinterState, PrinterStatus, ScaleBox, ScannerBox, Setting,
    TransportBox, API_VERSION,
};
use serde::{Deserialize, Serialize};

pub use self::{
    compose::{ComposeError, ImagePlacement},
    ipp::{IppClient, IppError, IppLimits, JobTicket, PrinterAttributes, PrinterUri},
    media::{Media, Orientation},
};
use crate::{plugins::LoadedPlugin, render::InputFormat};

/// The built-in driver of printers configured by `ipp://` or `ipps://` address.
pub const IPP_DRIVER: &str = "ipp";
/// The built-in driver of queues discovered on the local CUPS server.
pub const SYSTEM_DRIVER: &str = "system";
/// The built-in drivers' only profile.
pub const SHEET_PROFILE: &str = "sheet";

/// Job setting: the IPP media keyword (`na_number-10_4.125x9.5in`, `custom_WxHmm_WxHmm`...).
pub const SETTING_MEDIA: &str = "media";
/// Job setting: `portrait`, `landscape`, `reverse-landscape` or `reverse-portrait`.
pub const SETTING_ORIENTATION: &str = "orientation";
/// Job setting: `none` asks the printer not to scale the page (indicia must print at size).
pub const SETTING_PRINT_SCALING: &str = "print-scaling";

/// The `[system_printers]` section of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SheetsConfig {
    /// Whether to list the local CUPS server's queues as devices (Linux and macOS).
    #[serde(default = "default_true")]
    pub discover: bool,
    /// The CUPS server asked for its queues. Default: `ipp://localhost:631/`.
    #[serde(default = "default_cups_uri")]
    pub cups_uri: String,
    /// The CUPS server's local socket, used instead of `cups_uri` when it exists.
    /// Default: `/run/cups/cups.sock` on Linux, `/private/var/run/cupsd` on macOS.
    #[serde(default)]
    pub cups_socket: Option<PathBuf>,
    /// A CA bundle (PEM) for `ipps://` printers whose certificates come from a private CA;
    /// added to the platform's roots.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// How long to follow a job to its end, in seconds.
    #[serde(default = "default_job_timeout_secs")]
    pub job_timeout_secs: u64,
}

fn default_true() -> bool {
    true
}

fn default_cups_uri() -> String {
    "ipp://localhost:631/".to_string()
}

fn default_job_timeout_secs() -> u64 {
    300
}

impl Default for SheetsConfig {
    fn default() -> Self {
        SheetsConfig {
            discover: true,
            cups_uri: default_cups_uri(),
            cups_socket: None,
            ca_bundle: None,
            job_timeout_secs: default_job_timeout_secs(),
        }
    }
}

impl SheetsConfig {
    /// The client limits these settings give.
    pub fn limits(&self) -> IppLimits {
        IppLimits {
            job_timeout: Duration::from_secs(self.job_timeout_secs.max(1)),
            ..IppLimits::default()
        }
    }

    /// The CUPS socket to use: the configured one, else the platform's usual path; only when
    /// it exists.
    pub fn cups_socket_path(&self) -> Option<PathBuf> {
        let path = self.cups_socket.clone().or_else(|| {
            if cfg!(target_os = "linux") {
                Some(PathBuf::from("/run/cups/cups.sock"))
            } else if cfg!(target_os = "macos") {
                Some(PathBuf::from("/private/var/run/cupsd"))
            } else {
                None
            }
        })?;
        path.exists().then_some(path)
    }
}

/// Why a sheet job could not be prepared or printed.
#[derive(Debug, thiserror::Error)]
pub enum SheetError {
    #[error(transparent)]
    Ipp(#[from] IppError),
    #[error(transparent)]
    Compose(#[from] ComposeError),
    #[error("an image needs a media size to be placed on (say which envelope or sheet)")]
    ImageWithoutMedia,
    #[error("the document is not a PDF: {0}")]
    NotPdf(String),
    #[error("copies must be between 1 and {max}, not {copies}")]
    Copies { copies: u32, max: u32 },
    #[error("cannot read the CA bundle {path}: {message}")]
    CaBundle { path: PathBuf, message: String },
    #[error("no TLS roots are available for ipps:// printers: {0}")]
    NoRoots(String),
}

/// What goes on the sheet.
#[derive(Debug, Clone, PartialEq)]
pub enum SheetContent {
    /// A finished PDF, sent unchanged.
    Pdf(Vec<u8>),
    /// An image (an indicium GIF) placed on a page of the job's media.
    Image {
        data: Vec<u8>,
        placement: ImagePlacement,
    },
}

/// A print job for a sheet printer.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetJob {
    /// The job's ID, sent as the IPP `job-name` (never the contents).
    pub job_id: String,
    pub content: SheetContent,
    /// The envelope or sheet; needed for images, optional for PDFs (the printer's default).
    pub media: Option<Media>,
    pub orientation: Option<Orientation>,
    pub copies: u32,
}

impl SheetJob {
    /// The plugin-level job for `DeviceWorker::print`: a PDF (composed for images) with the
    /// IPP options in its settings. Images also ask for `print-scaling=none`.
    pub fn into_print_job(self) -> Result<PrintJob, SheetError> {
        if self.copies == 0 || self.copies > crate::print::MAX_COPIES {
            return Err(SheetError::Copies {
                copies: self.copies,
                max: crate::print::MAX_COPIES,
            });
        }
        let mut settings = Vec::new();
        let pdf = match self.content {
            SheetContent::Pdf(pdf) => pdf,
            SheetContent::Image { data, placement } => {
                let media = self.media.as_ref().ok_or(SheetError::ImageWithoutMedia)?;
                let page = compose::compose_image(&data, media, self.orientation, placement)?;
                settings.push(Setting::new(SETTING_PRINT_SCALING, "none"));
                page.pdf
            }
        };
        if let Some(media) = &self.media {
            settings.push(Setting::new(SETTING_MEDIA, &media.keyword));
        }
        if let Some(orientation) = self.orientation {
            settings.push(Setting::new(SETTING_ORIENTATION, orientation.as_str()));
        }
        Ok(PrintJob {
            job_id: self.job_id.as_str().into(),
            input: PrintInput::Pdf(RVec::from(pdf)),
            copies: self.copies,
            media: ROption::RNone,
            settings: RVec::from(settings),
        })
    }
}

/// The built-in driver `name` ([`IPP_DRIVER`] or [`SYSTEM_DRIVER`]) as a loaded plugin, so
/// that sheet printers are listed, chosen and run like plugin devices.
pub fn driver(name: &str) -> Option<Arc<LoadedPlugin>> {
    static IPP: OnceLock<Arc<LoadedPlugin>> = OnceLock::new();
    static SYSTEM: OnceLock<Arc<LoadedPlugin>> = OnceLock::new();
    let (cell, description) = match name {
        IPP_DRIVER => (
            &IPP,
            "Office printers over IPP (ipp:// and ipps:// URIs); PDF",
        ),
        SYSTEM_DRIVER => (&SYSTEM, "The operating system's print queues (CUPS); PDF"),
        _ => return None,
    };
    Some(
        cell.get_or_init(|| {
            Arc::new(LoadedPlugin {
                path: PathBuf::from(format!("(built in: {name})")),
                manifest: manifest(name, description),
                version: semver::Version::parse(env!("CARGO_PKG_VERSION"))
                    .expect("the crate version is semver"),
                module: builtin_module(),
                approval: crate::plugins::Approval::BuiltIn,
                sha256: String::new(),
            })
        })
        .clone(),
    )
}

fn manifest(name: &str, description: &str) -> PluginManifest {
    PluginManifest {
        name: name.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_version: API_VERSION.into(),
        required_features: RVec::new(),
        kind: DeviceKind::Printer,
        description: description.into(),
        usb_models: RVec::new(),
        ieee1284_matches: RVec::new(),
        printer_profiles: vec![PrinterProfile {
            name: SHEET_PROFILE.into(),
            language: "PDF over IPP".into(),
            // Nominal figures for a Letter/A4 office printer; the printer lays out the PDF
            // itself, so they only inform listings.
            dpi: 300,
            width_dots: 2550,
            max_length_dots: 4200,
            media: vec![MediaKind::Sheet].into(),
            inputs: vec![InputKind::Pdf].into(),
        }]
        .into(),
        default_profile: ROption::RSome(SHEET_PROFILE.into()),
    }
}

/// The built-in drivers' module. Sheet printers are opened by the host from their URI
/// ([`open_printer`]), never through a transport, so every entry point says so.
fn builtin_module() -> devicehub_plugin_api::PluginMod_Ref {
    extern "C" fn builtin_manifest() -> RResult<PluginManifest, PluginError> {
        RResult::RErr(not_through_module())
    }
    extern "C" fn open_printer_entry(
        _: &OpenRequest,
        _: TransportBox,
    ) -> RResult<PrinterBox, PluginError> {
        RResult::RErr(not_through_module())
    }
    extern "C" fn open_scale_entry(
        _: &OpenRequest,
        _: TransportBox,
    ) -> RResult<ScaleBox, PluginError> {
        RResult::RErr(not_through_module())
    }
    extern "C" fn open_scanner_entry(
        _: &OpenRequest,
        _: TransportBox,
    ) -> RResult<ScannerBox, PluginError> {
        RResult::RErr(not_through_module())
    }
    PluginMod {
        manifest: builtin_manifest,
        open_printer: open_printer_entry,
        open_scale: open_scale_entry,
        open_scanner: open_scanner_entry,
    }
    .leak_into_prefix()
}

fn not_through_module() -> PluginError {
    PluginError::new(
        ErrorKind::Unsupported,
        "system printers are opened by the host from their IPP URI, not over a transport",
    )
}

/// Builds the TLS settings for `ipps://` printers: the platform's roots plus `ca_bundle`.
pub fn tls_config(ca_bundle: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, SheetError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!("platform certificate not loaded: {error}");
    }
    let (_added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_bundle {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        let pem = std::fs::read(path).map_err(|e| SheetError::CaBundle {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SheetError::CaBundle {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        if certs.is_empty() {
            return Err(SheetError::CaBundle {
                path: path.to_path_buf(),
                message: "it holds no certificates".to_string(),
            });
        }
        for cert in certs {
            roots.add(cert).map_err(|e| SheetError::CaBundle {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        }
    }
    if roots.is_empty() {
        return Err(SheetError::NoRoots(
            "the platform has none; set [system_printers] ca_bundle".to_string(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SheetError::NoRoots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where a sheet printer is: its URI, and the local socket requests go through when it is a
/// queue of the local CUPS server reached over its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetAddress {
    pub uri: String,
    pub via_socket: Option<PathBuf>,
}

/// Builds the client for `address` with `config`'s limits and TLS settings.
pub fn client_for(address: &SheetAddress, config: &SheetsConfig) -> Result<IppClient, SheetError> {
    let uri = PrinterUri::parse(&address.uri).map_err(|message| {
        SheetError::Ipp(IppError::Protocol {
            uri: address.uri.clone(),
            message,
        })
    })?;
    let tls = if uri.is_tls() {
        Some(tls_config(config.ca_bundle.as_deref())?)
    } else {
        None
    };
    let client = IppClient::new(uri, config.limits(), tls);
    Ok(match &address.via_socket {
        Some(path) => client.via(http::Endpoint::Unix(path.clone())),
        None => client,
    })
}

/// Opens a sheet printer: the device object its device thread owns.
pub fn open_printer(client: IppClient) -> PrinterBox {
    PrinterBox::from_value(PrinterGuard(SheetPrinter { client }), TD_Opaque)
}

/// A printer reached over IPP. Every call blocks on the network; it runs on the device's
/// thread.
#[derive(Debug)]
pub struct SheetPrinter {
    client: IppClient,
}

impl SheetPrinter {
    pub fn new(client: IppClient) -> SheetPrinter {
        SheetPrinter { client }
    }
}

impl Printer for SheetPrinter {
    fn status(&mut self) -> Result<PrinterStatus, PluginError> {
        let attributes = self.client.printer_attributes().map_err(plugin_error)?;
        Ok(printer_status(&attributes))
    }

    fn encode(&mut self, job: &PrintJob) -> Result<Vec<u8>, PluginError> {
        pdf_of(job).map(<[u8]>::to_vec)
    }

    fn print(&mut self, job: &PrintJob) -> Result<PrintReport, PluginError> {
        let pdf = pdf_of(job)?;
        let pages =
            count_pages(pdf).map_err(|e| PluginError::new(ErrorKind::InvalidJob, e.to_string()))?;
        let settings = job.settings.as_slice();
        let media = setting(settings, SETTING_MEDIA)
            .map(Media::parse)
            .transpose()
            .map_err(|e| PluginError::new(ErrorKind::InvalidJob, e))?;
        let orientation = setting(settings, SETTING_ORIENTATION)
            .map(|text| {
                Orientation::parse(text).ok_or_else(|| {
                    PluginError::new(
                        ErrorKind::InvalidJob,
                        format!("orientation {text:?} is not portrait, landscape, reverse-landscape or reverse-portrait"),
                    )
                })
            })
            .transpose()?;
        let ticket = JobTicket {
            name: job.job_id.to_string(),
            copies: job.copies.max(1),
            media,
            orientation,
            no_scaling: setting(settings, SETTING_PRINT_SCALING) == Some("none"),
        };
        let attributes = self.client.printer_attributes().map_err(plugin_error)?;
        self.client.check_ready(&attributes).map_err(plugin_error)?;
        if let Some(max) = attributes.copies_max {
            if i64::from(ticket.copies) > i64::from(max) {
                return Err(PluginError::new(
                    ErrorKind::InvalidJob,
                    format!(
                        "printer {} makes at most {max} copies per job, not {}",
                        self.client.uri(),
                        ticket.copies
                    ),
                ));
            }
        }
        let job_id = self
            .client
            .print_job(pdf, &ticket, &attributes)
            .map_err(plugin_error)?;
        let status = self.client.wait_for_job(job_id).map_err(plugin_error)?;
        let reasons = if status.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", status.reasons.join(", "))
        };
        Ok(PrintReport {
            bytes_sent: pdf.len() as u64,
            labels: pages.saturating_mul(ticket.copies),
            detail: format!("IPP job {job_id} {}{reasons}", status.state.as_str()).into(),
        })
    }
}

fn pdf_of(job: &PrintJob) -> Result<&[u8], PluginError> {
    match &job.input {
        PrintInput::Pdf(pdf) => Ok(pdf.as_slice()),
        PrintInput::Raster(_) => Err(PluginError::new(
            ErrorKind::InvalidJob,
            "system printers take PDF; images are composed onto a page first (sheet jobs)",
        )),
        PrintInput::Raw(_) => Err(PluginError::new(
            ErrorKind::InvalidJob,
            "system printers take PDF, not printer-language bytes",
        )),
    }
}

/// The number of pages of `pdf`, which also checks that it is one.
pub fn count_pages(pdf: &[u8]) -> Result<u32, SheetError> {
    if InputFormat::sniff(pdf) != Some(InputFormat::Pdf) {
        return Err(SheetError::NotPdf(
            "it does not start with %PDF-".to_string(),
        ));
    }
    let parsed = hayro::hayro_syntax::Pdf::new(Arc::new(pdf.to_vec()))
        .map_err(|e| SheetError::NotPdf(format!("{e:?}")))?;
    match parsed.pages().len() {
        0 => Err(SheetError::NotPdf("it has no pages".to_string())),
        n => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
    }
}

/// The device-level status of a printer from its IPP attributes.
pub fn printer_status(attributes: &PrinterAttributes) -> PrinterStatus {
    use ipp::IppPrinterState;
    let reasons: Vec<&str> = attributes
        .state_reasons
        .iter()
        .map(String::as_str)
        .collect();
    let has = |name: &str| {
        reasons
            .iter()
            .any(|r| *r == name || r.strip_prefix(name).is_some_and(|s| s == "-error"))
    };
    let state = if attributes.media_empty() {
        PrinterState::PaperOut
    } else if has("cover-open") || has("door-open") {
        PrinterState::HeadOpen
    } else {
        match attributes.state {
            Some(IppPrinterState::Idle) => PrinterState::Ready,
            Some(IppPrinterState::Processing) => PrinterState::Busy,
            Some(IppPrinterState::Stopped) if has("paused") => PrinterState::Paused,
            Some(IppPrinterState::Stopped) => PrinterState::Error,
            Some(IppPrinterState::Unknown) | None => PrinterState::Error,
        }
    };
    let media = attributes.media_ready.first().and_then(|keyword| {
        let media = Media::parse(keyword).ok()?;
        let dots = |hmm: u32| (f64::from(hmm) / 2540.0 * 300.0).round() as u32;
        Some(LoadedMedia {
            kind: MediaKind::Sheet,
            width_dots: dots(media.width_hmm),
            length_dots: dots(media.height_hmm),
            description: keyword.as_str().into(),
        })
    });
    PrinterStatus {
        state,
        detail: attributes.status_line().into(),
        media: media.into(),
    }
}

/// The plugin-level error for an IPP failure: the kind a job's caller acts on, and the precise
/// message.
pub fn plugin_error(error: IppError) -> PluginError {
    let message = error.to_string();
    match error {
        IppError::Unreachable { .. } | IppError::Http { .. } => {
            PluginError::new(ErrorKind::Transport, message)
        }
        IppError::Timeout { .. } | IppError::JobTimedOut { .. } => {
            PluginError::new(ErrorKind::Timeout, message)
        }
        IppError::HttpStatus { .. } | IppError::Protocol { .. } => {
            PluginError::new(ErrorKind::Protocol, message)
        }
        IppError::PrinterStopped { reasons, .. } => PluginError::not_ready(
            if reasons.iter().any(|r| r == "paused") {
                PrinterState::Paused
            } else {
                PrinterState::Error
            },
            message,
        ),
        IppError::MediaEmpty { .. } => PluginError::not_ready(PrinterState::PaperOut, message),
        IppError::NotAcceptingJobs { .. } => PluginError::not_ready(PrinterState::Paused, message),
        IppError::DocumentFormatNotSupported { .. }
        | IppError::DocumentTooLarge { .. }
        | IppError::Refused { .. } => PluginError::new(ErrorKind::InvalidJob, message),
        IppError::Unsupported { .. } => PluginError::new(ErrorKind::Unsupported, message),
        IppError::JobFailed { .. } => PluginError::new(ErrorKind::Internal, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_PAGES: &[u8] = include_bytes!("../../../tests/fixtures/labels/two-page.pdf");
    const INDICIA: &[u8] = include_bytes!("../../../tests/fixtures/labels/indicia.gif");

    #[test]
    fn builtin_drivers_take_pdf_only() {
        let ipp = driver(IPP_DRIVER).unwrap();
        assert_eq!(ipp.name(), "ipp");
        let profile = ipp.manifest.printer_profile(SHEET_PROFILE).unwrap();
        assert_eq!(profile.inputs.as_slice(), &[InputKind::Pdf]);
        assert!(driver(SYSTEM_DRIVER).is_some());
        assert!(driver("zebra").is_none());
        // The module refuses to open anything through a transport.
        assert!(ipp.module.manifest()().into_result().is_err());
    }

    #[test]
    fn pdf_jobs_pass_through_with_their_options() {
        let job = SheetJob {
            job_id: "j-1".into(),
            content: SheetContent::Pdf(TWO_PAGES.to_vec()),
            media: Some(Media::parse("letter").unwrap()),
            orientation: Some(Orientation::Portrait),
            copies: 2,
        }
        .into_print_job()
        .unwrap();
        assert_eq!(job.input, PrintInput::Pdf(RVec::from(TWO_PAGES.to_vec())));
        assert_eq!(job.copies, 2);
        assert_eq!(
            setting(&job.settings, SETTING_MEDIA),
            Some("na_letter_8.5x11in")
        );
        assert_eq!(
            setting(&job.settings, SETTING_ORIENTATION),
            Some("portrait")
        );
        assert_eq!(setting(&job.settings, SETTING_PRINT_SCALING), None);
        assert_eq!(count_pages(TWO_PAGES).unwrap(), 2);
    }

    #[test]
    fn image_jobs_are_composed_and_not_scaled() {
        let job = SheetJob {
            job_id: "j-2".into(),
            content: SheetContent::Image {
                data: INDICIA.to_vec(),
                placement: ImagePlacement {
                    dpi: 300,
                    x_mm: 5.0,
                    y_mm: 5.0,
                },
            },
            media: Some(Media::parse("na_number-10_4.125x9.5in").unwrap()),
            orientation: None,
            copies: 1,
        };
        let print_job = job.clone().into_print_job().unwrap();
        let PrintInput::Pdf(pdf) = &print_job.input else {
            panic!("a composed image is a PDF");
        };
        assert_eq!(count_pages(pdf).unwrap(), 1);
        assert_eq!(
            setting(&print_job.settings, SETTING_PRINT_SCALING),
            Some("none")
        );

        let without_media = SheetJob {
            media: None,
            ..job.clone()
        };
        assert!(matches!(
            without_media.into_print_job(),
            Err(SheetError::ImageWithoutMedia)
        ));
        let no_copies = SheetJob { copies: 0, ..job };
        assert!(matches!(
            no_copies.into_print_job(),
            Err(SheetError::Copies { .. })
        ));
    }

    #[test]
    fn status_follows_state_and_reasons() {
        let mut attributes = PrinterAttributes {
            state: Some(ipp::IppPrinterState::Idle),
            ..PrinterAttributes::default()
        };
        assert_eq!(printer_status(&attributes).state, PrinterState::Ready);
        attributes.state = Some(ipp::IppPrinterState::Stopped);
        attributes.state_reasons = vec!["paused".into()];
        assert_eq!(printer_status(&attributes).state, PrinterState::Paused);
        attributes.state_reasons = vec!["media-empty-error".into()];
        let status = printer_status(&attributes);
        assert_eq!(status.state, PrinterState::PaperOut);
        assert_eq!(status.detail.as_str(), "stopped (media-empty-error)");
        attributes.state_reasons = vec!["door-open".into()];
        assert_eq!(printer_status(&attributes).state, PrinterState::HeadOpen);
        // Reports and warnings (another tray still has paper) do not stop printing.
        attributes.state = Some(ipp::IppPrinterState::Idle);
        attributes.state_reasons = vec!["media-empty-report".into(), "cover-open-warning".into()];
        assert_eq!(printer_status(&attributes).state, PrinterState::Ready);
    }

    #[test]
    fn refuses_what_is_not_a_pdf() {
        assert!(matches!(count_pages(b"GIF89a"), Err(SheetError::NotPdf(_))));
        let raster = PrintJob {
            job_id: "x".into(),
            input: PrintInput::Raw(RVec::from(b"^XA^XZ".to_vec())),
            copies: 1,
            media: ROption::RNone,
            settings: RVec::new(),
        };
        let err = pdf_of(&raster).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidJob);
    }
}
