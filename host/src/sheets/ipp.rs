//! An IPP/1.1 client (RFC 8010 encoding, RFC 8011 semantics) for office printers and print
//! servers: Get-Printer-Attributes, Print-Job with a PDF, Get-Job-Attributes until the job ends,
//! and CUPS-Get-Printers for the local CUPS server's queues.
//!
//! Messages are encoded and decoded with the `ipp` crate's model (attributes, collections,
//! value tags); the bytes travel over [`super::http`]. Every failure is named precisely: the
//! printer is stopped, its media is empty, it does not take PDF, it cannot be reached, or the
//! job ended aborted or canceled, with the reasons the printer gave.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use ipp::{
    attribute::{IppAttribute, IppAttributeGroup},
    model::{DelimiterTag, IppVersion, Operation, StatusCode},
    parser::IppParser,
    reader::IppReader,
    request::IppRequestResponse,
    value::IppValue,
};

use super::{
    http::{self, Endpoint, HttpError, HttpLimits},
    media::{Media, Orientation},
};

/// The document format every sheet job is sent in.
pub const PDF_FORMAT: &str = "application/pdf";

/// The user name sent with requests; print servers show it in their queues.
const REQUESTING_USER: &str = "devicehub";

/// An `ipp://` or `ipps://` printer URI, split into what the connection needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterUri {
    /// The URI as given, sent as `printer-uri`.
    pub text: String,
    pub endpoint: Endpoint,
    /// The HTTP request path, e.g. `/ipp/print` or `/printers/Office`.
    pub path: String,
}

impl PrinterUri {
    /// Parses `ipp://HOST[:PORT]/PATH` or `ipps://...` (port 631 unless given; IPv6 hosts in
    /// brackets).
    pub fn parse(text: &str) -> Result<PrinterUri, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("ipp://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("ipps://") {
            (true, rest)
        } else {
            return Err(format!("{text:?} is not an ipp:// or ipps:// URI"));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "{text:?} carries credentials; put none in printer URIs"
            ));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{text:?} has an unclosed IPv6 bracket"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("{text:?} has text after the IPv6 address")),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{text:?} names no host"));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{text:?} has an invalid port"))?,
            None => 631,
        };
        Ok(PrinterUri {
            text: text.to_string(),
            endpoint: Endpoint::Tcp {
                host: host.to_string(),
                port,
                tls,
            },
            path: path.to_string(),
        })
    }

    /// Whether the URI asks for TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.endpoint, Endpoint::Tcp { tls: true, .. })
    }
}

impl std::fmt::Display for PrinterUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// `printer-state` (RFC 8011 section 5.4.11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IppPrinterState {
    Idle,
    Processing,
    Stopped,
    /// The printer did not say, or said something undefined.
    Unknown,
}

impl IppPrinterState {
    fn from_enum(value: Option<i32>) -> IppPrinterState {
        match value {
            Some(3) => IppPrinterState::Idle,
            Some(4) => IppPrinterState::Processing,
            Some(5) => IppPrinterState::Stopped,
            _ => IppPrinterState::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            IppPrinterState::Idle => "idle",
            IppPrinterState::Processing => "processing",
            IppPrinterState::Stopped => "stopped",
            IppPrinterState::Unknown => "unknown",
        }
    }
}

/// The printer attributes DeviceHub reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PrinterAttributes {
    /// `printer-name` (a CUPS queue name).
    pub name: Option<String>,
    /// `printer-info`: the queue's description.
    pub info: Option<String>,
    /// `printer-make-and-model`.
    pub make_and_model: Option<String>,
    pub state: Option<IppPrinterState>,
    /// `printer-state-reasons` without "none".
    pub state_reasons: Vec<String>,
    pub state_message: Option<String>,
    /// `printer-is-accepting-jobs`.
    pub accepting_jobs: Option<bool>,
    pub media_supported: Vec<String>,
    pub media_ready: Vec<String>,
    pub document_formats: Vec<String>,
    pub sides_supported: Vec<String>,
    /// The upper bound of `copies-supported`.
    pub copies_max: Option<i32>,
    pub print_scaling_supported: Vec<String>,
    pub orientations_supported: Vec<i32>,
    /// `printer-uri-supported`.
    pub uris: Vec<String>,
}

