//! Status LEDs: what the board file's `[[leds]]` name, through the kernel's sysfs `leds`
//! class (`brightness`, `max_brightness`, `trigger`).
//!
//! [`Led`] is the seam ([`SysfsLed`] on hardware, fixtures in tests). [`Leds`] owns the
//! LEDs on the thread `skygate-leds`: callers say which [`Pattern`] an LED should show and
//! the thread makes it so. A blink uses the kernel's `timer` trigger where the LED has it
//! (one write, no wake-ups) and is toggled by the thread otherwise.
//!
//! Invariants: the command queue is bounded ([`QUEUE`]); a full queue refuses the command
//! ([`Leds::show`] returns false) and the caller sends it again on its next round, so the
//! last pattern asked for is the one shown. A write error is logged once per LED and
//! the LED is left alone until a later pattern succeeds; LEDs never stop the agent. On
//! drop every LED is turned off.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Commands waiting for the LED thread.
pub const QUEUE: usize = 16;
/// The `timer` trigger's delay_on and delay_off before anyone sets them.
const KERNEL_DEFAULT: Duration = Duration::from_millis(500);

/// What an LED shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Off,
    On,
    /// On for `on`, off for `off`, repeating.
    Blink {
        on: Duration,
        off: Duration,
    },
}

impl Pattern {
    /// 1 Hz, even: "degraded".
    pub const SLOW: Pattern = Pattern::Blink {
        on: Duration::from_millis(500),
        off: Duration::from_millis(500),
    };
    /// 5 Hz: "act now" (power failed).
    pub const FAST: Pattern = Pattern::Blink {
        on: Duration::from_millis(100),
        off: Duration::from_millis(100),
    };
}

