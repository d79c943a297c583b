//! Devices: choosing a plugin for each device, opening it, and running it on its own thread.
//!
//! Every attached device gets a dedicated thread that owns the plugin's device object and its
//! transport. Calls into the plugin block on device I/O, so they never run on async workers;
//! callers hand the thread a closure and wait for the answer (blocking or async). One device's
//! slow or hung printer therefore never delays another's.

pub mod hid_watch;
pub mod usb_watch;

use std::{
    collections::BTreeMap,
    fmt,
    sync::{mpsc, Arc, Mutex},
    thread::JoinHandle,
};

use devicehub_plugin_api::{
    abi_stable::std_types::{ROption, RVec},
    DeviceKind, OpenRequest, PluginError, PrintJob, PrintReport, PrinterBox, PrinterProfile,
    PrinterStatus, ScaleBox, ScannerBox, Setting, TransportBox,
};

use crate::{
    config::{DeviceAddress, DeviceEntry},
    plugins::{format_usb_id, parse_usb_id, LoadedPlugin, PluginSet},
    transport::{self, serial::SerialSettings, usb::UsbDeviceInfo},
};

/// Where a device is attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    Tcp(String),
    Serial {
        path: String,
        settings: SerialSettings,
    },
    Usb(UsbDeviceInfo),
    /// An office printer or print queue reached over IPP (see [`crate::sheets`]).
    Ipp(crate::sheets::SheetAddress),
    /// No device behind the plugin (`none://`): a virtual device such as OCR.
    None,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connection::Tcp(addr) => write!(f, "tcp://{addr}"),
            Connection::Serial { path, .. } => write!(f, "serial://{path}"),
            Connection::Usb(info) => write!(
                f,
                "usb {} ({})",
                info.port_path,
                format_usb_id(info.vendor_id, info.product_id)
            ),
            Connection::Ipp(address) => f.write_str(&address.uri),
            Connection::None => f.write_str("none://"),
        }
    }
}

/// A device with its driver chosen: everything needed to open it.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub id: String,
    pub kind: DeviceKind,
    pub plugin: Arc<LoadedPlugin>,
    pub profile: String,
    pub model: Option<String>,
    pub usb_id: Option<(u16, u16)>,
    pub connection: Option<Connection>,
    pub settings: Vec<Setting>,
}

impl DeviceSpec {
    /// The printer capabilities of this device's profile.
    pub fn printer_profile(&self) -> Option<&PrinterProfile> {
        self.plugin.manifest.printer_profile(&self.profile)
    }
}

/// Why a device could not be set up or used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeviceError {
    #[error("no device '{0}' (see `devicehub devices`)")]
    NoSuchDevice(String),
    #[error("device '{id}': {message}")]
    Config { id: String, message: String },
    #[error("no loaded plugin drives USB ID {0} (see `devicehub plugins`)")]
    UnknownUsbId(String),
    #[error("no plugin named '{0}' is loaded (see `devicehub plugins`)")]
    UnknownPlugin(String),
    #[error("device '{id}' cannot be opened: {message}")]
    Open { id: String, message: String },
    #[error("device '{id}' is a {actual}, not a {wanted}")]
    WrongKind {
        id: String,
        wanted: &'static str,
        actual: &'static str,
    },
    #[error("device '{id}': {error}")]
    Plugin { id: String, error: PluginError },
    #[error("device '{0}' was detached")]
    Detached(String),
}

