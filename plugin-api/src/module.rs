//! The root module every plugin exports, and the macro that builds it.
//!
//! The root module is an abi_stable prefix type: **fields are only ever appended**, below the one
//! marked `#[sabi(last_prefix_field)]`, so that a host can load plugins built against an older
//! minor version of this API. The marker moves only with a breaking (major) version.

use abi_stable::{
    library::RootModule, package_version_strings, sabi_types::VersionStrings, std_types::RResult,
    StableAbi,
};

use crate::{
    device::{OpenRequest, PrinterBox, ScaleBox, ScannerBox},
    error::PluginError,
    manifest::PluginManifest,
    transport::TransportBox,
};

/// The root module of a DeviceHub plugin.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginMod_Ref)))]
#[sabi(missing_field(panic))]
#[allow(missing_debug_implementations)]
pub struct PluginMod {
    /// Returns the plugin's manifest.
    pub manifest: extern "C" fn() -> RResult<PluginManifest, PluginError>,
    /// Opens a printer over `transport`.
    pub open_printer: extern "C" fn(&OpenRequest, TransportBox) -> RResult<PrinterBox, PluginError>,
    /// Opens a scale over `transport`.
    pub open_scale: extern "C" fn(&OpenRequest, TransportBox) -> RResult<ScaleBox, PluginError>,
    /// Opens a scanner over `transport`.
    #[sabi(last_prefix_field)]
    pub open_scanner: extern "C" fn(&OpenRequest, TransportBox) -> RResult<ScannerBox, PluginError>,
}

impl RootModule for PluginMod_Ref {
    abi_stable::declare_root_module_statics! {PluginMod_Ref}

    const BASE_NAME: &'static str = "devicehub_plugin";
    const NAME: &'static str = "DeviceHub plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// Builds and exports a plugin's root module from plain Rust functions, with every entry point
/// guarded so that a panic becomes an error.
///
/// ```text
/// devicehub_plugin_api::export_plugin! {
///     manifest: my_manifest,      // fn() -> PluginManifest
///     printer: open_my_printer,   // fn(&OpenRequest, TransportBox) -> Result<impl Printer, PluginError>
/// }
/// ```
/// `scale:` and `scanner:` take the matching constructors; a kind left out answers
/// [`ErrorKind::Unsupported`](crate::ErrorKind::Unsupported). The crate must depend on
/// `abi_stable` directly, because `#[export_root_module]` names it.
#[macro_export]
macro_rules! export_plugin {
    (
        manifest: $manifest:path
        $(, printer: $printer:path)?
        $(, scale: $scale:path)?
        $(, scanner: $scanner:path)?
        $(,)?
    ) => {
        #[::abi_stable::export_root_module]
        pub fn devicehub_plugin_root_module() -> $crate::PluginMod_Ref {
            use ::abi_stable::prefix_type::PrefixTypeTrait as _;

            extern "C" fn __devicehub_manifest(
            ) -> ::abi_stable::std_types::RResult<$crate::PluginManifest, $crate::PluginError> {
                $crate::guard(|| Ok($manifest()))
            }

            #[allow(unused_variables)]
            extern "C" fn __devicehub_open_printer(
                request: &$crate::OpenRequest,
                transport: $crate::TransportBox,
            ) -> ::abi_stable::std_types::RResult<$crate::PrinterBox, $crate::PluginError> {
                $crate::guard(|| {
                    $(
                        return $printer(request, transport).map(|printer| {
                            $crate::PrinterBox::from_value(
                                $crate::PrinterGuard(printer),
                                ::abi_stable::sabi_trait::TD_Opaque,
                            )
                        });
                    )?
                    #[allow(unreachable_code)]
                    Err($crate::module::unsupported("printers"))
                })
            }

            #[allow(unused_variables)]
            extern "C" fn __devicehub_open_scale(
                request: &$crate::OpenRequest,
                transport: $crate::TransportBox,
            ) -> ::abi_stable::std_types::RResult<$crate::ScaleBox, $crate::PluginError> {
                $crate::guard(|| {
                    $(
                        return $scale(request, transport).map(|scale| {
                            $crate::ScaleBox::from_value(
                                $crate::ScaleGuard(scale),
                                ::abi_stable::sabi_trait::TD_Opaque,
                            )
                        });
                    )?
                    #[allow(unreachable_code)]
                    Err($crate::module::unsupported("scales"))
                })
            }

            #[allow(unused_variables)]
            extern "C" fn __devicehub_open_scanner(
                request: &$crate::OpenRequest,
                transport: $crate::TransportBox,
            ) -> ::abi_stable::std_types::RResult<$crate::ScannerBox, $crate::PluginError> {
                $crate::guard(|| {
                    $(
                        return $scanner(request, transport).map(|scanner| {
                            $crate::ScannerBox::from_value(
                                $crate::ScannerGuard(scanner),
                                ::abi_stable::sabi_trait::TD_Opaque,
                            )
                        });
                    )?
                    #[allow(unreachable_code)]
                    Err($crate::module::unsupported("scanners"))
                })
            }

            // The entry points carry prefixed names so that they never shadow the plugin's own
            // functions passed to this macro.
            $crate::PluginMod {
                manifest: __devicehub_manifest,
                open_printer: __devicehub_open_printer,
                open_scale: __devicehub_open_scale,
                open_scanner: __devicehub_open_scanner,
            }
            .leak_into_prefix()
        }
    };
}

/// The error a plugin answers when asked to open a kind of device it does not drive.
#[doc(hidden)]
pub fn unsupported(kind: &str) -> PluginError {
    PluginError::new(
        crate::ErrorKind::Unsupported,
        format!("this plugin does not drive {kind}"),
    )
}
