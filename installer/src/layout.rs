//! Where an installation's files go, per operating system, under a root (`/` on a laptop, a
//! temp directory in tests and images).

use std::path::{Path, PathBuf};

/// The operating system an installation is laid out for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Platform {
    /// systemd, /etc/thoth, /var/lib/thoth.
    Linux,
    /// launchd, /Library/Application Support/Thoth.
    Macos,
    /// A Windows service, C:\Program Files\Thoth and C:\ProgramData\Thoth.
    Windows,
}

impl Platform {
    /// The platform this program runs on.
    pub(crate) fn native() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Macos
        } else if cfg!(windows) {
            Platform::Windows
        } else {
            Platform::Linux
        }
    }

    /// Lower-case name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Platform::Linux => "linux",
            Platform::Macos => "macos",
            Platform::Windows => "windows",
        }
    }
}

/// The macOS managed-preferences domain (the `PayloadType` of the configuration profile).
pub(crate) const MACOS_DOMAIN: &str = "com.thoth.agent";
/// The Windows policy registry key MDM (Intune, GPO) writes settings to.
pub(crate) const WINDOWS_POLICY_KEY: &str = r"HKLM\SOFTWARE\Policies\Thoth";
/// The Windows service name.
pub(crate) const WINDOWS_SERVICE: &str = "ThothAgent";
/// The launchd label.
pub(crate) const LAUNCHD_LABEL: &str = "com.thoth.agent";
/// The systemd unit name.
pub(crate) const SYSTEMD_UNIT: &str = "thoth-agent.service";

/// Paths of an installation under a root.
pub(crate) struct Layout {
    /// The root everything is under.
    pub root: PathBuf,
    /// Which operating system's layout.
    pub platform: Platform,
    /// True when `root` is the real system root (services are registered and started).
    pub system: bool,
    /// Where the files will be seen from when they run, if not `root` (a system image built
    /// under a prefix: the paths written into the files are the image's own).
    pub seen_from: Option<PathBuf>,
}

impl Layout {
    /// The layout for `platform` under `prefix` (`None`: the system root of this machine).
    pub(crate) fn new(prefix: Option<PathBuf>, platform: Platform) -> Layout {
        match prefix {
            Some(root) => {
                let system = root == Path::new("/") && platform == Platform::native();
                Layout {
                    root,
                    platform,
                    system,
                    seen_from: None,
                }
            }
            None => Layout {
                root: system_root(),
                platform,
                system: true,
                seen_from: None,
            },
        }
    }

    /// `path` (under `root`) as the installed software will see it (the image's own path).
    pub(crate) fn seen_path(&self, path: &Path) -> PathBuf {
        match (&self.seen_from, path.strip_prefix(&self.root)) {
            (Some(seen), Ok(rel)) => seen.join(rel),
            _ => path.to_path_buf(),
        }
    }

    /// A path recorded by an install (sandbox: under the prefix; image: the image's own) as
    /// it is here, under `root`.
    pub(crate) fn real_path(&self, path: &Path) -> PathBuf {
        if self.system || path.starts_with(&self.root) {
            return path.to_path_buf();
        }
        let rel: PathBuf = path
            .components()
            .skip_while(|c| !matches!(c, std::path::Component::Normal(_)))
            .collect();
        self.root.join(rel)
    }

    /// The same layout as the installed software will see it (for paths written into files).
    pub(crate) fn as_seen(&self) -> Layout {
        Layout {
            root: self.seen_from.clone().unwrap_or_else(|| self.root.clone()),
            platform: self.platform,
            system: self.system,
            seen_from: None,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        let mut path = self.root.clone();
        for part in rel.split('/') {
            path.push(part);
        }
        path
    }

    /// Where `thoth`, `thoth-agent` and `thoth-installer` go.
    pub(crate) fn bin_dir(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self.p("usr/local/bin"),
            // Not /usr/local/bin: on Intel Macs with Homebrew it belongs to a user, who could
            // replace what root runs.
            Platform::Macos => self.etc().join("bin"),
            Platform::Windows => self.p("Program Files/Thoth"),
        }
    }

