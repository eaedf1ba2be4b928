//! Prometheus text metrics, hand-written: a few labelled counters and one latency histogram
//! are all kefu exposes, not worth a metrics framework.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the turn-latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
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
        "kefu_kf_syncs_total",
        "WeCom kf sync runs by channel and outcome.",
    ),
    (
        "kefu_kf_pulled_total",
        "WeCom kf items pulled by channel and outcome.",
    ),
    (
        "kefu_kf_replies_cut_total",
        "WeCom kf replies cut or dropped to stay within 5 messages per 48 h.",
    ),
    (
        "kefu_kf_send_failures_total",
        "WeCom kf msg_send_fail events by channel.",
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
}
