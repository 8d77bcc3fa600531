//! Wall-clock milliseconds that follow tokio's clock.
//!
//! Expiry times are absolute (they are stored and shared with peers), but
//! tests must be able to pause and advance time. The clock reads the wall
//! clock once and then advances with `tokio::time::Instant`, which is
//! monotonic in production and controllable under `start_paused`.
//! [`Clock::resync`] (called periodically by the daemon) re-reads the wall
//! clock, so a clock that was wrong at boot and is corrected later (NTP)
//! is followed.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type UnixMillis = u64;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_wall: UnixMillis,
    base: tokio::time::Instant,
    /// Correction found by [`Clock::resync`], shared by every copy (one
    /// small allocation per clock made, which lives as long as the process).
    offset: &'static AtomicI64,
}

fn wall_now() -> UnixMillis {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as UnixMillis
}

impl Clock {
    pub fn new() -> Clock {
        Clock::starting_at(wall_now())
    }

    /// A clock starting at a given wall time (tests).
    pub fn starting_at(base_wall: UnixMillis) -> Clock {
        Clock { base_wall, base: tokio::time::Instant::now(), offset: Box::leak(Box::new(AtomicI64::new(0))) }
    }

    pub fn now(&self) -> UnixMillis {
        let t = self.base_wall + self.base.elapsed().as_millis() as UnixMillis;
        t.saturating_add_signed(self.offset.load(Ordering::Relaxed))
    }

    /// Re-reads the wall clock; returns by how many milliseconds it moved
    /// against the monotonic clock since the last read.
    pub fn resync(&self) -> i64 {
        let before = self.now();
        let monotonic = self.base_wall + self.base.elapsed().as_millis() as UnixMillis;
        let offset = wall_now() as i64 - monotonic as i64;
        self.offset.store(offset, Ordering::Relaxed);
        self.now() as i64 - before as i64
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
