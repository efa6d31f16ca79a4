/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/median_filter.d: median-filter/src/lib.rs

/work/main/tests/../examples/functions/target/wasm32-wasip1/release/deps/median_filter.wasm: median-filter/src/lib.rs

median-filter/src/lib.rs:
