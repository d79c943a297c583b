//! The local CUPS server's print queues as devices (Linux and macOS), found with
//! CUPS-Get-Printers.
//!
//! The server is asked through its local socket when it has one (no TCP needed, and it works
//! when CUPS listens on the socket alone), else at `ipp://localhost:631/`. A machine without
//! CUPS is normal: that is logged once and gives no queues, never an error. On Windows the
//! spooler's queues are not discovered yet (see docs/printing-sheets.md); configured `ipp://`
//! printers work everywhere.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{ipp::PrinterUri, IppClient, IppError, PrinterAttributes, SheetAddress, SheetsConfig};

/// A queue found on the local print server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveredQueue {
    /// The device ID: `system:` and the queue name (characters device IDs do not allow become
    /// `_`).
    pub id: String,
    pub address: SheetAddress,
    pub attributes: PrinterAttributes,
}

/// Why the print server could not be asked for its queues.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("the print server URI {uri:?} is invalid: {message}")]
    BadUri { uri: String, message: String },
    #[error("cannot list the print server's queues: {0}")]
    Ipp(#[from] IppError),
}

/// Set once the absence of a print server has been logged, so that a desk without CUPS is
/// told once and not on every listing.
static ABSENCE_LOGGED: AtomicBool = AtomicBool::new(false);

/// Lists the local print server's queues; none when discovery is off, the platform has no
/// CUPS, or no server answers.
pub fn discover(config: &SheetsConfig) -> Result<Vec<DiscoveredQueue>, DiscoveryError> {
    if !config.discover || !cfg!(any(target_os = "linux", target_os = "macos")) {
        return Ok(Vec::new());
    }
    let server = PrinterUri::parse(&config.cups_uri).map_err(|message| DiscoveryError::BadUri {
        uri: config.cups_uri.clone(),
        message,
    })?;
    let socket = config.cups_socket_path();
    let tls = if server.is_tls() {
        super::tls_config(config.ca_bundle.as_deref()).ok()
    } else {
        None
    };
    let mut client = IppClient::new(server.clone(), config.limits(), tls);
    if let Some(path) = &socket {
        client = client.via(super::http::Endpoint::Unix(path.clone()));
    }
    let queues = match client.cups_printers() {
        Ok(queues) => queues,
        Err(IppError::Unreachable { source, .. }) => {
            if !ABSENCE_LOGGED.swap(true, Ordering::Relaxed) {
                tracing::info!(
                    "no print server answers at {} ({source}); system print queues are not listed",
                    socket
                        .as_ref()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| server.text.clone())
                );
            }
            return Ok(Vec::new());
        }
        Err(e) => return Err(e.into()),
    };
    Ok(queues
        .into_iter()
        .filter_map(|attributes| {
            let name = attributes.name.clone()?;
            let uri = attributes
                .uris
                .iter()
                .find(|u| u.starts_with("ipp://"))
                .or_else(|| attributes.uris.first())
                .cloned()
                .unwrap_or_else(|| queue_uri(&server, &name));
            Some(DiscoveredQueue {
                id: queue_id(&name),
                address: SheetAddress {
                    uri,
                    via_socket: socket.clone(),
                },
                attributes,
            })
        })
        .collect())
}

/// The URI of queue `name` on `server` when the server does not say.
fn queue_uri(server: &PrinterUri, name: &str) -> String {
    let base = server.text.trim_end_matches('/');
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("{base}/printers/{encoded}")
}

/// The device ID of queue `name`.
pub fn queue_id(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("system:{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipp::{
        attribute::{IppAttribute, IppAttributeGroup},
        model::{DelimiterTag, IppVersion, StatusCode},
        request::IppRequestResponse,
        value::IppValue,
    };

    /// A CUPS-Get-Printers answer with two queues, encoded as a CUPS server sends it.
    fn cups_answer() -> Vec<u8> {
        let mut response =
            IppRequestResponse::new_response(IppVersion::v1_1(), StatusCode::SuccessfulOk, 7)
                .unwrap();
        for (name, uri, model, state) in [
            (
                "Office",
                "ipp://localhost:631/printers/Office",
                "HP LaserJet 400",
                3,
            ),
            (
                "Mail Room",
                "ipps://localhost:631/printers/Mail_Room",
                "Brother HL-L2350DW",
                5,
            ),
        ] {
            // Each queue is its own printer group, as CUPS sends them.
            let mut group = IppAttributeGroup::new(DelimiterTag::PrinterAttributes);
            let mut add = |n: &str, v: IppValue| {
                group
                    .attributes_mut()
                    .push(IppAttribute::new(ipp::value::IppName::new(n).unwrap(), v))
            };
            add(
                "printer-name",
                IppValue::new_name_without_language(name).unwrap(),
            );
            add("printer-uri-supported", IppValue::new_uri(uri).unwrap());
            add(
                "printer-make-and-model",
                IppValue::new_text_without_language(model).unwrap(),
            );
            add("printer-state", IppValue::Enum(state));
            response.attributes_mut().groups_mut().push(group);
        }
        response.to_bytes().to_vec()
    }

    #[test]
    fn reads_queues_from_a_cups_answer() {
        let decoded = super::super::ipp::parse_message(cups_answer()).unwrap();
        let queues: Vec<PrinterAttributes> = decoded
            .attributes()
            .groups_of(DelimiterTag::PrinterAttributes)
            .map(PrinterAttributes::from_group)
            .collect();
        assert_eq!(queues.len(), 2, "{queues:?}");
        assert_eq!(queues[0].name.as_deref(), Some("Office"));
        assert_eq!(
            queues[1].make_and_model.as_deref(),
            Some("Brother HL-L2350DW")
        );
        assert_eq!(
            queues[1].state,
            Some(super::super::ipp::IppPrinterState::Stopped)
        );
    }

    #[test]
    fn names_queues_as_device_ids() {
        assert_eq!(queue_id("Mail Room/2"), "system:Mail_Room_2");
        let server = PrinterUri::parse("ipp://localhost:631/").unwrap();
        assert_eq!(
            queue_uri(&server, "Mail Room"),
            "ipp://localhost:631/printers/Mail%20Room"
        );
    }

    #[test]
    fn an_absent_server_is_no_error() {
        // Bind and drop a listener so that the port is (almost certainly) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = SheetsConfig {
            cups_uri: format!("ipp://127.0.0.1:{port}/"),
            cups_socket: Some(std::env::temp_dir().join("devicehub-no-such-cups.sock")),
            ..SheetsConfig::default()
        };
        assert_eq!(discover(&config).unwrap(), Vec::new());
        let off = SheetsConfig {
            discover: false,
            ..config
        };
        assert_eq!(discover(&off).unwrap(), Vec::new());
    }
}
