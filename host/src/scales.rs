//! Scale readings as a service: exact unit conversion, reads on each scale's device thread, and
//! changed readings published to local subscribers and the cloud's scale topic. The same task
//! publishes device attachments and detachments as live events for local subscribers.
//!
//! # Representation
//! A reading always carries the exact weight in whole micrograms. For people and shipping APIs
//! it also carries `value`, a decimal string in a wanted unit (`g`, `kg`, `oz` or `lb`) with as
//! many decimals as one display step of the scale needs in that unit (at most six), rounded once,
//! halves away from zero, from the exact rational number: `{"micrograms": 1500000000, "value":
//! "1.500", "unit": "kg", "resolutionMicrograms": 1000000}`. No floating point is involved, so
//! converting between g, kg, oz and lb never drifts.
//!
//! # When scales are read
//! The service reads every attached scale every [`READ_INTERVAL`] while someone wants readings:
//! a local subscriber (WebSocket client, RPC socket) follows the agent's live events, or the
//! cloud link is connected. Otherwise it reads nothing, so that an unwatched scale's serial line
//! stays quiet. Each read runs on the scale's own device thread with a short timeout
//! ([`POLL_TIMEOUT_MS`]), so a job or a local request for a stable reading queues behind at most
//! one poll. A reading is published only when it changed (state, weight or resolution), which
//! also limits local events to the read rate, and once more to everyone when a new local
//! subscriber arrives, so that it learns the current weight; the cloud's `devicehub/{thing}/scale` topic gets
//! at most one reading per scale per second, the newest (see [`crate::cloud::events`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use devicehub_plugin_api::{DeviceKind, PluginError, ScaleReading, ScaleState, WeightUnit};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, LocalEvent, ReadingView};
use crate::cloud::events::board;
use crate::cloud::link::LinkState;
use crate::devices::{DeviceError, DeviceSummary, DeviceTable, OpenedDevice};

/// How often each scale is read while someone wants readings (5 per second).
pub const READ_INTERVAL: Duration = Duration::from_millis(200);
/// How long one background read may wait for the scale to settle: short, so that requests
/// for a stable reading do not wait behind it.
pub const POLL_TIMEOUT_MS: u32 = 150;

/// A unit readings are converted to for people and shipping APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportUnit {
    Gram,
    Kilogram,
    Ounce,
    Pound,
}

impl ReportUnit {
    /// Parses `g`, `kg`, `oz` or `lb`.
    pub fn parse(text: &str) -> Option<ReportUnit> {
        match text {
            "g" => Some(ReportUnit::Gram),
            "kg" => Some(ReportUnit::Kilogram),
            "oz" => Some(ReportUnit::Ounce),
            "lb" => Some(ReportUnit::Pound),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ReportUnit::Gram => "g",
            ReportUnit::Kilogram => "kg",
            ReportUnit::Ounce => "oz",
            ReportUnit::Pound => "lb",
        }
    }

    /// The unit's size in micrograms as an exact fraction (numerator, denominator).
    fn micrograms(self) -> (i128, i128) {
        match self {
            ReportUnit::Gram => (1_000_000, 1),
            ReportUnit::Kilogram => (1_000_000_000, 1),
            // 28 349 523.125 ug.
            ReportUnit::Ounce => (226_796_185, 8),
            ReportUnit::Pound => (453_592_370, 1),
        }
    }

    /// The unit a scale displays, as a report unit (milligrams are reported in grams).
    pub fn from_display(unit: WeightUnit) -> ReportUnit {
        match unit {
            WeightUnit::Milligram | WeightUnit::Gram => ReportUnit::Gram,
            WeightUnit::Kilogram => ReportUnit::Kilogram,
            WeightUnit::Ounce => ReportUnit::Ounce,
            WeightUnit::Pound => ReportUnit::Pound,
        }
    }
}

