//! Retry delays: exponential, capped, jittered, and never sooner than the server asked.

/// Delays for attempts 0, 1, 2, ... of one failing operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The first delay before jitter.
    pub base_ms: u64,
    /// No delay grows beyond this (before jitter; Retry-After may ask for longer).
    pub cap_ms: u64,
}

/// The longest Retry-After honoured: a buggy or hostile header must not park a player for hours.
pub const MAX_RETRY_AFTER_MS: u64 = 5 * 60 * 1000;

impl Backoff {
    /// Retrying a WHEP session: the first retry comes quickly (a relay restart is over in a
    /// second), later ones spread out to 10 s, so a player climbs back to WebRTC within about
    /// 10 s of it working again.
    pub const WHEP: Backoff = Backoff { base_ms: 500, cap_ms: 10_000 };

    /// The delay before retry number `attempt` (0 for the first retry).
    ///
    /// `jitter` is a random number in `[0, 1)` from the caller (so tests can pin it): "equal
    /// jitter", half the exponential delay fixed and half random, so many players that lost the
    /// same relay do not come back in lockstep. `retry_after_ms` from the server is a floor.
    pub fn delay_ms(&self, attempt: u32, jitter: f64, retry_after_ms: Option<u64>) -> u64 {
        let exp = self.base_ms.saturating_mul(1u64 << attempt.min(30)).min(self.cap_ms);
        let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        let jittered = exp / 2 + ((exp / 2) as f64 * jitter) as u64;
        match retry_after_ms {
            Some(ra) => jittered.max(ra.min(MAX_RETRY_AFTER_MS)),
            None => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let b = Backoff::WHEP;
        let top: Vec<u64> = (0..8).map(|n| b.delay_ms(n, 1.0, None)).collect();
        assert_eq!(top, [500, 1000, 2000, 4000, 8000, 10_000, 10_000, 10_000]);
        let bottom: Vec<u64> = (0..8).map(|n| b.delay_ms(n, 0.0, None)).collect();
        assert_eq!(bottom, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn jitter_spreads_within_the_upper_half() {
        let b = Backoff::WHEP;
        assert_eq!(b.delay_ms(3, 0.5, None), 3000);
        // Out-of-range randomness is clamped, not trusted.
        assert_eq!(b.delay_ms(3, 7.0, None), 4000);
        assert_eq!(b.delay_ms(3, f64::NAN, None), 2000);
        assert_eq!(b.delay_ms(3, -1.0, None), 2000);
    }

    #[test]
    fn retry_after_is_a_floor_with_a_ceiling() {
        let b = Backoff::WHEP;
        assert_eq!(b.delay_ms(0, 0.0, Some(3000)), 3000, "the server asked for 3 s");
        assert_eq!(b.delay_ms(5, 1.0, Some(1000)), 10_000, "our own delay is longer");
        assert_eq!(b.delay_ms(0, 0.0, Some(86_400_000)), MAX_RETRY_AFTER_MS);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(Backoff::WHEP.delay_ms(u32::MAX, 1.0, None), 10_000);
        let big = Backoff { base_ms: u64::MAX / 2, cap_ms: u64::MAX };
        assert!(big.delay_ms(40, 1.0, None) > 0);
    }
}
