//! The config file (`devicehub.toml`): where DeviceHub keeps its state, where its plugins are,
//! and the device table for devices that cannot be discovered (network and serial).
//!
//! Unknown keys are errors, so that a misspelled key is reported with its file and line instead
//! of being silently ignored.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::transport::serial::SerialSettings;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where DeviceHub keeps certificates, the last shadow state, the job journal and logs.
    /// Default: the platform's data directory (`~/.local/share/devicehub` on Linux).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The folder plugins are loaded from. Default: see [`default_plugins_dir`].
    #[serde(default)]
    pub plugins_dir: Option<PathBuf>,
    /// Log filter, e.g. "info" or "devicehub=debug".
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// USB discovery.
    #[serde(default)]
    pub usb: UsbConfig,
    /// Devices that cannot be discovered, and USB devices bound to a particular plugin.
    #[serde(default)]
    pub devices: Vec<DeviceEntry>,
    /// The cloud endpoint and what registration needs (`[cloud]`).
    #[serde(default)]
    pub cloud: CloudConfig,
    /// Office printers over IPP and the local print server's queues (`[system_printers]`).
    #[serde(default)]
    pub system_printers: crate::sheets::SheetsConfig,
    /// The local servers on 127.0.0.1 (`[local]`).
    #[serde(default)]
    pub local: LocalConfig,
    /// Which plugin files may load (`[plugins]`): extra signing keys and the development flag.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// The file this config was read from, for `config.reload` over the local RPC; not a key.
    #[serde(skip)]
    pub loaded_from: Option<PathBuf>,
}

fn default_log_level() -> String {
    "info".to_string()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: None,
            plugins_dir: None,
            log_level: default_log_level(),
            usb: UsbConfig::default(),
            devices: Vec::new(),
            cloud: CloudConfig::default(),
            system_printers: crate::sheets::SheetsConfig::default(),
            local: LocalConfig::default(),
            plugins: PluginsConfig::default(),
            loaded_from: None,
        }
    }
}

/// The `[local]` section: the servers DeviceHub runs for this computer only. They always listen
/// on 127.0.0.1 alone; there is deliberately no address key, so no config can expose them to the
/// network (an unknown key such as `rpc_address` is refused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// The port of the registration and status pages (`http://127.0.0.1:PORT/`); 0 picks a
    /// free port, which is logged.
    #[serde(default = "default_http_port")]
    pub http_port: u16,
    /// The WebSocket server's port on 127.0.0.1 (0: any free port, announced in the log).
    #[serde(default = "default_ws_port")]
    pub ws_port: u16,
    /// Origins (`https://ship.example.com`) whose pages may open the WebSocket. Connections
    /// without an Origin header (local tools; browsers always send one) are accepted; any other
    /// Origin is refused with HTTP 403.
    #[serde(default)]
    pub ws_allowed_origins: Vec<String>,
    /// The ZeroMQ request/reply port of the local RPC (0: any free port, announced in
    /// `<data_dir>/rpc.json`).
    #[serde(default = "default_rpc_port")]
    pub rpc_port: u16,
    /// The ZeroMQ publish port of the local RPC's live events (0: any free port).
    #[serde(default = "default_rpc_publish_port")]
    pub rpc_publish_port: u16,
}

fn default_http_port() -> u16 {
    8091
}

fn default_ws_port() -> u16 {
    10101
}

fn default_rpc_port() -> u16 {
    4042
}

fn default_rpc_publish_port() -> u16 {
    4043
}

impl Default for LocalConfig {
    fn default() -> Self {
        LocalConfig {
            http_port: default_http_port(),
            ws_port: default_ws_port(),
            ws_allowed_origins: Vec::new(),
            rpc_port: default_rpc_port(),
            rpc_publish_port: default_rpc_publish_port(),
        }
    }
}

/// The `[plugins]` section: what DeviceHub trusts besides its built-in release keys (see
/// `docs/plugin-bundles.md`). The folder itself stays the top-level `plugins_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// The development flag: plugin files that are neither signed by a trusted key nor trusted
    /// by their hash load anyway. DeviceHub says so at start-up, in `devicehub status` and in
    /// every heartbeat. Tampered files (changed after a trusted key signed them) never load.
    #[serde(default)]
    pub allow_unsigned: bool,
    /// Ed25519 public keys (base64 of 32 bytes) whose signed bundle manifests are trusted
    /// besides the built-in release keys: a company's own drivers, or a development key.
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

