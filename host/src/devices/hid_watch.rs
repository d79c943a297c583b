//! Watching HID devices: point-of-sale scales and keyboard-wedge address scanners a plugin
//! drives are attached when they appear and detached when they go, the way `usb_watch`
//! attaches USB printers.
//!
//! Scales and keyboard-wedge scanners are HID devices; on macOS and Windows the operating
//! system's HID driver owns them, so they are found and opened through a [`HidSource`] (hidapi
//! in production) rather than libusb. The source is rescanned on an interval. Where HID cannot
//! be used (hidapi fails to start), the watcher logs that once and does nothing; DeviceHub
//! carries on without HID devices.
//!
//! # Which devices
//! A HID device is attached when a loaded plugin claims it: its USB ID is in a scale or scanner
//! plugin's USB table, or a `[[devices]]` row binds its USB ID (`address = "usb://VID:PID"`)
//! and names the plugin (keyboard-wedge scanners are generic keyboards, found only this way).
//! Of a device's collections, a scale's is the one on the point-of-sale usage page and a
//! scanner's the one on the generic desktop page (where keyboards are); 0, from platforms that
//! cannot tell, matches both. Printers are USB printer-class devices: `usb_watch` attaches them.
//! An attached scanner is polled by [`crate::scanning::ScanPoller`] like a serial one, so its
//! blocks reach the same local subscribers and the cloud's scanner topic.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Condvar, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use devicehub_plugin_api::{DeviceKind, Setting};

use super::{choose_plugin, ChosenDriver, DeviceSpec, DeviceTable};
use crate::{
    config::{Config, DeviceAddress, DeviceEntry},
    plugins::{format_usb_id, PluginSet, SharedPlugins},
    transport::hid::{
        HidBus, HidDeviceInfo, HidError, HidSource, GENERIC_DESKTOP_USAGE_PAGE, POS_USAGE_PAGE,
    },
};

/// The background thread that watches HID devices.
#[derive(Debug)]
pub struct HidWatcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl HidWatcher {
    /// Starts watching the operating system's HID devices for the scales in `config`'s USB
    /// bindings and the plugins' USB tables, or returns a watcher that does nothing when HID
    /// cannot be used here.
    pub fn start_for_config(
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        config: &Config,
    ) -> HidWatcher {
        HidWatcher::start_opening(
            || HidBus::open().map(|bus| Box::new(bus) as Box<dyn HidSource>),
            plugins,
            devices,
            config,
        )
    }

    /// Like [`HidWatcher::start_for_config`], with the HID source from `open`.
    pub fn start_opening(
        open: impl FnOnce() -> Result<Box<dyn HidSource>, HidError>,
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        config: &Config,
    ) -> HidWatcher {
        let bindings = config
            .devices
            .iter()
            .filter(|d| {
                matches!(
                    DeviceAddress::parse(&d.address),
                    Ok(DeviceAddress::Usb { .. })
                )
            })
            .cloned()
            .collect();
        let interval = Duration::from_millis(config.usb.poll_interval_ms.max(100));
        match open() {
            Ok(source) => HidWatcher::start(source, plugins, devices, bindings, interval),
            Err(err) => {
                tracing::warn!("{err}; continuing without HID scales and scanners");
                HidWatcher::idle()
            }
        }
    }

    /// A watcher that watches nothing.
    pub fn idle() -> HidWatcher {
        HidWatcher {
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            thread: None,
        }
    }

    /// Starts watching `source`.
    pub fn start(
        mut source: Box<dyn HidSource>,
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        bindings: Vec<DeviceEntry>,
        interval: Duration,
    ) -> HidWatcher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("hid watcher".into())
            .spawn(move || {
                let mut scanner = HidScanner::default();
                loop {
                    // The current set each pass: plugins a rescan added match from then on.
                    let current = plugins.current();
                    scanner.scan(source.as_mut(), &current, &devices, &bindings);
                    if wait_or_stop(&stop_flag, interval) {
                        break;
                    }
                }
                scanner.detach_all(&devices);
            })
            .map_err(|e| tracing::error!("cannot start the HID watcher: {e}"))
            .ok();
        HidWatcher { stop, thread }
    }

    /// Whether a watcher thread runs.
    pub fn is_watching(&self) -> bool {
        self.thread.is_some()
    }

    /// Stops the watcher thread; the devices it attached are detached.
    pub fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the HID watcher thread panicked");
            }
        }
    }
}

impl Drop for HidWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits `interval` or until stopped; true when stopped.
fn wait_or_stop(stop: &(Mutex<bool>, Condvar), interval: Duration) -> bool {
    let (flag, wake) = stop;
    let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
    if *guard {
        return true;
    }
    let (guard, _) = wake
        .wait_timeout(guard, interval)
        .unwrap_or_else(|p| p.into_inner());
    *guard
}

/// What the watcher remembers between scans.
#[derive(Debug, Default)]
pub struct HidScanner {
    /// Stable key -> device ID of what this scanner attached.
    attached: BTreeMap<String, String>,
    /// Keys whose opening failed, so that the failure is logged once, not every scan.
    failed: BTreeSet<String>,
    /// The last listing error, logged once until it changes.
    last_error: Option<String>,
}

impl HidScanner {
    /// One pass: detaches devices that went away and attaches new ones a plugin drives.
    pub fn scan(
        &mut self,
        source: &mut dyn HidSource,
        plugins: &PluginSet,
        devices: &DeviceTable,
        bindings: &[DeviceEntry],
    ) {
        let present = match source.list() {
            Ok(present) => {
                self.last_error = None;
                present
            }
            Err(err) => {
                let message = err.to_string();
                if self.last_error.as_ref() != Some(&message) {
                    tracing::warn!("{message}");
                    self.last_error = Some(message);
                }
                return;
            }
        };
        let keys: BTreeSet<String> = present.iter().map(HidDeviceInfo::stable_key).collect();
        self.failed.retain(|key| keys.contains(key));
        self.attached.retain(|key, id| {
            let still_there = keys.contains(key);
            if !still_there {
                devices.detach(id);
            }
            still_there
        });
        for info in present {
            let key = info.stable_key();
            if self.attached.contains_key(&key) || self.failed.contains(&key) {
                continue;
            }
            if let Some(id) = attach(source, plugins, devices, bindings, &info, self) {
                self.attached.insert(key, id);
            }
        }
    }

    /// The IDs of the devices this scanner attached.
    pub fn attached_ids(&self) -> Vec<String> {
        self.attached.values().cloned().collect()
    }

    /// Detaches everything this scanner attached.
    pub fn detach_all(&mut self, devices: &DeviceTable) {
        for id in std::mem::take(&mut self.attached).values() {
            devices.detach(id);
        }
    }
}

fn device_suffix(info: &HidDeviceInfo) -> String {
    info.serial_number
        .clone()
        .unwrap_or_else(|| info.path.clone())
        .to_ascii_lowercase()
}

/// Whether `info` is the collection through which a device of `kind` delivers its reports. A
/// device may list several collections; the others are left alone.
fn collection_fits(kind: DeviceKind, info: &HidDeviceInfo) -> bool {
    let page = match kind {
        DeviceKind::Scale => POS_USAGE_PAGE,
        DeviceKind::Scanner => GENERIC_DESKTOP_USAGE_PAGE,
        DeviceKind::Printer => return false,
    };
    info.usage_page == page || info.usage_page == 0
}

