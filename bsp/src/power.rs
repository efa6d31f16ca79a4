//! The power-fail input: a line a UPS or supercap supervisor asserts when input power is
//! lost, leaving the gateway a hold-up time to make what it accepted durable.
//!
//! [`PowerInput`] is the seam: [`GpioPowerFail`] reads a GPIO line through the kernel's
//! character device (uAPI v2, edge events, the board file's `[power_fail]` chip, line and
//! polarity); tests inject their own. [`watch`] runs an input on a named thread (reads
//! block) and reports each change of state, the first one being the state at start.
//!
//! Invariants: a change is reported once per edge the kernel saw, in order; the state is
//! re-read after every edge, so a burst of edges (a bouncing contact) ends on the line's
//! real level; the thread stops within [`POLL`] of its stop flag being set.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gpiocdev::line::{EdgeDetection, Value};

use crate::board::PowerFailSpec;

/// How long a blocking wait lasts before the stop flag is looked at again.
pub const POLL: Duration = Duration::from_millis(250);
/// Edges closer together than this are one (the kernel debounces in hardware or software).
pub const DEBOUNCE: Duration = Duration::from_millis(2);

/// What the power-fail input says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Input power is present.
    Ok,
    /// Input power is lost: the gateway runs on its hold-up supply.
    Failed,
}

#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    #[error("power-fail input {chip} line {line}: {source}")]
    Gpio {
        chip: PathBuf,
        line: u32,
        source: gpiocdev::Error,
    },
    #[error("power-fail input: {0}")]
    Other(String),
}

/// A source of power state. `wait` blocks for at most `timeout` and returns the state
/// when it changed (or may have), `None` when nothing happened.
pub trait PowerInput: Send + std::fmt::Debug {
    fn read(&mut self) -> Result<PowerState, PowerError>;
    fn wait(&mut self, timeout: Duration) -> Result<Option<PowerState>, PowerError>;
}

/// A GPIO line requested as an input with edge detection on both edges.
#[derive(Debug)]
pub struct GpioPowerFail {
    req: gpiocdev::Request,
    chip: PathBuf,
    line: u32,
}

impl GpioPowerFail {
    /// Requests the board's line (`/dev/<chip>` below `dev`, which is `/dev` on a real
    /// system). The line's active level is "power failed", as the board file's
    /// `active_low` says.
    pub fn open(dev: &Path, spec: &PowerFailSpec) -> Result<Self, PowerError> {
        let chip = dev.join(&spec.chip);
        let mut b = gpiocdev::Request::builder();
        b.on_chip(&chip)
            .with_consumer("skygate-power-fail")
            .with_line(spec.line)
            .as_input()
            .with_edge_detection(EdgeDetection::BothEdges)
            .with_debounce_period(DEBOUNCE);
        if spec.active_low {
            b.as_active_low();
        }
        let req = b.request().map_err(|source| PowerError::Gpio {
            chip: chip.clone(),
            line: spec.line,
            source,
        })?;
        Ok(Self {
            req,
            chip,
            line: spec.line,
        })
    }

    fn err(&self, source: gpiocdev::Error) -> PowerError {
        PowerError::Gpio {
            chip: self.chip.clone(),
            line: self.line,
            source,
        }
    }
}

impl PowerInput for GpioPowerFail {
    fn read(&mut self) -> Result<PowerState, PowerError> {
        match self.req.value(self.line).map_err(|e| self.err(e))? {
            Value::Active => Ok(PowerState::Failed),
            Value::Inactive => Ok(PowerState::Ok),
        }
    }

    fn wait(&mut self, timeout: Duration) -> Result<Option<PowerState>, PowerError> {
        if !self.req.wait_edge_event(timeout).map_err(|e| self.err(e))? {
            return Ok(None);
        }
        // Drain what queued up; the level read afterwards is the one that counts.
        while self.req.has_edge_event().map_err(|e| self.err(e))? {
            self.req.read_edge_event().map_err(|e| self.err(e))?;
        }
        self.read().map(Some)
    }
}

/// A running [`watch`] thread; dropping it stops the thread (within [`POLL`]).
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `input` on the thread `skygate-power`: `on_change` gets the state at start, then
/// every change. A read error is passed to `on_error` and ends the watch (a line that
/// went away does not come back by itself; the agent says so and runs on without it).
pub fn watch(
    mut input: Box<dyn PowerInput>,
    mut on_change: impl FnMut(PowerState) + Send + 'static,
    on_error: impl FnOnce(PowerError) + Send + 'static,
) -> std::io::Result<Watch> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("skygate-power".into())
        .spawn(move || {
            let mut run = || -> Result<(), PowerError> {
                let mut last = input.read()?;
                on_change(last);
                while !flag.load(Ordering::Relaxed) {
                    if let Some(now) = input.wait(POLL)?
                        && now != last
                    {
                        last = now;
                        on_change(now);
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                on_error(e);
            }
        })?;
    Ok(Watch {
        stop,
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A line driven by the test through a channel.
    #[derive(Debug)]
    struct Injected {
        level: PowerState,
        edges: mpsc::Receiver<PowerState>,
    }

    impl PowerInput for Injected {
        fn read(&mut self) -> Result<PowerState, PowerError> {
            Ok(self.level)
        }
        fn wait(&mut self, timeout: Duration) -> Result<Option<PowerState>, PowerError> {
            match self.edges.recv_timeout(timeout) {
                Ok(s) => {
                    self.level = s;
                    Ok(Some(s))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => Ok(None),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err(PowerError::Other("line went away".into()))
                }
            }
        }
    }

    #[test]
    fn the_watch_reports_the_state_at_start_then_each_change_once() {
        let (edges, rx) = mpsc::channel();
        let (seen_tx, seen) = mpsc::channel();
        let (err_tx, errs) = mpsc::channel();
        let w = watch(
            Box::new(Injected {
                level: PowerState::Ok,
                edges: rx,
            }),
            move |s| seen_tx.send(s).unwrap(),
            move |e| err_tx.send(e.to_string()).unwrap(),
        )
        .unwrap();
        // A bounce (Failed, Failed) is one change.
        for s in [PowerState::Failed, PowerState::Failed, PowerState::Ok] {
            edges.send(s).unwrap();
        }
        let got: Vec<_> = (0..3)
            .map(|_| seen.recv_timeout(Duration::from_secs(5)).unwrap())
            .collect();
        assert_eq!(
            got,
            [PowerState::Ok, PowerState::Failed, PowerState::Ok],
            "start state, then each change"
        );
        drop(edges);
        let e = errs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(e.contains("went away"), "{e}");
        drop(w);
        assert!(seen.try_recv().is_err(), "no more changes were reported");
    }

    #[test]
    fn a_missing_gpio_chip_is_an_error_naming_chip_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let spec = PowerFailSpec {
            chip: "gpiochip7".into(),
            line: 17,
            active_low: true,
            hold_up: None,
        };
        let e = GpioPowerFail::open(dir.path(), &spec)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpiochip7") && e.contains("line 17"), "{e}");
    }
}