impl PrinterAttributes {
    /// Reads the attributes out of one printer attribute group.
    pub fn from_group(group: &IppAttributeGroup) -> PrinterAttributes {
        PrinterAttributes {
            name: first_string(group, "printer-name"),
            info: first_string(group, "printer-info"),
            make_and_model: first_string(group, "printer-make-and-model"),
            state: group
                .get("printer-state")
                .map(|a| IppPrinterState::from_enum(first_int(a.value()))),
            state_reasons: strings(group, "printer-state-reasons")
                .into_iter()
                .filter(|r| r != "none")
                .collect(),
            state_message: first_string(group, "printer-state-message").filter(|m| !m.is_empty()),
            accepting_jobs: group
                .get("printer-is-accepting-jobs")
                .and_then(|a| match a.value() {
                    IppValue::Boolean(b) => Some(*b),
                    _ => None,
                }),
            media_supported: strings(group, "media-supported"),
            media_ready: strings(group, "media-ready"),
            document_formats: strings(group, "document-format-supported"),
            sides_supported: strings(group, "sides-supported"),
            copies_max: group.get("copies-supported").and_then(|a| match a.value() {
                IppValue::RangeOfInteger { max, .. } => Some(*max),
                IppValue::Integer(n) => Some(*n),
                _ => None,
            }),
            print_scaling_supported: strings(group, "print-scaling-supported"),
            orientations_supported: values(group, "orientation-requested-supported")
                .filter_map(first_int)
                .collect(),
            uris: strings(group, "printer-uri-supported"),
        }
    }

    /// Whether some reason says, as an error, that the printer has no paper. A reason without
    /// a severity suffix is an error (RFC 8011 section 5.4.12); `-warning` (another tray has
    /// paper) and `-report` are not.
    pub fn media_empty(&self) -> bool {
        self.state_reasons.iter().any(|r| {
            let r = r.strip_suffix("-error").unwrap_or(r);
            r == "media-empty" || r == "media-needed"
        })
    }

    /// Reasons that stop printing: errors, not warnings or reports (RFC 8011 5.4.12 suffixes).
    pub fn error_reasons(&self) -> Vec<String> {
        self.state_reasons
            .iter()
            .filter(|r| !r.ends_with("-warning") && !r.ends_with("-report"))
            .cloned()
            .collect()
    }

    /// Whether the printer takes PDF (or declares any format, which print servers convert).
    pub fn takes_pdf(&self) -> bool {
        self.document_formats.is_empty()
            || self
                .document_formats
                .iter()
                .any(|f| f.eq_ignore_ascii_case(PDF_FORMAT))
    }

    /// The state and reasons as one line, e.g. "stopped (media-empty-error, paused)".
    pub fn status_line(&self) -> String {
        let state = self.state.unwrap_or(IppPrinterState::Unknown).as_str();
        let mut line = if self.state_reasons.is_empty() {
            state.to_string()
        } else {
            format!("{state} ({})", self.state_reasons.join(", "))
        };
        if let Some(message) = &self.state_message {
            line.push_str(": ");
            line.push_str(message);
        }
        line
    }
}

/// `job-state` (RFC 8011 section 5.3.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JobState {
    Pending,
    PendingHeld,
    Processing,
    ProcessingStopped,
    Canceled,
    Aborted,
    Completed,
    Unknown,
}

impl JobState {
    fn from_enum(value: Option<i32>) -> JobState {
        match value {
            Some(3) => JobState::Pending,
            Some(4) => JobState::PendingHeld,
            Some(5) => JobState::Processing,
            Some(6) => JobState::ProcessingStopped,
            Some(7) => JobState::Canceled,
            Some(8) => JobState::Aborted,
            Some(9) => JobState::Completed,
            _ => JobState::Unknown,
        }
    }

    /// Whether the job has ended, well or badly.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Canceled | JobState::Aborted | JobState::Completed
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::PendingHeld => "pending-held",
            JobState::Processing => "processing",
            JobState::ProcessingStopped => "processing-stopped",
            JobState::Canceled => "canceled",
            JobState::Aborted => "aborted",
            JobState::Completed => "completed",
            JobState::Unknown => "unknown",
        }
    }
}

/// A job's state as the printer reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct JobStatus {
    pub id: i32,
    pub state: JobState,
    pub reasons: Vec<String>,
    pub message: Option<String>,
}

/// How the document should be printed: the job template attributes sent with Print-Job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobTicket {
    /// `job-name`: the job's ID, never its contents.
    pub name: String,
    pub copies: u32,
    pub media: Option<Media>,
    pub orientation: Option<Orientation>,
    /// Ask for `print-scaling=none`, so that the page is printed at its size (indicia); sent
    /// only when the printer lists the value.
    pub no_scaling: bool,
}

