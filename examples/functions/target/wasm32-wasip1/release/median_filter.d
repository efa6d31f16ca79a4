/work/main/tests/../examples/functions/target/wasm32-wasip1/release/median_filter.wasm: /work/main/examples/functions/median-filter/src/lib.rs /work/main/sdk/src/lib.rs