    /// Settings: `agent.toml`, the enrollment token, Linux's `managed.toml`.
    pub(crate) fn etc(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self.p("etc/thoth"),
            Platform::Macos => self.p("Library/Application Support/Thoth"),
            Platform::Windows => self.p("ProgramData/Thoth"),
        }
    }

    /// The agent's state: identity, policy, spool, the install manifest.
    pub(crate) fn state(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self.p("var/lib/thoth"),
            Platform::Macos | Platform::Windows => self.etc().join("state"),
        }
    }

    /// The agent's local socket.
    pub(crate) fn socket(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self.p("run/thoth/agent.sock"),
            Platform::Macos => self.p("var/run/thoth/agent.sock"),
            Platform::Windows => self.etc().join("agent.sock"),
        }
    }

    /// The service definition file, where there is one (Windows keeps it in the registry).
    pub(crate) fn service_file(&self) -> Option<PathBuf> {
        match self.platform {
            Platform::Linux => Some(self.p("etc/systemd/system").join(SYSTEMD_UNIT)),
            Platform::Macos => Some(self.launchd_plist()),
            Platform::Windows => None,
        }
    }

    /// macOS: the launchd definition of the service.
    pub(crate) fn launchd_plist(&self) -> PathBuf {
        self.p("Library/LaunchDaemons")
            .join(format!("{LAUNCHD_LABEL}.plist"))
    }

    /// The agent's log file, for platforms whose service manager writes one.
    pub(crate) fn log_file(&self) -> Option<PathBuf> {
        match self.platform {
            Platform::Macos => Some(self.launchd_log()),
            Platform::Linux | Platform::Windows => None,
        }
    }

    /// macOS: where launchd writes the agent's output.
    pub(crate) fn launchd_log(&self) -> PathBuf {
        self.p("Library/Logs/Thoth/agent.log")
    }

    /// The file MDM managed settings are read from (Windows: the policy registry instead).
    pub(crate) fn managed_file(&self) -> Option<PathBuf> {
        match self.platform {
            Platform::Linux => Some(self.etc().join("managed.toml")),
            Platform::Macos => Some(
                self.p("Library/Managed Preferences")
                    .join(format!("{MACOS_DOMAIN}.plist")),
            ),
            Platform::Windows => None,
        }
    }

    /// What install recorded.
    pub(crate) fn manifest(&self) -> PathBuf {
        self.state().join("install.json")
    }

    /// Where users' home directories are.
    pub(crate) fn users_root(&self) -> PathBuf {
        match self.platform {
            Platform::Linux => self.p("home"),
            Platform::Macos | Platform::Windows => self.p("Users"),
        }
    }

    /// The executable name of a binary on this layout's platform.
    pub(crate) fn exe(&self, name: &str) -> String {
        match self.platform {
            Platform::Windows => format!("{name}.exe"),
            _ => name.to_owned(),
        }
    }
}

fn system_root() -> PathBuf {
    if cfg!(windows) {
        let drive = std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into());
        PathBuf::from(format!("{drive}\\"))
    } else {
        PathBuf::from("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_platform_lays_out_under_the_prefix() {
        let l = Layout::new(Some("/tmp/r".into()), Platform::Macos);
        assert!(!l.system);
        assert_eq!(
            l.etc(),
            Path::new("/tmp/r/Library/Application Support/Thoth")
        );
        assert_eq!(
            l.managed_file().unwrap(),
            Path::new("/tmp/r/Library/Managed Preferences/com.thoth.agent.plist")
        );
        assert_eq!(
            l.service_file().unwrap(),
            Path::new("/tmp/r/Library/LaunchDaemons/com.thoth.agent.plist")
        );
        let w = Layout::new(Some("/tmp/r".into()), Platform::Windows);
        assert_eq!(w.bin_dir(), Path::new("/tmp/r/Program Files/Thoth"));
        assert_eq!(w.exe("thoth"), "thoth.exe");
        assert!(w.service_file().is_none());
        let l = Layout::new(Some("/".into()), Platform::native());
        assert!(l.system);
        let other = if Platform::native() == Platform::Linux {
            Platform::Macos
        } else {
            Platform::Linux
        };
        assert!(!Layout::new(Some("/".into()), other).system);
    }
}