/// Why an IPP operation failed.
#[derive(Debug, thiserror::Error)]
pub enum IppError {
    #[error("printer {uri} cannot be reached: {source}")]
    Unreachable { uri: String, source: HttpError },
    #[error("printer {uri} did not answer in time: {source}")]
    Timeout { uri: String, source: HttpError },
    #[error("printer {uri}: {source}")]
    Http { uri: String, source: HttpError },
    #[error("printer {uri} answered HTTP {status} {reason} (is the printer URI right?)")]
    HttpStatus {
        uri: String,
        status: u16,
        reason: String,
    },
    #[error("printer {uri} sent a response that is not IPP: {message}")]
    Protocol { uri: String, message: String },
    #[error("printer {uri} refused {operation}: {status}{}", message_suffix(.message))]
    Refused {
        uri: String,
        operation: &'static str,
        status: String,
        message: Option<String>,
    },
    #[error("printer {uri} is stopped ({})", reasons_text(.reasons))]
    PrinterStopped { uri: String, reasons: Vec<String> },
    #[error("printer {uri} has no paper ({})", reasons_text(.reasons))]
    MediaEmpty { uri: String, reasons: Vec<String> },
    #[error("printer {uri} is not accepting jobs ({})", reasons_text(.reasons))]
    NotAcceptingJobs { uri: String, reasons: Vec<String> },
    #[error(
        "printer {uri} does not take {format} documents (it takes: {})",
        .supported.join(", ")
    )]
    DocumentFormatNotSupported {
        uri: String,
        format: String,
        supported: Vec<String>,
    },
    #[error("printer {uri} does not support {what}")]
    Unsupported { uri: String, what: String },
    #[error("job {job_id} on printer {uri} was {state} ({}){}", reasons_text(.reasons), message_suffix(.message))]
    JobFailed {
        uri: String,
        job_id: i32,
        state: &'static str,
        reasons: Vec<String>,
        message: Option<String>,
    },
    #[error(
        "job {job_id} on printer {uri} did not finish within {seconds} s (last state {state})"
    )]
    JobTimedOut {
        uri: String,
        job_id: i32,
        seconds: u64,
        state: &'static str,
    },
    #[error("the document is {size} bytes; at most {limit} are sent to a printer")]
    DocumentTooLarge { size: usize, limit: usize },
}

fn reasons_text(reasons: &[String]) -> String {
    if reasons.is_empty() {
        "no reason given".to_string()
    } else {
        reasons.join(", ")
    }
}

fn message_suffix(message: &Option<String>) -> String {
    message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// Bounds on a client's exchanges and waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IppLimits {
    pub http: HttpLimits,
    /// The largest document sent; the PDF is held in memory.
    pub max_document_bytes: usize,
    /// How long to follow a job to its end.
    pub job_timeout: Duration,
    /// The first interval between Get-Job-Attributes requests; it doubles up to 2 s.
    pub first_poll: Duration,
}

impl Default for IppLimits {
    fn default() -> Self {
        IppLimits {
            http: HttpLimits::default(),
            max_document_bytes: 64 * 1024 * 1024,
            job_timeout: Duration::from_secs(300),
            first_poll: Duration::from_millis(50),
        }
    }
}

/// A client for one printer (or one print server, for CUPS-Get-Printers).
#[derive(Debug, Clone)]
pub struct IppClient {
    uri: PrinterUri,
    limits: IppLimits,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Where requests go when not to the URI's own host: the local CUPS server's socket.
    via: Option<Endpoint>,
}

/// The attributes asked for in Get-Printer-Attributes and CUPS-Get-Printers.
const PRINTER_ATTRIBUTES: &[&str] = &[
    "printer-name",
    "printer-info",
    "printer-make-and-model",
    "printer-state",
    "printer-state-reasons",
    "printer-state-message",
    "printer-is-accepting-jobs",
    "printer-uri-supported",
    "media-supported",
    "media-ready",
    "document-format-supported",
    "sides-supported",
    "copies-supported",
    "print-scaling-supported",
    "orientation-requested-supported",
];

