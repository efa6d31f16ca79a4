//! Instrument files: FITS headers so far ([`fits`]); the directory watcher that ingests
//! finished files as blob records comes next.

pub mod fits;
