/work/main/tests/../examples/functions/target/wasm32-wasip1/release/misbehave.wasm: /work/main/examples/functions/misbehave/src/lib.rs /work/main/sdk/src/lib.rs