impl IppClient {
    /// A client for `uri`; `tls` is needed for `ipps://` URIs.
    pub fn new(
        uri: PrinterUri,
        limits: IppLimits,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> IppClient {
        IppClient {
            uri,
            limits,
            tls,
            via: None,
        }
    }

    /// Sends requests through `endpoint` (a Unix socket) while naming the URI in them.
    pub fn via(mut self, endpoint: Endpoint) -> IppClient {
        self.via = Some(endpoint);
        self
    }

    pub fn uri(&self) -> &PrinterUri {
        &self.uri
    }

    fn request(&self, operation: Operation) -> IppRequestResponse {
        let mut request = IppRequestResponse::new(IppVersion::v1_1(), operation, None)
            .expect("a request without a URI always builds");
        // The URI is added as given: the crate would rewrite ipps:// to ipp://.
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            attribute("printer-uri", IppValue::new_uri(self.uri.text.clone())),
        );
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            attribute(
                "requesting-user-name",
                IppValue::new_name_without_language(REQUESTING_USER),
            ),
        );
        request
    }

    /// Sends `request` (with `document` after it) and returns a successful response.
    fn exchange(
        &self,
        request: IppRequestResponse,
        document: &[u8],
        operation: &'static str,
    ) -> Result<IppRequestResponse, IppError> {
        let uri = self.uri.text.clone();
        let mut body = request.to_bytes().to_vec();
        body.extend_from_slice(document);
        let endpoint = self.via.as_ref().unwrap_or(&self.uri.endpoint);
        let response = http::post(
            endpoint,
            &self.uri.path,
            &body,
            &self.limits.http,
            self.tls.as_ref(),
        )
        .map_err(|source| match source {
            HttpError::Connect { .. } => IppError::Unreachable {
                uri: uri.clone(),
                source,
            },
            HttpError::Timeout { .. } => IppError::Timeout {
                uri: uri.clone(),
                source,
            },
            source => IppError::Http {
                uri: uri.clone(),
                source,
            },
        })?;
        if response.status != 200 {
            return Err(IppError::HttpStatus {
                uri,
                status: response.status,
                reason: response.reason,
            });
        }
        let parsed = parse_message(response.body).map_err(|message| IppError::Protocol {
            uri: uri.clone(),
            message,
        })?;
        let status = parsed.header().status_code();
        if status.is_success() {
            return Ok(parsed);
        }
        let message = operation_string(&parsed, "status-message");
        Err(match status {
            StatusCode::ServerErrorNotAcceptingJobs => IppError::NotAcceptingJobs {
                uri,
                reasons: message.into_iter().collect(),
            },
            StatusCode::ClientErrorDocumentFormatNotSupported => {
                IppError::DocumentFormatNotSupported {
                    uri,
                    format: PDF_FORMAT.to_string(),
                    supported: Vec::new(),
                }
            }
            StatusCode::ServerErrorOperationNotSupported => IppError::Unsupported {
                uri,
                what: operation.to_string(),
            },
            other => IppError::Refused {
                uri,
                operation,
                status: status_name(other, parsed.header().operation_or_status),
                message,
            },
        })
    }

    /// Get-Printer-Attributes.
    pub fn printer_attributes(&self) -> Result<PrinterAttributes, IppError> {
        let mut request = self.request(Operation::GetPrinterAttributes);
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            keywords("requested-attributes", PRINTER_ATTRIBUTES),
        );
        let response = self.exchange(request, &[], "Get-Printer-Attributes")?;
        let group = response
            .attributes()
            .groups_of(DelimiterTag::PrinterAttributes)
            .next()
            .ok_or_else(|| IppError::Protocol {
                uri: self.uri.text.clone(),
                message: "the answer holds no printer attributes".to_string(),
            })?;
        Ok(PrinterAttributes::from_group(group))
    }

    /// Checks that the printer can take a PDF job now: not stopped, paper loaded, accepting
    /// jobs, PDF among its formats.
    pub fn check_ready(&self, printer: &PrinterAttributes) -> Result<(), IppError> {
        let uri = self.uri.text.clone();
        if printer.media_empty() {
            return Err(IppError::MediaEmpty {
                uri,
                reasons: printer.state_reasons.clone(),
            });
        }
        if printer.state == Some(IppPrinterState::Stopped) {
            return Err(IppError::PrinterStopped {
                uri,
                reasons: printer.state_reasons.clone(),
            });
        }
        if printer.accepting_jobs == Some(false) {
            return Err(IppError::NotAcceptingJobs {
                uri,
                reasons: printer.state_reasons.clone(),
            });
        }
        if !printer.takes_pdf() {
            return Err(IppError::DocumentFormatNotSupported {
                uri,
                format: PDF_FORMAT.to_string(),
                supported: printer.document_formats.clone(),
            });
        }
        Ok(())
    }

    /// Print-Job with `pdf`; returns the job's ID. `printer` (from
    /// [`IppClient::printer_attributes`]) decides between `media` and `media-col` and whether
    /// `print-scaling` is sent.
    pub fn print_job(
        &self,
        pdf: &[u8],
        ticket: &JobTicket,
        printer: &PrinterAttributes,
    ) -> Result<i32, IppError> {
        if pdf.len() > self.limits.max_document_bytes {
            return Err(IppError::DocumentTooLarge {
                size: pdf.len(),
                limit: self.limits.max_document_bytes,
            });
        }
        let request = print_job_request(self.request(Operation::PrintJob), ticket, printer);
        let response = self
            .exchange(request, pdf, "Print-Job")
            .map_err(|e| match e {
                IppError::DocumentFormatNotSupported { uri, format, .. } => {
                    IppError::DocumentFormatNotSupported {
                        uri,
                        format,
                        supported: printer.document_formats.clone(),
                    }
                }
                other => other,
            })?;
        job_group(&response)
            .and_then(|g| g.get("job-id"))
            .and_then(|a| first_int(a.value()))
            .ok_or_else(|| IppError::Protocol {
                uri: self.uri.text.clone(),
                message: "Print-Job was accepted but the answer names no job-id".to_string(),
            })
    }

    /// Get-Job-Attributes.
    pub fn job_status(&self, job_id: i32) -> Result<JobStatus, IppError> {
        let mut request = self.request(Operation::GetJobAttributes);
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            attribute("job-id", Ok(IppValue::Integer(job_id))),
        );
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            keywords(
                "requested-attributes",
                &[
                    "job-id",
                    "job-state",
                    "job-state-reasons",
                    "job-state-message",
                ],
            ),
        );
        let response = self.exchange(request, &[], "Get-Job-Attributes")?;
        let group = job_group(&response).ok_or_else(|| IppError::Protocol {
            uri: self.uri.text.clone(),
            message: "the answer holds no job attributes".to_string(),
        })?;
        Ok(JobStatus {
            id: job_id,
            state: JobState::from_enum(group.get("job-state").and_then(|a| first_int(a.value()))),
            reasons: strings(group, "job-state-reasons")
                .into_iter()
                .filter(|r| r != "none")
                .collect(),
            message: first_string(group, "job-state-message").filter(|m| !m.is_empty()),
        })
    }

    /// Polls the job until it is completed (Ok) or aborted or canceled (the precise error),
    /// within the client's job timeout.
    pub fn wait_for_job(&self, job_id: i32) -> Result<JobStatus, IppError> {
        let started = Instant::now();
        let mut interval = self.limits.first_poll;
        loop {
            let status = self.job_status(job_id)?;
            match status.state {
                JobState::Completed => return Ok(status),
                JobState::Aborted | JobState::Canceled => {
                    return Err(IppError::JobFailed {
                        uri: self.uri.text.clone(),
                        job_id,
                        state: status.state.as_str(),
                        reasons: status.reasons,
                        message: status.message,
                    })
                }
                _ => {}
            }
            if started.elapsed() + interval > self.limits.job_timeout {
                return Err(IppError::JobTimedOut {
                    uri: self.uri.text.clone(),
                    job_id,
                    seconds: self.limits.job_timeout.as_secs(),
                    state: status.state.as_str(),
                });
            }
            std::thread::sleep(interval);
            interval = (interval * 2).min(Duration::from_secs(2));
        }
    }

    /// CUPS-Get-Printers: every queue of a CUPS server, with its attributes.
    pub fn cups_printers(&self) -> Result<Vec<PrinterAttributes>, IppError> {
        let mut request =
            IppRequestResponse::new(IppVersion::v1_1(), Operation::CupsGetPrinters, None)
                .expect("a request without a URI always builds");
        request.attributes_mut().add(
            DelimiterTag::OperationAttributes,
            keywords("requested-attributes", PRINTER_ATTRIBUTES),
        );
        let response = self.exchange(request, &[], "CUPS-Get-Printers");
        let response = match response {
            Ok(response) => response,
            // A server with no queues answers client-error-not-found.
            Err(IppError::Refused { status, .. }) if status == "client-error-not-found" => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e),
        };
        Ok(response
            .attributes()
            .groups_of(DelimiterTag::PrinterAttributes)
            .map(PrinterAttributes::from_group)
            .collect())
    }
}

