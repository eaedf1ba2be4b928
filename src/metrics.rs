//! Prometheus text metrics, hand-written: a few labelled counters and one latency histogram
//! are all kefu exposes, not worth a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the turn-latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// Gauges that cost a scan of the store, kept between scrapes.
    scanned: Mutex<Option<Scanned>>,
    refreshing: AtomicBool,
}

/// One gauge: name, help, value.
pub type Gauge = (&'static str, &'static str, f64);

struct Scanned {
    at: Instant,
    gauges: Vec<Gauge>,
}

/// A metric name and its label pairs.
type Series = (&'static str, Vec<(&'static str, String)>);

#[derive(Default)]
struct Inner {
    counters: BTreeMap<Series, u64>,
    latency: [u64; BUCKETS.len()],
    latency_count: u64,
    latency_sum: f64,
}

const HELP: &[(&str, &str)] = &[
    ("kefu_turns_total", "Engine turns by channel and intent."),
    (
        "kefu_handoffs_total",
        "Conversations handed to a human, by reason.",
    ),
    (
        "kefu_callbacks_total",
        "Platform callbacks by channel and outcome.",
    ),
    (
        "kefu_deliveries_total",
        "Outbox deliveries by target and outcome.",
    ),
    (
        "kefu_provider_failures_total",
        "Model provider failures by provider.",
    ),
    (
        "kefu_messages_truncated_total",
        "Messages longer than server.max_message_chars, cut for the engine (stored whole).",
    ),
];

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        *self.lock().counters.entry(key).or_default() += 1;
    }

    pub fn get(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        self.lock().counters.get(&key).copied().unwrap_or(0)
    }

    pub fn observe_turn(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut g = self.lock();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                g.latency[i] += 1;
            }
        }
        g.latency_count += 1;
        g.latency_sum += secs;
    }

    /// Gauges whose computation scans the store (every conversation, the outbox), computed
    /// at most once per `max_age` and never on a scrape's path once known: a stale value is
    /// served while one background task refreshes it. Only the very first call waits.
    pub async fn scanned_gauges<F>(self: &Arc<Self>, max_age: Duration, scan: F) -> Vec<Gauge>
    where
        F: FnOnce() -> Vec<Gauge> + Send + 'static,
    {
        let cached = self
            .scanned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| (c.at.elapsed() > max_age, c.gauges.clone()));
        match cached {
            Some((false, gauges)) => gauges,
            Some((true, gauges)) => {
                if !self.refreshing.swap(true, Ordering::AcqRel) {
                    let me = self.clone();
                    tokio::task::spawn_blocking(move || {
                        let fresh = scan();
                        me.store_scanned(fresh);
                        me.refreshing.store(false, Ordering::Release);
                    });
                }
                gauges
            }
            None => {
                let fresh = tokio::task::spawn_blocking(scan).await.unwrap_or_default();
                self.store_scanned(fresh.clone());
                fresh
            }
        }
    }

    fn store_scanned(&self, gauges: Vec<Gauge>) {
        *self.scanned.lock().unwrap_or_else(|p| p.into_inner()) = Some(Scanned {
            at: Instant::now(),
            gauges,
        });
    }

    /// The Prometheus text exposition format.
    pub fn render(&self, gauges: &[(&str, &str, f64)]) -> String {
        let g = self.lock();
        let mut out = String::new();
        for (name, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((n, labels), v) in g.counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{n}{} {v}", label_text(labels));
            }
        }
        let _ = writeln!(
            out,
            "# HELP kefu_turn_seconds Time to handle one engine turn.\n# TYPE kefu_turn_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "kefu_turn_seconds_bucket{{le=\"{b}\"}} {}",
                g.latency[i]
            );
        }
        let _ = writeln!(
            out,
            "kefu_turn_seconds_bucket{{le=\"+Inf\"}} {}",
            g.latency_count
        );
        let _ = writeln!(out, "kefu_turn_seconds_sum {}", g.latency_sum);
        let _ = writeln!(out, "kefu_turn_seconds_count {}", g.latency_count);
        for (name, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        out
    }
}

fn label_text(labels: &[(&'static str, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::new();
        m.inc(
            "kefu_turns_total",
            &[("channel", "site"), ("intent", "query")],
        );
        m.inc(
            "kefu_turns_total",
            &[("channel", "site"), ("intent", "query")],
        );
        m.observe_turn(Duration::from_micros(700));
        let text = m.render(&[("kefu_knowledge_chunks", "Chunks indexed.", 3.0)]);
        assert!(text.contains("kefu_turns_total{channel=\"site\",intent=\"query\"} 2"));
        assert!(text.contains("kefu_turn_seconds_bucket{le=\"0.001\"} 1"));
        assert!(text.contains("kefu_turn_seconds_bucket{le=\"0.0005\"} 0"));
        assert!(text.contains("kefu_knowledge_chunks 3"));
    }

    #[tokio::test]
    async fn scanned_gauges_are_computed_once_per_max_age_off_the_scrape_path() {
        use std::sync::atomic::AtomicUsize;
        let m = Arc::new(Metrics::new());
        let scans = Arc::new(AtomicUsize::new(0));
        let scan = |scans: &Arc<AtomicUsize>| {
            let scans = scans.clone();
            move || {
                let n = scans.fetch_add(1, Ordering::SeqCst) + 1;
                vec![("g", "a gauge", n as f64)]
            }
        };
        let long = Duration::from_secs(3600);
        assert_eq!(m.scanned_gauges(long, scan(&scans)).await[0].2, 1.0);
        for _ in 0..100 {
            assert_eq!(m.scanned_gauges(long, scan(&scans)).await[0].2, 1.0);
        }
        assert_eq!(scans.load(Ordering::SeqCst), 1, "one scan for 101 scrapes");
        // Stale: the old value now, a new one after the background refresh.
        assert_eq!(
            m.scanned_gauges(Duration::ZERO, scan(&scans)).await[0].2,
            1.0
        );
        for _ in 0..200 {
            if m.scanned_gauges(long, scan(&scans)).await[0].2 == 2.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never refreshed");
    }
}
