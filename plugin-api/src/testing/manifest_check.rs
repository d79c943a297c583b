//! The manifest conformance check a plugin author runs in the plugin's own tests: the same
//! mistakes the host refuses at load time (bad name or versions, missing API features, models
//! pointing at profiles that do not exist), plus the ones it would accept but that make a
//! plugin misbehave (duplicate USB IDs, a rule matching every printer, an impossible profile).

use std::{collections::BTreeSet, fmt};

use crate::{
    manifest::{DeviceKind, InputKind, PluginManifest},
    API_FEATURES, API_VERSION,
};

/// One thing wrong with a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestProblem {
    /// The name is empty or uses characters other than `a-z`, `0-9` and `-`.
    BadName(String),
    /// The plugin's own version is not semver (`MAJOR.MINOR.PATCH`).
    BadVersion(String),
    /// `api_version` is not the API version the plugin is being built against.
    WrongApiVersion(String),
    /// A required feature this API does not provide.
    UnknownFeature(String),
    /// A feature the manifest's own content needs is not listed in `required_features`.
    MissingFeature(&'static str),
    /// The description is empty.
    NoDescription,
    /// A printer plugin with no profiles, or a scale or scanner plugin with printer profiles.
    ProfilesDoNotFitKind(DeviceKind),
    /// Two profiles share a name.
    DuplicateProfile(String),
    /// A profile with a zero resolution, width or length, or no input kinds or media.
    ImpossibleProfile(String),
    /// A USB model, IEEE-1284 rule or the default profile names a profile that does not exist.
    UnknownProfile { used_by: String, profile: String },
    /// A USB row with vendor ID 0 or an empty model name.
    BadUsbModel(String),
    /// The same vendor and product ID listed twice.
    DuplicateUsbId(u16, u16),
    /// An IEEE-1284 rule whose fields are all empty: it would claim every printer.
    RuleMatchesEverything(String),
}

impl fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManifestProblem::BadName(name) => write!(
                f,
                "plugin name {name:?} must be non-empty lower-case a-z, 0-9 and '-'"
            ),
            ManifestProblem::BadVersion(v) => write!(f, "version {v:?} is not semver"),
            ManifestProblem::WrongApiVersion(v) => write!(
                f,
                "api_version {v:?} is not the API built against ({API_VERSION}); use API_VERSION"
            ),
            ManifestProblem::UnknownFeature(feature) => {
                write!(f, "required feature {feature:?} is not in API_FEATURES")
            }
            ManifestProblem::MissingFeature(feature) => write!(
                f,
                "the manifest uses {feature:?} but does not list it in required_features"
            ),
            ManifestProblem::NoDescription => write!(f, "the description is empty"),
            ManifestProblem::ProfilesDoNotFitKind(kind) => write!(
                f,
                "a {} plugin must have printer profiles exactly when it drives printers",
                kind.as_str()
            ),
            ManifestProblem::DuplicateProfile(name) => {
                write!(f, "profile {name:?} is declared twice")
            }
            ManifestProblem::ImpossibleProfile(name) => write!(
                f,
                "profile {name:?} needs a dpi, width and length above 0, media and inputs"
            ),
            ManifestProblem::UnknownProfile { used_by, profile } => {
                write!(f, "{used_by} uses profile {profile:?}, which is not declared")
            }
            ManifestProblem::BadUsbModel(model) => {
                write!(f, "USB model {model:?} needs a vendor ID and a model name")
            }
            ManifestProblem::DuplicateUsbId(vid, pid) => {
                write!(f, "USB ID {vid:04x}:{pid:04x} is listed twice")
            }
            ManifestProblem::RuleMatchesEverything(profile) => write!(
                f,
                "an IEEE-1284 rule for profile {profile:?} has no field set and would match every printer"
            ),
        }
    }
}