/// Builds the Print-Job request: operation attributes, then the job template.
fn print_job_request(
    mut request: IppRequestResponse,
    ticket: &JobTicket,
    printer: &PrinterAttributes,
) -> IppRequestResponse {
    let operation = |request: &mut IppRequestResponse, a: IppAttribute| {
        request
            .attributes_mut()
            .add(DelimiterTag::OperationAttributes, a)
    };
    operation(
        &mut request,
        attribute(
            "job-name",
            IppValue::new_name_without_language(ticket.name.clone()),
        ),
    );
    operation(
        &mut request,
        attribute("document-format", IppValue::new_mime_media_type(PDF_FORMAT)),
    );
    let job = |request: &mut IppRequestResponse, a: IppAttribute| {
        request.attributes_mut().add(DelimiterTag::JobAttributes, a)
    };
    if ticket.copies > 1 {
        job(
            &mut request,
            attribute("copies", Ok(IppValue::Integer(ticket.copies as i32))),
        );
    }
    if let Some(media) = &ticket.media {
        // A size the printer names goes as its keyword; any other (a custom envelope) as a
        // media-col with its dimensions, which printers that take custom sizes accept.
        if media.is_custom() || !printer.media_supported.iter().any(|m| m == &media.keyword) {
            job(&mut request, media_col(media));
        } else {
            job(
                &mut request,
                attribute("media", IppValue::new_keyword(media.keyword.clone())),
            );
        }
    }
    if let Some(orientation) = ticket.orientation {
        job(
            &mut request,
            attribute(
                "orientation-requested",
                Ok(IppValue::Enum(orientation.ipp_enum())),
            ),
        );
    }
    if ticket.no_scaling && printer.print_scaling_supported.iter().any(|s| s == "none") {
        job(
            &mut request,
            attribute("print-scaling", IppValue::new_keyword("none")),
        );
    }
    if printer.sides_supported.iter().any(|s| s == "one-sided") {
        job(
            &mut request,
            attribute("sides", IppValue::new_keyword("one-sided")),
        );
    }
    request
}

