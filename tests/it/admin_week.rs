//! An admin's first week (issue 19) through the real binary: errors whose hints name
//! their real cause, and a busy lock that names its holder.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, stderr, stdout, Env};

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

const CSV_CONFIG: &str = r#"
[sync]
state_db = "state.db"
max_deactivations = 100
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#;

#[test]
fn a_busy_lock_names_the_holders_pid_and_command() {
    let env = Env::new();
    env.write("config.toml", CSV_CONFIG);
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\n");
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    // The run wrote itself into the lock it held.
    let lock = env.path("state.db.locks/hr.lock");
    let text = std::fs::read_to_string(&lock).unwrap();
    assert!(text.starts_with("pid "), "{text}");
    assert!(text.contains("learner-sync sync --config"), "{text}");

    // Another holder, as a daemon writes it, holding the lock now.
    let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    held.try_lock().unwrap();
    std::fs::write(&lock, "pid 4242\n/usr/bin/learner-sync daemon\n").unwrap();
    let out = env.run(&["sync"]);
    let text = output(&out);
    assert_ne!(code(&out), 0, "{text}");
    assert!(
        text.contains("(pid 4242: /usr/bin/learner-sync daemon) is syncing directory `hr`"),
        "{text}"
    );
    drop(held);
}

#[test]
fn env_and_file_together_say_only_one_may_be_given() {
    let env = Env::new();
    env.write(
        "config.toml",
        &CSV_CONFIG.replace(
            "kind = \"sqlite\"\npath = \"learners.db\"",
            "kind = \"scim\"\nurl = \"http://127.0.0.1:9/scim/v2\"\ntoken = { env = \"T\", file = \"t.txt\" }",
        ),
    );
    let out = env.run(&["check"]);
    let text = output(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(
        text.contains("store.token: give only one of env, file or credential, not env and file"),
        "{text}"
    );
    assert!(
        !text.contains("secrets are not written in the config"),
        "{text}"
    );
}

#[test]
fn a_missing_default_config_names_the_flag_and_the_variable() {
    if std::path::Path::new("/etc/learner-sync/config.toml").exists() {
        return; // a machine with the package installed has a default config
    }
    let env = Env::new();
    let out = std::process::Command::new(common::bin())
        .arg("status")
        .env_remove("LEARNER_SYNC_CONFIG")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = output(&out);
    assert_eq!(code(&out), 2, "{text}");
    assert!(text.contains("/etc/learner-sync/config.toml"), "{text}");
    assert!(text.contains("--config"), "{text}");
    assert!(text.contains("LEARNER_SYNC_CONFIG"), "{text}");
}

#[test]
fn an_entra_secret_from_a_missing_variable_names_the_variable_not_the_certificate() {
    let env = Env::new();
    env.write(
        "config.toml",
        &CSV_CONFIG.replace(
            "kind = \"csv\"\npath = \"hr.csv\"",
            "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = { env = \"LS_TEST_NO_SUCH_SECRET\" }\n\
             authority_url = \"http://127.0.0.1:9\"\ngraph_url = \"http://127.0.0.1:9/v1.0\"",
        ),
    );
    let out = env.run(&["check"]);
    let text = output(&out);
    assert_ne!(code(&out), 0, "{text}");
    assert!(text.contains("LS_TEST_NO_SUCH_SECRET"), "{text}");
    assert!(!text.contains("certificate files"), "{text}");
}

#[test]
fn the_daemons_held_deactivation_line_names_the_approve_command() {
    use common::config_builder::q;
    let env = Env::new();
    env.write(
        "config.toml",
        &common::ConfigBuilder::new()
            .sync("schedule", &q("every 1s"))
            .sync("max_deactivations", "0")
            .csv("hr", "hr.csv")
            .build(),
    );
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\nE2,b@x.io\n");
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\n");
    let log = env.path("daemon.log");
    let mut daemon = std::process::Command::new(common::bin())
        .args(["daemon", "--config"])
        .arg(env.config())
        .env_remove("LEARNER_SYNC_CONFIG")
        .env_remove("LEARNER_SYNC_FAULT")
        .env_remove("NOTIFY_SOCKET")
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("deactivations held") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        text.contains("release with `learner-sync approve hr`"),
        "{text}"
    );
}

