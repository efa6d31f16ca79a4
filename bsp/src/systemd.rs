//! systemd integration: `Type=notify` readiness, watchdog keep-alives and status text.
//!
//! All calls are no-ops when the process was not started by systemd (`NOTIFY_SOCKET`
//! unset), so the same binary runs from a shell. The watchdog is only pinged by the agent
//! while its pipeline answers; this module only sends what it is told to.

use std::time::Duration;

/// Whether systemd supervises us with a watchdog, and how often it must hear from us.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// Tells systemd the service is up.
pub fn notify_ready() {
    send(&[sd_notify::NotifyState::Ready]);
}

/// Tells systemd the service is stopping.
pub fn notify_stopping() {
    send(&[sd_notify::NotifyState::Stopping]);
}

/// Keeps the watchdog from firing. Call only when the pipeline has proven it is alive.
pub fn notify_watchdog() {
    send(&[sd_notify::NotifyState::Watchdog]);
}

/// One line shown by `systemctl status`.
pub fn notify_status(text: &str) {
    send(&[sd_notify::NotifyState::Status(text)]);
}

fn send(state: &[sd_notify::NotifyState<'_>]) {
    // `notify` itself returns Ok when NOTIFY_SOCKET is unset.
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
