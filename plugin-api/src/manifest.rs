//! What a plugin declares about itself.
//!
//! The USB ID table lives here, inside each plugin, and nowhere else: the host reads it through
//! the root module to choose a plugin for a device, and packaging generates udev rules from it.

use abi_stable::{
    std_types::{ROption, RString, RVec},
    StableAbi,
};

/// Which kind of device a plugin drives.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Printer,
    Scale,
    Scanner,
}

impl DeviceKind {
    /// The lower-case name used in config files, the CLI and the cloud.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::Printer => "printer",
            DeviceKind::Scale => "scale",
            DeviceKind::Scanner => "scanner",
        }
    }
}

/// How well a plugin supports a model. When two plugins claim the same USB ID, the better
/// support level wins.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SupportLevel {
    /// Known to exist, expected to work, not verified on the device.
    Experimental,
    /// Works with known limitations.
    Limited,
    /// Verified on the device.
    Supported,
}

impl SupportLevel {
    /// The lower-case name shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            SupportLevel::Experimental => "experimental",
            SupportLevel::Limited => "limited",
            SupportLevel::Supported => "supported",
        }
    }
}

/// One row of a plugin's USB ID table.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct UsbModel {
    pub vendor_id: u16,
    pub product_id: u16,
    /// The model's marketing name, e.g. "ZD620".
    pub model: RString,
    pub support: SupportLevel,
    /// The name of the [`PrinterProfile`] (or scale/scanner profile) this model uses.
    pub profile: RString,
}

/// A rule that matches printers by their IEEE-1284 device ID when the USB ID is unknown
/// (many printers share generic chips and IDs).
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct Ieee1284Match {
    /// `MFG` (or `MANUFACTURER`) field, compared case-insensitively; empty matches all.
    pub manufacturer: RString,
    /// Prefix of the `MDL` (or `MODEL`) field, compared case-insensitively; empty matches all.
    pub model_prefix: RString,
    /// A command set the `CMD` field must list; empty matches all.
    pub command_set: RString,
    pub profile: RString,
}

impl UsbModel {
    /// One vendor's USB ID table from `(product ID, model, support level, profile)` rows, as
    /// a plugin writes it in a `const`.
    pub fn table(vendor_id: u16, rows: &[(u16, &str, SupportLevel, &str)]) -> RVec<UsbModel> {
        rows.iter()
            .map(|&(product_id, model, support, profile)| UsbModel {
                vendor_id,
                product_id,
                model: model.into(),
                support,
                profile: profile.into(),
            })
            .collect()
    }
}

impl Ieee1284Match {
    /// IEEE-1284 rules from `(manufacturer, model prefix, command set, profile)` rows, in the
    /// order the host tries them.
    pub fn table(rows: &[(&str, &str, &str, &str)]) -> RVec<Ieee1284Match> {
        rows.iter()
            .map(
                |&(manufacturer, model_prefix, command_set, profile)| Ieee1284Match {
                    manufacturer: manufacturer.into(),
                    model_prefix: model_prefix.into(),
                    command_set: command_set.into(),
                    profile: profile.into(),
                },
            )
            .collect()
    }
}

/// Media a printer can take.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// Continuous roll or tape, cut or torn at any length.
    Continuous,
    /// Die-cut labels separated by a gap or notch.
    DieCut,
    /// Labels marked by a black mark on the back.
    BlackMark,
    /// Cut sheets in an office printer.
    Sheet,
}

/// What a printer accepts as input.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    /// 1-bit raster rendered by the host.
    Raster,
    /// PDF passed through to the printer (office printers).
    Pdf,
    /// Bytes already in the printer's own language, sent unchanged.
    Raw,
}

/// The capabilities shared by a group of printer models.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PrinterProfile {
    /// The name [`UsbModel::profile`] refers to, e.g. "zpl-203".
    pub name: RString,
    /// The printer language, e.g. "ZPL II", "EPL2".
    pub language: RString,
    pub dpi: u32,
    /// Printable width in dots.
    pub width_dots: u32,
    /// Longest label the printer takes, in dots.
    pub max_length_dots: u32,
    pub media: RVec<MediaKind>,
    pub inputs: RVec<InputKind>,
}

/// Everything a plugin declares about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct PluginManifest {
    /// A short unique name, e.g. "zebra". Two libraries with the same name are duplicates.
    pub name: RString,
    /// The plugin's own version (semver).
    pub version: RString,
    /// The [`crate::API_VERSION`] the plugin was built against.
    pub api_version: RString,
    /// Optional API parts the plugin needs (see [`crate::API_FEATURES`]).
    pub required_features: RVec<RString>,
    pub kind: DeviceKind,
    /// One line for users: what the plugin drives.
    pub description: RString,
    /// The static table of USB IDs the plugin drives.
    pub usb_models: RVec<UsbModel>,
    /// IEEE-1284 rules for printers whose USB ID is not in the table.
    pub ieee1284_matches: RVec<Ieee1284Match>,
    /// Printer capabilities, one per profile (empty for scales and scanners).
    pub printer_profiles: RVec<PrinterProfile>,
    /// The profile used for a device configured by plugin name alone (a network printer).
    pub default_profile: ROption<RString>,
}

impl PluginManifest {
    /// The printer profile named `name`.
    pub fn printer_profile(&self, name: &str) -> Option<&PrinterProfile> {
        self.printer_profiles
            .iter()
            .find(|p| p.name.as_str() == name)
    }

    /// The table row for `vendor_id:product_id`.
    pub fn usb_model(&self, vendor_id: u16, product_id: u16) -> Option<&UsbModel> {
        self.usb_models
            .iter()
            .find(|m| m.vendor_id == vendor_id && m.product_id == product_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_keep_every_row_in_order() {
        let models = UsbModel::table(
            0x0A5F,
            &[
                (0x0100, "ZD620", SupportLevel::Supported, "zpl-203"),
                (0x0101, "ZD420", SupportLevel::Experimental, "zpl-300"),
            ],
        );
        assert_eq!(
            models.as_slice(),
            [
                UsbModel {
                    vendor_id: 0x0A5F,
                    product_id: 0x0100,
                    model: "ZD620".into(),
                    support: SupportLevel::Supported,
                    profile: "zpl-203".into(),
                },
                UsbModel {
                    vendor_id: 0x0A5F,
                    product_id: 0x0101,
                    model: "ZD420".into(),
                    support: SupportLevel::Experimental,
                    profile: "zpl-300".into(),
                },
            ]
        );
        let rules =
            Ieee1284Match::table(&[("Brother", "QL-8", "", "ql-810w"), ("", "", "ZPL", "z")]);
        assert_eq!(
            rules.as_slice(),
            [
                Ieee1284Match {
                    manufacturer: "Brother".into(),
                    model_prefix: "QL-8".into(),
                    command_set: "".into(),
                    profile: "ql-810w".into(),
                },
                Ieee1284Match {
                    manufacturer: "".into(),
                    model_prefix: "".into(),
                    command_set: "ZPL".into(),
                    profile: "z".into(),
                },
            ]
        );
    }
}
