//! Metrics as CloudWatch Embedded Metric Format (EMF) log lines, for the
//! runtimes nothing scrapes: a Lambda invocation and a Worker request end by
//! printing what they recorded, and CloudWatch Logs turns each line into
//! metric data points (no PutMetricData call, no agent).
//!
//! [`EmfRecorder`] is a [`metrics::Recorder`]: the functions' `counter!`,
//! `gauge!` and `histogram!` calls (names in `oblivious_core::telemetry`) land
//! in memory, per metric name and label set:
//!
//! - counters as the increase since the last flush (`absolute` values count
//!   their rise), omitted when nothing was added;
//! - gauges as their last value, emitted when set or moved since the last flush;
//! - histograms as distinct values with counts, at most 100 (rounded to four
//!   significant digits, the closest neighbours merged past that; see [`hist`]).
//!
//! [`EmfRecorder::flush`] renders one JSON object per label set — the labels
//! are its dimensions, sorted by name — and resets counters and histograms:
//!
//! ```json
//! {"_aws":{"Timestamp":1795514400000,"CloudWatchMetrics":[{"Namespace":"Oblivious",
//!   "Dimensions":[["channel","model","route"]],
//!   "Metrics":[{"Name":"oblivious_requests_total","Unit":"Count"},
//!              {"Name":"oblivious_request_duration_seconds","Unit":"Seconds"}]}]},
//!  "channel":"up","model":"m-1","route":"/v1/chat/completions",
//!  "oblivious_requests_total":2,
//!  "oblivious_request_duration_seconds":{"Values":[0.031,0.2],"Counts":[1,1]}}
//! ```
//!
//! Within the specification's limits: at most 100 metrics per object (a label
//! set with more gets several objects), at most 30 dimensions (labels past
//! the 30th, by name, stay in the object as plain members), at most 100
//! values per metric; dimension values are non-empty ASCII strings of at most
//! 1,024 characters (an empty value becomes `none`, other characters `?`).
//! Units follow the names: `_seconds` is `Seconds`, `_bytes` is `Bytes`,
//! anything else `Count`.
//!
//! The crate keeps no clock and starts nothing: the shell passes the time to
//! `flush` and writes the lines where its runtime ships logs. It builds for
//! `wasm32-unknown-unknown` (atomics and `std::sync::Mutex` only).

pub mod hist;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder};
use metrics::{SharedString, Unit};

use crate::hist::Hist;

/// The CloudWatch namespace when none is configured.
pub const DEFAULT_NAMESPACE: &str = "Oblivious";
/// EMF: a directive holds at most 100 metric definitions.
pub const MAX_METRICS_PER_OBJECT: usize = 100;
/// EMF: a dimension set holds at most 30 dimension keys.
pub const MAX_DIMENSIONS: usize = 30;
/// CloudWatch: a dimension value is 1 to 1,024 ASCII characters.
pub const MAX_DIMENSION_VALUE: usize = 1024;
/// CloudWatch: a dimension or metric name is 1 to 255 characters.
pub const MAX_NAME: usize = 255;

/// The in-memory recorder. Clones share their state: install one as the
/// global recorder and flush through another (or through [`installed`]).
#[derive(Clone)]
pub struct EmfRecorder {
    inner: Arc<Inner>,
}

struct Inner {
    namespace: String,
    /// Every series ever registered (label sets are bounded by design), by
    /// the hash `metrics` keeps in each key, then name and labels in order;
    /// a name may be a counter, a gauge and a histogram at once. (Not a map
    /// by `Key`: its order-blind equality sorts, which costs the Worker
    /// kilobytes of code; the same labels in another order fold at flush.)
    series: Mutex<Registry>,
}

type Registry = HashMap<u64, Vec<(Key, Cells)>, BuildHasherDefault<KeyHash>>;

/// The hash a `Key` carries, as it writes it (one `u64`).
#[derive(Default)]
struct KeyHash(u64);

impl Hasher for KeyHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn key_hash(key: &Key) -> u64 {
    let mut h = KeyHash::default();
    key.hash(&mut h);
    h.finish()
}

#[derive(Default)]
struct Cells {
    counter: Option<Arc<CounterCell>>,
    gauge: Option<Arc<GaugeCell>>,
    histogram: Option<Arc<HistogramCell>>,
}

impl Default for EmfRecorder {
    fn default() -> Self {
        Self::new(DEFAULT_NAMESPACE)
    }
}

