//! The FITS primary-header parser on any bytes (it must never read past them).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = skygate_drivers::files::fits::parse_header(data);
});
