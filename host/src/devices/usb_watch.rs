//! Watching the USB bus: devices a plugin drives are attached when they appear and detached
//! when they go.
//!
//! The bus is rescanned on an interval (libusb's hot-plug callbacks are not available on every
//! platform, and a rescan is cheap next to a print job). On a machine without USB the watcher
//! logs that once and does nothing.
//!
//! A device is matched by its USB vendor and product ID first. A printer whose USB ID no
//! plugin lists is opened once to read its IEEE-1284 device ID, which is then matched against
//! the plugins' rules ([`UsbAttachments`]). The bus sits behind [`UsbScanner`], so the decision
//! is tested with device lists fed in, on machines without USB.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use devicehub_plugin_api::{DeviceKind, Setting, TransportBox};

use super::{Connection, DeviceSpec, DeviceTable};
use crate::{
    config::{DeviceAddress, DeviceEntry},
    plugins::{format_usb_id, parse_ieee1284, LoadedPlugin, PluginSet, SharedPlugins},
    transport::{
        self,
        usb::{UsbBus, UsbDeviceInfo, PRINTER_CLASS},
    },
};

/// The background thread that watches the USB bus.
#[derive(Debug)]
pub struct UsbWatcher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
    available: Arc<AtomicBool>,
}

impl UsbWatcher {
    /// Starts watching, or returns a watcher that does nothing when USB is unavailable.
    pub fn start(
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        bindings: Vec<DeviceEntry>,
        interval: Duration,
    ) -> UsbWatcher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let available = Arc::new(AtomicBool::new(false));
        let bus = match UsbBus::open() {
            Ok(bus) => bus,
            Err(err) => {
                tracing::warn!("{err}; continuing without USB devices");
                return UsbWatcher {
                    stop,
                    thread: None,
                    available,
                };
            }
        };
        available.store(true, Ordering::Relaxed);
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("usb watcher".into())
            .spawn(move || {
                let attachments = UsbAttachments::following(plugins, devices, bindings);
                watch(bus, attachments, interval, &stop_flag)
            })
            .map_err(|e| tracing::error!("cannot start the USB watcher: {e}"))
            .ok();
        UsbWatcher {
            stop,
            thread,
            available,
        }
    }

    /// Whether USB could be opened on this machine.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Stops the watcher thread.
    pub fn stop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UsbWatcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What one scan of the bus found about one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScannedDevice {
    pub info: UsbDeviceInfo,
    /// The printer's IEEE-1284 device ID, when the scan was asked to read it.
    pub ieee1284_id: Option<String>,
}

/// The USB bus as the watcher uses it: the host's libusb bus, or a list a test feeds in.
pub trait UsbScanner {
    /// Every device present. For each device `wants_id` accepts, the IEEE-1284 device ID is
    /// read too (which opens the device's printer interface, so it is asked for sparingly).
    fn scan(&mut self, wants_id: &mut dyn FnMut(&UsbDeviceInfo) -> bool) -> Vec<ScannedDevice>;

    /// Opens the printer-class interface of `info`.
    fn open_printer(&mut self, info: &UsbDeviceInfo) -> Result<TransportBox, String>;
}

impl UsbScanner for UsbBus {
    fn scan(&mut self, wants_id: &mut dyn FnMut(&UsbDeviceInfo) -> bool) -> Vec<ScannedDevice> {
        self.list()
            .into_iter()
            .map(|info| {
                let ieee1284_id = if wants_id(&info) {
                    // The interface is released again when the transport is dropped here; the
                    // device is opened anew if a plugin matches.
                    match UsbBus::open_printer(self, &info) {
                        Ok(transport) => transport.ieee1284_id().map(str::to_owned),
                        Err(err) => {
                            tracing::debug!(
                                usb_id = %format_usb_id(info.vendor_id, info.product_id),
                                "cannot open the USB printer to read its IEEE-1284 ID: {err}"
                            );
                            None
                        }
                    }
                } else {
                    None
                };
                ScannedDevice { info, ieee1284_id }
            })
            .collect()
    }

    fn open_printer(&mut self, info: &UsbDeviceInfo) -> Result<TransportBox, String> {
        UsbBus::open_printer(self, info)
            .map(transport::boxed)
            .map_err(|e| e.to_string())
    }
}

/// How a USB device was matched to its plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedBy {
    /// A plugin's USB ID table lists the device's vendor and product ID.
    UsbId,
    /// The config's device table names the plugin for this USB ID.
    Config,
    /// A plugin's IEEE-1284 rule matches the printer's device ID.
    Ieee1284,
}

/// The plugin chosen for a USB device.
#[derive(Debug, Clone)]
struct UsbChoice {
    plugin: Arc<LoadedPlugin>,
    profile: String,
    model: Option<String>,
    matched_by: MatchedBy,
}