impl EmfRecorder {
    /// A recorder whose metrics go to `namespace` (an empty one means [`DEFAULT_NAMESPACE`]).
    pub fn new(namespace: &str) -> Self {
        let namespace = namespace.trim();
        let namespace = if namespace.is_empty() { DEFAULT_NAMESPACE } else { namespace };
        EmfRecorder {
            inner: Arc::new(Inner { namespace: namespace.chars().take(MAX_NAME).collect(), series: Mutex::default() }),
        }
    }

    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The EMF lines of everything recorded since the last flush, stamped
    /// `now_ms` (Unix milliseconds), one JSON object per line (no newline in
    /// it); counters and histograms start again from nothing. Empty when
    /// nothing was recorded.
    pub fn flush(&self, now_ms: i64) -> Vec<String> {
        let mut samples: Vec<(LabelSet, &str, Sample)> = Vec::new();
        // The registry, then one histogram at a time; recording takes one
        // histogram only: no two threads wait on each other.
        let series = lock(&self.inner.series);
        for (key, cells) in series.values().flatten() {
            if let Some(c) = &cells.counter {
                let n = c.pending.swap(0, Ordering::Relaxed);
                if n > 0 {
                    add(&mut samples, key, Sample::Count(n));
                }
            }
            if let Some(g) = &cells.gauge {
                if g.changed.swap(false, Ordering::Relaxed) {
                    add(&mut samples, key, Sample::Gauge(f64::from_bits(g.bits.load(Ordering::Relaxed))));
                }
            }
            if let Some(h) = &cells.histogram {
                let h = std::mem::take(&mut *lock(&h.hist));
                if !h.is_empty() {
                    add(&mut samples, key, Sample::Hist(h));
                }
            }
        }
        let lines = render(&self.inner.namespace, now_ms, samples);
        drop(series);
        lines
    }

    fn cells<T>(&self, key: &Key, slot: impl FnOnce(&mut Cells) -> &mut Option<Arc<T>>) -> Arc<T>
    where
        T: Default,
    {
        let mut series = lock(&self.inner.series);
        let bucket = series.entry(key_hash(key)).or_default();
        let same = |k: &Key| k.name() == key.name() && k.labels().eq(key.labels());
        let i = match bucket.iter().position(|(k, _)| same(k)) {
            Some(i) => i,
            None => {
                bucket.push((key.clone(), Cells::default()));
                bucket.len() - 1
            }
        };
        let cells = &mut bucket[i].1;
        slot(cells).get_or_insert_with(Arc::default).clone()
    }
}

/// Adds a sample where it sorts (by label set, then name; binary search and
/// insert are far less code in the Worker than a sort), folding the same
/// series under labels given in another order into one.
fn add<'a>(samples: &mut Vec<(LabelSet, &'a str, Sample)>, key: &'a Key, sample: Sample) {
    let labels = labels(key);
    let name = key.name();
    match samples.binary_search_by(|(l, n, _)| (l, *n).cmp(&(&labels, name))) {
        Ok(i) => samples[i].2.absorb(sample),
        Err(i) => samples.insert(i, (labels, name, sample)),
    }
}

/// Why [`install`] failed: another recorder is already the global one.
#[derive(Debug)]
pub struct InstallError;

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another metrics recorder is already installed")
    }
}

impl std::error::Error for InstallError {}

static INSTALLED: OnceLock<EmfRecorder> = OnceLock::new();

/// Makes an [`EmfRecorder`] for `namespace` the global `metrics` recorder of
/// the process (or the Worker isolate) and returns it; later calls return the
/// first one whatever their namespace. Call it at startup: two first calls at
/// once may see one of them fail.
pub fn install(namespace: &str) -> Result<&'static EmfRecorder, InstallError> {
    if let Some(r) = INSTALLED.get() {
        return Ok(r);
    }
    let recorder = EmfRecorder::new(namespace);
    metrics::set_global_recorder(recorder.clone()).map_err(|_| InstallError)?;
    Ok(INSTALLED.get_or_init(|| recorder))
}

/// The recorder [`install`] made global, if it ran.
pub fn installed() -> Option<&'static EmfRecorder> {
    INSTALLED.get()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recorder for EmfRecorder {
    // Units come from the names (see `unit`), descriptions have no place in EMF.
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cells(key, |c| &mut c.counter))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cells(key, |c| &mut c.gauge))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cells(key, |c| &mut c.histogram))
    }
}

#[derive(Default)]
struct CounterCell {
    /// Added since the last flush.
    pending: AtomicU64,
    /// Added ever (what `absolute` compares with).
    total: AtomicU64,
}

impl CounterFn for CounterCell {
    fn increment(&self, n: u64) {
        self.pending.fetch_add(n, Ordering::Relaxed);
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        let before = self.total.fetch_max(value, Ordering::Relaxed);
        if value > before {
            self.pending.fetch_add(value - before, Ordering::Relaxed);
        }
    }
}

#[derive(Default)]
struct GaugeCell {
    bits: AtomicU64,
    changed: AtomicBool,
}

impl GaugeCell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self.bits.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(f(f64::from_bits(b)).to_bits()));
        self.changed.store(true, Ordering::Relaxed);
    }
}

impl GaugeFn for GaugeCell {
    fn increment(&self, d: f64) {
        self.update(|v| v + d)
    }

    fn decrement(&self, d: f64) {
        self.update(|v| v - d)
    }

    fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        self.changed.store(true, Ordering::Relaxed);
    }
}

#[derive(Default)]
struct HistogramCell {
    hist: Mutex<Hist>,
}

impl HistogramFn for HistogramCell {
    fn record(&self, value: f64) {
        lock(&self.hist).record(value, 1)
    }

    fn record_many(&self, value: f64, count: usize) {
        lock(&self.hist).record(value, count as u64)
    }
}

