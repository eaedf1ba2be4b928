//! Prometheus text metrics, hand-written: a few labelled counters and two histograms are
//! all kefu exposes, not worth a metrics framework.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Upper bounds (seconds) of the turn-latency histogram buckets.
const TURN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];
/// Upper bounds (seconds) of the time-to-first-human-reply buckets: 10 s to 4 h.
const FIRST_REPLY_BUCKETS: &[f64] = &[
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0,
];
/// First-reply times kept for the console's median and 90th percentile.
const RECENT_FIRST_REPLIES: usize = 1000;

struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            count: 0,
            sum: 0.0,
        }
    }

    fn observe(&mut self, secs: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in self.bounds.iter().enumerate() {
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {}", self.counts[i]);
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

/// Time to first human reply over the recent handoffs, for the console.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FirstReplySummary {
    /// Handoffs answered since the server started.
    pub count: u64,
    pub median_s: Option<f64>,
    pub p90_s: Option<f64>,
}

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

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            inner: Mutex::new(Inner {
                counters: BTreeMap::new(),
                turn: Histogram::new(TURN_BUCKETS),
                first_reply: Histogram::new(FIRST_REPLY_BUCKETS),
                recent_first_replies: VecDeque::new(),
            }),
            scanned: Mutex::new(None),
            refreshing: AtomicBool::new(false),
        }
    }
}

/// A metric name and its label pairs.
type Series = (&'static str, Vec<(&'static str, String)>);

struct Inner {
    counters: BTreeMap<Series, u64>,
    turn: Histogram,
    first_reply: Histogram,
    recent_first_replies: VecDeque<f64>,
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
    (
        "kefu_handoffs_ended_total",
        "Handoffs ended by agents, by how (released, closed).",
    ),
    (
        "kefu_agent_replies_total",
        "Messages agents wrote to customers, by channel.",
    ),
    (
        "kefu_agent_logins_total",
        "Agent console logins by outcome (ok, wrong, paused).",
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

    /// Every series of counter `name`, with the value of its label `label`.
    pub fn by_label(&self, name: &'static str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for ((n, labels), v) in self.lock().counters.iter() {
            if *n != name {
                continue;
            }
            if let Some((_, value)) = labels.iter().find(|(k, _)| *k == label) {
                *out.entry(value.clone()).or_default() += v;
            }
        }
        out
    }

    pub fn observe_turn(&self, d: Duration) {
        self.lock().turn.observe(d.as_secs_f64());
    }

    /// A handoff got its first human reply `d` after it started.
    pub fn observe_first_reply(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let mut g = self.lock();
        g.first_reply.observe(secs);
        if g.recent_first_replies.len() == RECENT_FIRST_REPLIES {
            g.recent_first_replies.pop_front();
        }
        g.recent_first_replies.push_back(secs);
    }

    pub fn first_reply_summary(&self) -> FirstReplySummary {
        let g = self.lock();
        let mut recent: Vec<f64> = g.recent_first_replies.iter().copied().collect();
        recent.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            let last = recent.len().checked_sub(1)?;
            Some(recent[((last as f64) * q).round() as usize])
        };
        FirstReplySummary {
            count: g.first_reply.count,
            median_s: pick(0.5),
            p90_s: pick(0.9),
        }
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
        g.turn.render(
            &mut out,
            "kefu_turn_seconds",
            "Time to handle one engine turn.",
        );
        g.first_reply.render(
            &mut out,
            "kefu_agent_first_reply_seconds",
            "Time from a handoff to the first human reply.",
        );
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

    #[test]
    fn first_replies_and_labels_for_the_console() {
        let m = Metrics::new();
        assert_eq!(m.first_reply_summary(), FirstReplySummary::default());
        for s in [30, 10, 20, 600, 40] {
            m.observe_first_reply(Duration::from_secs(s));
        }
        let f = m.first_reply_summary();
        assert_eq!((f.count, f.median_s, f.p90_s), (5, Some(30.0), Some(600.0)));
        let text = m.render(&[]);
        assert!(
            text.contains("kefu_agent_first_reply_seconds_bucket{le=\"30\"} 3"),
            "{text}"
        );
        assert!(text.contains("kefu_agent_first_reply_seconds_count 5"));
        m.inc("kefu_handoffs_total", &[("reason", "keyword")]);
        m.inc("kefu_handoffs_total", &[("reason", "keyword")]);
        m.inc("kefu_handoffs_total", &[("reason", "no_knowledge")]);
        let by = m.by_label("kefu_handoffs_total", "reason");
        assert_eq!(by.get("keyword"), Some(&2));
        assert_eq!(by.get("no_knowledge"), Some(&1));
    }
}