fn media_col(media: &Media) -> IppAttribute {
    let mut size = std::collections::BTreeMap::new();
    size.insert(
        name("x-dimension"),
        IppValue::Integer(media.width_hmm as i32),
    );
    size.insert(
        name("y-dimension"),
        IppValue::Integer(media.height_hmm as i32),
    );
    let mut col = std::collections::BTreeMap::new();
    col.insert(name("media-size"), IppValue::Collection(size));
    attribute("media-col", Ok(IppValue::Collection(col)))
}

fn name(text: &'static str) -> ipp::value::IppName {
    ipp::value::IppName::new(text).expect("attribute names are short ASCII")
}

/// An attribute from a name and a value built from text we control. Values come from
/// validated input (keywords, media names, job IDs) that is well within IPP's length limits,
/// so a failure here is a programming error.
fn attribute(
    attribute_name: &'static str,
    value: Result<IppValue, ipp::parser::IppParseError>,
) -> IppAttribute {
    IppAttribute::new(
        name(attribute_name),
        value.expect("attribute values are validated before they reach the encoder"),
    )
}

fn keywords(attribute_name: &'static str, values: &[&str]) -> IppAttribute {
    let values = values
        .iter()
        .map(|v| IppValue::new_keyword(*v).expect("attribute keywords are short ASCII"))
        .collect();
    IppAttribute::new(name(attribute_name), IppValue::Array(values))
}

/// Decodes an IPP message held in memory.
pub fn parse_message(body: Vec<u8>) -> Result<IppRequestResponse, String> {
    if body.len() < 8 {
        return Err(format!(
            "{} bytes is too short for an IPP message",
            body.len()
        ));
    }
    IppParser::new(IppReader::new(std::io::Cursor::new(body)))
        .parse()
        .map_err(|e| e.to_string())
}

fn job_group(response: &IppRequestResponse) -> Option<&IppAttributeGroup> {
    response
        .attributes()
        .groups_of(DelimiterTag::JobAttributes)
        .next()
}

fn operation_string(response: &IppRequestResponse, attribute_name: &str) -> Option<String> {
    response
        .attributes()
        .groups_of(DelimiterTag::OperationAttributes)
        .next()
        .and_then(|g| first_string(g, attribute_name))
}