/// The most decimals a value gets: one microgram is 10^-6 g.
const MAX_DECIMALS: u32 = 6;

/// How many decimals show one display step of `resolution_micrograms` in `unit`: the fewest
/// for which a step is at least half a unit of the last digit. The half absorbs the one
/// rounding of the step itself to whole micrograms (0.01 oz is 283 495.23 ug, stored as
/// 283 495 ug, and still shows as two decimals).
pub fn decimals_for(resolution_micrograms: u64, unit: ReportUnit) -> u32 {
    let (num, den) = unit.micrograms();
    let step = i128::from(resolution_micrograms.max(1));
    (0..=MAX_DECIMALS)
        .find(|&d| step * 10i128.pow(d) * 2 * den >= num)
        .unwrap_or(MAX_DECIMALS)
}

/// `micrograms` in `unit` as a decimal string with `decimals` places, rounded once, halves away
/// from zero.
pub fn format_value(micrograms: i64, unit: ReportUnit, decimals: u32) -> String {
    let (num, den) = unit.micrograms();
    let scale = 10i128.pow(decimals);
    // value * 10^d = micrograms * den * 10^d / num, rounded half away from zero.
    let numerator = i128::from(micrograms) * den * scale;
    let magnitude = (numerator.abs() * 2 + num) / (2 * num);
    let sign = if numerator < 0 && magnitude != 0 {
        "-"
    } else {
        ""
    };
    let whole = magnitude / scale;
    if decimals == 0 {
        format!("{sign}{whole}")
    } else {
        let fraction = magnitude % scale;
        format!(
            "{sign}{whole}.{fraction:0width$}",
            width = decimals as usize
        )
    }
}

/// The name of a reading's state in JSON and messages.
pub fn state_name(state: ScaleState) -> &'static str {
    match state {
        ScaleState::Stable => "stable",
        ScaleState::StableAtZero => "stable at zero",
        ScaleState::InMotion => "in motion",
        ScaleState::UnderZero => "under zero",
        ScaleState::OverCapacity => "over capacity",
        ScaleState::NeedsCalibration => "needs calibration",
        ScaleState::NeedsRezero => "needs re-zero",
        ScaleState::Fault => "fault",
    }
}

fn display_unit_name(unit: WeightUnit) -> &'static str {
    match unit {
        WeightUnit::Milligram => "mg",
        WeightUnit::Gram => "g",
        WeightUnit::Kilogram => "kg",
        WeightUnit::Ounce => "oz",
        WeightUnit::Pound => "lb",
    }
}

/// Milliseconds since the epoch, for reading timestamps.
pub fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A plugin's reading as local tools and the cloud see it, stamped now.
pub fn view(reading: &ScaleReading) -> ReadingView {
    ReadingView {
        state: state_name(reading.state),
        micrograms: reading.micrograms,
        resolution_micrograms: reading.resolution_micrograms,
        display_unit: display_unit_name(reading.display_unit),
        at_ms: epoch_millis(),
    }
}

/// A reading as JSON fields, with `value` in `unit` (the scale's display unit when `None`):
/// `state`, `micrograms`, `value`, `unit`, `resolutionMicrograms`, `displayUnit`, `atMs`.
pub fn reading_json(reading: &ReadingView, unit: Option<ReportUnit>) -> Value {
    let unit = unit.unwrap_or(match reading.display_unit {
        "kg" => ReportUnit::Kilogram,
        "oz" => ReportUnit::Ounce,
        "lb" => ReportUnit::Pound,
        _ => ReportUnit::Gram,
    });
    let decimals = decimals_for(reading.resolution_micrograms, unit);
    json!({
        "state": reading.state,
        "micrograms": reading.micrograms,
        "value": format_value(reading.micrograms, unit, decimals),
        "unit": unit.as_str(),
        "resolutionMicrograms": reading.resolution_micrograms,
        "displayUnit": reading.display_unit,
        "atMs": reading.at_ms,
    })
}

