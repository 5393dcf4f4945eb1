use metrics::{counter, gauge, histogram, with_local_recorder};
use serde_json::{json, Value};

use super::*;

const UNITS: &[&str] = &["Seconds", "Bytes", "Count"];

/// Parses one line and checks it against the EMF specification: a root
/// object whose `_aws` has an integer `Timestamp` and directives with a
/// namespace, dimension sets of at most 30 keys naming string members, and at
/// most 100 metric definitions naming numeric members or `Values`/`Counts`
/// arrays of at most 100 values.
fn check(line: &str) -> Value {
    assert!(!line.contains('\n'), "one line: {line}");
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let root = doc.as_object().expect("a root object");
    let aws = root["_aws"].as_object().expect("_aws");
    assert!(aws["Timestamp"].is_i64(), "{line}");
    let directives = aws["CloudWatchMetrics"].as_array().expect("CloudWatchMetrics");
    assert!(!directives.is_empty());
    for d in directives {
        let ns = d["Namespace"].as_str().expect("Namespace");
        assert!(!ns.is_empty() && ns.len() <= 255);
        let sets = d["Dimensions"].as_array().expect("Dimensions");
        assert!(!sets.is_empty(), "at least one dimension set");
        for set in sets {
            let set = set.as_array().expect("a dimension set");
            assert!(set.len() <= MAX_DIMENSIONS, "{} dimensions", set.len());
            for k in set {
                let v = root[k.as_str().expect("a key")].as_str().expect("a string dimension member");
                assert!(!v.trim().is_empty() && v.len() <= 1024 && v.is_ascii(), "{v:?}");
            }
        }
        let defs = d["Metrics"].as_array().expect("Metrics");
        assert!(!defs.is_empty() && defs.len() <= MAX_METRICS_PER_OBJECT, "{} metrics", defs.len());
        for def in defs {
            let name = def["Name"].as_str().expect("Name");
            assert!(UNITS.contains(&def["Unit"].as_str().expect("Unit")));
            match &root[name] {
                Value::Number(_) => {}
                Value::Object(h) => {
                    let values = h["Values"].as_array().expect("Values");
                    let counts = h["Counts"].as_array().expect("Counts");
                    assert_eq!(h.len(), 2, "only Values and Counts");
                    assert!(!values.is_empty() && values.len() <= hist::MAX_VALUES);
                    assert_eq!(values.len(), counts.len());
                    assert!(values.iter().all(Value::is_number) && counts.iter().all(Value::is_u64));
                }
                other => panic!("{name} is {other}"),
            }
        }
    }
    doc
}

fn flushed(r: &EmfRecorder) -> Vec<Value> {
    r.flush(1_795_514_400_000).iter().map(|l| check(l)).collect()
}