impl DeviceError {
    /// The plugin's error, when the plugin reported one.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            DeviceError::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Resolves a device-table row to a spec.
pub fn resolve_entry(entry: &DeviceEntry, plugins: &PluginSet) -> Result<DeviceSpec, DeviceError> {
    let config_error = |message: String| DeviceError::Config {
        id: entry.id.clone(),
        message,
    };
    let address = DeviceAddress::parse(&entry.address).map_err(config_error)?;
    // Office printers are driven by the built-in IPP driver, whatever the row says.
    if let DeviceAddress::Ipp(uri) = &address {
        return sheet_spec(
            &entry.id,
            crate::sheets::IPP_DRIVER,
            None,
            crate::sheets::SheetAddress {
                uri: uri.clone(),
                via_socket: None,
            },
        );
    }
    let usb_id = match &entry.usb_id {
        Some(text) => Some(
            parse_usb_id(text)
                .ok_or_else(|| config_error(format!("usb_id {text:?} is not VID:PID")))?,
        ),
        None => match address {
            DeviceAddress::Usb {
                vendor_id,
                product_id,
            } => Some((vendor_id, product_id)),
            _ => None,
        },
    };
    let chosen = choose_plugin(plugins, usb_id, entry.plugin.as_deref())?;
    let profile = chosen.profile_or(entry.profile.as_deref());
    let ChosenDriver { plugin, model, .. } = chosen;
    let profile = profile.ok_or_else(|| {
        config_error(format!(
            "plugin '{}' has no default profile: set `profile`",
            plugin.name()
        ))
    })?;
    if plugin.manifest.kind == DeviceKind::Printer
        && plugin.manifest.printer_profile(&profile).is_none()
    {
        let known: Vec<&str> = plugin
            .manifest
            .printer_profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err(config_error(format!(
            "plugin '{}' has no profile '{profile}' (it has: {})",
            plugin.name(),
            known.join(", ")
        )));
    }
    let connection = match address {
        DeviceAddress::Tcp(addr) => Some(Connection::Tcp(addr)),
        DeviceAddress::Serial(address) => {
            let (path, settings) =
                SerialSettings::from_address(&address, entry.serial.clone().unwrap_or_default())
                    .map_err(|e| config_error(e.to_string()))?;
            Some(Connection::Serial { path, settings })
        }
        // Bound to a USB device: connected when the device is discovered.
        DeviceAddress::Usb { .. } => None,
        DeviceAddress::Ipp(uri) => Some(Connection::Ipp(crate::sheets::SheetAddress {
            uri,
            via_socket: None,
        })),
        DeviceAddress::None => Some(Connection::None),
    };
    Ok(DeviceSpec {
        id: entry.id.clone(),
        kind: plugin.manifest.kind,
        profile,
        model,
        usb_id,
        connection,
        settings: entry
            .settings
            .iter()
            .map(|(k, v)| Setting::new(k, v))
            .collect(),
        plugin,
    })
}

/// The spec of a sheet printer driven by the built-in driver `driver` (see [`crate::sheets`]).
pub fn sheet_spec(
    id: &str,
    driver: &str,
    model: Option<String>,
    address: crate::sheets::SheetAddress,
) -> Result<DeviceSpec, DeviceError> {
    let plugin =
        crate::sheets::driver(driver).ok_or_else(|| DeviceError::UnknownPlugin(driver.into()))?;
    Ok(DeviceSpec {
        id: id.to_string(),
        kind: DeviceKind::Printer,
        plugin,
        profile: crate::sheets::SHEET_PROFILE.to_string(),
        model,
        usb_id: None,
        connection: Some(Connection::Ipp(address)),
        settings: Vec::new(),
    })
}

/// The plugin chosen for a device, with the model row that chose it when there is one.
#[derive(Debug, Clone)]
pub struct ChosenDriver {
    pub plugin: Arc<LoadedPlugin>,
    pub model: Option<String>,
    /// The model's profile.
    pub profile: Option<String>,
}

impl ChosenDriver {
    /// The profile to use: `explicit` (from the config or command line), else the model's, else
    /// the plugin's default.
    pub fn profile_or(&self, explicit: Option<&str>) -> Option<String> {
        explicit
            .map(str::to_string)
            .or_else(|| self.profile.clone())
            .or_else(|| {
                self.plugin
                    .manifest
                    .default_profile
                    .as_ref()
                    .map(|p| p.to_string())
                    .into_option()
            })
    }
}

/// Chooses the plugin for a USB ID and/or plugin name.
pub fn choose_plugin(
    plugins: &PluginSet,
    usb_id: Option<(u16, u16)>,
    plugin_name: Option<&str>,
) -> Result<ChosenDriver, DeviceError> {
    if let Some((vid, pid)) = usb_id {
        if let Some(binding) = plugins.lookup_usb(vid, pid, plugin_name) {
            if plugin_name.is_none_or(|name| name == binding.plugin.name()) {
                return Ok(ChosenDriver {
                    plugin: binding.plugin.clone(),
                    model: Some(binding.model.clone()),
                    profile: Some(binding.profile.clone()),
                });
            }
        }
        if plugin_name.is_none() {
            return Err(DeviceError::UnknownUsbId(format_usb_id(vid, pid)));
        }
    }
    let name = plugin_name.expect("either a USB ID matched or a plugin name was given");
    let plugin = plugins
        .plugin(name)
        .ok_or_else(|| DeviceError::UnknownPlugin(name.to_string()))?;
    Ok(ChosenDriver {
        plugin: plugin.clone(),
        model: None,
        profile: None,
    })
}

/// Opens the transport for `connection`.
pub fn open_transport(
    connection: &Connection,
    usb: Option<&transport::usb::UsbBus>,
) -> Result<TransportBox, String> {
    match connection {
        Connection::Tcp(addr) => Ok(transport::boxed(transport::tcp::TcpTransport::new(addr))),
        Connection::Serial { path, settings } => {
            transport::serial::SerialTransport::open(path, settings)
                .map(transport::boxed)
                .map_err(|e| e.to_string())
        }
        Connection::Usb(info) => {
            let bus = usb.ok_or_else(|| "USB is not available".to_string())?;
            bus.open_printer(info)
                .map(transport::boxed)
                .map_err(|e| e.to_string())
        }
        // A virtual device's plugin never talks to a device: reads time out, writes are kept.
        Connection::None => Ok(transport::boxed(transport::capture::CaptureTransport::new())),
        Connection::Ipp(address) => Err(format!(
            "{} is an IPP printer: it is opened with its URI, not as a byte stream",
            address.uri
        )),
    }
}

/// Opens the device `spec` describes: over a transport for plugin devices, from its URI for
/// sheet printers (IPP, with `sheets`' limits and TLS roots).
pub fn open_connected(
    spec: &DeviceSpec,
    usb: Option<&transport::usb::UsbBus>,
    sheets: &crate::sheets::SheetsConfig,
) -> Result<OpenedDevice, DeviceError> {
    let open_error = |message: String| DeviceError::Open {
        id: spec.id.clone(),
        message,
    };
    let connection = spec
        .connection
        .as_ref()
        .ok_or_else(|| open_error("it is bound to USB and not attached".to_string()))?;
    match connection {
        Connection::Ipp(address) => {
            let client = crate::sheets::client_for(address, sheets)
                .map_err(|e| open_error(e.to_string()))?;
            Ok(OpenedDevice::Printer(crate::sheets::open_printer(client)))
        }
        other => {
            let transport = open_transport(other, usb).map_err(open_error)?;
            open_device(spec, transport)
        }
    }
}

/// A device object returned by a plugin.
pub enum OpenedDevice {
    Printer(PrinterBox),
    Scale(ScaleBox),
    Scanner(ScannerBox),
}

impl fmt::Debug for OpenedDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenedDevice::Printer(_) => "OpenedDevice::Printer",
            OpenedDevice::Scale(_) => "OpenedDevice::Scale",
            OpenedDevice::Scanner(_) => "OpenedDevice::Scanner",
        })
    }
}