/// Attaches `info` when a plugin drives it as a scale or scanner; returns the device ID.
fn attach(
    source: &mut dyn HidSource,
    plugins: &PluginSet,
    devices: &DeviceTable,
    bindings: &[DeviceEntry],
    info: &HidDeviceInfo,
    scanner: &mut HidScanner,
) -> Option<String> {
    let binding = bindings.iter().find(|b| {
        DeviceAddress::parse(&b.address).ok()
            == Some(DeviceAddress::Usb {
                vendor_id: info.vendor_id,
                product_id: info.product_id,
            })
    });
    // A row naming a plugin binds the device even when no USB table lists it (keyboard-wedge
    // scanners); without a row, only the plugins' USB tables claim devices.
    let chosen = match binding {
        Some(row) => {
            match choose_plugin(
                plugins,
                Some((info.vendor_id, info.product_id)),
                row.plugin.as_deref(),
            ) {
                Ok(chosen) => chosen,
                Err(err) => {
                    if scanner.failed.insert(info.stable_key()) {
                        tracing::warn!(device = %row.id, "HID device not attached: {err}");
                    }
                    return None;
                }
            }
        }
        None => {
            let found = plugins.lookup_usb(info.vendor_id, info.product_id, None)?;
            ChosenDriver {
                plugin: found.plugin.clone(),
                model: Some(found.model.clone()),
                profile: Some(found.profile.clone()),
            }
        }
    };
    let kind = chosen.plugin.manifest.kind;
    if !collection_fits(kind, info) {
        return None;
    }
    let Some(profile) = chosen.profile_or(binding.and_then(|b| b.profile.as_deref())) else {
        if scanner.failed.insert(info.stable_key()) {
            tracing::warn!(
                plugin = chosen.plugin.name(),
                "HID device not attached: the plugin has no default profile; bind it in \
                 [[devices]] with a profile"
            );
        }
        return None;
    };
    let id = binding.map(|b| b.id.clone()).unwrap_or_else(|| {
        let sanitized: String = device_suffix(info)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!(
            "hid-{}-{}",
            format_usb_id(info.vendor_id, info.product_id).replace(':', "-"),
            sanitized.trim_matches('-')
        )
        .to_ascii_lowercase()
    });
    if scanner.attached.values().any(|attached| *attached == id) {
        // Another collection of the same device (or a second device bound to the same
        // config row) already holds this ID.
        return None;
    }
    let spec = DeviceSpec {
        id: id.clone(),
        kind,
        plugin: chosen.plugin.clone(),
        profile,
        model: chosen.model.clone(),
        usb_id: Some((info.vendor_id, info.product_id)),
        connection: None,
        settings: binding
            .map(|b| b.settings.iter().map(|(k, v)| Setting::new(k, v)).collect())
            .unwrap_or_default(),
    };
    let key = info.stable_key();
    let transport = match source.open(info) {
        Ok(transport) => transport,
        Err(err) => {
            tracing::warn!(device = %id, kind = kind.as_str(), "cannot open HID device: {err}");
            scanner.failed.insert(key);
            return None;
        }
    };
    match devices.attach(spec, transport) {
        Ok(_) => Some(id),
        Err(err) => {
            tracing::warn!(device = %id, kind = kind.as_str(), "HID device not attached: {err}");
            scanner.failed.insert(key);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devicehub_plugin_api::TransportBox;

    /// A source whose listing always fails, as when hidraw disappears under a running host.
    struct BrokenSource;

    impl HidSource for BrokenSource {
        fn list(&mut self) -> Result<Vec<HidDeviceInfo>, HidError> {
            Err(HidError::List("no hidraw".into()))
        }
        fn open(&mut self, device: &HidDeviceInfo) -> Result<TransportBox, HidError> {
            Err(HidError::Open {
                path: device.path.clone(),
                message: "unreachable".into(),
            })
        }
    }

    #[test]
    fn starts_and_stops_whether_or_not_hid_works() {
        let config = Config::default();
        let mut watcher = HidWatcher::start_for_config(
            Arc::new(SharedPlugins::default()),
            Arc::new(DeviceTable::default()),
            &config,
        );
        assert_eq!(watcher.is_watching(), HidBus::open().is_ok());
        watcher.stop();
    }

    #[test]
    fn hid_that_cannot_start_leaves_an_idle_watcher() {
        let mut watcher = HidWatcher::start_opening(
            || Err(HidError::Unavailable("hid_init failed".into())),
            Arc::new(SharedPlugins::default()),
            Arc::new(DeviceTable::default()),
            &Config::default(),
        );
        assert!(!watcher.is_watching());
        watcher.stop();
    }

    #[test]
    fn a_failing_source_attaches_nothing_and_stops() {
        let devices = Arc::new(DeviceTable::default());
        let mut scanner = HidScanner::default();
        scanner.scan(&mut BrokenSource, &PluginSet::default(), &devices, &[]);
        scanner.scan(&mut BrokenSource, &PluginSet::default(), &devices, &[]);
        assert!(scanner.attached_ids().is_empty());
        assert!(devices.list().is_empty());
        let mut watcher = HidWatcher::start(
            Box::new(BrokenSource),
            Arc::new(SharedPlugins::default()),
            devices,
            Vec::new(),
            Duration::from_millis(5),
        );
        assert!(watcher.is_watching());
        watcher.stop();
    }
}
