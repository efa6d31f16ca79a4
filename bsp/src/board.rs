//! Board files (`bsp/boards/<board>.toml`, built into the binary and installed to
//! `/usr/share/skygate/boards/`): what a board family has and where — serial ports with
//! their stable names, the watchdog, status LEDs, the power-fail input line, the RAUC
//! `compatible` and slot layout — and which board this machine is.
//!
//! Selection, in order: the config's `gateway.board`; else the first shipped board (most
//! specific first, [`SHIPPED`] order) that the device tree's `compatible` list or DMI's
//! `sys_vendor` names; else the first whose `match.arch` is this CPU; else
//! `generic-linux`. [`select`] says which rule chose, so `skygate board` can show why.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The shipped boards, most specific first: selection tries them in this order.
pub const SHIPPED: &[(&str, &str)] = &[
    ("rpi4", include_str!("../boards/rpi4.toml")),
    ("imx6ul-rs485", include_str!("../boards/imx6ul-rs485.toml")),
    (
        "generic-arm64",
        include_str!("../boards/generic-arm64.toml"),
    ),
    (
        "generic-linux",
        include_str!("../boards/generic-linux.toml"),
    ),
];

/// The board used when nothing else matches.
pub const FALLBACK: &str = "generic-linux";

/// One board file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoardSpec {
    pub name: String,
    pub description: String,
    /// Debian architecture (`arm64`, `armhf`, `amd64`) or `any`.
    pub arch: String,
    pub bootloader: String,
    pub identity: Vec<String>,
    pub thermal: String,
    #[serde(default, rename = "match")]
    pub matches: Match,
    #[serde(default)]
    pub serial: Vec<SerialPortSpec>,
    pub watchdog: Option<WatchdogSpec>,
    #[serde(default)]
    pub leds: Vec<LedSpec>,
    pub power_fail: Option<PowerFailSpec>,
    pub rauc: Option<RaucSpec>,
}

