#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The Terraform in `terraform/` against the code: parsed with python-hcl2
//! (`tests/terraform/dump.py`), every Lambda's binary exists, the tables match
//! the DynamoDB adapter's schema key for key and index for index, every
//! function gets the environment the code reads, the usage queue is wired with
//! a dead-letter queue and partial batch failures; and checkov passes with a
//! written reason for every skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use oblivious_aws::dynamo::schema::{Attr, Key};
use oblivious_e2e::gateway::repo_root;
use serde_json::Value;

fn python() -> PathBuf {
    std::env::var("OBLIVIOUS_PYTHON").map(PathBuf::from).unwrap_or_else(|_| repo_root().join(".venv/bin/python"))
}

fn terraform() -> Value {
    let out = Command::new(python())
        .arg(repo_root().join("tests/terraform/dump.py"))
        .arg(repo_root().join("terraform"))
        .output()
        .expect("python with python-hcl2 (see .ci/run)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn attr(a: Attr) -> &'static str {
    match a {
        Attr::S => "S",
        Attr::N => "N",
    }
}

/// An attribute: name and type.
type Named = Option<(String, String)>;

fn pair(v: &Value) -> Named {
    let a = v.as_array()?;
    Some((a[0].as_str()?.to_string(), a[1].as_str()?.to_string()))
}

fn key_of(k: &Key) -> (Named, Named) {
    (Some((k.0.to_string(), attr(k.1).to_string())), k.2.map(|(n, a)| (n.to_string(), attr(a).to_string())))
}

#[test]
fn every_function_has_its_binary_and_environment() {
    let tf = terraform();
    let functions = tf["locals"]["functions"].as_object().unwrap();
    let bins: BTreeSet<String> = std::fs::read_dir(repo_root().join("functions/lambda/src/bin"))
        .unwrap()
        .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in functions.keys() {
        assert!(bins.contains(name), "Lambda `{name}` has no functions/lambda/src/bin/{name}.rs");
    }
    let deployable: BTreeSet<&String> = bins.iter().filter(|b| *b != "setup").collect();
    assert_eq!(
        deployable,
        functions.keys().collect(),
        "every function binary is deployed (setup is an operator's tool)"
    );

    let f = &tf["resource"]["aws_lambda_function"]["fn"];
    assert_eq!(f["for_each"], "${local.functions}");
    assert_eq!(f["filename"], "${var.artifacts_dir}/${each.key}/bootstrap.zip");
    assert_eq!((f["handler"].as_str(), f["runtime"].as_str()), (Some("bootstrap"), Some("provided.al2023")));
    let env = f["environment"][0]["variables"].as_object().unwrap();
    for var in oblivious_lambda::env::DEPLOYED {
        assert!(env.contains_key(*var), "functions are not given {var}");
    }
    assert_eq!(env[oblivious_lambda::env::USAGE_QUEUE_URL], "${aws_sqs_queue.usage.url}");
    assert_eq!(env[oblivious_lambda::env::TABLE_PREFIX], "${var.name}-");
    assert_eq!(tf["resource"]["aws_lambda_function_url"]["relay"]["invoke_mode"], "RESPONSE_STREAM");
}

#[test]
fn the_tables_match_the_adapters_schema() {
    let tf = terraform();
    let declared = tf["locals"]["tables"].as_object().unwrap();
    let names: BTreeSet<&str> = declared.keys().map(String::as_str).collect();
    assert_eq!(names, oblivious_aws::TABLES.iter().map(|t| t.name).collect());
    for t in oblivious_aws::TABLES {
        let d = &declared[t.name];
        assert_eq!((pair(&d["hash"]), pair(&d["range"])), key_of(&t.key), "table {}", t.name);
        let indexes: BTreeMap<String, _> = d["indexes"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, i)| (name.clone(), (pair(&i["hash"]), pair(&i["range"]))))
            .collect();
        let expected: BTreeMap<String, _> = t.indexes.iter().map(|(n, k)| (n.to_string(), key_of(k))).collect();
        assert_eq!(indexes, expected, "indexes of {}", t.name);
    }
    assert_eq!(
        declared["reservations"]["ttl"], "ttl",
        "closed reservations expire by the attribute the adapter writes"
    );
    let table = &tf["resource"]["aws_dynamodb_table"]["t"];
    assert_eq!(table["name"], "${var.name}-${each.key}", "named as the adapter names them: {{prefix}}{{table}}");
}

#[test]
fn the_usage_queue_has_a_dead_letter_queue_and_reports_partial_failures() {
    let tf = terraform();
    let queues = &tf["resource"]["aws_sqs_queue"];
    let redrive = queues["usage"]["redrive_policy"].as_str().unwrap();
    assert!(redrive.contains("aws_sqs_queue.usage_dlq.arn") && redrive.contains("maxReceiveCount"), "{redrive}");
    assert!(queues["usage_dlq"].is_object());
    // A parked job is seen: an alarm on the dead-letter queue's depth.
    let alarm = &tf["resource"]["aws_cloudwatch_metric_alarm"]["usage_dead_letters"];
    assert_eq!(alarm["metric_name"], "ApproximateNumberOfMessagesVisible", "{alarm}");
    assert!(alarm["dimensions"].to_string().contains("aws_sqs_queue.usage_dlq.name"), "{alarm}");
    let mapping = &tf["resource"]["aws_lambda_event_source_mapping"]["usage"];
    assert_eq!(mapping["event_source_arn"], "${aws_sqs_queue.usage.arn}");
    assert_eq!(mapping["function_name"], "${aws_lambda_function.fn[\"usage\"].arn}");
    assert_eq!(mapping["function_response_types"][0], "ReportBatchItemFailures");
    let rules: BTreeSet<String> = tf["resource"]["aws_cloudwatch_event_rule"]["schedule"]["for_each"]
        .as_str()
        .unwrap()
        .trim_start_matches("${toset([")
        .trim_end_matches("])}")
        .split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect();
    assert_eq!(rules, ["health", "sweeper"].iter().map(|s| s.to_string()).collect());
}

#[test]
fn checkov_passes_and_every_skip_says_why() {
    for entry in std::fs::read_dir(repo_root().join("terraform")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for line in text.lines().filter(|l| l.contains("checkov:skip=")) {
            let rule = line.split("checkov:skip=").nth(1).unwrap();
            let (id, why) = rule.split_once(':').unwrap_or((rule, ""));
            assert!(why.trim().len() > 20, "{}: skip of {id} without a reason", path.display());
        }
    }
    let checkov = std::env::var("OBLIVIOUS_CHECKOV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join(".venv-checkov/bin/checkov"));
    let out = Command::new(&checkov)
        .args(["-d", "terraform", "--framework", "terraform", "--skip-download", "--quiet", "--compact", "-o", "json"])
        .current_dir(repo_root())
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (see .ci/run)", checkov.display()));
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("checkov output ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    let summary = &report["summary"];
    assert_eq!(summary["failed"], 0, "{}", serde_json::to_string_pretty(&report["results"]["failed_checks"]).unwrap());
    assert!(summary["passed"].as_u64().unwrap() > 150, "{summary}");
}
