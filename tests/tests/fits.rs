//! FITS headers written by astropy (a third-party writer) read by Skygate's parser.

use skygate_drivers::files::fits::{BLOCK, HeaderValue, parse_header, primary_size};
use skygate_e2e::{peer_python, peers_dir};

#[test]
fn astropy_written_headers_read_back_with_their_types() {
    let root = tempfile::tempdir().expect("tmp");
    let file = root.path().join("frame.fits");
    let out = std::process::Command::new(peer_python())
        .arg(peers_dir().join("write_fits.py"))
        .arg(&file)
        .output()
        .expect("python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&file).expect("read");
    let h = parse_header(&bytes).expect("astropy's header parses");
    // The length the header announces is the file astropy wrote; a copy cut short is not.
    assert_eq!(primary_size(&bytes), Some(bytes.len() as u64));
    assert!(
        primary_size(&bytes[..bytes.len() - BLOCK])
            .is_some_and(|n| n > (bytes.len() - BLOCK) as u64)
    );
    let text = |k: &str| match h.get(k) {
        Some(HeaderValue::Text(t)) => t.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(text("DATE-OBS"), "2026-11-22T03:14:15.900");
    assert_eq!(text("OBJECT"), "NGC 2070");
    assert_eq!(text("INSTRUME"), "SKYCAM-2");
    assert_eq!(text("TELESCOP"), "Dome 2 astrograph");
    assert_eq!(text("FILTER"), "Halpha");
    assert_eq!(text("OBSERVER"), "O'Neill");
    let notes = text("NOTES");
    assert_eq!(
        notes.trim_end(),
        "a long remark that does not fit in one card, so astropy continues it "
            .repeat(2)
            .trim_end()
    );
    assert_eq!(h.get("EXPTIME"), Some(&HeaderValue::Real(120.5)));
    assert_eq!(h.get("CCD-TEMP"), Some(&HeaderValue::Real(-25.25)));
    assert_eq!(h.get("FOCUS"), Some(&HeaderValue::Integer(12345)));
    assert_eq!(h.get("AUTOGUID"), Some(&HeaderValue::Logical(true)));
    assert_eq!(h.get("BITPIX"), Some(&HeaderValue::Integer(16)));
    assert_eq!(h.get("NAXIS"), Some(&HeaderValue::Integer(2)));
    assert_eq!(h.get("NAXIS1"), Some(&HeaderValue::Integer(64)));
    assert_eq!(h.get("NAXIS2"), Some(&HeaderValue::Integer(48)));
    assert_eq!(h.get("KEY039"), Some(&HeaderValue::Integer(39)));
    // More than 36 cards: the header spans two blocks; the data follows it.
    assert_eq!(h.size, 2 * BLOCK);
    assert_eq!(
        bytes.len(),
        h.size + (48 * 64 * 2_usize).div_ceil(BLOCK) * BLOCK
    );
    // Only the header is needed: the first blocks alone parse the same.
    assert_eq!(parse_header(&bytes[..h.size]).expect("header only"), h);
}
