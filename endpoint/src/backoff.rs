//! Capped exponential backoff with full jitter (reconnects to the controller and the agent).

use std::time::Duration;

/// A random fraction in [0, 1).
pub fn jitter() -> f64 {
    let mut b = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with full jitter: a random wait in [0, min(cap, base·2^n)].
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let ceiling = exp.min(cap);
    ceiling.mul_f64(jitter()).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_capped_and_grows() {
        let cap = Duration::from_secs(60);
        for attempt in 0..40 {
            let d = backoff(attempt, Duration::from_secs(1), cap);
            assert!(
                d <= cap && d >= Duration::from_millis(100),
                "{attempt}: {d:?}"
            );
        }
        // Full jitter: waits differ between agents (no thundering herd).
        let waits: std::collections::BTreeSet<u128> = (0..50)
            .map(|_| backoff(6, Duration::from_secs(1), cap).as_millis())
            .collect();
        assert!(waits.len() > 10, "{waits:?}");
        // Early attempts stay short.
        assert!((0..50).all(|_| backoff(0, Duration::from_secs(1), cap) <= Duration::from_secs(1)));
    }
}
