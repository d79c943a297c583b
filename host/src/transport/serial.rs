//! Devices on serial ports (scales, scanners, older printers), through the `serialport` crate.

use std::{
    io::{ErrorKind as IoKind, Read, Write},
    time::Duration,
};

use devicehub_plugin_api::{
    abi_stable::std_types::{RResult, RSlice, RVec},
    Transport, TransportError, TransportErrorKind, TransportInfo, TransportKind,
};
use serde::{Deserialize, Serialize};

/// Line settings for a serial device; scales differ (9600 7E1 and 8N1 are both common).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    /// Baud rate.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Data bits: 5, 6, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Parity: "none", "even" or "odd".
    #[serde(default = "default_parity")]
    pub parity: String,
    /// Stop bits: 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Flow control: "none", "software" or "hardware".
    #[serde(default = "default_flow_control")]
    pub flow_control: String,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_parity() -> String {
    "none".to_string()
}
fn default_stop_bits() -> u8 {
    1
}
fn default_flow_control() -> String {
    "none".to_string()
}

impl Default for SerialSettings {
    fn default() -> Self {
        SerialSettings {
            baud: default_baud(),
            data_bits: default_data_bits(),
            parity: default_parity(),
            stop_bits: default_stop_bits(),
            flow_control: default_flow_control(),
        }
    }
}

/// A serial setting that is not one of the allowed values.
#[derive(Debug, thiserror::Error)]
#[error("invalid serial setting {field} = {value:?} (allowed: {allowed})")]
pub struct InvalidSerialSetting {
    pub field: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl SerialSettings {
    /// Checks the settings and converts them for `serialport`.
    pub fn validate(
        &self,
    ) -> Result<
        (
            serialport::DataBits,
            serialport::Parity,
            serialport::StopBits,
            serialport::FlowControl,
        ),
        InvalidSerialSetting,
    > {
        let data_bits = match self.data_bits {
            5 => serialport::DataBits::Five,
            6 => serialport::DataBits::Six,
            7 => serialport::DataBits::Seven,
            8 => serialport::DataBits::Eight,
            other => {
                return Err(InvalidSerialSetting {
                    field: "data_bits",
                    value: other.to_string(),
                    allowed: "5, 6, 7, 8",
                })
            }
        };
        let parity = match self.parity.as_str() {
            "none" => serialport::Parity::None,
            "even" => serialport::Parity::Even,
            "odd" => serialport::Parity::Odd,
            other => {
                return Err(InvalidSerialSetting {
                    field: "parity",
                    value: other.to_string(),
                    allowed: "none, even, odd",
                })
            }
        };
        let stop_bits = match self.stop_bits {
            1 => serialport::StopBits::One,
            2 => serialport::StopBits::Two,
            other => {
                return Err(InvalidSerialSetting {
                    field: "stop_bits",
                    value: other.to_string(),
                    allowed: "1, 2",
                })
            }
        };
        let flow = match self.flow_control.as_str() {
            "none" => serialport::FlowControl::None,
            "software" => serialport::FlowControl::Software,
            "hardware" => serialport::FlowControl::Hardware,
            other => {
                return Err(InvalidSerialSetting {
                    field: "flow_control",
                    value: other.to_string(),
                    allowed: "none, software, hardware",
                })
            }
        };
        Ok((data_bits, parity, stop_bits, flow))
    }
}

impl SerialSettings {
    /// Splits a serial address's path from line settings written after it as a query, e.g.
    /// `/dev/ttyUSB0?baud=9600&data_bits=7&parity=even&stop_bits=1`, so that a device's line
    /// settings fit in its address. Keys given override `base` (the device's `serial` table);
    /// an unknown key or a bad value is an error naming it.
    pub fn from_address(
        address: &str,
        base: SerialSettings,
    ) -> Result<(String, SerialSettings), InvalidSerialSetting> {
        let Some((path, query)) = address.split_once('?') else {
            return Ok((address.to_string(), base));
        };
        let mut settings = base;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |field: &'static str, allowed: &'static str| InvalidSerialSetting {
                field,
                value: value.to_string(),
                allowed,
            };
            match key {
                "baud" => {
                    settings.baud = value
                        .parse()
                        .map_err(|_| number("baud", "a number of bits per second"))?
                }
                "data_bits" => {
                    settings.data_bits = value
                        .parse()
                        .map_err(|_| number("data_bits", "5, 6, 7, 8"))?
                }
                "stop_bits" => {
                    settings.stop_bits = value.parse().map_err(|_| number("stop_bits", "1, 2"))?
                }
                "parity" => settings.parity = value.to_string(),
                "flow_control" => settings.flow_control = value.to_string(),
                _ => {
                    return Err(InvalidSerialSetting {
                        field: "address",
                        value: key.to_string(),
                        allowed: "baud, data_bits, parity, stop_bits, flow_control",
                    })
                }
            }
        }
        settings.validate()?;
        Ok((path.to_string(), settings))
    }
}

/// An open serial port.
pub struct SerialTransport {
    path: String,
    port: Box<dyn serialport::SerialPort>,
}

impl std::fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialTransport")
            .field("path", &self.path)
            .finish()
    }
}

/// Why a serial port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialOpenError {
    #[error(transparent)]
    Settings(#[from] InvalidSerialSetting),
    #[error("cannot open serial port {path}: {source}")]
    Open {
        path: String,
        source: serialport::Error,
    },
}

