//! "Is the sky clear?" from a sky-quality meter's brightness (mag/arcsec², higher is
//! darker): clear when the sky is dark enough and steady. Clouds both brighten the sky
//! (city light reflected) and make it fluctuate. One boolean per reading, `sky_clear`,
//! judged over the last ten readings of the same channel.

use std::collections::HashMap;

use skygate_fn::{Function, Output, Reading};

/// Darker than this (mag/arcsec²) counts as dark.
const DARK: f64 = 20.0;
/// Largest spread (max - min) over the history that counts as steady.
const STEADY: f64 = 0.3;
const HISTORY: usize = 10;

#[derive(Default)]
struct SkyClear {
    history: HashMap<String, Vec<f64>>,
}

impl Function for SkyClear {
    fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>) {
        for r in batch {
            let h = self.history.entry(r.channel.to_string()).or_default();
            if h.len() == HISTORY {
                h.remove(0);
            }
            h.push(r.value);
            let min = h.iter().copied().fold(f64::INFINITY, f64::min);
            let max = h.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let clear = min >= DARK && max - min < STEADY;
            out.push(Output::from(r).channel("sky_clear").flag(clear));
        }
    }
}

skygate_fn::export_function!(SkyClear);
