#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The binary's own behaviour without a server: config validation errors and
//! the CLI on a fresh data directory.

use std::process::Command;

fn oblivious() -> Command {
    Command::new(env!("CARGO_BIN_EXE_oblivious"))
}

fn temp(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("oblivious-cli-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn invalid_config_names_file_key_and_problem() {
    let dir = temp("badcfg");
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        "[[channels]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"ftp://nowhere\"\nmodels = [\"m\"]\n",
    )
    .unwrap();
    let out = oblivious()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .arg("--data")
        .arg(dir.join("d"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: channels[0].base_url: `ftp://nowhere` must start with http:// or https://"),
        "{err}"
    );

    std::fs::write(&cfg, "[[channels]]\nname = \"a\"\ntype = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\nkeys = [\"${OBLIVIOUS_TEST_UNSET_VAR}\"]\n").unwrap();
    let out = oblivious().args(["serve", "--config"]).arg(&cfg).arg("--data").arg(dir.join("d")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("channels[0].keys[0]: environment variable `OBLIVIOUS_TEST_UNSET_VAR` is not set"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_creates_and_lists_keys_on_a_fresh_data_dir() {
    let dir = temp("fresh");
    let out = oblivious()
        .args(["token", "create", "--name", "ci", "--quota", "100", "--models", "a,b*", "--data"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap();
    assert!(key.starts_with("sk-") && key.trim().len() == 51 && key.ends_with('\n') && key.lines().count() == 1);
    let out = oblivious().args(["token", "list", "--json", "--data"]).arg(&dir).output().unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "ci");
    assert_eq!(list[0]["remaining_quota"], 100);
    assert_eq!(list[0]["models"], serde_json::json!(["a", "b*"]));
    let bad =
        oblivious().args(["token", "create", "--name", "x", "--user", "ghost", "--data"]).arg(&dir).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no user named `ghost`"));
    let _ = std::fs::remove_dir_all(&dir);
}