impl SerialTransport {
    /// Opens `path` with `settings`.
    pub fn open(path: &str, settings: &SerialSettings) -> Result<Self, SerialOpenError> {
        let (data_bits, parity, stop_bits, flow) = settings.validate()?;
        let port = serialport::new(path, settings.baud)
            .data_bits(data_bits)
            .parity(parity)
            .stop_bits(stop_bits)
            .flow_control(flow)
            .timeout(Duration::from_millis(100))
            .open()
            .map_err(|source| SerialOpenError::Open {
                path: path.to_string(),
                source,
            })?;
        Ok(SerialTransport {
            path: path.to_string(),
            port,
        })
    }

    fn error(&self, err: std::io::Error) -> TransportError {
        let kind = match err.kind() {
            IoKind::TimedOut | IoKind::WouldBlock => TransportErrorKind::Timeout,
            IoKind::BrokenPipe | IoKind::NotFound | IoKind::UnexpectedEof => {
                TransportErrorKind::Disconnected
            }
            _ => TransportErrorKind::Io,
        };
        TransportError::new(kind, format!("{}: {err}", self.path))
    }
}

impl Transport for SerialTransport {
    fn info(&self) -> TransportInfo {
        TransportInfo {
            kind: TransportKind::Serial,
            description: format!("serial {}", self.path).into(),
            ieee1284_id: None.into(),
        }
    }

    fn write(&mut self, data: RSlice<'_, u8>) -> RResult<(), TransportError> {
        match self.port.write_all(&data).and_then(|()| self.port.flush()) {
            Ok(()) => RResult::ROk(()),
            Err(e) => RResult::RErr(self.error(e)),
        }
    }

    fn read(&mut self, max_len: u32, timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        if let Err(e) = self
            .port
            .set_timeout(Duration::from_millis(timeout_ms.max(1).into()))
        {
            return RResult::RErr(TransportError::new(
                TransportErrorKind::Io,
                format!("{}: {e}", self.path),
            ));
        }
        let mut buf = vec![0u8; max_len.clamp(1, 65536) as usize];
        match self.port.read(&mut buf) {
            Ok(0) => RResult::RErr(TransportError::new(
                TransportErrorKind::Disconnected,
                format!("{} was closed", self.path),
            )),
            Ok(n) => {
                buf.truncate(n);
                RResult::ROk(buf.into())
            }
            Err(e) => RResult::RErr(self.error(e)),
        }
    }

    fn write_report(&mut self, _report: RSlice<'_, u8>) -> RResult<(), TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "HID reports are not available on a serial port",
        ))
    }

    fn read_report(&mut self, _timeout_ms: u32) -> RResult<RVec<u8>, TransportError> {
        RResult::RErr(TransportError::new(
            TransportErrorKind::Unsupported,
            "HID reports are not available on a serial port",
        ))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use serialport::SerialPort as _;

    #[test]
    fn talks_through_a_pseudo_terminal() {
        let (mut device_side, host_side) = serialport::TTYPort::pair().expect("pty pair");
        let path = host_side.name().expect("pty has a name");
        // Opening by path exercises the same code a real port uses.
        let mut t = SerialTransport::open(&path, &SerialSettings::default()).expect("open pty");
        t.write(RSlice::from_slice(b"W\r")).unwrap();
        let mut got = [0u8; 2];
        device_side.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"W\r");
        device_side.write_all(b"\n0001.25lb\r").unwrap();
        let answer = t.read_until_newline();
        assert_eq!(answer, b"\n0001.25lb\r");
        assert_eq!(t.read(8, 20).unwrap_err().kind, TransportErrorKind::Timeout);
    }

    impl SerialTransport {
        fn read_until_newline(&mut self) -> Vec<u8> {
            let mut all = Vec::new();
            while !all.ends_with(b"\r") || all.len() < 2 {
                all.extend_from_slice(&self.read(64, 1000).unwrap());
            }
            all
        }
    }

    #[test]
    fn line_settings_can_follow_the_path() {
        let (path, settings) = SerialSettings::from_address(
            "/dev/ttyUSB0?baud=19200&data_bits=7&parity=even&stop_bits=2",
            SerialSettings::default(),
        )
        .unwrap();
        assert_eq!(path, "/dev/ttyUSB0");
        assert_eq!(
            settings,
            SerialSettings {
                baud: 19200,
                data_bits: 7,
                parity: "even".into(),
                stop_bits: 2,
                flow_control: "none".into(),
            }
        );
        let (path, settings) =
            SerialSettings::from_address("COM3", SerialSettings::default()).unwrap();
        assert_eq!(
            (path.as_str(), settings),
            ("COM3", SerialSettings::default())
        );
        for (bad, field) in [
            ("/dev/ttyS0?speed=9600", "address"),
            ("/dev/ttyS0?baud=fast", "baud"),
            ("/dev/ttyS0?parity=mark", "parity"),
            ("/dev/ttyS0?data_bits=9", "data_bits"),
        ] {
            let err = SerialSettings::from_address(bad, SerialSettings::default()).unwrap_err();
            assert_eq!(err.field, field, "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let settings = SerialSettings {
            parity: "mark".into(),
            ..SerialSettings::default()
        };
        let err = SerialTransport::open("/dev/null", &settings).unwrap_err();
        assert!(err.to_string().contains("parity"), "{err}");
    }
}