/// The `[cloud]` section: where AWS IoT Core (or the emulator) is and how to register with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// The endpoint host name: AWS IoT Core's device data endpoint
    /// (`xxxxxxxx-ats.iot.REGION.amazonaws.com`) or `localhost` for the emulator. No default:
    /// DeviceHub cannot guess the account's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// The port. Default: 8883 for `mqtts`, 443 for `alpn443` and `wss` (see [`Self::port`]).
    #[serde(default)]
    pub port: Option<u16>,
    /// How MQTT travels: `mqtts` (TLS with the client certificate, AWS port 8883), `alpn443`
    /// (the same on port 443 with ALPN `x-amzn-mqtt-ca`, for networks that only let 443 out) or
    /// `wss` (WebSocket, emulator only).
    #[serde(default = "default_cloud_transport")]
    pub transport: CloudTransport,
    /// The CA bundle (PEM) the server's certificate must chain to. Default: Amazon Root CA 1
    /// and 3, bundled with DeviceHub.
    #[serde(default)]
    pub ca_bundle: Option<PathBuf>,
    /// The fleet provisioning claim certificate (PEM) used once, to register.
    /// Default: `claim/certificate.pem.crt` in the data directory.
    #[serde(default)]
    pub claim_certificate: Option<PathBuf>,
    /// The claim certificate's private key (PEM). Default: `claim/private.pem.key` in the data
    /// directory.
    #[serde(default)]
    pub claim_private_key: Option<PathBuf>,
    /// The fleet provisioning template that registers the device.
    #[serde(default = "default_provisioning_template")]
    pub provisioning_template: String,
}

/// The MQTT transports of `[cloud] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloudTransport {
    /// MQTT over TLS with the client certificate.
    Mqtts,
    /// MQTT over TLS with the client certificate and ALPN `x-amzn-mqtt-ca`.
    Alpn443,
    /// MQTT over WebSocket over TLS (`wss://HOST:PORT/mqtt`).
    Wss,
}

fn default_cloud_transport() -> CloudTransport {
    CloudTransport::Mqtts
}

fn default_provisioning_template() -> String {
    "DeviceHubFleet".to_string()
}

impl Default for CloudConfig {
    fn default() -> Self {
        CloudConfig {
            endpoint: None,
            port: None,
            transport: default_cloud_transport(),
            ca_bundle: None,
            claim_certificate: None,
            claim_private_key: None,
            provisioning_template: default_provisioning_template(),
        }
    }
}

impl CloudConfig {
    /// The configured port, else the transport's usual one.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            CloudTransport::Mqtts => 8883,
            CloudTransport::Alpn443 | CloudTransport::Wss => 443,
        })
    }

    /// The claim certificate's path: the configured one or `claim/certificate.pem.crt` under
    /// `data_dir`.
    pub fn claim_certificate_path(&self, data_dir: &Path) -> PathBuf {
        self.claim_certificate
            .clone()
            .unwrap_or_else(|| data_dir.join("claim").join("certificate.pem.crt"))
    }

    /// The claim key's path: the configured one or `claim/private.pem.key` under `data_dir`.
    pub fn claim_private_key_path(&self, data_dir: &Path) -> PathBuf {
        self.claim_private_key
            .clone()
            .unwrap_or_else(|| data_dir.join("claim").join("private.pem.key"))
    }
}

/// USB discovery settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsbConfig {
    /// Whether to look for USB devices at all.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How often to rescan the bus where the platform gives no plug/unplug events, in ms.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
}

fn default_true() -> bool {
    true
}
fn default_poll_ms() -> u64 {
    2000
}

impl Default for UsbConfig {
    fn default() -> Self {
        UsbConfig {
            enabled: true,
            poll_interval_ms: default_poll_ms(),
        }
    }
}

