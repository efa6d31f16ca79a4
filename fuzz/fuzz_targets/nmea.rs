//! NMEA 0183: any bytes as a line. Parsed or refused, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = skygate_drivers::serial::nmea::parse(line);
    }
});
