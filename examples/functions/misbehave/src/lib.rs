//! A function that misbehaves on purpose, for the agent's containment tests. The first
//! reading of a batch picks what it does: 1 loops forever, 2 panics, 3 allocates far more
//! memory than any limit, 4 emits a hundred thousand records per reading; anything else echoes.

use skygate_fn::{Function, Output, Reading};

#[derive(Default)]
struct Misbehave;

impl Function for Misbehave {
    fn process(&mut self, batch: &[Reading<'_>], out: &mut Vec<Output>) {
        let mode = batch.first().map_or(0.0, |r| r.value);
        match mode as i64 {
            1 => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            2 => panic!("misbehave: asked to panic by a reading of 2"),
            3 => {
                // black_box: without it the compiler sees through the vector and never
                // allocates it.
                let v: Vec<u8> = std::hint::black_box(vec![7; 1 << 30]);
                out.push(Output::from(&batch[0]).value(v[v.len() - 1] as f64));
            }
            4 => {
                for r in batch {
                    for _ in 0..100_000 {
                        out.push(Output::from(r));
                    }
                }
            }
            _ => out.extend(batch.iter().map(Output::from)),
        }
    }
}

skygate_fn::export_function!(Misbehave);
