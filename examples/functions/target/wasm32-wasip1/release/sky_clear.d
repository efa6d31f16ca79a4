/work/main/tests/../examples/functions/target/wasm32-wasip1/release/sky_clear.wasm: /work/main/examples/functions/sky-clear/src/lib.rs /work/main/sdk/src/lib.rs