/// One row of the device table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// The ID jobs and commands use for the device, e.g. "shipping-zebra".
    pub id: String,
    /// Where the device is: `tcp://HOST:PORT` (network printers, port 9100 by convention),
    /// `serial:///dev/ttyUSB0` (or `serial://COM3`), `usb://VID:PID` to bind a USB device to
    /// the plugin named here, or `ipp://HOST[:PORT]/PATH` / `ipps://...` for an office printer
    /// (driven by the built-in `ipp` driver; no `plugin` needed). Serial line settings may
    /// follow the path as a query (`serial:///dev/ttyUSB0?baud=9600&data_bits=7&parity=even&stop_bits=1`).
    pub address: String,
    /// The device's USB ID (`0A5F:0141`), which chooses the plugin and model as it would for a
    /// USB device. One of `usb_id` and `plugin` is needed.
    #[serde(default)]
    pub usb_id: Option<String>,
    /// The plugin that drives the device, by name (overrides the USB ID's choice).
    #[serde(default)]
    pub plugin: Option<String>,
    /// The plugin profile (e.g. "epl2-203"); default: the model's, else the plugin's default.
    #[serde(default)]
    pub profile: Option<String>,
    /// Line settings for serial devices.
    #[serde(default)]
    pub serial: Option<SerialSettings>,
    /// Settings passed to the plugin (see the plugin's documentation).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
}

/// Why the config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Config {
    /// Reads the config at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        config.loaded_from = Some(path.to_path_buf());
        Ok(config)
    }

    /// Reads `path` if it exists; a missing file at the default location means defaults.
    pub fn load_or_default(path: &Path) -> Result<Config, ConfigError> {
        if path.exists() {
            Config::load(path)
        } else {
            Ok(Config::default())
        }
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if let Some(endpoint) = &self.cloud.endpoint {
            if endpoint.is_empty() || endpoint.contains(['/', ':', ' ']) {
                return Err(invalid(format!(
                    "cloud.endpoint {endpoint:?} must be a host name alone, without scheme or port \
                     (e.g. xxxxxxxx-ats.iot.eu-west-1.amazonaws.com)"
                )));
            }
        }
        if self.local.rpc_port != 0 && self.local.rpc_port == self.local.rpc_publish_port {
            return Err(invalid(format!(
                "local.rpc_port and local.rpc_publish_port are both {}; they must differ",
                self.local.rpc_port
            )));
        }
        if self.cloud.port == Some(0) {
            return Err(invalid("cloud.port must not be 0".into()));
        }
        for key in &self.plugins.trusted_keys {
            crate::plugins::bundle::TrustedKey::parse(key)
                .map_err(|e| invalid(format!("plugins.trusted_keys: {e}")))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for device in &self.devices {
            if device.id.is_empty()
                || !device
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
            {
                return Err(invalid(format!(
                    "device id {:?} must be letters, digits and - _ . : only",
                    device.id
                )));
            }
            if !seen.insert(device.id.as_str()) {
                return Err(invalid(format!("device id '{}' appears twice", device.id)));
            }
            // Office printers are driven by the built-in IPP driver.
            let is_ipp =
                device.address.starts_with("ipp://") || device.address.starts_with("ipps://");
            if device.usb_id.is_none() && device.plugin.is_none() && !is_ipp {
                return Err(invalid(format!(
                    "device '{}' needs `usb_id` or `plugin` to choose its driver",
                    device.id
                )));
            }
            if let Some(usb_id) = &device.usb_id {
                if crate::plugins::parse_usb_id(usb_id).is_none() {
                    return Err(invalid(format!(
                        "device '{}': usb_id {usb_id:?} is not VID:PID in hex (e.g. 0A5F:0141)",
                        device.id
                    )));
                }
            }
            DeviceAddress::parse(&device.address)
                .map_err(|e| invalid(format!("device '{}': {e}", device.id)))?;
        }
        Ok(())
    }

    /// The data directory: the configured one or the platform default.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }
}

/// Where a configured device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceAddress {
    Tcp(String),
    Serial(String),
    Usb {
        vendor_id: u16,
        product_id: u16,
    },
    /// An office printer's IPP URI (`ipp://` or `ipps://`).
    Ipp(String),
    /// `none://`: a virtual device with no transport (the OCR device).
    None,
}

