/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/misbehave.d: misbehave/src/lib.rs

/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/misbehave.wasm: misbehave/src/lib.rs

misbehave/src/lib.rs:
