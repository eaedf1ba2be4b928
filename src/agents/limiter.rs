//! Wrong passwords are rate-limited per agent id and per client IP: after `limit` failures
//! inside a window, further logins for that id (or from that IP) are refused until the
//! window that started with the first failure is over, even with the right password, so
//! guessing gains nothing. In memory: a restart clears it, which costs an attacker a restart
//! they cannot cause.

use std::collections::HashMap;
use std::sync::Mutex;

/// Tracked keys beyond which stale entries are dropped (an attacker spraying ids).
const MAX_TRACKED: usize = 4096;

pub struct LoginLimiter {
    per_id: u32,
    per_ip: u32,
    window_ms: u64,
    /// key → (failures, window start)
    failures: Mutex<HashMap<String, (u32, u64)>>,
}

impl LoginLimiter {
    pub fn new(per_id: u32, per_ip: u32, window_ms: u64) -> Self {
        LoginLimiter {
            per_id,
            per_ip,
            window_ms,
            failures: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, u64)>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Some(wait_ms)` when logins for `id` from `ip` are paused now.
    pub fn paused(&self, id: &str, ip: &str, now_ms: u64) -> Option<u64> {
        let map = self.lock();
        [(id_key(id), self.per_id), (ip_key(ip), self.per_ip)]
            .into_iter()
            .filter_map(|(k, limit)| {
                let &(n, start) = map.get(&k)?;
                let end = start + self.window_ms;
                (n >= limit && end > now_ms).then(|| end - now_ms)
            })
            .max()
    }

    pub fn failed(&self, id: &str, ip: &str, now_ms: u64) {
        let mut map = self.lock();
        for k in [id_key(id), ip_key(ip)] {
            let e = map.entry(k).or_insert((0, now_ms));
            if e.1 + self.window_ms <= now_ms {
                *e = (0, now_ms);
            }
            e.0 += 1;
        }
        if map.len() > MAX_TRACKED {
            let window = self.window_ms;
            map.retain(|_, (_, start)| *start + window > now_ms);
        }
    }

    /// A right password clears the id's failures (the IP's stay: one good account must not
    /// reset the count for guessing others).
    pub fn succeeded(&self, id: &str) {
        self.lock().remove(&id_key(id));
    }
}

fn id_key(id: &str) -> String {
    format!("id:{id}")
}

fn ip_key(ip: &str) -> String {
    format!("ip:{ip}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_pauses_after_its_failures_until_the_window_ends() {
        let l = LoginLimiter::new(3, 100, 60_000);
        for t in 0..3 {
            assert_eq!(l.paused("dana", "1.2.3.4", t), None);
            l.failed("dana", "1.2.3.4", t);
        }
        assert_eq!(l.paused("dana", "1.2.3.4", 10), Some(59_990));
        assert_eq!(l.paused("dana", "5.6.7.8", 10), Some(59_990), "from any IP");
        assert_eq!(
            l.paused("lei", "1.2.3.4", 10),
            None,
            "other ids are not paused"
        );
        assert_eq!(l.paused("dana", "1.2.3.4", 60_000), None, "window over");
        l.failed("dana", "1.2.3.4", 60_001);
        assert_eq!(
            l.paused("dana", "1.2.3.4", 60_002),
            None,
            "a new window starts at 1"
        );
    }

    #[test]
    fn an_ip_pauses_after_failures_across_ids() {
        let l = LoginLimiter::new(100, 4, 60_000);
        for (t, id) in ["a", "b", "c", "d"].iter().enumerate() {
            l.failed(id, "9.9.9.9", t as u64);
        }
        assert!(l.paused("e", "9.9.9.9", 5).is_some());
        assert!(l.paused("e", "8.8.8.8", 5).is_none());
    }

    #[test]
    fn success_clears_the_id_but_not_the_ip() {
        let l = LoginLimiter::new(2, 3, 60_000);
        l.failed("dana", "ip", 0);
        l.succeeded("dana");
        l.failed("dana", "ip", 1);
        assert_eq!(
            l.paused("dana", "ip", 2),
            None,
            "one failure since the success"
        );
        l.failed("lei", "ip", 2);
        assert!(l.paused("x", "ip", 3).is_some(), "three from the IP");
    }
}
