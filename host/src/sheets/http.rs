//! A small blocking HTTP/1.1 client for IPP: one `POST` of `application/ipp` per connection,
//! over TCP, TLS (`ipps://`) or, for the local CUPS server, a Unix socket.
//!
//! IPP needs very little of HTTP (RFC 8010 section 4): a POST with a length-delimited body and
//! a response body read to its end. Writing that here, instead of using an HTTP crate, keeps
//! every call synchronous on the device thread that owns the printer (no async runtime inside
//! a blocking call), lets the local CUPS server be reached through its socket, and bounds every
//! step: connect and I/O timeouts, and a cap on the size of headers and response bodies.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpStream, ToSocketAddrs},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

/// Where an IPP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP host and port; `tls` for `ipps://`.
    Tcp { host: String, port: u16, tls: bool },
    /// A Unix domain socket (the local CUPS server's `/run/cups/cups.sock`).
    Unix(PathBuf),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port, tls } => {
                let scheme = if *tls { "ipps" } else { "ipp" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}")
                } else {
                    write!(f, "{scheme}://{host}:{port}")
                }
            }
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Bounds on one exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// How long to wait for the connection (each resolved address).
    pub connect_timeout: Duration,
    /// How long any single read or write may block.
    pub io_timeout: Duration,
    /// The largest response body accepted; IPP answers are a few kilobytes, so anything far
    /// larger is a misbehaving server.
    pub max_response_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(30),
            max_response_bytes: 4 * 1024 * 1024,
        }
    }
}

/// The longest status line or header line accepted, and the most header lines.
const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;

/// Why an HTTP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint} did not answer within {seconds} s")]
    Timeout { endpoint: String, seconds: u64 },
    #[error("TLS with {endpoint} failed: {message}")]
    Tls { endpoint: String, message: String },
    #[error("connection to {endpoint} failed: {source}")]
    Io {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{endpoint} sent a response larger than {limit} bytes")]
    TooLarge { endpoint: String, limit: usize },
    #[error("{endpoint} sent a malformed HTTP response: {message}")]
    Malformed { endpoint: String, message: String },
}

/// An HTTP response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub reason: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

/// Either kind of connected stream.
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// Sends `body` (already holding the IPP message and any document) as one POST to `path` and
/// returns the response. `tls` is required for TLS endpoints.
pub fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &[u8],
    limits: &HttpLimits,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Result<HttpResponse, HttpError> {
    let name = endpoint.to_string();
    let io_error = |source: std::io::Error| classify_io(&name, limits, source);
    let (mut stream, host_header): (Box<dyn Stream>, String) = match endpoint {
        Endpoint::Tcp {
            host,
            port,
            tls: use_tls,
        } => {
            let tcp = connect_tcp(host, *port, limits).map_err(|source| HttpError::Connect {
                endpoint: name.clone(),
                source,
            })?;
            tcp.set_read_timeout(Some(limits.io_timeout))
                .and_then(|_| tcp.set_write_timeout(Some(limits.io_timeout)))
                .map_err(io_error)?;
            // Small requests and answers: do not let Nagle's algorithm hold them back.
            tcp.set_nodelay(true).map_err(io_error)?;
            let host_header = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            if *use_tls {
                let config = tls.ok_or_else(|| HttpError::Tls {
                    endpoint: name.clone(),
                    message: "no TLS settings were given".to_string(),
                })?;
                let server_name =
                    rustls::pki_types::ServerName::try_from(host.clone()).map_err(|e| {
                        HttpError::Tls {
                            endpoint: name.clone(),
                            message: format!("{host:?} is not a valid server name: {e}"),
                        }
                    })?;
                let connection = rustls::ClientConnection::new(config.clone(), server_name)
                    .map_err(|e| HttpError::Tls {
                        endpoint: name.clone(),
                        message: e.to_string(),
                    })?;
                (
                    Box::new(rustls::StreamOwned::new(connection, tcp)),
                    host_header,
                )
            } else {
                (Box::new(tcp), host_header)
            }
        }
        Endpoint::Unix(path) => (connect_unix(path, limits, &name)?, "localhost".to_string()),
    };

    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/ipp\r\n\
         Content-Length: {}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\
         User-Agent: DeviceHub/{}\r\n\r\n",
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body))
        .and_then(|_| stream.flush())
        .map_err(|e| tls_or_io(&name, limits, e))?;
    read_response(BufReader::new(stream), &name, limits)
}