#[derive(Debug, thiserror::Error)]
#[error("LED {name} ({path}): {source}")]
pub struct LedError {
    pub name: String,
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// One LED.
pub trait Led: Send + std::fmt::Debug {
    fn name(&self) -> &str;
    /// Steady on or off (no trigger).
    fn set(&mut self, lit: bool) -> Result<(), LedError>;
    /// Blinks in hardware if the LED can; `Ok(false)` when the caller must toggle it.
    fn blink(&mut self, on: Duration, off: Duration) -> Result<bool, LedError>;
}

/// An LED of the sysfs `leds` class, e.g. `/sys/class/leds/ACT`.
#[derive(Debug)]
pub struct SysfsLed {
    name: String,
    dir: PathBuf,
    max: u32,
    timer: bool,
    /// The trigger last written, so steady states do not rewrite it.
    trigger: Option<&'static str>,
}

impl SysfsLed {
    /// Opens the LED in `dir`: reads its `max_brightness` and whether the `timer` trigger
    /// is available (the `trigger` file lists them, the current one in brackets).
    pub fn open(name: &str, dir: &Path) -> Result<Self, LedError> {
        let err = |file: &str, source| LedError {
            name: name.to_string(),
            path: dir.join(file),
            source,
        };
        let max = std::fs::read_to_string(dir.join("max_brightness"))
            .map_err(|e| err("max_brightness", e))?
            .trim()
            .parse::<u32>()
            .map_err(|e| {
                err(
                    "max_brightness",
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?;
        let triggers =
            std::fs::read_to_string(dir.join("trigger")).map_err(|e| err("trigger", e))?;
        let timer = triggers
            .split_whitespace()
            .any(|t| t.trim_matches(['[', ']']) == "timer");
        Ok(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            max: max.max(1),
            timer,
            trigger: None,
        })
    }

    fn write(&self, file: &str, value: &str) -> Result<(), LedError> {
        // sysfs attributes exist already; never create files (a typo stays an error).
        // O_TRUNC is ignored by sysfs and keeps fixtures honest.
        use std::io::Write;
        let path = self.dir.join(file);
        std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .and_then(|mut f| f.write_all(value.as_bytes()))
            .map_err(|source| LedError {
                name: self.name.clone(),
                path,
                source,
            })
    }

    fn set_trigger(&mut self, t: &'static str) -> Result<(), LedError> {
        if self.trigger != Some(t) {
            self.write("trigger", t)?;
            self.trigger = Some(t);
        }
        Ok(())
    }
}

impl Led for SysfsLed {
    fn name(&self) -> &str {
        &self.name
    }

    fn set(&mut self, lit: bool) -> Result<(), LedError> {
        self.set_trigger("none")?;
        let v = if lit { self.max } else { 0 };
        self.write("brightness", &v.to_string())
    }

    fn blink(&mut self, on: Duration, off: Duration) -> Result<bool, LedError> {
        if !self.timer {
            return Ok(false);
        }
        self.trigger = None;
        self.write("trigger", "timer")?;
        self.trigger = Some("timer");
        // The timer trigger creates delay_on/delay_off, owned by root. Where they cannot
        // be written, the kernel's default (500 ms each) is right for SLOW only; other
        // rates are blinked by the thread.
        for (file, d) in [("delay_on", on), ("delay_off", off)] {
            if let Err(e) = self.write(file, &d.as_millis().to_string()) {
                if on == KERNEL_DEFAULT && off == KERNEL_DEFAULT {
                    return Ok(true);
                }
                tracing::debug!(error = %e, "LED blink rate not settable: blinking in software");
                self.set_trigger("none")?;
                return Ok(false);
            }
        }
        Ok(true)
    }
}

enum Cmd {
    Show(String, Pattern),
    Stop,
}

/// The LEDs, owned by their thread.
#[derive(Debug)]
pub struct Leds {
    names: Vec<String>,
    tx: mpsc::SyncSender<Cmd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Leds {
    /// Starts the thread that owns `leds`.
    pub fn spawn(leds: Vec<Box<dyn Led>>) -> std::io::Result<Self> {
        let names = leds.iter().map(|l| l.name().to_string()).collect();
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("skygate-leds".into())
            .spawn(move || run(leds, rx))?;
        Ok(Self {
            names,
            tx,
            thread: Some(thread),
        })
    }

    /// The LEDs' names (`link`, `fault`).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Asks for `pattern` on the LED `name`. False when the queue is full: send it again.
    /// An unknown name is ignored (not every board has every LED).
    pub fn show(&self, name: &str, pattern: Pattern) -> bool {
        if !self.names.iter().any(|n| n == name) {
            return true;
        }
        self.tx
            .try_send(Cmd::Show(name.to_string(), pattern))
            .is_ok()
    }
}

impl Drop for Leds {
    fn drop(&mut self) {
        // A full queue drains within one round of the thread; then Stop gets in.
        let _ = self.tx.send(Cmd::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One LED's state on the thread.
struct Slot {
    led: Box<dyn Led>,
    /// Software blink: (on, off, lit now, next toggle).
    soft: Option<(Duration, Duration, bool, Instant)>,
    failed: bool,
}

impl Slot {
    fn apply(&mut self, p: Pattern) {
        self.soft = None;
        let r = match p {
            Pattern::Off => self.led.set(false),
            Pattern::On => self.led.set(true),
            Pattern::Blink { on, off } => match self.led.blink(on, off) {
                Ok(true) => Ok(()),
                Ok(false) => {
                    self.soft = Some((on, off, true, Instant::now() + on));
                    self.led.set(true)
                }
                Err(e) => Err(e),
            },
        };
        self.report(r);
    }

    fn report(&mut self, r: Result<(), LedError>) {
        match r {
            Ok(()) => self.failed = false,
            Err(e) if !self.failed => {
                self.failed = true;
                tracing::warn!(error = %e, "status LED cannot be set");
            }
            Err(_) => {}
        }
    }

    fn toggle_if_due(&mut self, now: Instant) {
        if let Some((on, off, lit, at)) = self.soft
            && now >= at
        {
            let next = if lit { off } else { on };
            self.soft = Some((on, off, !lit, now + next));
            let r = self.led.set(!lit);
            self.report(r);
        }
    }
}

fn run(leds: Vec<Box<dyn Led>>, rx: mpsc::Receiver<Cmd>) {
    let mut slots: Vec<Slot> = leds
        .into_iter()
        .map(|led| Slot {
            led,
            soft: None,
            failed: false,
        })
        .collect();
    loop {
        let next = slots.iter().filter_map(|s| s.soft.map(|x| x.3)).min();
        let wait = next.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Cmd::Show(name, p)) => {
                if let Some(s) = slots.iter_mut().find(|s| s.led.name() == name) {
                    s.apply(p);
                }
            }
            Ok(Cmd::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let now = Instant::now();
        for s in &mut slots {
            s.toggle_if_due(now);
        }
    }
    for s in &mut slots {
        s.apply(Pattern::Off);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs LED directory as the kernel lays it out.
    fn fixture(triggers: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (f, v) in [
            ("max_brightness", "255\n"),
            ("brightness", "0\n"),
            ("trigger", triggers),
            ("delay_on", "500\n"),
            ("delay_off", "500\n"),
        ] {
            std::fs::write(d.path().join(f), v).unwrap();
        }
        d
    }

    fn read(d: &Path, f: &str) -> String {
        std::fs::read_to_string(d.join(f)).unwrap()
    }

    #[test]
    fn steady_patterns_clear_the_trigger_and_set_full_or_zero_brightness() {
        let d = fixture("[none] timer heartbeat mmc0\n");
        let mut led = SysfsLed::open("link", d.path()).unwrap();
        led.set(true).unwrap();
        assert_eq!(read(d.path(), "trigger"), "none");
        assert_eq!(read(d.path(), "brightness"), "255");
        led.set(false).unwrap();
        assert_eq!(read(d.path(), "brightness"), "0");
    }

    #[test]
    fn a_blink_uses_the_kernel_timer_with_the_patterns_delays() {
        let d = fixture("none [mmc0] timer\n");
        let mut led = SysfsLed::open("link", d.path()).unwrap();
        assert!(
            led.blink(Duration::from_millis(100), Duration::from_millis(300))
                .unwrap()
        );
        assert_eq!(read(d.path(), "trigger"), "timer");
        assert_eq!(read(d.path(), "delay_on"), "100");
        assert_eq!(read(d.path(), "delay_off"), "300");
    }

    #[test]
    fn a_timer_whose_rate_cannot_be_set_is_used_only_for_the_kernels_default_rate() {
        let d = fixture("[none] timer\n");
        std::fs::remove_file(d.path().join("delay_on")).unwrap();
        let mut led = SysfsLed::open("fault", d.path()).unwrap();
        assert!(led.blink(KERNEL_DEFAULT, KERNEL_DEFAULT).unwrap());
        assert_eq!(read(d.path(), "trigger"), "timer");
        let fast = Duration::from_millis(100);
        assert!(!led.blink(fast, fast).unwrap(), "software blink");
        assert_eq!(read(d.path(), "trigger"), "none");
    }

    #[test]
    fn without_a_timer_trigger_the_thread_blinks_the_led_itself() {
        let d = fixture("[none] heartbeat\n");
        let led = SysfsLed::open("fault", d.path()).unwrap();
        let leds = Leds::spawn(vec![Box::new(led)]).unwrap();
        let on = Duration::from_millis(20);
        assert!(leds.show("fault", Pattern::Blink { on, off: on }));
        // Sample the brightness: a blinking LED is seen both lit and dark.
        let (mut lit, mut dark) = (false, false);
        let until = Instant::now() + Duration::from_secs(10);
        while !(lit && dark) && Instant::now() < until {
            match read(d.path(), "brightness").as_str() {
                "255" => lit = true,
                "0" => dark = true,
                _ => {}
            }
            std::thread::sleep(Duration::from_millis(3));
        }
        assert!(lit && dark, "lit {lit}, dark {dark}");
        assert_eq!(read(d.path(), "trigger"), "none", "no timer was asked for");
        drop(leds);
        assert_eq!(
            read(d.path(), "brightness"),
            "0",
            "off when the agent stops"
        );
    }

    #[test]
    fn an_led_missing_from_sysfs_is_an_error_naming_its_file() {
        let d = tempfile::tempdir().unwrap();
        let e = SysfsLed::open("link", &d.path().join("ACT"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("LED link") && e.contains("ACT/max_brightness"),
            "{e}"
        );
    }

    #[test]
    fn a_write_that_fails_does_not_stop_the_thread() {
        let d = fixture("[none]\n");
        let led = SysfsLed::open("link", d.path()).unwrap();
        std::fs::remove_file(d.path().join("brightness")).unwrap();
        let leds = Leds::spawn(vec![Box::new(led)]).unwrap();
        assert!(leds.show("link", Pattern::On));
        std::fs::write(d.path().join("brightness"), "0").unwrap();
        // The failed LED recovers on the next pattern.
        let until = Instant::now() + Duration::from_secs(10);
        while read(d.path(), "brightness") != "255" && Instant::now() < until {
            leds.show("link", Pattern::On);
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(read(d.path(), "brightness"), "255");
        assert!(
            leds.show("nonesuch", Pattern::On),
            "unknown LEDs are ignored"
        );
    }
}
