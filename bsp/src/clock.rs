//! The kernel's clock discipline, as `adjtimex(2)` reports it (read-only: `modes = 0`
//! changes nothing). NTP daemons (chrony, ntpd, systemd-timesyncd) and PPS disciplining
//! set these flags; the agent turns them into each reading's time quality.
//!
//! The only `unsafe` in Skygate outside of dependencies lives here: one read-only
//! syscall on a zeroed plain-data struct.

use serde::Serialize;

/// What the kernel says of its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KernelClock {
    /// Synchronised: `STA_UNSYNC` clear and the state not `TIME_ERROR`.
    pub synced: bool,
    /// A PPS signal is present and disciplines the time (`STA_PPSSIGNAL`, `STA_PPSTIME`).
    pub pps: bool,
    /// The kernel's maximum and estimated error bounds, microseconds.
    pub max_error_us: i64,
    pub est_error_us: i64,
}

/// Reads the kernel's clock state.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn kernel_clock() -> std::io::Result<KernelClock> {
    // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value;
    // with `modes = 0` adjtimex only writes the current state into it.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    tx.modes = 0;
    // SAFETY: `tx` is a valid, exclusively borrowed `timex` for the duration of the call.
    let state = unsafe { libc::adjtimex(&mut tx) };
    if state == -1 {
        return Err(std::io::Error::last_os_error());
    }
    let status = tx.status;
    Ok(KernelClock {
        synced: state != libc::TIME_ERROR && status & libc::STA_UNSYNC == 0,
        pps: status & libc::STA_PPSSIGNAL != 0 && status & libc::STA_PPSTIME != 0,
        max_error_us: tx.maxerror as i64,
        est_error_us: tx.esterror as i64,
    })
}

/// Other targets: unknown (callers fall back to other signs of synchronisation).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn kernel_clock() -> std::io::Result<KernelClock> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_answers_and_a_synced_clock_has_bounded_error() {
        let k = kernel_clock().expect("adjtimex");
        // What a test machine can promise: plausible bounds, and consistency between
        // the flag and the error estimate the kernel keeps (16 s is its unsynced cap).
        assert!(k.max_error_us >= 0 && k.est_error_us >= 0, "{k:?}");
        if k.synced {
            assert!(k.max_error_us < 16_000_000, "{k:?}");
        }
    }
}
