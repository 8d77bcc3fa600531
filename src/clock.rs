//! Wall-clock milliseconds that follow tokio's clock.
//!
//! Expiry times are absolute (they are stored and shared with peers), but
//! tests must be able to pause and advance time. The clock reads the wall
//! clock once and then advances with `tokio::time::Instant`, which is
//! monotonic in production and controllable under `start_paused`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall: UnixMillis,
    base: tokio::time::Instant,
}

impl Clock {
    pub fn new() -> Clock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock { base_wall: wall.as_millis() as UnixMillis, base: tokio::time::Instant::now() }
    }

    /// A clock starting at a given wall time (tests).
    pub fn starting_at(base_wall: UnixMillis) -> Clock {
        Clock { base_wall, base: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> UnixMillis {
        self.base_wall + self.base.elapsed().as_millis() as UnixMillis
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// RFC 3339 text of a time in milliseconds.
pub fn rfc3339(t: UnixMillis) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(t)).to_string()
}

/// Milliseconds of a duration, saturating.
pub fn millis(d: Duration) -> UnixMillis {
    d.as_millis().min(u128::from(u64::MAX)) as UnixMillis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let c = Clock::starting_at(1_000);
        assert_eq!(c.now(), 1_000);
        tokio::time::advance(Duration::from_millis(2_500)).await;
        assert_eq!(c.now(), 3_500);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
