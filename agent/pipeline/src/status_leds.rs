//! The board's status LEDs, from the components' handles (never their state): `link` shows
//! the uplink, `fault` what needs a technician.
//!
//! | LED   | on                        | slow blink (1 Hz)              | fast blink (5 Hz) | off |
//! |-------|---------------------------|--------------------------------|-------------------|-----|
//! | link  | every sink delivering     | some sinks backing off/failing | —                 | every sink down, or no sink |
//! | fault | buffer degraded (disk, writes, evicting) | —               | power failed      | all well |
//!
//! Paused sinks count as delivering (an operator paused them). The task looks every
//! [`EVERY`] and sends a pattern only when it changed, or again when the LED queue was
//! full; the LEDs turn off when the agent stops.

use std::collections::BTreeMap;
use std::time::Duration;

use skygate_bsp::leds::{Leds, Pattern};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::power::PowerStatus;
use skygate_buffer::BufferStatus;
use skygate_sinks::delivery::{LinkState, SinkHandle};

/// How often the LEDs are brought up to date.
pub const EVERY: Duration = Duration::from_secs(1);

/// The uplink as the `link` LED shows it.
pub fn link_pattern(states: &[LinkState]) -> Pattern {
    let up = |s: &LinkState| matches!(s, LinkState::Connected | LinkState::Paused);
    let down = |s: &LinkState| matches!(s, LinkState::Failing | LinkState::Stopped);
    if states.is_empty() || states.iter().all(down) {
        Pattern::Off
    } else if states.iter().all(up) {
        Pattern::On
    } else {
        Pattern::SLOW
    }
}

/// The `fault` LED.
pub fn fault_pattern(buffer: &BufferStatus, power: &PowerStatus) -> Pattern {
    if power.inputs.failed_by().is_some() {
        Pattern::FAST
    } else if buffer.degraded {
        Pattern::On
    } else {
        Pattern::Off
    }
}

pub(crate) async fn run(
    leds: Leds,
    sinks: BTreeMap<String, SinkHandle>,
    buffer: watch::Receiver<BufferStatus>,
    power: watch::Receiver<PowerStatus>,
    stop: CancellationToken,
) {
    let mut shown: BTreeMap<&'static str, Pattern> = BTreeMap::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        let states: Vec<LinkState> = sinks
            .values()
            .map(|h| h.status.borrow().state.clone())
            .collect();
        let want = [
            ("link", link_pattern(&states)),
            ("fault", fault_pattern(&buffer.borrow(), &power.borrow())),
        ];
        for (name, p) in want {
            if shown.get(name) != Some(&p) && leds.show(name, p) {
                shown.insert(name, p);
            }
        }
    }
    // Dropping the LEDs joins their thread, which turns them off.
    let _ = tokio::task::spawn_blocking(move || drop(leds)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use skygate_bsp::power::PowerState;

    #[test]
    fn the_link_led_is_on_when_every_sink_delivers_blinks_when_some_do_not_and_is_off_when_none_do()
    {
        use LinkState::*;
        assert_eq!(link_pattern(&[Connected, Paused]), Pattern::On);
        assert_eq!(link_pattern(&[Connected, BackingOff]), Pattern::SLOW);
        assert_eq!(link_pattern(&[Starting]), Pattern::SLOW);
        assert_eq!(link_pattern(&[Connected, Failing]), Pattern::SLOW);
        assert_eq!(link_pattern(&[Failing, Failing]), Pattern::Off);
        assert_eq!(link_pattern(&[]), Pattern::Off);
    }

    #[test]
    fn the_fault_led_blinks_fast_on_power_failure_and_is_on_while_the_buffer_is_degraded() {
        let ok = BufferStatus::default();
        let degraded = BufferStatus {
            degraded: true,
            reasons: vec!["disk full".into()],
        };
        let mut power = PowerStatus::default();
        assert_eq!(fault_pattern(&ok, &power), Pattern::Off);
        assert_eq!(fault_pattern(&degraded, &power), Pattern::On);
        power.inputs.gpio = Some(PowerState::Failed);
        assert_eq!(fault_pattern(&degraded, &power), Pattern::FAST);
    }
}
