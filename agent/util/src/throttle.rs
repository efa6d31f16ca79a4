//! A token bucket for a sink's bandwidth cap.
//!
//! Bytes are charged after they were sent (a sink only knows the size of what it sent
//! once it has encoded it); a charge that overdraws the bucket makes the caller wait until
//! the balance is back to zero. So over any span the average stays at or below the rate,
//! plus one second's burst and one batch. For a thin link, keep `batch_max_bytes` well
//! below the rate so batches stay small.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Throttle {
    rate: f64,
    /// Bytes that may be sent now; negative: owed.
    tokens: f64,
    last: Instant,
}

impl Throttle {
    /// `rate` in bytes per second (at least 1).
    pub fn new(rate: u64) -> Self {
        let rate = rate.max(1) as f64;
        Self {
            rate,
            tokens: rate,
            last: Instant::now(),
        }
    }

    /// Charges `bytes`; returns how long to wait before sending more.
    pub fn charge(&mut self, bytes: u64) -> Duration {
        self.charge_at(bytes, Instant::now())
    }

    fn charge_at(&mut self, bytes: u64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        // Refill up to one second's worth: an idle link does not save up a huge burst.
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_average_rate_stays_at_the_cap_and_an_idle_link_saves_at_most_one_second() {
        let start = Instant::now();
        let mut t = Throttle::new(10_000);
        // One second's burst goes at once; after that each 5000 bytes costs 0.5 s.
        assert_eq!(t.charge_at(10_000, start), Duration::ZERO);
        let mut now = start;
        let mut total = 10_000u64;
        for _ in 0..20 {
            let wait = t.charge_at(5_000, now);
            total += 5_000;
            now += wait;
        }
        let secs = now.duration_since(start).as_secs_f64();
        // 110 kB at 10 kB/s, the first 10 kB free: 10 s.
        assert!((secs - 10.0).abs() < 0.01, "{secs}");
        assert!(total as f64 / secs <= 11_000.0 + 1.0);
        // A minute idle refills one second only.
        now += Duration::from_secs(60);
        assert_eq!(t.charge_at(10_000, now), Duration::ZERO);
        assert!(t.charge_at(10_000, now) >= Duration::from_millis(999));
    }
}
