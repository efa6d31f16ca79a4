//! Board support: what Skygate needs to know of and do with the hardware it runs on.
//!
//! The [`Board`] trait is the seam: identity, disk space, temperatures. [`GenericLinux`]
//! reads them from the usual places (machine-id, DMI, device tree, sysfs thermal zones).
//! [`board`] reads the board files (`bsp/boards/<board>.toml`: serial ports, watchdog,
//! LEDs, power-fail line, RAUC slots) and picks the one this machine is; udev rules and
//! the unit live in `bsp/udev/` and `bsp/systemd/`, the package's files in `bsp/debian/`. The
//! [`systemd`] module speaks the sd_notify protocol (readiness, watchdog, status);
//! [`clock`] reads the kernel's clock discipline (adjtimex); [`power`] watches the
//! power-fail input (GPIO character device) and [`leds`] drives the status LEDs (sysfs).
//!
//! This crate depends on neither the agent nor the drivers. It is the one crate allowed
//! `unsafe` (denied by default, allowed per function with a SAFETY note): `clock` only.

#![deny(unsafe_code)]

pub mod board;
pub mod clock;
pub mod leds;
pub mod power;
pub mod systemd;

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Who this gateway is, as the hardware tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `/etc/machine-id`: stable for the installed image.
    pub machine_id: Option<String>,
    /// Board or product model (DMI product name or device-tree model).
    pub model: Option<String>,
    /// Hardware serial number (DMI or device tree), where readable.
    pub serial: Option<String>,
}

/// Space on the filesystem holding a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// Bytes an unprivileged process may still write.
    pub available_bytes: u64,
}

/// A temperature sensor reading.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Temperature {
    pub sensor: String,
    pub celsius: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    #[error("cannot read disk space of {path}: {source}")]
    Disk {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The hardware as the agent sees it. Behind a trait so tests can inject a full disk or a
/// hot board.
pub trait Board: Send + Sync + std::fmt::Debug {
    fn identity(&self) -> Identity;
    fn disk_space(&self, path: &Path) -> Result<DiskSpace, BoardError>;
    fn temperatures(&self) -> Vec<Temperature>;
}

/// Any Linux machine: reads sysfs, procfs and /etc. Roots are configurable for tests.
#[derive(Debug, Clone)]
pub struct GenericLinux {
    root: PathBuf,
}

impl Default for GenericLinux {
    fn default() -> Self {
        Self::with_root("/")
    }
}

impl GenericLinux {
    /// A board whose files are read below `root` (`/` on a real system).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn read_trimmed(&self, rel: &str) -> Option<String> {
        let raw = std::fs::read(self.root.join(rel)).ok()?;
        // Device-tree strings end in NUL.
        let s = String::from_utf8_lossy(&raw)
            .trim_matches(|c: char| c.is_whitespace() || c == '\0')
            .to_string();
        (!s.is_empty()).then_some(s)
    }
}

impl Board for GenericLinux {
    fn identity(&self) -> Identity {
        Identity {
            machine_id: self.read_trimmed("etc/machine-id"),
            model: self
                .read_trimmed("proc/device-tree/model")
                .or_else(|| self.read_trimmed("sys/class/dmi/id/product_name")),
            serial: self
                .read_trimmed("proc/device-tree/serial-number")
                .or_else(|| self.read_trimmed("sys/class/dmi/id/product_serial")),
        }
    }

    fn disk_space(&self, path: &Path) -> Result<DiskSpace, BoardError> {
        let st = rustix::fs::statvfs(path).map_err(|e| BoardError::Disk {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        Ok(DiskSpace {
            total_bytes: st.f_blocks.saturating_mul(st.f_frsize),
            available_bytes: st.f_bavail.saturating_mul(st.f_frsize),
        })
    }

    fn temperatures(&self) -> Vec<Temperature> {
        let mut out = Vec::new();
        let Ok(zones) = std::fs::read_dir(self.root.join("sys/class/thermal")) else {
            return out;
        };
        let mut zones: Vec<_> = zones.flatten().map(|e| e.path()).collect();
        zones.sort();
        for zone in zones {
            let Some(name) = zone.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !name.starts_with("thermal_zone") {
                continue;
            }
            let milli = std::fs::read_to_string(zone.join("temp"))
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok());
            if let Some(milli) = milli {
                let sensor = std::fs::read_to_string(zone.join("type"))
                    .map(|s| s.trim().to_string())
                    .unwrap_or_else(|_| name.to_string());
                out.push(Temperature {
                    sensor,
                    celsius: milli as f64 / 1000.0,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_comes_from_machine_id_and_device_tree_before_dmi() {
        let root = tempfile::tempdir().expect("tmp");
        let p = root.path();
        std::fs::create_dir_all(p.join("etc")).expect("mkdir");
        std::fs::create_dir_all(p.join("proc/device-tree")).expect("mkdir");
        std::fs::create_dir_all(p.join("sys/class/dmi/id")).expect("mkdir");
        std::fs::write(p.join("etc/machine-id"), "abc123\n").expect("write");
        std::fs::write(p.join("proc/device-tree/model"), "Raspberry Pi CM4\0").expect("write");
        std::fs::write(p.join("sys/class/dmi/id/product_name"), "PC\n").expect("write");
        std::fs::write(p.join("sys/class/dmi/id/product_serial"), "SN-9\n").expect("write");
        let id = GenericLinux::with_root(p).identity();
        assert_eq!(id.machine_id.as_deref(), Some("abc123"));
        assert_eq!(id.model.as_deref(), Some("Raspberry Pi CM4"));
        assert_eq!(id.serial.as_deref(), Some("SN-9"));
    }

    #[test]
    fn thermal_zones_are_read_in_degrees_celsius() {
        let root = tempfile::tempdir().expect("tmp");
        let z = root.path().join("sys/class/thermal/thermal_zone0");
        std::fs::create_dir_all(&z).expect("mkdir");
        std::fs::write(z.join("temp"), "48312\n").expect("write");
        std::fs::write(z.join("type"), "cpu-thermal\n").expect("write");
        let t = GenericLinux::with_root(root.path()).temperatures();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].sensor, "cpu-thermal");
        assert!((t[0].celsius - 48.312).abs() < 1e-9);
    }

    #[test]
    fn disk_space_of_an_existing_path_is_nonzero() {
        let d = GenericLinux::default()
            .disk_space(Path::new("/"))
            .expect("statvfs /");
        assert!(d.total_bytes > 0 && d.available_bytes <= d.total_bytes);
    }
}
