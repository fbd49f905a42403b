//! Two small helpers the modules share: the system clock in unix seconds, and the clipping of
//! a client-written string before it is echoed.

use std::time::{SystemTime, UNIX_EPOCH};

/// The system clock in unix seconds (0 before the epoch).
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// How many characters of a client-written string an error or answer echoes.
#[cfg_attr(not(feature = "clerk-jwt"), allow(dead_code))]
pub(crate) const ECHO_CHARS: usize = 64;

/// The first `max` characters of `text` (characters, not bytes: never splits one), for
/// echoing what a client wrote in an error or answer without echoing all of it.
#[cfg_attr(not(feature = "clerk-jwt"), allow(dead_code))]
pub(crate) fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_at_most_max_characters_and_never_splits_one() {
        assert_eq!(clip("short", 64), "short");
        assert_eq!(clip(&"k".repeat(5_000), 64), "k".repeat(64));
        // 64 characters of two bytes each: 128 bytes kept, none split.
        assert_eq!(clip(&"é".repeat(100), 64), "é".repeat(64));
        assert_eq!(clip("", 64), "");
    }

    #[test]
    fn unix_now_is_the_system_clock_in_seconds() {
        let before = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let now = unix_now().cast_unsigned();
        let after = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((before..=after).contains(&now), "{before} {now} {after}");
        // Later than 2026-01-01: seconds, not milliseconds or a stuck zero.
        assert!((1_767_225_600..4_102_444_800).contains(&now), "{now}");
    }
}