fn connect_tcp(host: &str, port: u16, limits: &HttpLimits) -> std::io::Result<TcpStream> {
    let mut last = None;
    for address in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&address, limits.connect_timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{host} has no address"),
        )
    }))
}

#[cfg(unix)]
fn connect_unix(
    path: &std::path::Path,
    limits: &HttpLimits,
    name: &str,
) -> Result<Box<dyn Stream>, HttpError> {
    let stream =
        std::os::unix::net::UnixStream::connect(path).map_err(|source| HttpError::Connect {
            endpoint: name.to_string(),
            source,
        })?;
    stream
        .set_read_timeout(Some(limits.io_timeout))
        .and_then(|_| stream.set_write_timeout(Some(limits.io_timeout)))
        .map_err(|e| classify_io(name, limits, e))?;
    Ok(Box::new(stream))
}

#[cfg(not(unix))]
fn connect_unix(
    path: &std::path::Path,
    _limits: &HttpLimits,
    name: &str,
) -> Result<Box<dyn Stream>, HttpError> {
    Err(HttpError::Connect {
        endpoint: name.to_string(),
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!(
                "Unix sockets ({}) are not available on this platform",
                path.display()
            ),
        ),
    })
}

fn classify_io(name: &str, limits: &HttpLimits, source: std::io::Error) -> HttpError {
    match source.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => HttpError::Timeout {
            endpoint: name.to_string(),
            seconds: limits.io_timeout.as_secs(),
        },
        _ => HttpError::Io {
            endpoint: name.to_string(),
            source,
        },
    }
}

/// rustls reports handshake failures as `InvalidData` I/O errors wrapping its own error.
fn tls_or_io(name: &str, limits: &HttpLimits, source: std::io::Error) -> HttpError {
    if source.kind() == std::io::ErrorKind::InvalidData {
        if let Some(inner) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return HttpError::Tls {
                endpoint: name.to_string(),
                message: inner.to_string(),
            };
        }
    }
    classify_io(name, limits, source)
}

fn read_line(
    reader: &mut impl BufRead,
    name: &str,
    limits: &HttpLimits,
) -> Result<String, HttpError> {
    let mut line = Vec::new();
    reader
        .by_ref()
        .take(MAX_HEADER_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| tls_or_io(name, limits, e))?;
    if line.len() > MAX_HEADER_LINE {
        return Err(HttpError::Malformed {
            endpoint: name.to_string(),
            message: format!("a header line is longer than {MAX_HEADER_LINE} bytes"),
        });
    }
    if line.is_empty() {
        return Err(HttpError::Malformed {
            endpoint: name.to_string(),
            message: "the connection closed before the response headers ended".to_string(),
        });
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| HttpError::Malformed {
        endpoint: name.to_string(),
        message: "a header line is not UTF-8".to_string(),
    })
}

