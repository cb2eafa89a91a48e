//! RFC 3339 timestamps in UTC without pulling in a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn rfc3339_now() -> String {
    Stamp::now().to_string()
}

/// A wall-clock instant taken when a record is submitted; the writer formats it
/// (without allocating) when it seals the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    secs: u64,
    micros: u32,
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ`
pub const STAMP_LEN: usize = 27;

impl Stamp {
    pub fn now() -> Self {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            secs: d.as_secs(),
            micros: d.subsec_micros(),
        }
    }

    /// The RFC 3339 form, written into `out` (years 0–9999).
    pub fn write<'a>(&self, out: &'a mut [u8; STAMP_LEN]) -> &'a str {
        let days = self.secs / 86_400;
        let rem = self.secs % 86_400;
        let (y, m, d) = civil_from_days(days as i64);
        let mut put = |at: usize, width: usize, mut v: u64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y.clamp(0, 9999) as u64);
        put(5, 2, u64::from(m));
        put(8, 2, u64::from(d));
        put(11, 2, rem / 3600);
        put(14, 2, (rem % 3600) / 60);
        put(17, 2, rem % 60);
        put(20, 6, u64::from(self.micros.min(999_999)));
        for (i, c) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
            (26, b'Z'),
        ] {
            out[i] = c;
        }
        // Only ASCII digits and separators were written.
        std::str::from_utf8(out).unwrap_or_default()
    }
}

impl std::fmt::Display for Stamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.write(&mut [0; STAMP_LEN]))
    }
}

/// `2026-11-23T16:43:01.123456Z` (the reference `Stamp::write` is tested against).
#[cfg(test)]
pub fn format_unix(secs: u64, micros: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-from-civil inverse: days since 1970-01-01 → (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_unix(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_unix(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(format_unix(1_795_452_181, 0), "2026-11-23T16:43:01.000000Z");
        for (secs, micros) in [
            (0, 0),
            (951_782_400, 5),
            (1_795_452_181, 999_999),
            (253_402_300_799, 1),
        ] {
            let s = Stamp { secs, micros };
            assert_eq!(s.to_string(), format_unix(secs, micros));
        }
    }
}
