//! Watching the USB bus: devices a plugin drives are attached when they appear and detached
//! when they go.
//!
//! The bus is rescanned on an interval (libusb's hot-plug callbacks are not available on every
//! platform, and a rescan is cheap next to a print job). On a machine without USB the watcher
//! logs that once and does nothing.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::Duration,
};

use devicehub_plugin_api::{DeviceKind, Setting};

use super::{Connection, DeviceSpec, DeviceTable};
use crate::{
    config::{DeviceAddress, DeviceEntry},
    plugins::{format_usb_id, PluginSet},
    transport::{self, usb::UsbBus},
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
        plugins: Arc<PluginSet>,
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
            .spawn(move || watch(bus, &plugins, &devices, &bindings, interval, &stop_flag))
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

fn watch(
    bus: UsbBus,
    plugins: &PluginSet,
    devices: &DeviceTable,
    bindings: &[DeviceEntry],
    interval: Duration,
    stop: &(Mutex<bool>, Condvar),
) {
    // Stable key -> device ID of what this watcher attached.
    let mut attached: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let present = bus.list();
        let keys: Vec<String> = present.iter().map(|d| d.stable_key()).collect();
        attached.retain(|key, id| {
            let still_there = keys.contains(key);
            if !still_there {
                devices.detach(id);
            }
            still_there
        });
        for info in present {
            let key = info.stable_key();
            if attached.contains_key(&key) {
                continue;
            }
            let binding = bindings.iter().find(|b| {
                DeviceAddress::parse(&b.address).ok()
                    == Some(DeviceAddress::Usb {
                        vendor_id: info.vendor_id,
                        product_id: info.product_id,
                    })
            });
            let Some(chosen) = plugins.lookup_usb(
                info.vendor_id,
                info.product_id,
                binding.and_then(|b| b.plugin.as_deref()),
            ) else {
                continue;
            };
            if chosen.plugin.manifest.kind != DeviceKind::Printer {
                // Scales and scanners are HID devices, opened through a HID API.
                continue;
            }
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
                plugin: chosen.plugin.clone(),
                profile: binding
                    .and_then(|b| b.profile.clone())
                    .unwrap_or_else(|| chosen.profile.clone()),
                model: Some(chosen.model.clone()),
                usb_id: Some((info.vendor_id, info.product_id)),
                connection: Some(Connection::Usb(info.clone())),
                settings: binding
                    .map(|b| b.settings.iter().map(|(k, v)| Setting::new(k, v)).collect())
                    .unwrap_or_default(),
            };
            match bus.open_printer(&info) {
                Ok(t) => match devices.attach(spec, transport::boxed(t)) {
                    Ok(_) => {
                        attached.insert(key, id);
                    }
                    Err(err) => tracing::warn!(device = %id, "USB device not attached: {err}"),
                },
                Err(err) => tracing::warn!(device = %id, "cannot open USB printer: {err}"),
            }
        }
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
    for id in attached.values() {
        devices.detach(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_and_stops_whether_or_not_usb_exists() {
        let mut watcher = UsbWatcher::start(
            Arc::new(PluginSet::default()),
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