/// The RFC 8011 keyword of a status code, e.g. "client-error-not-found".
fn status_name(status: StatusCode, raw: i16) -> String {
    let name = match status {
        StatusCode::ClientErrorBadRequest => "client-error-bad-request",
        StatusCode::ClientErrorForbidden => "client-error-forbidden",
        StatusCode::ClientErrorNotAuthenticated => "client-error-not-authenticated",
        StatusCode::ClientErrorNotAuthorized => "client-error-not-authorized",
        StatusCode::ClientErrorNotPossible => "client-error-not-possible",
        StatusCode::ClientErrorTimeout => "client-error-timeout",
        StatusCode::ClientErrorNotFound => "client-error-not-found",
        StatusCode::ClientErrorGone => "client-error-gone",
        StatusCode::ClientErrorRequestEntityTooLong => "client-error-request-entity-too-large",
        StatusCode::ClientErrorAttributesOrValuesNotSupported => {
            "client-error-attributes-or-values-not-supported"
        }
        StatusCode::ClientErrorDocumentFormatError => "client-error-document-format-error",
        StatusCode::ServerErrorInternalError => "server-error-internal-error",
        StatusCode::ServerErrorServiceUnavailable => "server-error-service-unavailable",
        StatusCode::ServerErrorVersionNotSupported => "server-error-version-not-supported",
        StatusCode::ServerErrorDeviceError => "server-error-device-error",
        StatusCode::ServerErrorTemporaryError => "server-error-temporary-error",
        StatusCode::ServerErrorBusy => "server-error-busy",
        StatusCode::ServerErrorJobCanceled => "server-error-job-canceled",
        _ => return format!("status 0x{:04x} ({status})", raw as u16),
    };
    name.to_string()
}

fn values<'a>(
    group: &'a IppAttributeGroup,
    attribute_name: &str,
) -> Box<dyn Iterator<Item = &'a IppValue> + 'a> {
    match group.get(attribute_name).map(|a| a.value()) {
        Some(IppValue::Array(items)) => Box::new(items.iter()),
        Some(value) => Box::new(std::iter::once(value)),
        None => Box::new(std::iter::empty()),
    }
}

fn value_string(value: &IppValue) -> Option<String> {
    Some(match value {
        IppValue::Keyword(v) => v.as_str().to_string(),
        IppValue::NameWithoutLanguage(v) => v.as_str().to_string(),
        IppValue::TextWithoutLanguage(v) => v.to_string(),
        IppValue::NameWithLanguage { name, .. } => name.as_str().to_string(),
        IppValue::TextWithLanguage { text, .. } => text.to_string(),
        IppValue::Uri(v) => v.as_str().to_string(),
        IppValue::MimeMediaType(v) => v.as_str().to_string(),
        _ => return None,
    })
}

fn strings(group: &IppAttributeGroup, attribute_name: &str) -> Vec<String> {
    values(group, attribute_name)
        .filter_map(value_string)
        .collect()
}

fn first_string(group: &IppAttributeGroup, attribute_name: &str) -> Option<String> {
    values(group, attribute_name).find_map(value_string)
}