/// Asks the spec's plugin to open the device over `transport`.
pub fn open_device(
    spec: &DeviceSpec,
    transport: TransportBox,
) -> Result<OpenedDevice, DeviceError> {
    let request = OpenRequest {
        device_id: spec.id.as_str().into(),
        profile: spec.profile.as_str().into(),
        model: spec.model.clone().map(Into::into).into(),
        settings: RVec::from(spec.settings.clone()),
    };
    let module = &spec.plugin.module;
    let plugin_error = |error: PluginError| DeviceError::Plugin {
        id: spec.id.clone(),
        error,
    };
    Ok(match spec.kind {
        DeviceKind::Printer => OpenedDevice::Printer(
            module.open_printer()(&request, transport)
                .into_result()
                .map_err(plugin_error)?,
        ),
        DeviceKind::Scale => OpenedDevice::Scale(
            module.open_scale()(&request, transport)
                .into_result()
                .map_err(plugin_error)?,
        ),
        DeviceKind::Scanner => OpenedDevice::Scanner(
            module.open_scanner()(&request, transport)
                .into_result()
                .map_err(plugin_error)?,
        ),
    })
}

type Task = Box<dyn FnOnce(&mut OpenedDevice) + Send>;

/// The thread that owns one opened device.
#[derive(Debug)]
pub struct DeviceWorker {
    spec: Arc<DeviceSpec>,
    tasks: Mutex<Option<mpsc::Sender<Task>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl DeviceWorker {
    /// Starts the device's thread, which owns `device` until [`DeviceWorker::stop`].
    pub fn start(spec: DeviceSpec, mut device: OpenedDevice) -> Result<DeviceWorker, DeviceError> {
        let (tx, rx) = mpsc::channel::<Task>();
        let thread = std::thread::Builder::new()
            .name(format!("device {}", spec.id))
            .spawn(move || {
                while let Ok(task) = rx.recv() {
                    task(&mut device);
                }
            })
            .map_err(|e| DeviceError::Open {
                id: spec.id.clone(),
                message: format!("cannot start its thread: {e}"),
            })?;
        Ok(DeviceWorker {
            spec: Arc::new(spec),
            tasks: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn spec(&self) -> &Arc<DeviceSpec> {
        &self.spec
    }

    fn send<R: Send + 'static>(
        &self,
        body: impl FnOnce(&mut OpenedDevice) -> R + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<R>, DeviceError> {
        let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
        let task: Task = Box::new(move |device| {
            // The caller may have given up waiting; nothing to do then.
            let _ = reply_tx.send(body(device));
        });
        let tasks = self
            .tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tasks
            .as_ref()
            .ok_or_else(|| DeviceError::Detached(self.spec.id.clone()))?
            .send(task)
            .map_err(|_| DeviceError::Detached(self.spec.id.clone()))?;
        Ok(reply_rx)
    }

    /// Runs `body` on the device's thread and waits for it (from a blocking context).
    pub fn call<R: Send + 'static>(
        &self,
        body: impl FnOnce(&mut OpenedDevice) -> R + Send + 'static,
    ) -> Result<R, DeviceError> {
        self.send(body)?
            .blocking_recv()
            .map_err(|_| DeviceError::Detached(self.spec.id.clone()))
    }

    /// Runs `body` on the device's thread and waits for it (from async code).
    pub async fn call_async<R: Send + 'static>(
        &self,
        body: impl FnOnce(&mut OpenedDevice) -> R + Send + 'static,
    ) -> Result<R, DeviceError> {
        self.send(body)?
            .await
            .map_err(|_| DeviceError::Detached(self.spec.id.clone()))
    }

    /// Lets queued calls finish, then ends the thread and drops the device.
    pub fn stop(&self) {
        self.tasks
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!(device = %self.spec.id, "device thread panicked");
            }
        }
    }