impl DeviceAddress {
    /// Parses `tcp://HOST:PORT`, `serial://PATH`, `usb://VID:PID`, an `ipp://` or `ipps://`
    /// printer URI, or `none://`.
    pub fn parse(text: &str) -> Result<DeviceAddress, String> {
        if text == "none://" {
            return Ok(DeviceAddress::None);
        }
        if text.starts_with("ipp://") || text.starts_with("ipps://") {
            crate::sheets::PrinterUri::parse(text)?;
            return Ok(DeviceAddress::Ipp(text.to_string()));
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("address {text:?} needs a port (tcp://HOST:PORT)"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("address {text:?} is not tcp://HOST:PORT"));
            }
            Ok(DeviceAddress::Tcp(rest.to_string()))
        } else if let Some(rest) = text.strip_prefix("serial://") {
            if rest.is_empty() {
                return Err(format!("address {text:?} names no serial port"));
            }
            Ok(DeviceAddress::Serial(rest.to_string()))
        } else if let Some(rest) = text.strip_prefix("usb://") {
            let (vendor_id, product_id) = crate::plugins::parse_usb_id(rest)
                .ok_or_else(|| format!("address {text:?} is not usb://VID:PID"))?;
            Ok(DeviceAddress::Usb {
                vendor_id,
                product_id,
            })
        } else {
            Err(format!(
                "address {text:?} must start with tcp://, serial://, usb://, ipp:// or ipps://, or be none://"
            ))
        }
    }
}

/// The platform's data directory for DeviceHub.
pub fn default_data_dir() -> PathBuf {
    dirs::data_local_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("devicehub")
}

/// The platform's config file location.
pub fn default_config_path() -> PathBuf {
    dirs::config_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("devicehub")
        .join("devicehub.toml")
}