fn first_int(value: &IppValue) -> Option<i32> {
    match value {
        IppValue::Integer(n) | IppValue::Enum(n) => Some(*n),
        IppValue::Array(items) => items.iter().find_map(first_int),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printer(state: i32, reasons: &[&str]) -> IppAttributeGroup {
        let mut group = IppAttributeGroup::new(DelimiterTag::PrinterAttributes);
        let list = group.attributes_mut();
        list.push(attribute("printer-state", Ok(IppValue::Enum(state))));
        list.push(keywords("printer-state-reasons", reasons));
        list.push(IppAttribute::new(
            name("document-format-supported"),
            IppValue::Array(vec![
                IppValue::new_mime_media_type("application/octet-stream").unwrap(),
                IppValue::new_mime_media_type("application/pdf").unwrap(),
            ]),
        ));
        list.push(keywords(
            "media-supported",
            &["na_letter_8.5x11in", "na_number-10_4.125x9.5in"],
        ));
        list.push(attribute(
            "copies-supported",
            Ok(IppValue::RangeOfInteger { min: 1, max: 99 }),
        ));
        list.push(attribute(
            "printer-make-and-model",
            IppValue::new_text_without_language("Example Laser 5"),
        ));
        group
    }

    fn client() -> IppClient {
        IppClient::new(
            PrinterUri::parse("ipp://printer.local/ipp/print").unwrap(),
            IppLimits::default(),
            None,
        )
    }

    #[test]
    fn parses_printer_uris() {
        let uri = PrinterUri::parse("ipps://[::1]:8631/printers/Office").unwrap();
        assert_eq!(
            uri.endpoint,
            Endpoint::Tcp {
                host: "::1".into(),
                port: 8631,
                tls: true
            }
        );
        assert_eq!(uri.path, "/printers/Office");
        let uri = PrinterUri::parse("ipp://printer.local").unwrap();
        assert_eq!(uri.path, "/");
        assert!(matches!(
            uri.endpoint,
            Endpoint::Tcp {
                port: 631,
                tls: false,
                ..
            }
        ));
        for bad in [
            "http://x/",
            "ipp://",
            "ipp://:631/",
            "ipp://h:0/",
            "ipp://h:99999/",
            "ipp://u:p@h/",
            "ipp://[::1/",
        ] {
            assert!(PrinterUri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reads_printer_attributes() {
        let attributes = PrinterAttributes::from_group(&printer(3, &["none"]));
        assert_eq!(attributes.state, Some(IppPrinterState::Idle));
        assert!(attributes.state_reasons.is_empty());
        assert!(attributes.takes_pdf());
        assert_eq!(attributes.copies_max, Some(99));
        assert_eq!(
            attributes.make_and_model.as_deref(),
            Some("Example Laser 5")
        );
        assert_eq!(attributes.media_supported.len(), 2);
        assert!(client().check_ready(&attributes).is_ok());
    }

    #[test]
    fn names_why_a_printer_cannot_print() {
        let stopped = PrinterAttributes::from_group(&printer(5, &["paused"]));
        let err = client().check_ready(&stopped).unwrap_err();
        assert!(matches!(err, IppError::PrinterStopped { .. }), "{err}");
        assert!(err.to_string().contains("is stopped (paused)"), "{err}");

        let empty = PrinterAttributes::from_group(&printer(5, &["media-empty-error"]));
        let err = client().check_ready(&empty).unwrap_err();
        assert!(matches!(err, IppError::MediaEmpty { .. }), "{err}");
        assert!(
            err.to_string().contains("no paper (media-empty-error)"),
            "{err}"
        );

        let mut no_pdf = PrinterAttributes::from_group(&printer(3, &[]));
        no_pdf.document_formats = vec!["image/pwg-raster".into()];
        let err = client().check_ready(&no_pdf).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not take application/pdf documents (it takes: image/pwg-raster)"),
            "{err}"
        );
    }

    #[test]
    fn print_job_carries_the_ticket() {
        let attributes = PrinterAttributes::from_group(&printer(3, &[]));
        let ticket = JobTicket {
            name: "job-42".into(),
            copies: 3,
            media: Some(Media::parse("na_number-10_4.125x9.5in").unwrap()),
            orientation: Some(Orientation::Landscape),
            no_scaling: true,
        };
        let request =
            print_job_request(client().request(Operation::PrintJob), &ticket, &attributes);
        let bytes = request.to_bytes().to_vec();
        let decoded = parse_message(bytes).unwrap();
        assert_eq!(
            decoded.header().operation_or_status,
            Operation::PrintJob as i16
        );
        let op = decoded
            .attributes()
            .groups_of(DelimiterTag::OperationAttributes)
            .next()
            .unwrap();
        assert_eq!(
            first_string(op, "printer-uri").as_deref(),
            Some("ipp://printer.local/ipp/print")
        );
        assert_eq!(
            first_string(op, "document-format").as_deref(),
            Some("application/pdf")
        );
        assert_eq!(first_string(op, "job-name").as_deref(), Some("job-42"));
        let job = job_group(&decoded).unwrap();
        assert_eq!(
            job.get("copies").and_then(|a| first_int(a.value())),
            Some(3)
        );
        assert_eq!(
            first_string(job, "media").as_deref(),
            Some("na_number-10_4.125x9.5in")
        );
        assert_eq!(
            job.get("orientation-requested")
                .and_then(|a| first_int(a.value())),
            Some(4)
        );
        // The printer does not list print-scaling, so none is sent.
        assert!(job.get("print-scaling").is_none());

        // A size the printer does not name goes as media-col with its dimensions.
        let ticket = JobTicket {
            media: Some(Media::parse("100x150mm").unwrap()),
            copies: 1,
            ..ticket
        };
        let request =
            print_job_request(client().request(Operation::PrintJob), &ticket, &attributes);
        let decoded = parse_message(request.to_bytes().to_vec()).unwrap();
        let job = job_group(&decoded).unwrap();
        assert!(job.get("copies").is_none());
        let IppValue::Collection(col) = job.get("media-col").unwrap().value() else {
            panic!("media-col is a collection");
        };
        let IppValue::Collection(size) = &col[&name("media-size")] else {
            panic!("media-size is a collection");
        };
        assert_eq!(size[&name("x-dimension")], IppValue::Integer(10000));
        assert_eq!(size[&name("y-dimension")], IppValue::Integer(15000));
    }

    #[test]
    fn refuses_truncated_messages() {
        assert!(parse_message(vec![1, 1, 0]).is_err());
        assert!(parse_message(vec![1, 1, 0, 0, 0, 0, 0, 1, 0x01, 0x47]).is_err());
    }
}
