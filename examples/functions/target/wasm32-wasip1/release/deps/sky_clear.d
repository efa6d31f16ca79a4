/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/sky_clear.d: sky-clear/src/lib.rs

/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/sky_clear.wasm: sky-clear/src/lib.rs

sky-clear/src/lib.rs:
