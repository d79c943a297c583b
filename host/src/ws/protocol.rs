//! The WebSocket server's JSON messages: requests from clients, their answers and the events
//! pushed to subscribers (documented in docs/protocol.md, "Local WebSocket").
//!
//! Every request is a JSON object with a `type` and an optional `id` of any JSON type that the
//! answer echoes: `{"id": 7, "ok": {...}}` or `{"id": 7, "error": {"kind", "message"}}`.

use base64::Engine as _;
use devicehub_plugin_api::{DeviceKind, GrayImage};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::agent::{Agent, LocalEvent};
use crate::devices::OpenedDevice;
use crate::scales::{self, ReportUnit, ScaleError};

/// The largest image an `ocr` request may carry, decoded (8 MiB).
pub const MAX_IMAGE_BYTES: usize = 8 * 1024 * 1024;
/// The largest message a client may send: a base64 image of [`MAX_IMAGE_BYTES`] and the JSON
/// around it.
pub const MAX_MESSAGE_BYTES: usize = MAX_IMAGE_BYTES / 3 * 4 + 64 * 1024;
/// The most pixels an OCR image may decode to (a decompression bomb is refused).
const MAX_IMAGE_PIXELS: u64 = 40_000_000;
/// The plugin whose scanner devices answer `ocr` requests.
pub const OCR_PLUGIN: &str = "ocr";
/// How long `scale.read` waits for a stable weight unless the request says.
pub const DEFAULT_READ_TIMEOUT_MS: u32 = 5_000;
/// The longest `scale.read` may wait.
pub const MAX_READ_TIMEOUT_MS: u32 = 60_000;

/// What a client follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Subscriptions {
    pub scale: bool,
    pub devices: bool,
    pub scanner: bool,
    /// The unit pushed readings' `value` is in; the scale's display unit when `None`.
    pub unit: Option<ReportUnit>,
}

impl Subscriptions {
    pub fn any(&self) -> bool {
        self.scale || self.devices || self.scanner
    }
}

/// A request that failed: the `error` object of the answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct RequestError {
    /// A stable name for the failure: `badRequest`, `noScale`, `noSuchDevice`, `notAScale`,
    /// `device`, `noOcrScanner`, `badImage`, `tooLarge`.
    pub kind: &'static str,
    pub message: String,
}

impl RequestError {
    pub fn bad_request(message: impl Into<String>) -> RequestError {
        RequestError {
            kind: "badRequest",
            message: message.into(),
        }
    }
}

impl From<ScaleError> for RequestError {
    fn from(e: ScaleError) -> RequestError {
        let kind = match &e {
            ScaleError::NoScale => "noScale",
            ScaleError::NoSuchDevice(_) => "noSuchDevice",
            ScaleError::NotAScale(_) => "notAScale",
            ScaleError::Device { .. } | ScaleError::Plugin { .. } => "device",
        };
        RequestError {
            kind,
            message: e.to_string(),
        }
    }
}

/// The answer to a request with `id`.
pub fn answer(id: Value, result: Result<Value, RequestError>) -> Value {
    match result {
        Ok(ok) => json!({"id": id, "ok": ok}),
        Err(e) => json!({"id": id, "error": {"kind": e.kind, "message": e.message}}),
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
enum Request {
    #[serde(rename = "devices.list")]
    DevicesList {
        #[serde(default)]
        id: Value,
    },
    #[serde(rename = "subscribe")]
    Subscribe {
        #[serde(default)]
        id: Value,
        topics: Vec<String>,
        #[serde(default)]
        unit: Option<String>,
    },
    #[serde(rename = "unsubscribe")]
    Unsubscribe {
        #[serde(default)]
        id: Value,
        topics: Vec<String>,
    },
    #[serde(rename = "scale.read")]
    ScaleRead {
        #[serde(default)]
        id: Value,
        #[serde(default)]
        device: Option<String>,
        #[serde(default)]
        unit: Option<String>,
        #[serde(default, rename = "timeoutMs")]
        timeout_ms: Option<u32>,
    },
    #[serde(rename = "scale.zero")]
    ScaleZero {
        #[serde(default)]
        id: Value,
        #[serde(default)]
        device: Option<String>,
    },
    #[serde(rename = "ocr")]
    Ocr {
        #[serde(default)]
        id: Value,
        image: String,
        #[serde(default)]
        device: Option<String>,
    },
}

fn parse_unit(unit: Option<&str>) -> Result<Option<ReportUnit>, RequestError> {
    unit.map(|u| {
        ReportUnit::parse(u)
            .ok_or_else(|| RequestError::bad_request(format!("unit {u:?} is not g, kg, oz or lb")))
    })
    .transpose()
}

/// The request's `id` when the text is a JSON object that has one, for answering a request
/// that could not be parsed.
fn salvage_id(text: &str) -> Value {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(Value::Null)
}

/// Handles one text message and returns the answer; `subscriptions` is updated by
/// (un)subscribe requests.
pub async fn handle(
    agent: &Agent,
    text: &str,
    subscriptions: &tokio::sync::watch::Sender<Subscriptions>,
) -> Value {
    let request: Request = match serde_json::from_str(text) {
        Ok(request) => request,
        Err(e) => {
            return answer(
                salvage_id(text),
                Err(RequestError::bad_request(format!("malformed request: {e}"))),
            )
        }
    };
    match request {
        Request::DevicesList { id } => answer(id, Ok(json!({"devices": agent.devices().list()}))),
        Request::Subscribe { id, topics, unit } => {
            let result = topic_flags(&topics).and_then(|(scale, devices, scanner)| {
                let unit = parse_unit(unit.as_deref())?;
                subscriptions.send_modify(|s| {
                    s.scale |= scale;
                    s.devices |= devices;
                    s.scanner |= scanner;
                    if unit.is_some() {
                        s.unit = unit;
                    }
                });
                Ok(json!({"topics": current_topics(&subscriptions.borrow())}))
            });
            answer(id, result)
        }
        Request::Unsubscribe { id, topics } => {
            let result = topic_flags(&topics).map(|(scale, devices, scanner)| {
                subscriptions.send_modify(|s| {
                    s.scale &= !scale;
                    s.devices &= !devices;
                    s.scanner &= !scanner;
                });
                json!({"topics": current_topics(&subscriptions.borrow())})
            });
            answer(id, result)
        }
        Request::ScaleRead {
            id,
            device,
            unit,
            timeout_ms,
        } => answer(id, scale_read(agent, device, unit, timeout_ms).await),
        Request::ScaleZero { id, device } => answer(id, scale_zero(agent, device).await),
        Request::Ocr { id, image, device } => answer(id, ocr(agent, image, device).await),
    }
}

fn topic_flags(topics: &[String]) -> Result<(bool, bool, bool), RequestError> {
    let mut flags = (false, false, false);
    for topic in topics {
        match topic.as_str() {
            "scale" => flags.0 = true,
            "devices" => flags.1 = true,
            "scanner" => flags.2 = true,
            other => {
                return Err(RequestError::bad_request(format!(
                    "unknown topic {other:?} (scale, devices or scanner)"
                )))
            }
        }
    }
    Ok(flags)
}

fn current_topics(s: &Subscriptions) -> Vec<&'static str> {
    [
        (s.scale, "scale"),
        (s.devices, "devices"),
        (s.scanner, "scanner"),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect()
}

fn preferred(agent: &Agent) -> Vec<String> {
    agent
        .config()
        .devices
        .iter()
        .map(|d| d.id.clone())
        .collect()
}

async fn scale_read(
    agent: &Agent,
    device: Option<String>,
    unit: Option<String>,
    timeout_ms: Option<u32>,
) -> Result<Value, RequestError> {
    let unit = parse_unit(unit.as_deref())?;
    let timeout_ms = timeout_ms.unwrap_or(DEFAULT_READ_TIMEOUT_MS);
    if !(1..=MAX_READ_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(RequestError::bad_request(format!(
            "timeoutMs must be 1 to {MAX_READ_TIMEOUT_MS}, not {timeout_ms}"
        )));
    }
    let id = scales::choose_scale(agent.devices(), &preferred(agent), device.as_deref())?;
    let reading = scales::read_scale(agent.devices(), &id, timeout_ms).await?;
    let mut body = scales::reading_json(&scales::view(&reading), unit);
    body["device"] = id.into();
    Ok(body)
}

async fn scale_zero(agent: &Agent, device: Option<String>) -> Result<Value, RequestError> {
    let id = scales::choose_scale(agent.devices(), &preferred(agent), device.as_deref())?;
    scales::zero_scale(agent.devices(), &id).await?;
    Ok(json!({"device": id}))
}

/// Decodes a base64 PNG or JPEG into an 8-bit greyscale image within the size limits.
pub fn decode_image(base64_text: &str) -> Result<GrayImage, RequestError> {
    let bad = |message: String| RequestError {
        kind: "badImage",
        message,
    };
    if base64_text.len() > MAX_IMAGE_BYTES / 3 * 4 + 4 {
        return Err(RequestError {
            kind: "tooLarge",
            message: format!("the image is larger than {MAX_IMAGE_BYTES} bytes"),
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_text.trim())
        .map_err(|e| bad(format!("the image is not base64: {e}")))?;
    let format = image::guess_format(&bytes)
        .map_err(|_| bad("the image is neither PNG nor JPEG".to_string()))?;
    if !matches!(format, image::ImageFormat::Png | image::ImageFormat::Jpeg) {
        return Err(bad("the image is neither PNG nor JPEG".to_string()));
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_IMAGE_PIXELS * 4);
    reader.limits(limits.clone());
    let (width, height) = reader
        .into_dimensions()
        .map_err(|e| bad(format!("cannot read the image: {e}")))?;
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS {
        return Err(RequestError {
            kind: "tooLarge",
            message: format!("the image has {width}x{height} pixels; at most {MAX_IMAGE_PIXELS}"),
        });
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode the image: {e}")))?
        .into_luma8();
    Ok(GrayImage {
        width: decoded.width(),
        height: decoded.height(),
        pixels: decoded.into_raw().into(),
    })
}

async fn ocr(agent: &Agent, image: String, device: Option<String>) -> Result<Value, RequestError> {
    let no_scanner = || RequestError {
        kind: "noOcrScanner",
        message: "no OCR scanner is attached".to_string(),
    };
    let scanners: Vec<String> = agent
        .devices()
        .list()
        .into_iter()
        .filter(|d| d.kind == DeviceKind::Scanner.as_str() && d.plugin == OCR_PLUGIN)
        .map(|d| d.id)
        .collect();
    let id = match device {
        Some(id) if scanners.contains(&id) => id,
        Some(id) => {
            return Err(RequestError {
                kind: "noSuchDevice",
                message: format!("'{id}' is not an attached OCR scanner"),
            })
        }
        None => scanners.into_iter().next().ok_or_else(no_scanner)?,
    };
    let gray = tokio::task::spawn_blocking(move || decode_image(&image))
        .await
        .map_err(|e| RequestError {
            kind: "badImage",
            message: format!("decoding stopped: {e}"),
        })??;
    let worker = agent.devices().get(&id).map_err(|_| no_scanner())?;
    let owned = id.clone();
    let text = worker
        .call_async(move |device| match device {
            OpenedDevice::Scanner(scanner) => scanner
                .recognize(&gray)
                .into_result()
                .map_err(|e| format!("{} ({})", e.message, e.kind.as_str())),
            _ => Err(format!("'{owned}' is not a scanner")),
        })
        .await
        .map_err(|e| RequestError {
            kind: "device",
            message: e.to_string(),
        })?
        .map_err(|message| RequestError {
            kind: "device",
            message: format!("OCR on '{id}' failed: {message}"),
        })?;
    let lines: Vec<String> = text.lines.iter().map(|l| l.to_string()).collect();
    // Recognized text is an address: it goes to this client only, never to logs.
    Ok(json!({"device": id, "lines": lines}))
}

/// The message pushed for `event` to a client with `subscriptions`, with the key under which
/// a newer message replaces an unsent older one (scale readings, per device); `None` when the
/// client does not follow the event.
pub fn event_message(
    event: &LocalEvent,
    subscriptions: &Subscriptions,
) -> Option<(Option<String>, String)> {
    match event {
        LocalEvent::Scale { device, reading } if subscriptions.scale => {
            let mut body = scales::reading_json(reading, subscriptions.unit);
            body["type"] = "scale".into();
            body["device"] = device.as_str().into();
            Some((Some(device.clone()), body.to_string()))
        }
        LocalEvent::Device { device, attached } if subscriptions.devices => Some((
            None,
            json!({
                "type": "device",
                "event": if *attached { "attached" } else { "detached" },
                "device": device,
            })
            .to_string(),
        )),
        LocalEvent::Scan { device, text } if subscriptions.scanner => Some((
            None,
            json!({"type": "scan", "device": device, "lines": text.0}).to_string(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{ReadingView, ScannedLines};

    #[test]
    fn unknown_types_and_fields_are_bad_requests() {
        for text in [
            r#"{"id":1,"type":"printer.melt"}"#,
            r#"{"id":1,"type":"devices.list","extra":true}"#,
            r#"{"id":1,"type":"subscribe"}"#,
        ] {
            assert!(serde_json::from_str::<Request>(text).is_err(), "{text}");
        }
        assert_eq!(salvage_id(r#"{"id":"a","type":"x"}"#), json!("a"));
        assert_eq!(salvage_id("not json"), Value::Null);
    }

    #[test]
    fn scale_events_carry_the_subscribed_unit_and_replace_by_device() {
        let event = LocalEvent::Scale {
            device: "bench".into(),
            reading: ReadingView {
                state: "stable",
                micrograms: 1_500_000_000,
                resolution_micrograms: 1_000_000,
                display_unit: "g",
                at_ms: 3,
            },
        };
        let subs = Subscriptions {
            scale: true,
            unit: Some(ReportUnit::Kilogram),
            ..Subscriptions::default()
        };
        let (key, text) = event_message(&event, &subs).expect("followed");
        assert_eq!(key.as_deref(), Some("bench"));
        let body: Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(body["type"], "scale");
        assert_eq!(body["value"], "1.500");
        assert_eq!(body["unit"], "kg");
        assert!(event_message(&event, &Subscriptions::default()).is_none());
        let scan = LocalEvent::Scan {
            device: "s".into(),
            text: ScannedLines(vec!["A".into()]),
        };
        assert!(event_message(&scan, &subs).is_none());
    }

    #[test]
    fn images_must_be_png_or_jpeg_within_limits() {
        let png = {
            let img = image::GrayImage::from_pixel(3, 2, image::Luma([200]));
            let mut out = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                .expect("encode");
            base64::engine::general_purpose::STANDARD.encode(out)
        };
        let gray = decode_image(&png).expect("decodes");
        assert_eq!((gray.width, gray.height, gray.pixels.len()), (3, 2, 6));
        assert_eq!(decode_image("!!").expect_err("not base64").kind, "badImage");
        let gif = base64::engine::general_purpose::STANDARD.encode(b"GIF89a....");
        assert_eq!(decode_image(&gif).expect_err("gif").kind, "badImage");
    }
}