enum Sample {
    Count(u64),
    Gauge(f64),
    Hist(Hist),
}

impl Sample {
    /// Folds a second sample of the same series in (the same labels given in
    /// another order); a different kind under the same name is dropped.
    fn absorb(&mut self, other: Sample) {
        match (self, other) {
            (Sample::Count(a), Sample::Count(b)) => *a = a.saturating_add(b),
            (Sample::Gauge(a), Sample::Gauge(b)) => *a = b,
            (Sample::Hist(a), Sample::Hist(b)) => a.merge(b),
            _ => {}
        }
    }

    /// Writes the metric's value as a target member (gauges are finite here).
    fn write(&self, out: &mut String) {
        match self {
            Sample::Count(n) => {
                let _ = write!(out, "{n}");
            }
            Sample::Gauge(v) => number(out, *v),
            Sample::Hist(h) => {
                out.push_str("{\"Values\":[");
                for (i, (v, _)) in h.points().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    number(out, *v);
                }
                out.push_str("],\"Counts\":[");
                for (i, (_, c)) in h.points().iter().enumerate() {
                    let _ = write!(out, "{}{c}", if i > 0 { "," } else { "" });
                }
                out.push_str("]}");
            }
        }
    }
}

/// The CloudWatch unit a metric's name implies (Prometheus naming: a unit suffix, `_total` for counts).
pub fn unit(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "Seconds"
    } else if name.ends_with("_bytes") {
        "Bytes"
    } else {
        "Count"
    }
}

/// A dimension name CloudWatch takes: ASCII without control characters, 1 to
/// 255 long, not starting with `:`, and never the `_aws` member itself.
fn dimension_name(name: &str) -> String {
    let mut s: String =
        name.chars().take(MAX_NAME).map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with(':') || s == "_aws" {
        s.insert(0, '_');
    }
    s
}

/// A dimension value CloudWatch takes: ASCII without control characters, 1 to
/// 1,024 long, with something other than spaces (else `none`).
fn dimension_value(value: &str) -> String {
    let s: String = value
        .chars()
        .take(MAX_DIMENSION_VALUE)
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' })
        .collect();
    if s.trim().is_empty() {
        "none".into()
    } else {
        s
    }
}

type LabelSet = Vec<(String, String)>;

/// A series' labels as dimensions: names and values made acceptable, sorted
/// by name, a label given twice keeping its first value.
fn labels(key: &Key) -> LabelSet {
    let mut labels: LabelSet = Vec::new();
    for label in key.labels() {
        let name = dimension_name(label.key());
        if let Err(i) = labels.binary_search_by(|(k, _)| k.cmp(&name)) {
            labels.insert(i, (name, dimension_value(label.value())));
        }
    }
    labels
}

/// A finite number as JSON (shortest round-trip digits, as serde_json writes them).
fn number(out: &mut String, v: f64) {
    if let Some(n) = serde_json::Number::from_f64(v) {
        let _ = write!(out, "{n}");
    }
}

/// A JSON string.
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The lines of samples sorted by label set and name: one object per label
/// set (more past 100 metrics).
fn render(namespace: &str, now_ms: i64, samples: Vec<(LabelSet, &str, Sample)>) -> Vec<String> {
    let mut lines = Vec::new();
    let mut group: Vec<(&str, Sample)> = Vec::new();
    let mut rest = samples.into_iter().peekable();
    while let Some((labels, name, sample)) = rest.next() {
        let acceptable = !name.is_empty()
            && name.len() <= MAX_NAME
            && name != "_aws"
            && !labels.iter().any(|(k, _)| k == name)
            && !matches!(sample, Sample::Gauge(v) if !v.is_finite());
        if acceptable {
            group.push((name, sample));
        }
        if rest.peek().is_some_and(|(next, _, _)| *next == labels) {
            continue;
        }
        for chunk in group.chunks(MAX_METRICS_PER_OBJECT) {
            lines.push(object(namespace, now_ms, &labels, chunk));
        }
        group.clear();
    }
    lines
}

/// One EMF document: the `_aws` metadata first, then the dimensions, then the values.
fn object(namespace: &str, now_ms: i64, labels: &LabelSet, metrics: &[(&str, Sample)]) -> String {
    let mut out = String::with_capacity(256);
    let _ = write!(out, "{{\"_aws\":{{\"Timestamp\":{now_ms},\"CloudWatchMetrics\":[{{\"Namespace\":");
    string(&mut out, namespace);
    out.push_str(",\"Dimensions\":[[");
    for (i, (k, _)) in labels.iter().take(MAX_DIMENSIONS).enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(&mut out, k);
    }
    out.push_str("]],\"Metrics\":[");
    for (i, (name, _)) in metrics.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"Name\":");
        string(&mut out, name);
        let _ = write!(out, ",\"Unit\":\"{}\"}}", unit(name));
    }
    out.push_str("]}]}");
    for (k, v) in labels {
        out.push(',');
        string(&mut out, k);
        out.push(':');
        string(&mut out, v);
    }
    for (name, sample) in metrics {
        out.push(',');
        string(&mut out, name);
        out.push(':');
        sample.write(&mut out);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests;
