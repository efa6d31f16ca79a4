/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/skygate_fn-6a6e5e1e4b826a97.d: /work/main/sdk/src/lib.rs

/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/libskygate_fn-6a6e5e1e4b826a97.rlib: /work/main/sdk/src/lib.rs

/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/libskygate_fn-6a6e5e1e4b826a97.rmeta: /work/main/sdk/src/lib.rs

/work/main/sdk/src/lib.rs:
