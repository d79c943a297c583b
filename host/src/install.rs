//! `devicehub service install|uninstall`: DeviceHub as a system service. On Linux it writes (or
//! removes) the systemd unit from packaging/linux, the `devicehub` system user and a config that
//! keeps the data in the unit's state directory; other platforms get the steps to follow, since
//! their service definitions (packaging/macos, packaging/windows) are installed by hand or by an
//! installer.

use std::path::Path;

use crate::cli::ServiceAction;

/// The systemd unit shipped in packaging/linux.
pub const SYSTEMD_UNIT: &str = include_str!("../../packaging/linux/devicehub.service");
/// Where the unit is installed.
pub const UNIT_PATH: &str = "/etc/systemd/system/devicehub.service";
/// The service's config file.
pub const SERVICE_CONFIG: &str = "/etc/devicehub/devicehub.toml";
/// The binary path the shipped unit names; replaced by the running binary's path on install.
const PACKAGED_BINARY: &str = "/usr/bin/devicehub";

/// Why the service could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("installing a system service needs root: run `sudo devicehub service {0}`")]
    NotRoot(&'static str),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: crate::storage::StorageError,
    },
    #[error("cannot remove {path}: {source}")]
    Remove {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("cannot find the devicehub binary: {0}")]
    Binary(std::io::Error),
}

/// Runs `devicehub service ACTION`.
pub fn run(action: ServiceAction) -> anyhow::Result<()> {
    #[cfg(target_os = "linux")]
    {
        match action {
            ServiceAction::Install => linux::install()?,
            ServiceAction::Uninstall => linux::uninstall()?,
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        println!("{}", other_platform_steps(action));
        Ok(())
    }
}

/// What to do on a platform where DeviceHub does not install the service itself.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn other_platform_steps(action: ServiceAction) -> &'static str {
    match (cfg!(target_os = "macos"), action) {
        (true, ServiceAction::Install) => {
            "On macOS DeviceHub runs as a launchd daemon:\n  \
             sudo cp packaging/macos/com.devicehub.agent.plist /Library/LaunchDaemons/\n  \
             sudo launchctl bootstrap system /Library/LaunchDaemons/com.devicehub.agent.plist\n\
             (the comments in the plist say where the config and data go)"
        }
        (true, ServiceAction::Uninstall) => {
            "On macOS:\n  sudo launchctl bootout system/com.devicehub.agent\n  \
             sudo rm /Library/LaunchDaemons/com.devicehub.agent.plist"
        }
        (false, ServiceAction::Install) => {
            "On Windows DeviceHub runs under a service wrapper: follow packaging/windows/README.md \
             (WinSW with devicehub-service.xml, from an elevated PowerShell)"
        }
        (false, ServiceAction::Uninstall) => {
            "On Windows: devicehub-service.exe stop, then devicehub-service.exe uninstall \
             (see packaging/windows/README.md)"
        }
    }
}

/// The unit text with `ExecStart` naming `binary`.
pub fn unit_for(binary: &Path) -> String {
    SYSTEMD_UNIT.replace(
        &format!("ExecStart={PACKAGED_BINARY} "),
        &format!("ExecStart={} ", binary.display()),
    )
}

/// The config the service starts with: data in the unit's state directory.
pub fn service_config() -> String {
    "# DeviceHub's service config; see docs for the other keys ([cloud], [[devices]], [local]).\n\
     data_dir = \"/var/lib/devicehub\"\n"
        .to_string()
}

#[cfg(target_os = "linux")]
mod linux {
    use std::path::Path;
    use std::process::Command;

    use super::{InstallError, SERVICE_CONFIG, UNIT_PATH};
    use crate::storage::{write_atomic, Visibility};

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// True when systemd is the running init system (not in a container without it).
    fn systemd_runs() -> bool {
        Path::new("/run/systemd/system").is_dir()
    }

    fn run(program: &str, args: &[&str]) -> Result<(), InstallError> {
        let command = format!("{program} {}", args.join(" "));
        let output =
            Command::new(program)
                .args(args)
                .output()
                .map_err(|e| InstallError::Command {
                    command: command.clone(),
                    message: e.to_string(),
                })?;
        if output.status.success() {
            Ok(())
        } else {
            Err(InstallError::Command {
                command,
                message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    pub fn install() -> Result<(), InstallError> {
        if !is_root() {
            return Err(InstallError::NotRoot("install"));
        }
        let binary = std::env::current_exe().map_err(InstallError::Binary)?;
        let user_exists = Command::new("id")
            .arg("devicehub")
            .output()
            .is_ok_and(|o| o.status.success());
        if !user_exists {
            run(
                "useradd",
                &[
                    "--system",
                    "--no-create-home",
                    "--home-dir",
                    "/var/lib/devicehub",
                    "--shell",
                    "/usr/sbin/nologin",
                    "devicehub",
                ],
            )?;
            println!("Created the system user devicehub");
        }
        let config = Path::new(SERVICE_CONFIG);
        if !config.exists() {
            let dir = config.parent().expect("the config path has a folder");
            std::fs::create_dir_all(dir).map_err(|source| InstallError::Write {
                path: dir.display().to_string(),
                source: crate::storage::StorageError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                },
            })?;
            write_atomic(
                config,
                super::service_config().as_bytes(),
                Visibility::Default,
            )
            .map_err(|source| InstallError::Write {
                path: SERVICE_CONFIG.into(),
                source,
            })?;
            println!("Wrote {SERVICE_CONFIG}: add the [cloud] section and devices there");
        }
        write_atomic(
            Path::new(UNIT_PATH),
            super::unit_for(&binary).as_bytes(),
            Visibility::Default,
        )
        .map_err(|source| InstallError::Write {
            path: UNIT_PATH.into(),
            source,
        })?;
        println!("Wrote {UNIT_PATH}");
        if systemd_runs() {
            run("systemctl", &["daemon-reload"])?;
            run("systemctl", &["enable", "--now", "devicehub.service"])?;
            println!("DeviceHub is enabled and started: `systemctl status devicehub`");
        } else {
            println!(
                "systemd is not running on this computer: start DeviceHub with \
                 `devicehub --config {SERVICE_CONFIG} run` under the init system in use"
            );
        }
        Ok(())
    }

    pub fn uninstall() -> Result<(), InstallError> {
        if !is_root() {
            return Err(InstallError::NotRoot("uninstall"));
        }
        let unit = Path::new(UNIT_PATH);
        if systemd_runs() && unit.exists() {
            run("systemctl", &["disable", "--now", "devicehub.service"])?;
        }
        match std::fs::remove_file(unit) {
            Ok(()) => println!("Removed {UNIT_PATH}"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("{UNIT_PATH} was not installed")
            }
            Err(source) => {
                return Err(InstallError::Remove {
                    path: UNIT_PATH.into(),
                    source,
                })
            }
        }
        if systemd_runs() {
            run("systemctl", &["daemon-reload"])?;
        }
        println!(
            "The config {SERVICE_CONFIG}, the data in /var/lib/devicehub and the devicehub user \
             are kept; remove them by hand if DeviceHub will not be used again"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_unit_runs_the_installed_binary() {
        let unit = unit_for(Path::new("/opt/devicehub/bin/devicehub"));
        assert!(
            unit.contains(
                "ExecStart=/opt/devicehub/bin/devicehub --config /etc/devicehub/devicehub.toml run"
            ),
            "{unit}"
        );
        assert!(unit.contains("User=devicehub"));
        assert!(unit.contains("StateDirectory=devicehub"));
    }

    #[test]
    fn the_service_config_parses_and_uses_the_state_directory() {
        let config = crate::config::Config::parse(&service_config(), Path::new("service.toml"))
            .expect("the service config parses");
        assert_eq!(config.data_dir(), Path::new("/var/lib/devicehub"));
    }
}
