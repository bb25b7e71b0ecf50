//! Durations (`500ms`, `2s`, `1m`) and sizes (`16KiB`, `100MiB`, bytes) as written in
//! config.yaml. Values are capped when parsed (no duration above one day, no size above
//! 1 TiB), so no arithmetic on them can overflow; a capped value is reported by the
//! caller as a warning.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// The largest duration accepted anywhere in the config.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest size accepted anywhere in the config.
pub(crate) const MAX_SIZE: u64 = 1 << 40;

/// A duration from the config, already capped at [`MAX_DURATION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigDuration {
    pub(crate) value: Duration,
    /// The value written was larger and has been capped.
    pub(crate) capped: bool,
}

impl ConfigDuration {
    pub(crate) const fn secs(s: u64) -> Self {
        Self {
            value: Duration::from_secs(s),
            capped: false,
        }
    }
}

/// Parses `500ms`, `2s`, `1m`, `1h`, `1d`, `1w` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<ConfigDuration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err = || format!("invalid duration {text:?} (write e.g. 500ms, 2s, 1m, 1h, 1d, 1w)");
    if num.is_empty() {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    let ms_per: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 604_800_000,
        _ => return Err(err()),
    };
    let max_ms = MAX_DURATION.as_millis() as u64;
    let ms = n.saturating_mul(ms_per);
    Ok(ConfigDuration {
        value: Duration::from_millis(ms.min(max_ms)),
        capped: ms > max_ms,
    })
}

/// A size in bytes from the config, already capped at [`MAX_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConfigSize {
    pub(crate) value: u64,
    pub(crate) capped: bool,
}

impl ConfigSize {
    pub(crate) const fn bytes(value: u64) -> Self {
        Self {
            value,
            capped: false,
        }
    }
}

/// Parses `16384`, `16KiB`, `100MiB`, `1GiB`, `10KB`, `5MB`.
pub(crate) fn parse_size(text: &str) -> Result<ConfigSize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let err = || format!("invalid size {text:?} (write bytes, or e.g. 16KiB, 100MiB, 1GiB)");
    if num.is_empty() {
        return Err(err());
    }
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(err()),
    };
    let v = n.saturating_mul(mult);
    Ok(ConfigSize {
        value: v.min(MAX_SIZE),
        capped: v > MAX_SIZE,
    })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = ConfigDuration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as 500ms, 2s or 1m")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_duration(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        parse_duration(&v.to_string()).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ConfigSize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a size in bytes, or such as 16KiB or 100MiB")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_size(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ConfigSize {
            value: v.min(MAX_SIZE),
            capped: v > MAX_SIZE,
        })
    }
}

impl<'de> serde::Deserialize<'de> for ConfigSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms").unwrap().value,
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("2s").unwrap().value, Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap().value, Duration::from_secs(60));
        assert_eq!(parse_duration("7").unwrap().value, Duration::from_secs(7));
        // Weeks, as `--since 1w` knows them; in config.yaml capped at a day.
        let week = parse_duration("1w").unwrap();
        assert!(week.capped);
        assert_eq!(week.value, MAX_DURATION);
        let big = parse_duration("99999999999999999d").unwrap();
        assert!(big.capped);
        assert_eq!(big.value, MAX_DURATION);
        for bad in ["", "s", "2x", "-1s", "1.5s", "2 weeks"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16KiB").unwrap().value, 16384);
        assert_eq!(parse_size("100MiB").unwrap().value, 100 << 20);
        assert_eq!(parse_size("10485760").unwrap().value, 10485760);
        assert!(parse_size("99999TiB").unwrap().capped);
        for bad in ["", "MiB", "1 XB", "1.5MiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