    /// Prints `job` on this printer (from a blocking context).
    pub fn print(&self, job: PrintJob) -> Result<PrintReport, DeviceError> {
        self.call(print_task(self.spec.id.clone(), job))?
    }

    /// Prints `job` on this printer (from async code).
    pub async fn print_async(&self, job: PrintJob) -> Result<PrintReport, DeviceError> {
        self.call_async(print_task(self.spec.id.clone(), job))
            .await?
    }

    /// Asks this printer for its status (from a blocking context).
    pub fn printer_status(&self) -> Result<PrinterStatus, DeviceError> {
        self.call(status_task(self.spec.id.clone()))?
    }

    /// Asks this printer for its status (from async code).
    pub async fn printer_status_async(&self) -> Result<PrinterStatus, DeviceError> {
        self.call_async(status_task(self.spec.id.clone())).await?
    }
}

fn print_task(
    id: String,
    job: PrintJob,
) -> impl FnOnce(&mut OpenedDevice) -> Result<PrintReport, DeviceError> + Send + 'static {
    move |device| match device {
        OpenedDevice::Printer(p) => p
            .print(&job)
            .into_result()
            .map_err(|error| DeviceError::Plugin { id, error }),
        other => Err(DeviceError::WrongKind {
            id,
            wanted: "printer",
            actual: kind_name(other),
        }),
    }
}

