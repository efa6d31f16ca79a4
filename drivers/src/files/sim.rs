//! A simulated camera PC for demos and the embedded default: it drops a small FITS frame
//! into the watched directory on a schedule, the way acquisition software does (written
//! under a temporary name, then renamed), so the whole file path — completion, header
//! keywords, policy after commit — runs as it would with a real camera.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::fits::BLOCK;

const WIDTH: usize = 64;
const HEIGHT: usize = 48;

/// An 80-character header card: `KEYWORD = value`.
fn card(keyword: &str, value: &str) -> String {
    format!("{:<80}", format!("{keyword:<8}= {value:>20}"))
}

fn text_card(keyword: &str, value: &str) -> String {
    format!("{:<80}", format!("{keyword:<8}= '{value:<8}'"))
}

/// Frame `n` taken at `when`: a 64x48 16-bit image of a sky gradient with a few stars,
/// with the keywords a camera PC writes. Padded to whole 2880-byte blocks as FITS wants.
pub fn synthetic_frame(n: u64, when: SystemTime) -> Vec<u8> {
    let t = chrono::DateTime::<chrono::Utc>::from(when);
    let cards = [
        card("SIMPLE", "T"),
        card("BITPIX", "16"),
        card("NAXIS", "2"),
        card("NAXIS1", &WIDTH.to_string()),
        card("NAXIS2", &HEIGHT.to_string()),
        text_card("DATE-OBS", &t.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()),
        text_card("OBJECT", "all-sky"),
        card("EXPTIME", "30.0"),
        text_card("INSTRUME", "SKYGATE-SIM"),
        text_card("TELESCOP", "simulated all-sky camera"),
        text_card("FILTER", "Clear"),
        card("FRAMENUM", &n.to_string()),
        format!("{:<80}", "END"),
    ];
    let mut out: Vec<u8> = cards.concat().into_bytes();
    out.resize(out.len().div_ceil(BLOCK) * BLOCK, b' ');
    let start = out.len();
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let sky = 800 + (y * 4) as i16 + ((n % 50) as i16);
            let star = (x * 7 + y * 13 + n as usize).is_multiple_of(97);
            let v: i16 = if star { 12_000 } else { sky };
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
    let data = out.len() - start;
    out.resize(start + data.div_ceil(BLOCK) * BLOCK, 0);
    out
}

/// Writes a frame into `dir` every `every` until the directory's driver stops (`stop`).
pub async fn camera(dir: PathBuf, every: Duration, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(every);
    for n in 1u64.. {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dir = dir.clone();
        let written = tokio::task::spawn_blocking(move || drop_frame(&dir, n)).await;
        if let Ok(Err(e)) = written {
            tracing::warn!(error = %e, "simulated camera: cannot write a frame");
        }
    }
}

fn drop_frame(dir: &Path, n: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let now = SystemTime::now();
    let stamp = chrono::DateTime::<chrono::Utc>::from(now).format("%Y%m%dT%H%M%S");
    let part = dir.join(format!(".sky-{n}.fits.part"));
    std::fs::write(&part, synthetic_frame(n, now))?;
    std::fs::rename(&part, dir.join(format!("sky-{stamp}-{n:05}.fits")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::fits::{HeaderValue, parse_header};

    #[test]
    fn a_synthetic_frame_is_valid_fits_with_the_camera_keywords() {
        let when = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_350_919_500);
        let f = synthetic_frame(7, when);
        assert_eq!(f.len() % BLOCK, 0);
        assert_eq!(
            f.len(),
            BLOCK + 3 * BLOCK,
            "one header block, 6144 data bytes in 3"
        );
        let h = parse_header(&f).expect("parses");
        assert_eq!(h.size, BLOCK);
        assert_eq!(h.get("NAXIS1"), Some(&HeaderValue::Integer(64)));
        assert_eq!(h.get("EXPTIME"), Some(&HeaderValue::Real(30.0)));
        assert_eq!(h.get("FRAMENUM"), Some(&HeaderValue::Integer(7)));
        assert_eq!(
            h.get("DATE-OBS"),
            Some(&HeaderValue::Text("2026-11-22T12:35:19.500".into()))
        );
        assert_eq!(
            h.get("INSTRUME"),
            Some(&HeaderValue::Text("SKYGATE-SIM".into()))
        );
    }
}