/// Reads one response: skips interim (1xx) responses, then reads the body by
/// `Content-Length`, chunked transfer coding, or to the end of the connection.
pub(crate) fn read_response(
    mut reader: impl BufRead,
    name: &str,
    limits: &HttpLimits,
) -> Result<HttpResponse, HttpError> {
    let malformed = |message: String| HttpError::Malformed {
        endpoint: name.to_string(),
        message,
    };
    loop {
        let status_line = read_line(&mut reader, name, limits)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(malformed(format!("status line {status_line:?}")));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;
        let reason = parts.next().unwrap_or_default().to_string();
        let mut content_length: Option<usize> = None;
        let mut chunked = false;
        let mut content_type = None;
        let mut count = 0;
        loop {
            let line = read_line(&mut reader, name, limits)?;
            if line.is_empty() {
                break;
            }
            count += 1;
            if count > MAX_HEADERS {
                return Err(malformed(format!("more than {MAX_HEADERS} header lines")));
            }
            let Some((key, value)) = line.split_once(':') else {
                return Err(malformed(format!("header line {line:?}")));
            };
            let value = value.trim();
            match key.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = Some(
                        value
                            .parse()
                            .map_err(|_| malformed(format!("Content-Length {value:?}")))?,
                    )
                }
                "transfer-encoding" => {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
                "content-type" => content_type = Some(value.to_string()),
                _ => {}
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let too_large = || HttpError::TooLarge {
            endpoint: name.to_string(),
            limit: limits.max_response_bytes,
        };
        let body = if chunked {
            read_chunked(&mut reader, name, limits)?
        } else if let Some(length) = content_length {
            if length > limits.max_response_bytes {
                return Err(too_large());
            }
            let mut body = vec![0; length];
            reader
                .read_exact(&mut body)
                .map_err(|e| tls_or_io(name, limits, e))?;
            body
        } else {
            let mut body = Vec::new();
            reader
                .take(limits.max_response_bytes as u64 + 1)
                .read_to_end(&mut body)
                .map_err(|e| tls_or_io(name, limits, e))?;
            if body.len() > limits.max_response_bytes {
                return Err(too_large());
            }
            body
        };
        return Ok(HttpResponse {
            status,
            reason,
            content_type,
            body,
        });
    }
}

fn read_chunked(
    reader: &mut impl BufRead,
    name: &str,
    limits: &HttpLimits,
) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader, name, limits)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed {
            endpoint: name.to_string(),
            message: format!("chunk size {size_text:?}"),
        })?;
        if size == 0 {
            // Trailer lines, if any, end with an empty line.
            loop {
                if read_line(reader, name, limits)?.is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > limits.max_response_bytes {
            return Err(HttpError::TooLarge {
                endpoint: name.to_string(),
                limit: limits.max_response_bytes,
            });
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|e| tls_or_io(name, limits, e))?;
        let end = read_line(reader, name, limits);
        if !matches!(end.as_deref(), Ok("")) {
            return Err(HttpError::Malformed {
                endpoint: name.to_string(),
                message: "a chunk does not end with CRLF".to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<HttpResponse, HttpError> {
        read_response(bytes, "test", &HttpLimits::default())
    }

    #[test]
    fn reads_a_content_length_body() {
        let response = parse(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/ipp\r\nContent-Length: 3\r\n\r\nabcdef",
        )
        .unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"abc");
        assert_eq!(response.content_type.as_deref(), Some("application/ipp"));
    }

    #[test]
    fn skips_continue_and_reads_chunks() {
        let response = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
              4\r\nwiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
        .unwrap();
        assert_eq!(response.body, b"wikipedia");
    }

    #[test]
    fn reads_to_the_end_without_a_length() {
        let response = parse(b"HTTP/1.0 404 Not Found\r\n\r\nno such printer").unwrap();
        assert_eq!(response.status, 404);
        assert_eq!(response.reason, "Not Found");
        assert_eq!(response.body, b"no such printer");
    }

    #[test]
    fn refuses_oversized_bodies() {
        let limits = HttpLimits {
            max_response_bytes: 4,
            ..HttpLimits::default()
        };
        let err = read_response(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..],
            "t",
            &limits,
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::TooLarge { limit: 4, .. }), "{err}");
        let err = read_response(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"[..],
            "t",
            &limits,
        )
        .unwrap_err();
        assert!(matches!(err, HttpError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(HttpError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n"),
            Err(HttpError::Malformed { .. })
        ));
        assert!(matches!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
            Err(HttpError::Io { .. })
        ));
    }
}
