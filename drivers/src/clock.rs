//! The gateway's clock as drivers see it: the time now and how far it can be trusted.
//!
//! Invariant: a wall-clock step (the wall clock moving by more than [`STEP_THRESHOLD`]
//! against the monotonic clock between two looks) marks readings `step_detected` for
//! [`STEP_HOLD`] afterwards, so consumers know ordering by `ts` around it is unsafe.
//!
//! Synchronisation comes from a [`SyncProbe`] when one is given (the agent's reads the
//! kernel's adjtimex state: synced, PPS-disciplined), else from systemd-timesyncd's flag
//! file; it is looked at every [`SYNC_CHECK_EVERY`]. `gps` (a GPS fix without PPS) is not
//! claimed from here: the kernel cannot say which reference an NTP daemon follows.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::reading::{TimeQuality, Timestamp};

/// Wall-clock jumps larger than this between two looks count as a step.
pub const STEP_THRESHOLD: Duration = Duration::from_millis(500);
/// How long readings stay flagged after a step.
pub const STEP_HOLD: Duration = Duration::from_secs(60);
/// How often the synchronisation state is looked at again.
pub const SYNC_CHECK_EVERY: Duration = Duration::from_secs(10);

/// How the system clock is disciplined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncState {
    Unsynced,
    /// Synchronised by NTP/PTP (or any reference the kernel does not name).
    Ntp,
    /// Synchronised with a PPS signal disciplining the time.
    Pps,
}

/// Asks the system how its clock is disciplined; `None` when it cannot tell.
pub type SyncProbe = Box<dyn Fn() -> Option<SyncState> + Send + Sync>;

/// Where drivers get the time. Behind a trait so tests can inject steps and sync states.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> (Timestamp, TimeQuality);
}

/// The system clock, with step detection and the synchronisation state systemd-timesyncd
/// (or chrony with its timesync hook) advertises.
pub struct SystemClock {
    synced_flag: PathBuf,
    probe: Option<SyncProbe>,
    state: Mutex<StepState>,
}

impl std::fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemClock")
            .field("synced_flag", &self.synced_flag)
            .field("probe", &self.probe.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct StepState {
    last_wall: SystemTime,
    last_mono: Instant,
    step_seen_at: Option<Instant>,
    sync: SyncState,
    sync_checked: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new("/run/systemd/timesync/synchronized")
    }
}

impl SystemClock {
    pub fn new(synced_flag: impl Into<PathBuf>) -> Self {
        let synced_flag = synced_flag.into();
        let sync = flag_state(&synced_flag);
        Self {
            synced_flag,
            probe: None,
            state: Mutex::new(StepState {
                last_wall: SystemTime::now(),
                last_mono: Instant::now(),
                step_seen_at: None,
                sync,
                sync_checked: Instant::now(),
            }),
        }
    }

    /// Uses `probe` for the synchronisation state (the flag file when it cannot tell).
    pub fn with_probe(mut self, probe: SyncProbe) -> Self {
        let sync = probe().unwrap_or_else(|| flag_state(&self.synced_flag));
        self.probe = Some(probe);
        self.state.get_mut().unwrap_or_else(|p| p.into_inner()).sync = sync;
        self
    }

    fn sync_now(&self) -> SyncState {
        self.probe
            .as_ref()
            .and_then(|p| p())
            .unwrap_or_else(|| flag_state(&self.synced_flag))
    }
}

fn flag_state(flag: &std::path::Path) -> SyncState {
    if flag.exists() {
        SyncState::Ntp
    } else {
        SyncState::Unsynced
    }
}

impl Clock for SystemClock {
    fn now(&self) -> (Timestamp, TimeQuality) {
        let wall = SystemTime::now();
        let mono = Instant::now();
        // The lock is held for a few comparisons only; poisoned means a panic elsewhere,
        // and the state is still sound (plain values), so keep using it.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mono_delta = mono.duration_since(st.last_mono);
        let drift = match wall.duration_since(st.last_wall) {
            Ok(w) => w.abs_diff(mono_delta),
            Err(back) => back.duration() + mono_delta,
        };
        if drift > STEP_THRESHOLD {
            st.step_seen_at = Some(mono);
            tracing::warn!(
                drift_ms = drift.as_millis() as u64,
                "wall-clock step detected"
            );
        }
        st.last_wall = wall;
        st.last_mono = mono;
        if mono.duration_since(st.sync_checked) > SYNC_CHECK_EVERY {
            st.sync = self.sync_now();
            st.sync_checked = mono;
        }
        let quality = match (st.step_seen_at, st.sync) {
            (Some(at), _) if mono.duration_since(at) < STEP_HOLD => TimeQuality::StepDetected,
            (_, SyncState::Pps) => TimeQuality::Pps,
            (_, SyncState::Ntp) => TimeQuality::Ntp,
            (_, SyncState::Unsynced) => TimeQuality::Unsynced,
        };
        (Timestamp::from_system_time(wall), quality)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_reports_ntp_when_the_sync_flag_exists_and_unsynced_when_not() {
        let dir = std::env::temp_dir().join(format!("skygate-clock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let flag = dir.join("synchronized");
        let _ = std::fs::remove_file(&flag);
        assert_eq!(SystemClock::new(&flag).now().1, TimeQuality::Unsynced);
        std::fs::write(&flag, b"").expect("flag");
        assert_eq!(SystemClock::new(&flag).now().1, TimeQuality::Ntp);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_probe_decides_over_the_flag_file_and_the_flag_file_covers_when_it_cannot_tell() {
        let pps =
            SystemClock::new("/nonexistent/flag").with_probe(Box::new(|| Some(SyncState::Pps)));
        assert_eq!(pps.now().1, TimeQuality::Pps);
        let unsynced = SystemClock::new("/nonexistent/flag")
            .with_probe(Box::new(|| Some(SyncState::Unsynced)));
        assert_eq!(unsynced.now().1, TimeQuality::Unsynced);
        let unknown = SystemClock::new("/nonexistent/flag").with_probe(Box::new(|| None));
        assert_eq!(unknown.now().1, TimeQuality::Unsynced);
    }

    #[test]
    fn a_wall_clock_jump_against_the_monotonic_clock_is_flagged_as_a_step() {
        let clock = SystemClock::new("/nonexistent/flag");
        {
            let mut st = clock.state.lock().expect("lock");
            st.last_wall = SystemTime::now() - Duration::from_secs(3600);
        }
        assert_eq!(clock.now().1, TimeQuality::StepDetected);
        // It stays flagged for the hold time, not just one reading.
        assert_eq!(clock.now().1, TimeQuality::StepDetected);
    }
}