fn status_task(
    id: String,
) -> impl FnOnce(&mut OpenedDevice) -> Result<PrinterStatus, DeviceError> + Send + 'static {
    move |device| match device {
        OpenedDevice::Printer(p) => p
            .status()
            .into_result()
            .map_err(|error| DeviceError::Plugin { id, error }),
        other => Err(DeviceError::WrongKind {
            id,
            wanted: "printer",
            actual: kind_name(other),
        }),
    }
}

fn kind_name(device: &OpenedDevice) -> &'static str {
    match device {
        OpenedDevice::Printer(_) => "printer",
        OpenedDevice::Scale(_) => "scale",
        OpenedDevice::Scanner(_) => "scanner",
    }
}

impl Drop for DeviceWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Encodes `job` for a model without any device: the bytes a printer would receive.
pub fn encode_offline(spec: &DeviceSpec, job: &PrintJob) -> Result<Vec<u8>, DeviceError> {
    let capture = transport::capture::CaptureTransport::new();
    let device = open_device(spec, transport::boxed(capture))?;
    match device {
        OpenedDevice::Printer(mut printer) => printer
            .encode(job)
            .into_result()
            .map(|bytes| bytes.into_vec())
            .map_err(|error| DeviceError::Plugin {
                id: spec.id.clone(),
                error,
            }),
        other => Err(DeviceError::WrongKind {
            id: spec.id.clone(),
            wanted: "printer",
            actual: kind_name(&other),
        }),
    }
}

/// One line about an attached device, for listings and the cloud.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceSummary {
    pub id: String,
    pub kind: &'static str,
    pub plugin: String,
    pub plugin_version: String,
    pub profile: String,
    pub model: Option<String>,
    pub usb_id: Option<String>,
    pub connection: Option<String>,
}

/// A device that could not be attached, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceProblem {
    pub id: String,
    pub reason: String,
}

/// The attached devices, by ID.
#[derive(Debug, Default)]
pub struct DeviceTable {
    devices: Mutex<BTreeMap<String, Arc<DeviceWorker>>>,
    problems: Mutex<Vec<DeviceProblem>>,
}

impl DeviceTable {
    /// Opens every device in the config's device table that has a connection (USB-bound rows
    /// attach when the USB device is discovered).
    pub fn from_config(entries: &[DeviceEntry], plugins: &PluginSet) -> DeviceTable {
        DeviceTable::from_config_with(entries, plugins, &crate::sheets::SheetsConfig::default())
    }

    /// [`DeviceTable::from_config`] with the config's `[system_printers]` settings for IPP
    /// printers.
    pub fn from_config_with(
        entries: &[DeviceEntry],
        plugins: &PluginSet,
        sheets: &crate::sheets::SheetsConfig,
    ) -> DeviceTable {
        let table = DeviceTable::default();
        for entry in entries {
            let attached = resolve_entry(entry, plugins).and_then(|spec| match &spec.connection {
                Some(_) => {
                    let device = open_connected(&spec, None, sheets)?;
                    table.attach_opened(spec, device).map(|_| ())
                }
                None => Ok(()),
            });
            if let Err(err) = attached {
                tracing::warn!(device = %entry.id, "device not attached: {err}");
                table.problem(&entry.id, err.to_string());
            }
        }
        table
    }

    /// Records why the device `id` is not attached (replacing an earlier reason).
    pub fn problem(&self, id: &str, reason: String) {
        let mut problems = self
            .problems
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        problems.retain(|p| p.id != id);
        problems.push(DeviceProblem {
            id: id.to_string(),
            reason,
        });
    }