/// Why a scale could not be read or zeroed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ScaleError {
    #[error("no scale is attached")]
    NoScale,
    #[error("no such device: '{0}' is not attached")]
    NoSuchDevice(String),
    #[error("device '{0}' is not a scale")]
    NotAScale(String),
    #[error("scale '{id}' did not answer: {error}")]
    Device { id: String, error: DeviceError },
    #[error("scale '{id}' failed ({}): {}", .error.kind.as_str(), .error.message)]
    Plugin { id: String, error: PluginError },
}

/// The scale to use: `requested` when given (it must be an attached scale), else the first
/// attached scale in `preferred` (config order), else the attached scale with the smallest ID.
pub fn choose_scale(
    devices: &DeviceTable,
    preferred: &[String],
    requested: Option<&str>,
) -> Result<String, ScaleError> {
    let attached = devices.list();
    let scale = DeviceKind::Scale.as_str();
    if let Some(id) = requested {
        return match attached.iter().find(|d| d.id == id) {
            None => Err(ScaleError::NoSuchDevice(id.to_string())),
            Some(d) if d.kind != scale => Err(ScaleError::NotAScale(d.id.clone())),
            Some(d) => Ok(d.id.clone()),
        };
    }
    let scales: Vec<&str> = attached
        .iter()
        .filter(|d| d.kind == scale)
        .map(|d| d.id.as_str())
        .collect();
    preferred
        .iter()
        .find(|id| scales.contains(&id.as_str()))
        .cloned()
        .or_else(|| scales.iter().min().map(|id| id.to_string()))
        .ok_or(ScaleError::NoScale)
}

/// Reads scale `id` on its device thread, waiting at most `timeout_ms` for a stable weight.
pub async fn read_scale(
    devices: &DeviceTable,
    id: &str,
    timeout_ms: u32,
) -> Result<ScaleReading, ScaleError> {
    let worker = devices
        .get(id)
        .map_err(|_| ScaleError::NoSuchDevice(id.to_string()))?;
    let owned = id.to_string();
    let answer = worker
        .call_async(move |device| match device {
            OpenedDevice::Scale(scale) => scale
                .read(timeout_ms)
                .into_result()
                .map_err(|error| ScaleError::Plugin { id: owned, error }),
            _ => Err(ScaleError::NotAScale(owned)),
        })
        .await;
    answer.map_err(|error| ScaleError::Device {
        id: id.to_string(),
        error,
    })?
}

/// Zeroes (tares) scale `id` on its device thread.
pub async fn zero_scale(devices: &DeviceTable, id: &str) -> Result<(), ScaleError> {
    let worker = devices
        .get(id)
        .map_err(|_| ScaleError::NoSuchDevice(id.to_string()))?;
    let owned = id.to_string();
    let answer = worker
        .call_async(move |device| match device {
            OpenedDevice::Scale(scale) => scale
                .zero()
                .into_result()
                .map_err(|error| ScaleError::Plugin { id: owned, error }),
            _ => Err(ScaleError::NotAScale(owned)),
        })
        .await;
    answer.map_err(|error| ScaleError::Device {
        id: id.to_string(),
        error,
    })?
}

/// Whether two readings differ in what a subscriber cares about (not the timestamp).
fn changed(old: Option<&ReadingView>, new: &ReadingView) -> bool {
    match old {
        None => true,
        Some(old) => {
            (
                old.state,
                old.micrograms,
                old.resolution_micrograms,
                old.display_unit,
            ) != (
                new.state,
                new.micrograms,
                new.resolution_micrograms,
                new.display_unit,
            )
        }
    }
}

/// The readings service: reads attached scales while someone wants readings and publishes the
/// changed ones. See the module docs.
#[derive(Debug)]
pub struct ScaleReadings {
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl ScaleReadings {
    /// Starts the service for `agent`'s scales; it runs until [`ScaleReadings::stop`].
    pub fn start(agent: Arc<Agent>) -> ScaleReadings {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(agent, shutdown.clone()));
        ScaleReadings { task, shutdown }
    }