#[test]
fn the_readme_demo_on_a_fresh_clone_draws_no_mode_warning() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    // As git checks them out: 0644, which git cannot store as 0640.
    let config = std::fs::read_to_string("examples/demo.toml").unwrap();
    env.write("examples/demo.toml", &config);
    env.write(
        "examples/demo.csv",
        &std::fs::read_to_string("examples/demo.csv").unwrap(),
    );
    let path = env.path("examples/demo.toml");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(common::bin())
        .args(["sync", "--config"])
        .arg(&path)
        .env_remove("LEARNER_SYNC_CONFIG")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let text = output(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(!text.contains("readable by other users"), "{text}");
    assert!(!text.contains("WARN"), "{text}");
}

#[test]
fn approve_dry_run_previews_the_release_and_writes_nothing() {
    let env = Env::new();
    env.write(
        "config.toml",
        &CSV_CONFIG.replace("max_deactivations = 100", "max_deactivations = 0"),
    );
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\nE2,b@x.io\n");
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\n");
    let out = env.run(&["sync"]);
    assert!(
        output(&out).contains("deactivations held"),
        "{}",
        output(&out)
    );

    let before: Vec<Vec<u8>> = ["state.db", "learners.db"]
        .iter()
        .map(|f| std::fs::read(env.path(f)).unwrap())
        .collect();
    let out = env.run(&["approve", "hr", "--dry-run"]);
    let text = output(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains("would deactivate"), "{text}");
    assert!(text.contains("b@x.io [E2]"), "{text}");
    assert!(text.contains("1 to deactivate"), "{text}");
    assert!(text.contains("nothing was released"), "{text}");
    let after: Vec<Vec<u8>> = ["state.db", "learners.db"]
        .iter()
        .map(|f| std::fs::read(env.path(f)).unwrap())
        .collect();
    assert!(
        before == after,
        "a dry run wrote to the state DB or the store"
    );
    assert!(env.learners("learners.db", "hr").iter().all(|r| r.active));

    let out = env.run_with(&["approve", "hr"], &[("SUDO_USER", "alice")]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    let rows = env.learners("learners.db", "hr");
    assert!(rows.iter().any(|r| r.external_id == "E2" && !r.active));

    // Who approved, and when, in history and status.
    let text = stdout(&env.run(&["history"]));
    let line = text
        .lines()
        .find(|l| l.contains("E2") && l.contains("deactivate"))
        .unwrap();
    assert!(line.contains("approved by alice at 20"), "{text}");
    let text = stdout(&env.run(&["status"]));
    assert!(
        text.contains("approved:  1 held deactivations, 0 held changes by alice at 20"),
        "{text}"
    );
}

#[test]
fn the_history_table_shows_before_and_after_and_the_external_id_like_json() {
    let env = Env::new();
    env.write("config.toml", CSV_CONFIG);
    env.write(
        "hr.csv",
        "external_id,user_name,department\nEMP-0042,a@x.io,Sales\n",
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write(
        "hr.csv",
        "external_id,user_name,department\nEMP-0042,a@x.io,Finance\n",
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    let out = env.run(&["history"]);
    let text = stdout(&out);
    assert!(
        text.lines().next().unwrap().contains("external id"),
        "{text}"
    );
    let update = text.lines().find(|l| l.contains("update")).unwrap();
    assert!(update.contains("EMP-0042"), "{text}");
    assert!(update.contains("department: Sales -> Finance"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&env.run(&["history", "--json"]))).unwrap();
    assert_eq!(json[0]["external_id"], "EMP-0042");
    assert_eq!(json[0]["changes"][0]["before"], "Sales");
}

#[test]
fn status_shows_a_run_in_progress_with_its_holder() {
    let env = Env::new();
    env.write("config.toml", CSV_CONFIG);
    env.write("hr.csv", "external_id,user_name\nE1,a@x.io\n");
    assert_eq!(code(&env.run(&["sync"])), 0);
    let text = stdout(&env.run(&["status"]));
    assert!(!text.contains("running: "), "{text}");
    let lock = env.path("state.db.locks/hr.lock");
    let held = std::fs::OpenOptions::new().write(true).open(&lock).unwrap();
    held.try_lock().unwrap();
    std::fs::write(&lock, "pid 4242\nlearner-sync sync --directory hr\n").unwrap();
    let text = stdout(&env.run(&["status", "--directory", "hr"]));
    assert!(
        text.contains("running:   now (pid 4242: learner-sync sync --directory hr)"),
        "{text}"
    );
    drop(held);
}