/// The USB devices the watcher attached, and the decision of which plugin drives each.
///
/// Matching order: the plugins' USB ID tables first (with the config's device table choosing
/// among several claimants); then a config row naming a plugin for that USB ID; then, for a
/// printer-class device no table claims, its IEEE-1284 device ID against the plugins' rules.
/// The ID is read once per device while it stays plugged in, and logged once.
#[derive(Debug)]
pub struct UsbAttachments {
    plugins: Arc<PluginSet>,
    /// The running agent's plugins, taken again at every pass so that plugins a rescan added
    /// match devices already plugged in; `None` for a fixed set.
    following: Option<Arc<SharedPlugins>>,
    devices: Arc<DeviceTable>,
    /// Config rows bound to USB IDs.
    bindings: Vec<DeviceEntry>,
    /// Stable key -> device ID of what was attached.
    attached: BTreeMap<String, String>,
    /// Stable key -> the IEEE-1284 ID read from a printer no USB ID table claims (`None` when
    /// it gave none), so that it is opened for its ID only once while it stays plugged in.
    identified: BTreeMap<String, Option<String>>,
}

impl UsbAttachments {
    /// Nothing attached yet.
    pub fn new(
        plugins: Arc<PluginSet>,
        devices: Arc<DeviceTable>,
        bindings: Vec<DeviceEntry>,
    ) -> Self {
        UsbAttachments {
            plugins,
            following: None,
            devices,
            bindings,
            attached: BTreeMap::new(),
            identified: BTreeMap::new(),
        }
    }

    /// Nothing attached yet; each pass uses the plugin set `plugins` holds then.
    pub fn following(
        plugins: Arc<SharedPlugins>,
        devices: Arc<DeviceTable>,
        bindings: Vec<DeviceEntry>,
    ) -> Self {
        let mut attachments = UsbAttachments::new(plugins.current(), devices, bindings);
        attachments.following = Some(plugins);
        attachments
    }

    /// The IDs of the devices attached by this watcher.
    pub fn attached_ids(&self) -> Vec<String> {
        self.attached.values().cloned().collect()
    }

    fn binding(&self, info: &UsbDeviceInfo) -> Option<&DeviceEntry> {
        self.bindings.iter().find(|b| {
            DeviceAddress::parse(&b.address).ok()
                == Some(DeviceAddress::Usb {
                    vendor_id: info.vendor_id,
                    product_id: info.product_id,
                })
        })
    }

    /// The plugin for a device by its USB ID or the config alone, without reading anything.
    fn choose_by_usb_id(&self, info: &UsbDeviceInfo) -> Option<UsbChoice> {
        let binding = self.binding(info);
        let preferred = binding.and_then(|b| b.plugin.as_deref());
        if let Some(found) = self
            .plugins
            .lookup_usb(info.vendor_id, info.product_id, preferred)
        {
            return Some(UsbChoice {
                plugin: found.plugin.clone(),
                profile: found.profile.clone(),
                model: Some(found.model.clone()),
                matched_by: MatchedBy::UsbId,
            });
        }
        let plugin = self.plugins.plugin(preferred?)?.clone();
        let profile = binding.and_then(|b| b.profile.clone()).or_else(|| {
            plugin
                .manifest
                .default_profile
                .clone()
                .into_option()
                .map(|p| p.to_string())
        })?;
        Some(UsbChoice {
            plugin,
            profile,
            model: None,
            matched_by: MatchedBy::Config,
        })
    }

    /// Whether the device's IEEE-1284 ID must be read: a printer no USB ID table or config row
    /// claims, not asked before while plugged in.
    fn needs_ieee1284_id(&self, info: &UsbDeviceInfo) -> bool {
        info.classes.contains(&PRINTER_CLASS)
            && !self.identified.contains_key(&info.stable_key())
            && self.choose_by_usb_id(info).is_none()
    }

    fn choose(&self, info: &UsbDeviceInfo) -> Option<UsbChoice> {
        if let Some(choice) = self.choose_by_usb_id(info) {
            return Some(choice);
        }
        let id = self.identified.get(&info.stable_key())?.as_deref()?;
        let (plugin, profile) = self.plugins.lookup_ieee1284(id)?;
        let model = parse_ieee1284(id).remove("MDL").filter(|m| !m.is_empty());
        Some(UsbChoice {
            plugin,
            profile,
            model,
            matched_by: MatchedBy::Ieee1284,
        })
    }