    /// Stops reading and waits for reads in flight to be abandoned.
    pub async fn stop(self) {
        self.shutdown.cancel();
        if let Err(e) = self.task.await {
            tracing::error!("the scale readings task failed: {e}");
        }
    }
}

/// Whether anyone wants readings now.
fn wanted(agent: &Agent) -> bool {
    agent.local_subscribers() > 0
        || matches!(*agent.link().borrow(), Some(LinkState::Connected { .. }))
}

async fn run(agent: Arc<Agent>, shutdown: CancellationToken) {
    let mut last: BTreeMap<String, ReadingView> = BTreeMap::new();
    let mut in_flight: JoinSet<(String, Result<ScaleReading, ScaleError>)> = JoinSet::new();
    // Scales with a read in flight.
    let mut reading: BTreeSet<String> = BTreeSet::new();
    let mut listeners = 0;
    // The device table as last seen, so that attachments and detachments reach local
    // subscribers as live events.
    let mut known: BTreeMap<String, DeviceSummary> = agent
        .devices()
        .list()
        .into_iter()
        .map(|d| (d.id.clone(), d))
        .collect();
    let mut tick = tokio::time::interval(READ_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let listed = agent.devices().list();
                follow_devices(&agent, &mut known, &listed);
                let scales: Vec<String> = listed
                    .into_iter()
                    .filter(|d| d.kind == DeviceKind::Scale.as_str())
                    .map(|d| d.id)
                    .collect();
                // A detached scale's last reading is forgotten, so that it is published again
                // when the scale comes back.
                last.retain(|id, _| scales.contains(id));
                if !wanted(&agent) {
                    last.clear();
                    continue;
                }
                // A new listener gets each scale's current reading at the next read, not only
                // the next change: forget what was published.
                let now_listening = agent.local_subscribers();
                if now_listening > listeners {
                    last.clear();
                }
                listeners = now_listening;
                for id in scales {
                    // One read per scale at a time: a slow scale never piles up reads.
                    if !reading.insert(id.clone()) {
                        continue;
                    }
                    let devices = agent.devices().clone();
                    in_flight.spawn(async move {
                        let result = read_scale(&devices, &id, POLL_TIMEOUT_MS).await;
                        (id, result)
                    });
                }
            }
            Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                let Ok((id, result)) = done else { continue };
                reading.remove(&id);
                match result {
                    Ok(plugin_reading) => {
                        let view = view(&plugin_reading);
                        if changed(last.get(&id), &view) {
                            publish(&agent, &id, &view);
                            last.insert(id, view);
                        }
                    }
                    Err(e) => tracing::debug!(device = %id, "scale poll failed: {e}"),
                }
            }
        }
    }
    in_flight.abort_all();
    while in_flight.join_next().await.is_some() {}
}

/// Publishes an event per device attached or detached since the last look.
fn follow_devices(
    agent: &Agent,
    known: &mut BTreeMap<String, DeviceSummary>,
    listed: &[DeviceSummary],
) {
    for device in listed {
        if known.get(&device.id) != Some(device) {
            agent.publish_local(LocalEvent::Device {
                device: device.clone(),
                attached: true,
            });
        }
    }
    for (id, device) in known.iter() {
        if !listed.iter().any(|d| &d.id == id) {
            agent.publish_local(LocalEvent::Device {
                device: device.clone(),
                attached: false,
            });
        }
    }
    *known = listed.iter().map(|d| (d.id.clone(), d.clone())).collect();
}