#[test]
fn a_label_set_renders_as_one_emf_object_with_its_labels_as_dimensions() {
    let r = EmfRecorder::default();
    with_local_recorder(&r, || {
        let labels = [("route", "/v1/chat/completions"), ("model", "m-1"), ("channel", "up")];
        counter!("oblivious_requests_total", &labels).increment(1);
        counter!("oblivious_requests_total", &labels).increment(2);
        histogram!("oblivious_request_duration_seconds", &labels).record(0.25);
        histogram!("oblivious_request_duration_seconds", &labels).record(0.25);
        histogram!("oblivious_request_duration_seconds", &labels).record(1.5);
        gauge!("oblivious_payload_bytes", &labels).set(2048.0);
    });
    let docs = flushed(&r);
    assert_eq!(docs.len(), 1, "{docs:?}");
    let d = &docs[0];
    assert_eq!(d["_aws"]["Timestamp"], 1_795_514_400_000i64);
    let directive = &d["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "Oblivious");
    assert_eq!(directive["Dimensions"], json!([["channel", "model", "route"]]), "sorted by name");
    assert_eq!(
        directive["Metrics"],
        json!([
            { "Name": "oblivious_payload_bytes", "Unit": "Bytes" },
            { "Name": "oblivious_request_duration_seconds", "Unit": "Seconds" },
            { "Name": "oblivious_requests_total", "Unit": "Count" },
        ])
    );
    assert_eq!(
        (d["route"].as_str(), d["model"].as_str(), d["channel"].as_str()),
        (Some("/v1/chat/completions"), Some("m-1"), Some("up"))
    );
    assert_eq!(d["oblivious_requests_total"], 3);
    assert_eq!(d["oblivious_request_duration_seconds"], json!({ "Values": [0.25, 1.5], "Counts": [2, 1] }));
    assert_eq!(d["oblivious_payload_bytes"], 2048.0);
    let line = r#"{"_aws":{"Timestamp":1,"CloudWatchMetrics":[{"Namespace":"Oblivious","Dimensions":[[]],"Metrics":[{"Name":"x_total","Unit":"Count"}]}]},"x_total":1}"#;
    with_local_recorder(&r, || counter!("x_total").increment(1));
    assert_eq!(
        r.flush(1),
        vec![line.to_string()],
        "the `_aws` member first, compact, no labels: one empty dimension set"
    );
}

#[test]
fn counters_are_deltas_and_flushing_resets_counters_and_histograms() {
    let r = EmfRecorder::new("Test");
    let c = with_local_recorder(&r, || counter!("a_total"));
    c.increment(5);
    with_local_recorder(&r, || histogram!("t_seconds").record(0.1));
    let first = flushed(&r);
    assert_eq!(first.len(), 1);
    assert_eq!((first[0]["a_total"].as_u64(), first[0]["t_seconds"]["Counts"][0].as_u64()), (Some(5), Some(1)));
    assert_eq!(first[0]["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Test");
    assert!(r.flush(2).is_empty(), "nothing new: nothing to say");
    c.increment(2);
    // `absolute` counts the rise over what was counted: 7 so far, 10 now → 3.
    c.absolute(10);
    c.absolute(4);
    let second = flushed(&r);
    assert_eq!(second[0]["a_total"], 5);
    assert!(second[0].get("t_seconds").is_none(), "the histogram started again from nothing");
}

#[test]
fn gauges_report_their_last_value_when_it_was_touched() {
    let r = EmfRecorder::default();
    let g = with_local_recorder(&r, || gauge!("oblivious_usage_backlog"));
    g.increment(3.0);
    g.decrement(1.0);
    assert_eq!(flushed(&r)[0]["oblivious_usage_backlog"], 2.0);
    assert!(r.flush(0).is_empty(), "untouched since: not repeated");
    g.set(7.5);
    assert_eq!(flushed(&r)[0]["oblivious_usage_backlog"], 7.5);
    with_local_recorder(&r, || gauge!("oblivious_usage_backlog").increment(0.5));
    assert_eq!(flushed(&r)[0]["oblivious_usage_backlog"], 8.0, "a handle made again is the same gauge");
    g.set(f64::NAN);
    assert!(r.flush(0).is_empty(), "JSON has no NaN");
}

#[test]
fn each_label_set_is_its_own_object_and_label_order_does_not_matter() {
    let r = EmfRecorder::default();
    with_local_recorder(&r, || {
        counter!("oblivious_upstream_attempts_total", "channel" => "a", "outcome" => "ok").increment(1);
        counter!("oblivious_upstream_attempts_total", "outcome" => "ok", "channel" => "a").increment(1);
        counter!("oblivious_upstream_attempts_total", "channel" => "b", "outcome" => "http_5xx").increment(4);
        histogram!("oblivious_upstream_duration_seconds", "channel" => "a", "outcome" => "ok").record(0.5);
        histogram!("oblivious_upstream_duration_seconds", "outcome" => "ok", "channel" => "a").record(0.5);
        counter!("oblivious_sweeper_refunds_total").increment(1);
    });
    let docs = flushed(&r);
    assert_eq!(docs.len(), 3, "{docs:?}");
    // Sorted by label set: none first.
    assert_eq!(docs[0]["oblivious_sweeper_refunds_total"], 1);
    assert_eq!(
        (docs[1]["channel"].as_str(), docs[1]["oblivious_upstream_attempts_total"].as_u64()),
        (Some("a"), Some(2))
    );
    assert_eq!(docs[1]["oblivious_upstream_duration_seconds"], json!({ "Values": [0.5], "Counts": [2] }));
    assert_eq!(
        (docs[2]["outcome"].as_str(), docs[2]["oblivious_upstream_attempts_total"].as_u64()),
        (Some("http_5xx"), Some(4))
    );
}

#[test]
fn histograms_stay_within_100_values_however_many_are_recorded() {
    let r = EmfRecorder::default();
    let h = with_local_recorder(&r, || histogram!("oblivious_ttfb_seconds", "channel" => "up"));
    for i in 0..20_000u32 {
        h.record(0.0005 * f64::from(i % 4_000 + 1));
    }
    h.record_many(3.0, 50);
    let docs = flushed(&r);
    let v = &docs[0]["oblivious_ttfb_seconds"];
    let values = v["Values"].as_array().unwrap();
    assert!(values.len() <= 100 && values.len() > 90, "{}", values.len());
    let counts: u64 = v["Counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(counts, 20_050);
    let first = values[0].as_f64().unwrap();
    let last = values[values.len() - 1].as_f64().unwrap();
    assert!((0.0005..0.01).contains(&first) && last == 3.0, "{first} … {last}");
    assert!(v["Counts"][values.len() - 1].as_u64().unwrap() >= 50, "the outlier keeps its own value");
}

#[test]
fn limits_a_label_set_with_more_than_100_metrics_or_30_labels() {
    let r = EmfRecorder::default();
    let labels: Vec<(String, String)> = (0..35).map(|i| (format!("l{i:02}"), format!("v{i}"))).collect();
    with_local_recorder(&r, || {
        for i in 0..150 {
            counter!(format!("m{i:03}_total"), &labels).increment(1);
        }
    });
    let docs = flushed(&r);
    assert_eq!(docs.len(), 2, "150 metrics: 100 and 50");
    let lens: Vec<usize> =
        docs.iter().map(|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"].as_array().unwrap().len()).collect();
    assert_eq!(lens, [100, 50]);
    for d in &docs {
        let dims = d["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0].as_array().unwrap();
        assert_eq!(dims.len(), 30);
        assert_eq!(dims[29], "l29");
        assert_eq!(d["l34"], "v34", "labels past the 30th stay as plain members");
    }
}

#[test]
fn dimension_values_and_names_are_made_acceptable() {
    let r = EmfRecorder::new("  ");
    assert_eq!(r.namespace(), "Oblivious");
    let long = "x".repeat(2000);
    with_local_recorder(&r, || {
        counter!("a_total", "channel" => "", "model" => "modèle", "group" => long.clone(), ":odd" => "1", "_aws" => "2")
            .increment(1);
        counter!("clash_total", "clash_total" => "x").increment(1);
    });
    let docs = flushed(&r);
    assert_eq!(docs.len(), 1, "a metric named like one of its labels is left out: {docs:?}");
    let d = &docs[0];
    assert_eq!(d["channel"], "none");
    assert_eq!(d["model"], "mod?le");
    assert_eq!(d["group"].as_str().unwrap().len(), 1024);
    assert_eq!((d["_:odd"].as_str(), d["__aws"].as_str()), (Some("1"), Some("2")));
    assert!(d["_aws"].is_object());
}

#[test]
fn units_follow_the_names() {
    assert_eq!(unit("oblivious_request_duration_seconds"), "Seconds");
    assert_eq!(unit("oblivious_body_bytes"), "Bytes");
    assert_eq!(unit("oblivious_requests_total"), "Count");
    assert_eq!(unit("oblivious_reservations_open"), "Count");
}

#[test]
fn clones_share_what_they_record() {
    let r = EmfRecorder::default();
    let installed = r.clone();
    with_local_recorder(&installed, || counter!("a_total").increment(1));
    assert_eq!(flushed(&r)[0]["a_total"], 1);
}

#[test]
fn strings_are_escaped_and_numbers_are_json_numbers() {
    let r = EmfRecorder::new("Name\"space");
    with_local_recorder(&r, || {
        counter!("odd\"name\\\u{1}_total", "path" => "/a\"b\\c").increment(1);
        for (i, v) in [1e-7, 1e20, -2.5, 0.0, 123.0, f64::MAX].into_iter().enumerate() {
            gauge!(format!("g{i}")).set(v);
        }
        histogram!("h_seconds").record(1e-9);
    });
    let docs = flushed(&r);
    let d = docs.iter().find(|d| d.get("path").is_some()).unwrap();
    assert_eq!(d["path"], "/a\"b\\c");
    assert_eq!(d["odd\"name\\\u{1}_total"], 1);
    assert_eq!(d["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Name\"space");
    let g = docs.iter().find(|d| d.get("g0").is_some()).unwrap();
    for (i, v) in [1e-7, 1e20, -2.5, 0.0, 123.0, f64::MAX].into_iter().enumerate() {
        assert_eq!(g[format!("g{i}")].as_f64(), Some(v), "g{i}");
    }
    assert_eq!(g["h_seconds"]["Values"][0].as_f64(), Some(1e-9));
}
