//! What a driver says about itself besides its readings: whether its instrument answers,
//! its recent errors, and counters of things that went wrong on the wire.
//!
//! The driver writes, the agent reads snapshots (the control API, the TUI, the
//! heartbeat). Drivers report per poll or per event, never per reading, so a plain mutex
//! is cheap enough; no lock is held across an await.
//!
//! Invariants: at most [`RECENT_ERRORS`] errors are kept (oldest dropped first), each
//! message at most [`MAX_MESSAGE`] bytes; `errors` counts every error ever reported.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::reading::Timestamp;

/// Errors kept per driver for `skygate errors` and the TUI.
pub const RECENT_ERRORS: usize = 16;
/// Longer messages are cut (a device can put anything in an error string).
pub const MAX_MESSAGE: usize = 512;

/// Where a driver stands with its instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DriverState {
    /// Started, nothing heard yet.
    #[default]
    Starting,
    /// The last exchange with the instrument worked.
    Running,
    /// The last exchange failed; the driver keeps trying.
    Failing,
    /// Stopped on request.
    Stopped,
    /// The driver gave up (its task returned an error); a reload or restart starts it again.
    Failed,
}

impl DriverState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Failing => "failing",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        }
    }
}

/// One reported error; the same message reported again in a row bumps `count` and `ts`
/// instead of pushing older, different errors out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorEvent {
    /// When it was last seen.
    pub ts: Timestamp,
    pub message: String,
    /// Times seen in a row.
    pub count: u64,
}

/// The newest [`RECENT_ERRORS`] errors of one component, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ErrorRing(VecDeque<ErrorEvent>);

impl ErrorRing {
    pub fn push(&mut self, message: impl Into<String>) {
        let mut message = message.into();
        if message.len() > MAX_MESSAGE {
            let cut = message.floor_char_boundary(MAX_MESSAGE);
            message.truncate(cut);
            message.push('…');
        }
        let ts = Timestamp::now();
        if let Some(last) = self.0.back_mut()
            && last.message == message
        {
            last.count += 1;
            last.ts = ts;
            return;
        }
        if self.0.len() == RECENT_ERRORS {
            self.0.pop_front();
        }
        self.0.push_back(ErrorEvent {
            ts,
            message,
            count: 1,
        });
    }

    pub fn last(&self) -> Option<&ErrorEvent> {
        self.0.back()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ErrorEvent> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A copy of a driver's health at one instant.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HealthSnapshot {
    pub state: DriverState,
    /// Errors reported since start.
    pub errors: u64,
    /// When the instrument last answered.
    pub last_ok: Option<Timestamp>,
    pub recent_errors: ErrorRing,
    /// Driver-specific counters (`crc_errors`, `timeouts`, `skipped`, ...).
    pub counters: BTreeMap<String, u64>,
}

impl HealthSnapshot {
    pub fn last_error(&self) -> Option<&ErrorEvent> {
        self.recent_errors.last()
    }
}

#[derive(Debug, Default)]
struct Inner {
    state: DriverState,
    errors: u64,
    last_ok: Option<Timestamp>,
    recent: ErrorRing,
    counters: BTreeMap<String, u64>,
}

/// The shared handle: the driver reports through it, the agent reads it.
#[derive(Debug, Clone, Default)]
pub struct DriverHealth {
    inner: Arc<Mutex<Inner>>,
}

impl DriverHealth {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding this lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instrument answered.
    pub fn ok(&self) {
        let mut i = self.lock();
        i.state = DriverState::Running;
        i.last_ok = Some(Timestamp::now());
    }

    /// An exchange failed. The driver goes on; the state says `failing` until the next `ok`.
    pub fn error(&self, message: impl Into<String>) {
        let mut i = self.lock();
        i.state = DriverState::Failing;
        i.errors += 1;
        i.recent.push(message);
    }

    /// Adds `n` to a named counter.
    pub fn count(&self, counter: &str, n: u64) {
        let mut i = self.lock();
        match i.counters.get_mut(counter) {
            Some(c) => *c += n,
            None => {
                i.counters.insert(counter.to_string(), n);
            }
        }
    }

    /// Set by the agent when the driver's task ends.
    pub fn set_state(&self, state: DriverState) {
        self.lock().state = state;
    }

    pub fn snapshot(&self) -> HealthSnapshot {
        let i = self.lock();
        HealthSnapshot {
            state: i.state,
            errors: i.errors,
            last_ok: i.last_ok,
            recent_errors: i.recent.clone(),
            counters: i.counters.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_errors_and_counts_all() {
        let h = DriverHealth::default();
        h.ok();
        assert_eq!(h.snapshot().state, DriverState::Running);
        for n in 0..40 {
            h.error(format!("timeout {n}"));
        }
        // The same error again in a row is counted, not pushed.
        h.error("timeout 39");
        h.count("timeouts", 40);
        h.count("timeouts", 2);
        let s = h.snapshot();
        assert_eq!(s.state, DriverState::Failing);
        assert_eq!(s.errors, 41);
        assert_eq!(s.recent_errors.len(), RECENT_ERRORS);
        assert_eq!(
            s.recent_errors.iter().next().map(|e| e.message.as_str()),
            Some("timeout 24")
        );
        let last = s.last_error().expect("an error");
        assert_eq!((last.message.as_str(), last.count), ("timeout 39", 2));
        assert_eq!(s.counters["timeouts"], 42);
        assert!(s.last_ok.is_some());
        h.ok();
        assert_eq!(h.snapshot().state, DriverState::Running);
    }

    #[test]
    fn cuts_long_messages_on_a_char_boundary() {
        let h = DriverHealth::default();
        h.error("é".repeat(MAX_MESSAGE));
        let s = h.snapshot();
        let m = &s.last_error().expect("an error").message;
        assert!(m.len() <= MAX_MESSAGE + '…'.len_utf8());
        assert!(m.ends_with('…'));
    }
}