/// Publishes a changed reading locally and leaves it for the cloud's scale topic.
fn publish(agent: &Agent, id: &str, reading: &ReadingView) {
    let mut cloud = reading_json(reading, None);
    cloud["device"] = id.into();
    board(agent.health())
        .scale_readings
        .insert(id.to_string(), cloud);
    agent.publish_local(LocalEvent::Scale {
        device: id.to_string(),
        reading: reading.clone(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(micrograms: i64, resolution: u64, unit: ReportUnit) -> String {
        format_value(micrograms, unit, decimals_for(resolution, unit))
    }

    #[test]
    fn grams_and_kilograms_show_the_scales_step() {
        assert_eq!(value(100_000_000, 10_000, ReportUnit::Gram), "100.00");
        assert_eq!(
            value(1_500_000_000, 1_000_000, ReportUnit::Kilogram),
            "1.500"
        );
        assert_eq!(value(1_500_000_000, 1_000_000, ReportUnit::Gram), "1500");
        assert_eq!(
            value(12_345_000_000, 1_000_000, ReportUnit::Kilogram),
            "12.345"
        );
        assert_eq!(value(1, 1, ReportUnit::Gram), "0.000001");
    }

    #[test]
    fn ounces_and_pounds_round_once_from_exact_micrograms() {
        // 5.30 oz read by an MT-SICS scale: 150 252 473 ug, step 0.01 oz (283 495 ug).
        assert_eq!(value(150_252_473, 283_495, ReportUnit::Ounce), "5.30");
        // 1.250 lb: 566 990 463 ug, step 0.001 lb.
        assert_eq!(value(566_990_463, 453_592, ReportUnit::Pound), "1.250");
        // The same weight in ounces at the pound scale's step (0.016 oz: three decimals).
        assert_eq!(value(566_990_463, 453_592, ReportUnit::Ounce), "20.00");
        // 1 lb is exactly 16 oz, with no float drift either way.
        assert_eq!(format_value(453_592_370, ReportUnit::Ounce, 6), "16.000000");
        assert_eq!(format_value(453_592_370, ReportUnit::Pound, 6), "1.000000");
    }

    #[test]
    fn halves_round_away_from_zero_and_negative_weights_keep_their_sign() {
        assert_eq!(format_value(1_500_000, ReportUnit::Gram, 0), "2");
        assert_eq!(format_value(-1_500_000, ReportUnit::Gram, 0), "-2");
        assert_eq!(format_value(-1_499_999, ReportUnit::Gram, 0), "-1");
        assert_eq!(format_value(-400_000, ReportUnit::Gram, 0), "0");
        assert_eq!(
            value(-14_174_762, 283_495, ReportUnit::Ounce),
            "-0.50",
            "-0.5 oz"
        );
    }

    #[test]
    fn a_reading_is_published_only_when_it_changed() {
        let first = ReadingView {
            state: "stable",
            micrograms: 5,
            resolution_micrograms: 1,
            display_unit: "g",
            at_ms: 1,
        };
        let later = ReadingView {
            at_ms: 2,
            ..first.clone()
        };
        let heavier = ReadingView {
            micrograms: 6,
            ..first.clone()
        };
        let moving = ReadingView {
            state: "in motion",
            ..first.clone()
        };
        assert!(changed(None, &first));
        assert!(!changed(Some(&first), &later));
        assert!(changed(Some(&first), &heavier));
        assert!(changed(Some(&first), &moving));
    }

    #[test]
    fn json_carries_exact_micrograms_and_the_wanted_unit() {
        let reading = ReadingView {
            state: "stable",
            micrograms: 566_990_463,
            resolution_micrograms: 453_592,
            display_unit: "lb",
            at_ms: 7,
        };
        let own = reading_json(&reading, None);
        assert_eq!(own["value"], "1.250");
        assert_eq!(own["unit"], "lb");
        let grams = reading_json(&reading, Some(ReportUnit::Gram));
        assert_eq!(grams["value"], "567.0");
        assert_eq!(grams["micrograms"], 566_990_463);
        assert_eq!(grams["atMs"], 7);
    }
}