    /// Notes the IEEE-1284 ID a scan read, and logs it with the outcome once.
    fn identify(&mut self, device: &ScannedDevice) {
        let key = device.info.stable_key();
        let usb_id = format_usb_id(device.info.vendor_id, device.info.product_id);
        self.identified.insert(key, device.ieee1284_id.clone());
        match &device.ieee1284_id {
            None => tracing::info!(
                %usb_id,
                "USB printer with a USB ID no plugin lists gave no IEEE-1284 device ID; \
                 name its plugin in the config's device table to use it"
            ),
            Some(id) => match self.plugins.lookup_ieee1284(id) {
                Some((plugin, profile)) => tracing::info!(
                    %usb_id,
                    ieee1284_id = %id,
                    plugin = plugin.name(),
                    %profile,
                    "USB printer matched by its IEEE-1284 device ID"
                ),
                None => tracing::info!(
                    %usb_id,
                    ieee1284_id = %id,
                    "no plugin drives this USB printer: neither its USB ID nor its IEEE-1284 \
                     device ID matches a loaded plugin"
                ),
            },
        }
    }

    /// One pass over the bus: detaches the devices that went away and attaches new ones.
    pub fn rescan(&mut self, scanner: &mut dyn UsbScanner) {
        if let Some(shared) = &self.following {
            self.plugins = shared.current();
        }
        let present = scanner.scan(&mut |info| self.needs_ieee1284_id(info));
        let keys: BTreeSet<String> = present.iter().map(|d| d.info.stable_key()).collect();
        let devices = &self.devices;
        self.attached.retain(|key, id| {
            let still_there = keys.contains(key);
            if !still_there {
                devices.detach(id);
            }
            still_there
        });
        self.identified.retain(|key, _| keys.contains(key));
        for device in present {
            if self.needs_ieee1284_id(&device.info) {
                self.identify(&device);
            }
            let key = device.info.stable_key();
            if self.attached.contains_key(&key) {
                continue;
            }
            let Some(chosen) = self.choose(&device.info) else {
                continue;
            };
            if chosen.plugin.manifest.kind != DeviceKind::Printer {
                // Scales and scanners are HID devices, opened through a HID API.
                continue;
            }
            if let Some(id) = self.attach(scanner, &device.info, chosen) {
                self.attached.insert(key, id);
            }
        }
    }

    fn attach(
        &self,
        scanner: &mut dyn UsbScanner,
        info: &UsbDeviceInfo,
        chosen: UsbChoice,
    ) -> Option<String> {
        let binding = self.binding(info);
        let id = binding.map(|b| b.id.clone()).unwrap_or_else(|| {
            format!(
                "usb-{}-{}",
                format_usb_id(info.vendor_id, info.product_id).replace(':', "-"),
                info.serial_number
                    .clone()
                    .unwrap_or_else(|| info.port_path.clone())
            )
            .to_ascii_lowercase()
        });
        let spec = DeviceSpec {
            id: id.clone(),
            kind: DeviceKind::Printer,
            plugin: chosen.plugin,
            profile: binding
                .and_then(|b| b.profile.clone())
                .unwrap_or(chosen.profile),
            model: chosen.model,
            usb_id: Some((info.vendor_id, info.product_id)),
            connection: Some(Connection::Usb(info.clone())),
            settings: binding
                .map(|b| b.settings.iter().map(|(k, v)| Setting::new(k, v)).collect())
                .unwrap_or_default(),
        };
        let matched_by = chosen.matched_by;
        match scanner.open_printer(info) {
            Ok(transport) => match self.devices.attach(spec, transport) {
                Ok(_) => {
                    tracing::debug!(device = %id, ?matched_by, "USB printer attached");
                    Some(id)
                }
                Err(err) => {
                    tracing::warn!(device = %id, "USB device not attached: {err}");
                    None
                }
            },
            Err(err) => {
                tracing::warn!(device = %id, "cannot open USB printer: {err}");
                None
            }
        }
    }

    /// Detaches everything this watcher attached.
    pub fn detach_all(&mut self) {
        for id in self.attached.values() {
            self.devices.detach(id);
        }
        self.attached.clear();
    }
}

fn watch(
    mut bus: UsbBus,
    mut attachments: UsbAttachments,
    interval: Duration,
    stop: &(Mutex<bool>, Condvar),
) {
    loop {
        attachments.rescan(&mut bus);
        let (flag, wake) = stop;
        let guard = flag.lock().unwrap_or_else(|p| p.into_inner());
        if *guard {
            break;
        }
        let (guard, _) = wake
            .wait_timeout(guard, interval)
            .unwrap_or_else(|p| p.into_inner());
        if *guard {
            break;
        }
    }
    attachments.detach_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_stops_whether_or_not_usb_exists() {
        let mut watcher = UsbWatcher::start(
            Arc::new(SharedPlugins::default()),
            Arc::new(DeviceTable::default()),
            Vec::new(),
            Duration::from_millis(10),
        );
        // Where libusb cannot start (containers, CI), the watcher says so and does nothing;
        // either way it stops cleanly.
        assert_eq!(watcher.is_available(), UsbBus::open().is_ok());
        watcher.stop();
    }
}