/// Where plugins are loaded from when the config names no folder, and how to pick files there:
/// 1. `DEVICEHUB_PLUGINS_DIR`;
/// 2. a `plugins` folder beside the executable (an installed DeviceHub);
/// 3. the executable's own folder, drivers only (a cargo build puts the plugin libraries
///    beside the `devicehub` binary);
/// 4. `/usr/lib/devicehub/plugins` on Linux.
pub fn default_plugins_dir() -> (PathBuf, crate::plugins::Selection) {
    use crate::plugins::Selection;
    if let Some(dir) = std::env::var_os("DEVICEHUB_PLUGINS_DIR") {
        return (PathBuf::from(dir), Selection::AllLibraries);
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
    {
        let beside = exe_dir.join("plugins");
        if beside.is_dir() {
            return (beside, Selection::AllLibraries);
        }
        let has_drivers = std::fs::read_dir(&exe_dir).is_ok_and(|entries| {
            entries.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.contains("devicehub_driver_"))
            })
        });
        if has_drivers {
            return (exe_dir, Selection::DriversOnly);
        }
    }
    (
        PathBuf::from("/usr/lib/devicehub/plugins"),
        Selection::AllLibraries,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../assets/devicehub.example.toml");

    #[test]
    fn local_pages_port_defaults_to_8091_and_takes_zero() {
        let none = Config::parse("", Path::new("empty.toml")).unwrap();
        assert_eq!(none.local.http_port, 8091);
        let any = Config::parse("[local]\nhttp_port = 0\n", Path::new("any.toml")).unwrap();
        assert_eq!(any.local.http_port, 0);
        let typo = Config::parse("[local]\nhttp_prot = 1\n", Path::new("typo.toml")).unwrap_err();
        assert!(typo.to_string().contains("http_prot"), "{typo}");
    }

    #[test]
    fn shipped_example_parses_and_round_trips() {
        let config = Config::parse(EXAMPLE, Path::new("devicehub.example.toml")).unwrap();
        assert!(!config.devices.is_empty());
        assert!(config.cloud.endpoint.is_some(), "the example shows [cloud]");
        let text = toml::to_string(&config).unwrap();
        let again = Config::parse(&text, Path::new("round-trip")).unwrap();
        assert_eq!(config, again);
    }

    #[test]
    fn plugins_section_defaults_to_strict_and_checks_keys() {
        let none = Config::parse("", Path::new("empty.toml")).unwrap();
        assert!(!none.plugins.allow_unsigned);
        assert!(none.plugins.trusted_keys.is_empty());
        let key = crate::plugins::bundle::RELEASE_KEYS[0];
        let set = Config::parse(
            &format!("[plugins]\nallow_unsigned = true\ntrusted_keys = [\"{key}\"]\n"),
            Path::new("set.toml"),
        )
        .unwrap();
        assert!(set.plugins.allow_unsigned);
        assert_eq!(set.plugins.trusted_keys, vec![key.to_string()]);
        let bad = Config::parse(
            "[plugins]\ntrusted_keys = [\"not a key\"]\n",
            Path::new("bad.toml"),
        )
        .unwrap_err();
        assert!(bad.to_string().contains("plugins.trusted_keys"), "{bad}");
    }

    #[test]
    fn misspelled_key_is_named() {
        let err = Config::parse("log_levle = \"debug\"\n", Path::new("x.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("log_levle") && text.contains("x.toml"),
            "{text}"
        );
    }

    #[test]
    fn device_without_driver_choice_is_refused() {
        let err = Config::parse(
            "[[devices]]\nid = \"a\"\naddress = \"tcp://127.0.0.1:9100\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("usb_id` or `plugin`"), "{err}");
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(
            DeviceAddress::parse("tcp://10.0.0.5:9100"),
            Ok(DeviceAddress::Tcp("10.0.0.5:9100".into()))
        );
        assert_eq!(
            DeviceAddress::parse("serial:///dev/ttyUSB0"),
            Ok(DeviceAddress::Serial("/dev/ttyUSB0".into()))
        );
        assert!(DeviceAddress::parse("tcp://printer").is_err());
        assert!(DeviceAddress::parse("lpt1").is_err());
    }

    #[test]
    fn ipp_printers_need_no_plugin() {
        let config = Config::parse(
            "[[devices]]\nid = \"office\"\naddress = \"ipps://printer.local/ipp/print\"\n\n\
             [system_printers]\ndiscover = false\njob_timeout_secs = 60\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(
            DeviceAddress::parse(&config.devices[0].address),
            Ok(DeviceAddress::Ipp("ipps://printer.local/ipp/print".into()))
        );
        assert!(!config.system_printers.discover);
        assert_eq!(config.system_printers.job_timeout_secs, 60);
        let err = Config::parse(
            "[[devices]]\nid = \"office\"\naddress = \"ipp://printer.local:0/\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("invalid port"), "{err}");
    }

    #[test]
    fn virtual_devices_have_the_none_address_and_nothing_after_it() {
        assert_eq!(DeviceAddress::parse("none://"), Ok(DeviceAddress::None));
        assert!(DeviceAddress::parse("none://ocr").is_err());
    }

    #[test]
    fn cloud_section_defaults_and_ports() {
        let config = Config::parse("", Path::new("x.toml")).unwrap();
        assert_eq!(config.cloud, CloudConfig::default());
        assert_eq!(config.cloud.port(), 8883);
        assert_eq!(config.cloud.provisioning_template, "DeviceHubFleet");
        let config = Config::parse(
            "[cloud]\nendpoint = \"localhost\"\ntransport = \"alpn443\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(config.cloud.transport, CloudTransport::Alpn443);
        assert_eq!(config.cloud.port(), 443);
        assert_eq!(
            config.cloud.claim_certificate_path(Path::new("/d")),
            Path::new("/d/claim/certificate.pem.crt")
        );
        let err = Config::parse(
            "[cloud]\nendpoint = \"mqtts://x:8883\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("cloud.endpoint"), "{err}");
        let err = Config::parse("[cloud]\ntransport = \"udp\"\n", Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("udp"), "{err}");
    }

    #[test]
    fn duplicate_device_ids_are_refused() {
        let text = "[[devices]]\nid = \"a\"\naddress = \"tcp://h:1\"\nplugin = \"zebra\"\n\
                    [[devices]]\nid = \"a\"\naddress = \"tcp://h:2\"\nplugin = \"zebra\"\n";
        let err = Config::parse(text, Path::new("x.toml")).unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }

    #[test]
    fn local_ports_default_to_4042_and_4043_and_no_address_can_be_set() {
        let config = Config::parse("", Path::new("x.toml")).expect("empty config");
        assert_eq!(
            (config.local.rpc_port, config.local.rpc_publish_port),
            (4042, 4043)
        );
        let err = Config::parse("[local]\nrpc_address = \"0.0.0.0\"\n", Path::new("x.toml"))
            .expect_err("no address key");
        assert!(err.to_string().contains("rpc_address"), "{err}");
        let err = Config::parse(
            "[local]\nrpc_port = 5000\nrpc_publish_port = 5000\n",
            Path::new("x.toml"),
        )
        .expect_err("one port for both sockets");
        assert!(err.to_string().contains("must differ"), "{err}");
        Config::parse(
            "[local]\nrpc_port = 0\nrpc_publish_port = 0\n",
            Path::new("x.toml"),
        )
        .expect("free ports for both");
    }
}
