//! Upgrade announcements: the cloud names the newest agent and plugin versions per update
//! channel in the shadow's `desired.releases`; DeviceHub compares them with what runs (semver)
//! and says when something newer is available for its channel (`updateChannel`).
//!
//! ```json
//! "releases": {
//!   "stable": {"agent": "0.2.0", "plugins": {"zebra": "0.1.1"}},
//!   "beta":   {"agent": "0.3.0-beta.1"}
//! }
//! ```
//!
//! Only the announcement is handled here: the agent itself is upgraded by the platform's
//! installer, plugins by a bundle update.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::shadow::PluginReport;

/// What is newer than what runs, on one channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeNotice {
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<VersionChange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PluginChange>,
}

/// The version that runs and the newer one announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionChange {
    pub current: String,
    pub available: String,
}

/// A plugin with a newer version announced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginChange {
    pub name: String,
    pub current: String,
    pub available: String,
}

/// Compares the announcement for `channel` with the running agent and plugins. Returns the
/// notice (`None` when nothing is newer, the channel is `off` or not announced) and a reason
/// for every entry that could not be read.
pub fn available(
    releases: &Value,
    channel: &str,
    agent_version: &str,
    plugins: &[PluginReport],
) -> (Option<UpgradeNotice>, Vec<String>) {
    let mut problems = Vec::new();
    if channel == "off" {
        return (None, problems);
    }
    let Some(release) = releases.get(channel) else {
        return (None, problems);
    };
    let Some(release) = release.as_object() else {
        problems.push(format!("releases.{channel} is not an object"));
        return (None, problems);
    };
    let mut notice = UpgradeNotice {
        channel: channel.to_string(),
        agent: None,
        plugins: Vec::new(),
    };
    if let Some(announced) = release.get("agent") {
        match newer(announced, agent_version) {
            Ok(Some(available)) => {
                notice.agent = Some(VersionChange {
                    current: agent_version.to_string(),
                    available,
                })
            }
            Ok(None) => {}
            Err(reason) => problems.push(format!("releases.{channel}.agent {reason}")),
        }
    }
    match release.get("plugins") {
        None => {}
        Some(Value::Object(announced)) => {
            for plugin in plugins {
                let Some(version) = announced.get(&plugin.name) else {
                    continue;
                };
                match newer(version, &plugin.version) {
                    Ok(Some(available)) => notice.plugins.push(PluginChange {
                        name: plugin.name.clone(),
                        current: plugin.version.clone(),
                        available,
                    }),
                    Ok(None) => {}
                    Err(reason) => problems.push(format!(
                        "releases.{channel}.plugins.{} {reason}",
                        plugin.name
                    )),
                }
            }
        }
        Some(_) => problems.push(format!("releases.{channel}.plugins is not an object")),
    }
    let any = notice.agent.is_some() || !notice.plugins.is_empty();
    (any.then_some(notice), problems)
}

/// The announced version when it is newer than `current`.
fn newer(announced: &Value, current: &str) -> Result<Option<String>, String> {
    let Some(text) = announced.as_str() else {
        return Err("is not a version string".into());
    };
    let announced = semver::Version::parse(text)
        .map_err(|e| format!("{text:?} is not a semantic version: {e}"))?;
    let current = semver::Version::parse(current)
        .map_err(|e| format!("cannot be compared with {current:?}: {e}"))?;
    Ok((announced > current).then(|| announced.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plugins() -> Vec<PluginReport> {
        vec![
            PluginReport {
                name: "zebra".into(),
                version: "0.1.0".into(),
                approval: "signed".into(),
            },
            PluginReport {
                name: "dymo".into(),
                version: "1.2.0".into(),
                approval: "signed".into(),
            },
        ]
    }

    #[test]
    fn newer_versions_on_the_own_channel_are_announced() {
        let releases = json!({
            "stable": {"agent": "0.2.0", "plugins": {"zebra": "0.1.1", "dymo": "1.2.0", "tspl": "9.0.0"}},
            "beta": {"agent": "0.3.0-beta.1"}
        });
        let (notice, problems) = available(&releases, "stable", "0.1.0", &plugins());
        assert!(problems.is_empty(), "{problems:?}");
        let notice = notice.expect("an upgrade");
        assert_eq!(notice.channel, "stable");
        assert_eq!(
            notice.agent,
            Some(VersionChange {
                current: "0.1.0".into(),
                available: "0.2.0".into()
            })
        );
        // Only plugins that run are compared; an equal version is not an upgrade.
        assert_eq!(
            notice.plugins,
            vec![PluginChange {
                name: "zebra".into(),
                current: "0.1.0".into(),
                available: "0.1.1".into()
            }]
        );
        let (beta, _) = available(&releases, "beta", "0.1.0", &plugins());
        assert_eq!(
            beta.expect("beta").agent.expect("agent").available,
            "0.3.0-beta.1"
        );
    }

    #[test]
    fn older_equal_off_and_unannounced_say_nothing() {
        let releases = json!({"stable": {"agent": "0.1.0"}, "beta": {"agent": "0.0.9"}});
        assert_eq!(available(&releases, "stable", "0.1.0", &[]).0, None);
        assert_eq!(available(&releases, "beta", "0.1.0", &[]).0, None);
        assert_eq!(available(&releases, "off", "0.0.1", &[]).0, None);
        assert_eq!(available(&json!({}), "stable", "0.0.1", &[]).0, None);
        // A pre-release is older than its release.
        let releases = json!({"stable": {"agent": "0.2.0-rc.1"}});
        assert_eq!(available(&releases, "stable", "0.2.0", &[]).0, None);
    }

    #[test]
    fn unreadable_entries_are_named() {
        let releases = json!({"stable": {"agent": "two", "plugins": {"zebra": 3}}});
        let (notice, problems) = available(&releases, "stable", "0.1.0", &plugins());
        assert_eq!(notice, None);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("releases.stable.agent \"two\" is not a semantic version"));
        assert!(problems[1].contains("releases.stable.plugins.zebra is not a version string"));
    }
}