/// Everything wrong with `manifest`; empty when it conforms.
pub fn manifest_problems(manifest: &PluginManifest) -> Vec<ManifestProblem> {
    let mut problems = Vec::new();
    let name = manifest.name.as_str();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        problems.push(ManifestProblem::BadName(name.to_string()));
    }
    if !is_semver(manifest.version.as_str()) {
        problems.push(ManifestProblem::BadVersion(manifest.version.to_string()));
    }
    if manifest.api_version.as_str() != API_VERSION {
        problems.push(ManifestProblem::WrongApiVersion(
            manifest.api_version.to_string(),
        ));
    }
    for feature in manifest.required_features.iter() {
        if !API_FEATURES.contains(&feature.as_str()) {
            problems.push(ManifestProblem::UnknownFeature(feature.to_string()));
        }
    }
    if manifest.description.trim().is_empty() {
        problems.push(ManifestProblem::NoDescription);
    }
    check_features(manifest, &mut problems);
    check_profiles(manifest, &mut problems);
    check_usb_table(manifest, &mut problems);
    for rule in manifest.ieee1284_matches.iter() {
        if rule.manufacturer.is_empty()
            && rule.model_prefix.is_empty()
            && rule.command_set.is_empty()
        {
            problems.push(ManifestProblem::RuleMatchesEverything(
                rule.profile.to_string(),
            ));
        }
        if manifest.printer_profile(rule.profile.as_str()).is_none() {
            problems.push(ManifestProblem::UnknownProfile {
                used_by: format!(
                    "IEEE-1284 rule MFG {:?} MDL {:?} CMD {:?}",
                    rule.manufacturer.as_str(),
                    rule.model_prefix.as_str(),
                    rule.command_set.as_str()
                ),
                profile: rule.profile.to_string(),
            });
        }
    }
    problems
}

/// Panics with every problem, one per line, when `manifest` does not conform. Call it from a
/// plugin's unit tests.
pub fn check_manifest(manifest: &PluginManifest) {
    let problems = manifest_problems(manifest);
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("- {p}")).collect();
        panic!(
            "the manifest of plugin {:?} does not conform:\n{}",
            manifest.name.as_str(),
            lines.join("\n")
        );
    }
}

/// The features the manifest's content implies: the host refuses to give a plugin what it did
/// not ask for, so a missing one shows up only when a device is used.
fn check_features(manifest: &PluginManifest, problems: &mut Vec<ManifestProblem>) {
    let listed = |feature: &str| {
        manifest
            .required_features
            .iter()
            .any(|f| f.as_str() == feature)
    };
    let mut needed = BTreeSet::new();
    if !manifest.ieee1284_matches.is_empty() {
        needed.insert("match.ieee1284");
    }
    for profile in manifest.printer_profiles.iter() {
        for input in profile.inputs.iter() {
            needed.insert(match input {
                InputKind::Raster => "printer.raster",
                InputKind::Raw => "printer.raw",
                InputKind::Pdf => "printer.pdf",
            });
        }
    }
    if manifest.kind == DeviceKind::Scale {
        needed.insert("scale");
    }
    if manifest.kind == DeviceKind::Scanner {
        needed.insert("scanner");
    }
    for feature in needed {
        // Raw passthrough is part of every printer; only the features listed in the plugins
        // shipped with DeviceHub are demanded.
        if feature == "printer.raw" {
            continue;
        }
        if !listed(feature) {
            problems.push(ManifestProblem::MissingFeature(feature));
        }
    }
}

fn check_profiles(manifest: &PluginManifest, problems: &mut Vec<ManifestProblem>) {
    let is_printer = manifest.kind == DeviceKind::Printer;
    if is_printer == manifest.printer_profiles.is_empty() {
        problems.push(ManifestProblem::ProfilesDoNotFitKind(manifest.kind));
    }
    let mut seen = BTreeSet::new();
    for profile in manifest.printer_profiles.iter() {
        if !seen.insert(profile.name.as_str()) {
            problems.push(ManifestProblem::DuplicateProfile(profile.name.to_string()));
        }
        if profile.name.is_empty()
            || profile.dpi == 0
            || profile.width_dots == 0
            || profile.max_length_dots == 0
            || profile.media.is_empty()
            || profile.inputs.is_empty()
        {
            problems.push(ManifestProblem::ImpossibleProfile(profile.name.to_string()));
        }
    }
    if let Some(default) = manifest.default_profile.as_ref().into_option() {
        if is_printer && manifest.printer_profile(default.as_str()).is_none() {
            problems.push(ManifestProblem::UnknownProfile {
                used_by: "the default profile".to_string(),
                profile: default.to_string(),
            });
        }
    }
}

fn check_usb_table(manifest: &PluginManifest, problems: &mut Vec<ManifestProblem>) {
    let mut seen = BTreeSet::new();
    for model in manifest.usb_models.iter() {
        if model.vendor_id == 0 || model.model.trim().is_empty() {
            problems.push(ManifestProblem::BadUsbModel(model.model.to_string()));
        }
        if !seen.insert((model.vendor_id, model.product_id)) {
            problems.push(ManifestProblem::DuplicateUsbId(
                model.vendor_id,
                model.product_id,
            ));
        }
        // Scale and scanner plugins name their own kinds of profile, which the manifest does
        // not declare; only printer profiles can be checked.
        if manifest.kind == DeviceKind::Printer
            && manifest.printer_profile(model.profile.as_str()).is_none()
        {
            problems.push(ManifestProblem::UnknownProfile {
                used_by: format!("USB model {}", model.model),
                profile: model.profile.to_string(),
            });
        }
    }
}