    /// Opens `spec` over `transport` and adds it to the table.
    pub fn attach(
        &self,
        spec: DeviceSpec,
        transport: TransportBox,
    ) -> Result<Arc<DeviceWorker>, DeviceError> {
        let device = open_device(&spec, transport)?;
        self.attach_opened(spec, device)
    }

    /// Adds the queues of the local print server (see [`crate::sheets::discovery`]) that the
    /// table does not hold yet. A machine without one is no error.
    pub fn attach_system_printers(&self, sheets: &crate::sheets::SheetsConfig) {
        let queues = match crate::sheets::discovery::discover(sheets) {
            Ok(queues) => queues,
            Err(err) => {
                tracing::warn!("system print queues not listed: {err}");
                return;
            }
        };
        for queue in queues {
            if self.get(&queue.id).is_ok() {
                continue;
            }
            let id = queue.id.clone();
            let attached = sheet_spec(
                &queue.id,
                crate::sheets::SYSTEM_DRIVER,
                queue.attributes.make_and_model.clone(),
                queue.address,
            )
            .and_then(|spec| {
                let device = open_connected(&spec, None, sheets)?;
                self.attach_opened(spec, device)
            });
            if let Err(err) = attached {
                tracing::warn!(device = %id, "print queue not attached: {err}");
                self.problem(&id, err.to_string());
            }
        }
    }

    /// Adds an opened device to the table, on its own thread.
    pub fn attach_opened(
        &self,
        spec: DeviceSpec,
        device: OpenedDevice,
    ) -> Result<Arc<DeviceWorker>, DeviceError> {
        let id = spec.id.clone();
        tracing::info!(
            device = %id,
            plugin = spec.plugin.name(),
            profile = %spec.profile,
            connection = %spec.connection.as_ref().map(ToString::to_string).unwrap_or_default(),
            "device attached"
        );
        let worker = Arc::new(DeviceWorker::start(spec, device)?);
        let previous = self
            .devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(id.clone(), worker.clone());
        if let Some(previous) = previous {
            previous.stop();
        }
        self.problems
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .retain(|p| p.id != id);
        Ok(worker)
    }

    /// Removes a device; calls already queued on it finish first.
    pub fn detach(&self, id: &str) -> bool {
        let removed = self
            .devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
        match removed {
            Some(worker) => {
                worker.stop();
                tracing::info!(device = %id, "device detached");
                true
            }
            None => false,
        }
    }

    /// The device with this ID.
    pub fn get(&self, id: &str) -> Result<Arc<DeviceWorker>, DeviceError> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| DeviceError::NoSuchDevice(id.to_string()))
    }

    /// Every attached device.
    pub fn list(&self) -> Vec<DeviceSummary> {
        self.devices
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .map(|worker| summarize(worker.spec()))
            .collect()
    }

    /// Devices from the config that could not be attached.
    pub fn problems(&self) -> Vec<DeviceProblem> {
        self.problems
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Stops every device thread.
    pub fn shutdown(&self) {
        let all: Vec<_> = std::mem::take(
            &mut *self
                .devices
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
        .into_values()
        .collect();
        for worker in all {
            worker.stop();
        }
    }
}

/// The summary line of a spec.
pub fn summarize(spec: &DeviceSpec) -> DeviceSummary {
    DeviceSummary {
        id: spec.id.clone(),
        kind: spec.kind.as_str(),
        plugin: spec.plugin.name().to_string(),
        plugin_version: spec.plugin.version.to_string(),
        profile: spec.profile.clone(),
        model: spec.model.clone(),
        usb_id: spec.usb_id.map(|(v, p)| format_usb_id(v, p)),
        connection: spec.connection.as_ref().map(ToString::to_string),
    }
}

/// Reads a setting from an optional ABI value.
pub fn ropt_str(
    value: &ROption<devicehub_plugin_api::abi_stable::std_types::RString>,
) -> Option<&str> {
    value.as_ref().into_option().map(|s| s.as_str())
}
