//! A sliding-window rate limit: robots may send 20 messages a minute (WeCom and DingTalk
//! both block a robot that goes over).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

pub struct RateLimit {
    max: usize,
    window_ms: u64,
    sent: Mutex<VecDeque<u64>>,
}

impl RateLimit {
    pub fn per_minute(max: usize) -> Self {
        RateLimit {
            max,
            window_ms: 60_000,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// Take a slot at `now_ms`, or say how long until one frees up.
    pub fn acquire(&self, now_ms: u64) -> Result<(), Duration> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        while sent.front().is_some_and(|&t| t + self.window_ms <= now_ms) {
            sent.pop_front();
        }
        if sent.len() < self.max {
            sent.push_back(now_ms);
            Ok(())
        } else {
            let oldest = sent.front().copied().unwrap_or(now_ms);
            Err(Duration::from_millis(oldest + self.window_ms - now_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_a_minute() {
        let r = RateLimit::per_minute(20);
        for i in 0..20 {
            assert!(r.acquire(1000 + i).is_ok());
        }
        assert_eq!(r.acquire(2000), Err(Duration::from_millis(59_000)));
        assert!(
            r.acquire(61_000).is_ok(),
            "the first slot freed after a minute"
        );
    }
}