/// `MAJOR.MINOR.PATCH` with optional `-pre` and `+build` parts, each number without leading
/// zeros (semver 2.0.0, items 2, 9 and 10).
fn is_semver(version: &str) -> bool {
    let (version, build) = match version.split_once('+') {
        Some((v, b)) => (v, Some(b)),
        None => (version, None),
    };
    let (core, pre) = match version.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (version, None),
    };
    let identifiers_ok = |part: Option<&str>| {
        part.is_none_or(|p| {
            p.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
        })
    };
    let numbers: Vec<&str> = core.split('.').collect();
    numbers.len() == 3
        && numbers.iter().all(|n| {
            !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
                && (n.len() == 1 || !n.starts_with('0'))
        })
        && identifiers_ok(pre)
        && identifiers_ok(build)
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{ROption, RVec};

    use super::*;
    use crate::manifest::{Ieee1284Match, MediaKind, PrinterProfile, SupportLevel, UsbModel};

    fn good() -> PluginManifest {
        PluginManifest {
            name: "acme-label".into(),
            version: "1.2.3-beta.1+build5".into(),
            api_version: API_VERSION.into(),
            required_features: RVec::from(vec!["printer.raster".into(), "match.ieee1284".into()]),
            kind: DeviceKind::Printer,
            description: "ACME label printers".into(),
            usb_models: RVec::from(vec![UsbModel {
                vendor_id: 0x1234,
                product_id: 1,
                model: "L1".into(),
                support: SupportLevel::Experimental,
                profile: "p203".into(),
            }]),
            ieee1284_matches: RVec::from(vec![Ieee1284Match {
                manufacturer: "ACME".into(),
                model_prefix: "".into(),
                command_set: "".into(),
                profile: "p203".into(),
            }]),
            printer_profiles: RVec::from(vec![PrinterProfile {
                name: "p203".into(),
                language: "ACME".into(),
                dpi: 203,
                width_dots: 832,
                max_length_dots: 8000,
                media: RVec::from(vec![MediaKind::Continuous]),
                inputs: RVec::from(vec![InputKind::Raster]),
            }]),
            default_profile: ROption::RSome("p203".into()),
        }
    }

    #[test]
    fn a_good_manifest_has_no_problems() {
        assert_eq!(manifest_problems(&good()), vec![]);
        check_manifest(&good());
    }

    #[test]
    fn each_mistake_is_named() {
        let mut m = good();
        m.name = "Acme".into();
        m.version = "1.02.3".into();
        m.api_version = "0.0.1".into();
        m.required_features = RVec::from(vec!["printer.raster".into(), "teleport".into()]);
        m.usb_models.push(m.usb_models[0].clone());
        m.usb_models[0].profile = "p300".into();
        m.ieee1284_matches[0].manufacturer = "".into();
        m.printer_profiles.push(m.printer_profiles[0].clone());
        let problems = manifest_problems(&m);
        let want = [
            ManifestProblem::BadName("Acme".into()),
            ManifestProblem::BadVersion("1.02.3".into()),
            ManifestProblem::WrongApiVersion("0.0.1".into()),
            ManifestProblem::UnknownFeature("teleport".into()),
            ManifestProblem::MissingFeature("match.ieee1284"),
            ManifestProblem::DuplicateProfile("p203".into()),
            ManifestProblem::UnknownProfile {
                used_by: "USB model L1".into(),
                profile: "p300".into(),
            },
            ManifestProblem::DuplicateUsbId(0x1234, 1),
            ManifestProblem::RuleMatchesEverything("p203".into()),
        ];
        for problem in &want {
            assert!(
                problems.contains(problem),
                "{problem:?} not in {problems:?}"
            );
        }
        assert_eq!(problems.len(), want.len(), "{problems:?}");
    }

    #[test]
    #[should_panic(expected = "has no field set")]
    fn check_manifest_panics_listing_the_problems() {
        let mut m = good();
        m.ieee1284_matches[0].manufacturer = "".into();
        check_manifest(&m);
    }

    #[test]
    fn semver_is_checked_strictly() {
        for ok in ["0.1.0", "1.0.0-rc.1", "10.20.30+abc.1"] {
            assert!(is_semver(ok), "{ok}");
        }
        for bad in ["1.0", "1.0.0.0", "01.0.0", "1.0.0-", "v1.0.0", ""] {
            assert!(!is_semver(bad), "{bad}");
        }
    }
}
