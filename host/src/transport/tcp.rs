//! Network printers over raw TCP (the port 9100 convention).
//!
//! The connection is opened on first use and reopened after a failure, so a printer that was
//! switched off and on again works for the next job without restarting anything.

use std::{
    io::{ErrorKind as IoKind, Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    Transport, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};

/// How long to wait for a printer to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one write may stall before the printer is considered gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// A raw TCP connection to a network device.
#[derive(Debug)]
pub struct TcpTransport {
    address: String,
    stream: Option<TcpStream>,
}

impl TcpTransport {
    /// A transport to `address` (`host:port`); nothing is connected until first use.
    pub fn new(address: &str) -> Self {
        TcpTransport {
            address: address.to_string(),
            stream: None,
        }
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        self.address
            .to_socket_addrs()
            .map(|a| a.collect())
            .map_err(|e| {
                TransportError::new(
                    TransportErrorKind::Io,
                    format!("cannot resolve {}: {e}", self.address),
                )
            })
    }

    fn stream(&mut self) -> Result<&mut TcpStream, TransportError> {
        if self.stream.is_none() {
            let mut last = None;
            for addr in self.resolve()? {
                match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        // Label jobs are sent in one go; Nagle only adds latency to status polls.
                        let _ = stream.set_nodelay(true);
                        let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
                        self.stream = Some(stream);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if self.stream.is_none() {
                let why = last.map_or_else(|| "no address".to_string(), |e| e.to_string());
                return Err(TransportError::new(
                    TransportErrorKind::Disconnected,
                    format!("cannot connect to {}: {why}", self.address),
                ));
            }
        }
        Ok(self.stream.as_mut().expect("connected just above"))
    }

    fn fail(&mut self, err: std::io::Error) -> TransportError {
        // Drop the connection so that the next call reconnects.
        self.stream = None;
        let kind = match err.kind() {
            IoKind::TimedOut | IoKind::WouldBlock => TransportErrorKind::Timeout,
            IoKind::ConnectionReset
            | IoKind::ConnectionAborted
            | IoKind::BrokenPipe
            | IoKind::UnexpectedEof
            | IoKind::NotConnected => TransportErrorKind::Disconnected,
            _ => TransportErrorKind::Io,
        };
        TransportError::new(kind, format!("{}: {err}", self.address))
    }
}

impl Transport for TcpTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Tcp,
            description: format!("tcp {}", self.address).into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        let result = match self.stream() {
            Ok(stream) => stream.write_all(&data).and_then(|()| stream.flush()),
            Err(e) => return RResult::RErr(e),
        };
        match result {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(self.fail(e)),
        }
    }

    fn read(&mut self, max_len: u32, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        let timeout = Duration::from_millis(timeout_ms.max(1).into());
        let result = match self.stream() {
            Ok(stream) => stream.set_read_timeout(Some(timeout)).and_then(|()| {
                let mut buf = vec![0u8; max_len.clamp(1, 65536) as usize];
                let n = stream.read(&mut buf)?;
                buf.truncate(n);
                Ok(buf)
            }),
            Err(e) => return RResult::RErr(e),
        };
        match result {
            Ok(buf) if buf.is_empty() => {
                self.stream = None;
                RResult::RErr(TransportError::new(
                    TransportErrorKind::Disconnected,
                    format!("{} closed the connection", self.address),
                ))
            }
            Ok(buf) => RResult::ROk(buf.into()),
            Err(e) if matches!(e.kind(), IoKind::TimedOut | IoKind::WouldBlock) => {
                RResult::RErr(TransportError::new(
                    TransportErrorKind::Timeout,
                    format!("{} sent nothing within {timeout_ms} ms", self.address),
                ))
            }
            Err(e) => RResult::RErr(self.fail(e)),
        }
    }

    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(unsupported())
    }

    fn read_report(&mut self, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(unsupported())
    }
}

fn unsupported() -> TransportError {
    TransportError::new(
        TransportErrorKind::Unsupported,
        "HID reports are not available over TCP",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn writes_reads_and_reconnects_after_the_peer_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (mut conn, _) = listener.accept().unwrap();
                let mut buf = [0u8; 3];
                conn.read_exact(&mut buf).unwrap();
                conn.write_all(&buf).unwrap();
                // Dropping `conn` closes the connection, like a printer after a job.
            }
        });
        let mut t = TcpTransport::new(&addr);
        for _ in 0..2 {
            t.write(RSlice::from_slice(b"abc")).unwrap();
            assert_eq!(t.read(16, 2000).unwrap().as_slice(), b"abc");
            let err = t.read(16, 2000).unwrap_err();
            assert_eq!(err.kind, TransportErrorKind::Disconnected);
        }
        server.join().unwrap();
    }

    #[test]
    fn refused_connection_is_reported_as_disconnected() {
        // Bind then drop, so that the port is very likely closed.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let mut t = TcpTransport::new(&addr);
        let err = t.write(RSlice::from_slice(b"x")).unwrap_err();
        assert_eq!(err.kind, TransportErrorKind::Disconnected);
        assert!(err.message.contains("cannot connect"));
    }
}