/// How a board recognises the machine it runs on.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Match {
    /// Device-tree `compatible` strings, any of which selects the board.
    #[serde(default)]
    pub compatible: Vec<String>,
    /// DMI `sys_vendor` values (UEFI/ACPI machines have no device tree).
    #[serde(default)]
    pub dmi_sys_vendor: Vec<String>,
    /// The CPU architecture (`std::env::consts::ARCH`) this board is the default for.
    pub arch: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SerialPortSpec {
    /// What configs call it, e.g. `rs485-0`.
    pub name: String,
    /// The kernel's device.
    pub device: PathBuf,
    /// The stable name udev gives it (the board's rules file).
    pub link: PathBuf,
    /// `rs232`, `rs485`, `ttl`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSpec {
    pub device: Option<PathBuf>,
    pub timeout: Option<String>,
    /// Who feeds it: `systemd` (RuntimeWatchdogSec) or `agent`.
    pub owner: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedSpec {
    /// `link` (uplink up/degraded/down) or `fault`.
    pub name: String,
    /// The LED's directory in the sysfs `leds` class.
    pub sysfs: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PowerFailSpec {
    /// GPIO character device name (`gpiochip0`).
    pub chip: String,
    pub line: u32,
    /// The line reads low when power has failed.
    pub active_low: bool,
    /// How long the hold-up supply (supercap, UPS) keeps the board running after the
    /// edge: the agent's budget to make what it accepted durable (humantime, e.g. `2s`).
    pub hold_up: Option<String>,
}

impl PowerFailSpec {
    /// The hold-up time, when the board file names one (checked at parse).
    pub fn hold_up(&self) -> Option<std::time::Duration> {
        self.hold_up
            .as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaucSpec {
    pub compatible: String,
    pub bootloader: String,
    pub slots: Vec<SlotSpec>,
    /// The data partition (mounted at /var/lib/skygate, kept across slot switches).
    pub data: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlotSpec {
    pub name: String,
    pub device: PathBuf,
    pub bootname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BoardFileError {
    #[error("board file {name}: {message}")]
    Invalid { name: String, message: String },
    #[error("unknown board {0:?}; known boards: {1}")]
    Unknown(String, String),
}

impl BoardSpec {
    pub fn parse(name: &str, text: &str) -> Result<Self, BoardFileError> {
        let invalid = |message: String| BoardFileError::Invalid {
            name: name.to_string(),
            message,
        };
        let spec: BoardSpec = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if spec.name != name {
            return Err(invalid(format!("names itself {:?}", spec.name)));
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &spec.serial {
            if !seen.insert(&p.name) {
                return Err(invalid(format!("serial port {:?} twice", p.name)));
            }
        }
        if let Some(t) = spec.watchdog.as_ref().and_then(|w| w.timeout.as_deref()) {
            humantime::parse_duration(t)
                .map_err(|e| invalid(format!("watchdog.timeout {t:?}: {e}")))?;
        }
        if let Some(t) = spec.power_fail.as_ref().and_then(|p| p.hold_up.as_deref()) {
            humantime::parse_duration(t)
                .map_err(|e| invalid(format!("power_fail.hold_up {t:?}: {e}")))?;
        }
        Ok(spec)
    }
}

impl BoardSpec {
    /// Whether the board's architecture is this CPU's (`std::env::consts::ARCH`): a QEMU
    /// x86 VM reports the same DMI vendor as QEMU's arm64 `virt`.
    pub fn runs_on(&self, cpu_arch: &str) -> bool {
        match self.arch.as_str() {
            "any" => true,
            "arm64" => cpu_arch == "aarch64",
            "armhf" => cpu_arch == "arm",
            "amd64" => cpu_arch == "x86_64",
            other => other == cpu_arch,
        }
    }
}

/// Every shipped board, parsed (they are tested to parse).
pub fn shipped() -> Vec<BoardSpec> {
    SHIPPED
        .iter()
        .map(|(n, t)| BoardSpec::parse(n, t).expect("shipped board files parse"))
        .collect()
}

/// Names of the shipped boards.
pub fn names() -> Vec<&'static str> {
    SHIPPED.iter().map(|(n, _)| *n).collect()
}

/// Why a board was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum Reason {
    /// `gateway.board` in the config.
    Config,
    /// This device-tree `compatible` string.
    DeviceTree(String),
    /// This DMI `sys_vendor`.
    Dmi(String),
    /// The CPU architecture.
    Arch(String),
    /// Nothing matched.
    Fallback,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => f.write_str("gateway.board in the config"),
            Self::DeviceTree(c) => write!(f, "device tree compatible {c:?}"),
            Self::Dmi(v) => write!(f, "DMI sys_vendor {v:?}"),
            Self::Arch(a) => write!(f, "CPU architecture {a}"),
            Self::Fallback => f.write_str("no board file matched this machine"),
        }
    }
}

/// The machine's own description, read below `root` (`/` on a real system).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MachineFacts {
    /// `/proc/device-tree/compatible`, most specific first.
    pub compatible: Vec<String>,
    pub dmi_sys_vendor: Option<String>,
    pub arch: String,
}

impl MachineFacts {
    pub fn read(root: &Path, arch: &str) -> Self {
        let compatible = std::fs::read(root.join("proc/device-tree/compatible"))
            .map(|b| {
                b.split(|c| *c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let dmi_sys_vendor = std::fs::read_to_string(root.join("sys/class/dmi/id/sys_vendor"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Self {
            compatible,
            dmi_sys_vendor,
            arch: arch.to_string(),
        }
    }
}

/// Chooses the board (rules in the module doc).
pub fn select(
    boards: &[BoardSpec],
    facts: &MachineFacts,
    configured: Option<&str>,
) -> Result<(BoardSpec, Reason), BoardFileError> {
    let by_name = |n: &str| boards.iter().find(|b| b.name == n).cloned();
    if let Some(n) = configured {
        return by_name(n).map(|b| (b, Reason::Config)).ok_or_else(|| {
            let known: Vec<_> = boards.iter().map(|b| b.name.as_str()).collect();
            BoardFileError::Unknown(n.to_string(), known.join(", "))
        });
    }
    // The machine's most specific compatible string first, so a carrier board's entry
    // wins over its SoC's.
    let here: Vec<&BoardSpec> = boards.iter().filter(|b| b.runs_on(&facts.arch)).collect();
    for c in &facts.compatible {
        if let Some(b) = here.iter().find(|b| b.matches.compatible.contains(c)) {
            return Ok(((*b).clone(), Reason::DeviceTree(c.clone())));
        }
    }
    if let Some(v) = &facts.dmi_sys_vendor
        && let Some(b) = here.iter().find(|b| b.matches.dmi_sys_vendor.contains(v))
    {
        return Ok(((*b).clone(), Reason::Dmi(v.clone())));
    }
    if let Some(b) = here
        .iter()
        .find(|b| b.matches.arch.as_deref() == Some(facts.arch.as_str()))
    {
        return Ok(((*b).clone(), Reason::Arch(facts.arch.clone())));
    }
    let b =
        by_name(FALLBACK).ok_or_else(|| BoardFileError::Unknown(FALLBACK.into(), String::new()))?;
    Ok((b, Reason::Fallback))
}

/// The board of the machine whose files are below `root` (`/`), among the shipped ones,
/// with why it was chosen and what the machine said.
pub fn this_machine(
    root: &Path,
    configured: Option<&str>,
) -> Result<(BoardSpec, Reason, MachineFacts), BoardFileError> {
    let facts = MachineFacts::read(root, std::env::consts::ARCH);
    let (board, why) = select(&shipped(), &facts, configured)?;
    Ok((board, why, facts))
}

/// Whether a device the board file names exists on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Presence {
    pub what: String,
    pub path: PathBuf,
    pub present: bool,
}

/// What of the board's hardware is there (paths read below `root`).
pub fn probe(root: &Path, board: &BoardSpec) -> Vec<Presence> {
    let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let mut out = Vec::new();
    let mut check = |what: String, path: &Path| {
        out.push(Presence {
            what,
            path: path.to_path_buf(),
            present: at(path).exists(),
        });
    };
    for s in &board.serial {
        check(format!("serial {} ({})", s.name, s.kind), &s.link);
        check(format!("serial {} device", s.name), &s.device);
    }
    if let Some(d) = board.watchdog.as_ref().and_then(|w| w.device.as_ref()) {
        check("watchdog".into(), d);
    }
    for l in &board.leds {
        check(format!("led {}", l.name), &l.sysfs);
    }
    if let Some(p) = &board.power_fail {
        check(
            format!("power-fail input (line {})", p.line),
            &Path::new("/dev").join(&p.chip),
        );
    }
    if let Some(r) = &board.rauc {
        for s in &r.slots {
            check(format!("slot {}", s.name), &s.device);
        }
        check("data partition".into(), &r.data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(root: &Path, compatible: &[&str], vendor: Option<&str>, arch: &str) -> MachineFacts {
        if !compatible.is_empty() {
            let dt = root.join("proc/device-tree");
            std::fs::create_dir_all(&dt).expect("mkdir");
            let mut b = Vec::new();
            for c in compatible {
                b.extend_from_slice(c.as_bytes());
                b.push(0);
            }
            std::fs::write(dt.join("compatible"), b).expect("write");
        }
        if let Some(v) = vendor {
            let d = root.join("sys/class/dmi/id");
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("sys_vendor"), format!("{v}\n")).expect("write");
        }
        MachineFacts::read(root, arch)
    }

    #[test]
    fn every_shipped_board_file_parses_and_names_itself() {
        let boards = shipped();
        assert_eq!(boards.len(), SHIPPED.len());
        assert_eq!(boards.last().map(|b| b.name.as_str()), Some(FALLBACK));
        for b in &boards {
            for s in &b.serial {
                assert!(s.link.starts_with("/dev/skygate/"), "{}: {s:?}", b.name);
            }
        }
    }

    /// Each board's serial links are made by its udev rules (`bsp/udev/<board>.rules`).
    #[test]
    fn every_serial_link_a_board_names_has_its_udev_rule() {
        let udev = Path::new(env!("CARGO_MANIFEST_DIR")).join("udev");
        for b in shipped().iter().filter(|b| !b.serial.is_empty()) {
            let rules = std::fs::read_to_string(udev.join(format!("{}.rules", b.name)))
                .unwrap_or_else(|e| panic!("bsp/udev/{}.rules: {e}", b.name));
            for s in &b.serial {
                let kernel = s.device.file_name().and_then(|n| n.to_str()).expect("name");
                let link = s.link.strip_prefix("/dev/").expect("under /dev");
                assert!(
                    rules
                        .lines()
                        .any(|l| l.contains(&format!("KERNEL==\"{kernel}\""))
                            && l.contains(&format!("SYMLINK+=\"{}\"", link.display()))),
                    "{}: no rule links {kernel} to {}",
                    b.name,
                    s.link.display()
                );
            }
        }
    }

    #[test]
    fn each_board_is_chosen_from_its_device_tree_or_dmi_fixture() {
        let boards = shipped();
        /// Device-tree compatible list, DMI vendor, CPU -> board, reason.
        type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a str, &'a str, Reason);
        let cases: &[Case] = &[
            (
                &["raspberrypi,4-compute-module", "brcm,bcm2711"],
                None,
                "aarch64",
                "rpi4",
                Reason::DeviceTree("raspberrypi,4-compute-module".into()),
            ),
            (
                &["raspberrypi,4-model-b", "brcm,bcm2711"],
                None,
                "aarch64",
                "rpi4",
                Reason::DeviceTree("raspberrypi,4-model-b".into()),
            ),
            (
                &["moxa,uc-8100a", "fsl,imx6ul"],
                None,
                "arm",
                "imx6ul-rs485",
                Reason::DeviceTree("fsl,imx6ul".into()),
            ),
            (
                &["linux,dummy-virt"],
                None,
                "aarch64",
                "generic-arm64",
                Reason::DeviceTree("linux,dummy-virt".into()),
            ),
            (
                &[],
                Some("QEMU"),
                "aarch64",
                "generic-arm64",
                Reason::Dmi("QEMU".into()),
            ),
            (
                &[],
                Some("Advantech"),
                "aarch64",
                "generic-arm64",
                Reason::Arch("aarch64".into()),
            ),
            (
                &[],
                Some("Dell Inc."),
                "x86_64",
                "generic-linux",
                Reason::Fallback,
            ),
            // An x86 QEMU VM is not QEMU's arm64 virt.
            (
                &[],
                Some("QEMU"),
                "x86_64",
                "generic-linux",
                Reason::Fallback,
            ),
            (
                &["acme,unknown-board"],
                None,
                "riscv64",
                "generic-linux",
                Reason::Fallback,
            ),
        ];
        for (compatible, vendor, arch, want, why) in cases {
            let root = tempfile::tempdir().expect("tmp");
            let f = facts(root.path(), compatible, *vendor, arch);
            let (b, reason) = select(&boards, &f, None).expect("select");
            assert_eq!(
                (b.name.as_str(), &reason),
                (*want, why),
                "{compatible:?} {vendor:?}"
            );
        }
    }

    #[test]
    fn the_config_chooses_over_the_machine_and_an_unknown_name_is_refused() {
        let boards = shipped();
        let root = tempfile::tempdir().expect("tmp");
        let f = facts(root.path(), &["raspberrypi,4-model-b"], None, "aarch64");
        let (b, r) = select(&boards, &f, Some("imx6ul-rs485")).expect("select");
        assert_eq!((b.name.as_str(), r), ("imx6ul-rs485", Reason::Config));
        let e = select(&boards, &f, Some("rpi5")).expect_err("unknown");
        assert!(e.to_string().contains("rpi4"), "{e}");
    }

    #[test]
    fn probe_reports_which_devices_exist() {
        let boards = shipped();
        let rpi = boards.iter().find(|b| b.name == "rpi4").expect("rpi4");
        let root = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(root.path().join("dev/skygate")).expect("mkdir");
        std::fs::write(root.path().join("dev/skygate/gps"), "").expect("touch");
        std::fs::write(root.path().join("dev/gpiochip0"), "").expect("touch");
        let found = probe(root.path(), rpi);
        let present = |what: &str| {
            found
                .iter()
                .find(|p| p.what == what)
                .unwrap_or_else(|| panic!("{what} not probed: {found:?}"))
                .present
        };
        assert!(present("serial gps (rs232)"));
        assert!(!present("serial rs485-0 (rs485)"));
        assert!(present("power-fail input (line 17)"));
        assert!(!present("watchdog"));
    }

    #[test]
    fn a_board_file_with_a_typo_names_it() {
        let text = SHIPPED[0].1.replace("[watchdog]", "[watchdgo]");
        let e = BoardSpec::parse("rpi4", &text).expect_err("typo");
        assert!(e.to_string().contains("watchdgo"), "{e}");
        let e = BoardSpec::parse("rpi5", SHIPPED[0].1).expect_err("wrong name");
        assert!(e.to_string().contains("names itself"), "{e}");
    }
}
