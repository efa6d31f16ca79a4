//! A median filter: each reading replaced by the median of its channel's last five
//! readings (itself included), which removes single spikes (a bird on the anemometer)
//! without the lag of a mean. History is kept per channel across batches.

use std::collections::HashMap;

use skygate_fn::{Function, Output, Reading};

const WINDOW: usize = 5;

#[derive(Default)]
struct Median {
    history: HashMap<String, Vec<f64>>,
}

impl Function for Median {
    fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>) {
        for r in batch {
            let h = self.history.entry(r.channel.to_string()).or_default();
            if h.len() == WINDOW {
                h.remove(0);
            }
            h.push(r.value);
            let mut sorted = h.clone();
            sorted.sort_by(f64::total_cmp);
            let mid = sorted.len() / 2;
            let median = if sorted.len() % 2 == 1 {
                sorted[mid]
            } else {
                (sorted[mid - 1] + sorted[mid]) / 2.0
            };
            out.push(Output::from(r).value(median));
        }
    }
}

skygate_fn::export_function!(Median);
