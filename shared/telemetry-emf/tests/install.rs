//! The global recorder (its own test binary: a process has one).

#[test]
fn install_makes_the_recorder_global_once() {
    assert!(oblivious_emf::installed().is_none());
    let r = oblivious_emf::install("Install").expect("no recorder yet");
    metrics::counter!("oblivious_requests_total", "route" => "/v1/models").increment(2);
    let again = oblivious_emf::install("Other").expect("the same one");
    assert!(std::ptr::eq(r, again));
    assert_eq!(again.namespace(), "Install");
    let lines = oblivious_emf::installed().expect("installed").flush(1);
    assert_eq!(lines.len(), 1);
    let doc: serde_json::Value = serde_json::from_str(&lines[0]).expect("JSON");
    assert_eq!(doc["oblivious_requests_total"], 2);
    assert_eq!(doc["route"], "/v1/models");
}
