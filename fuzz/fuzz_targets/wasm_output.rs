//! A WASM function's output batch, as the agent decodes it: whatever a module returns
//! must be refused with a reason or decoded, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut n = 0u32;
    let r = skygate_fn::read_batch(data, |rec| {
        n += 1;
        // What the agent checks next: the channel is text it can take as a name.
        let _ = rec.channel.len();
        Ok(())
    });
    if let Ok(count) = r {
        assert_eq!(count, n, "every record promised was seen");
    }
});
