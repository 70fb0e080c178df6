//! Storage faults: a state DB locked by another program and a disk that fills up
//! mid-run end in a clear error and exit 3, with nothing half-applied; the next run
//! completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use common::{code, stderr, stdout, ConfigBuilder, Env};

fn setup(rows: u32) -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(100_000, 100)
        .csv("hr", "hr.csv")
        .write(&env);
    write_rows(&env, rows);
    env
}

fn write_rows(env: &Env, rows: u32) {
    let mut s = String::from("external_id,user_name,display_name\n");
    for i in 0..rows {
        s.push_str(&format!(
            "{i},user{i}@example.com,A reasonably long display name for row {i}\n"
        ));
    }
    env.write("hr.csv", &s);
}

#[test]
fn a_locked_state_db_fails_the_run_clearly_and_changes_nothing() {
    let env = setup(10);
    assert_eq!(code(&env.run(&["sync"])), 0);
    write_rows(&env, 20);
    let holder = rusqlite::Connection::open(env.path("state.db")).unwrap();
    holder.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("database is locked"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(env.learners("learners.db", "hr").len(), 10);
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(env.learners("learners.db", "hr").len(), 20);
}

#[test]
fn a_full_disk_mid_run_fails_clearly_and_the_next_run_completes() {
    let env = setup(20);
    assert_eq!(code(&env.run(&["sync"])), 0);
    write_rows(&env, 20_000);
    // The kernel refuses to grow any file past 512 KiB: SQLite sees a full disk.
    let mut cmd = Command::new(common::bin());
    cmd.args(["sync", "--config"]).arg(env.config());
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512 * 1024,
                rlim_max: 512 * 1024,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    // EFBIG reaches SQLite as a write error ("disk I/O error"); ENOSPC as "disk is full".
    assert!(
        stdout(&out).contains("hr: FAILED") && stdout(&out).contains("disk"),
        "{}",
        stdout(&out)
    );
    let rows = env.learners("learners.db", "hr");
    assert_eq!(rows.len(), 20, "nothing half-applied");
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(env.learners("learners.db", "hr").len(), 20_000);
    let out = env.run(&["history", "--json"]);
    let log: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        log.iter().filter(|r| r["action"] == "created").count(),
        20_000,
        "each create logged once"
    );
}

#[test]
fn syncs_started_together_on_fresh_files_all_succeed() {
    // Six processes create and migrate the same new state DB and store at once.
    let env = Env::new();
    let mut config = String::from(
        "[sync]\nstate_db = \"state.db\"\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n",
    );
    for d in 0..6 {
        config.push_str(&format!(
            "[[directory]]\nname = \"d{d}\"\nkind = \"csv\"\npath = \"hr.csv\"\n"
        ));
    }
    env.write("config.toml", &config);
    write_rows(&env, 50);
    let spawned: Vec<_> = (0..6)
        .map(|d| {
            Command::new(common::bin())
                .args(["sync", "--directory", &format!("d{d}"), "--config"])
                .arg(env.config())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in spawned {
        let out = child.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    }
    for d in 0..6 {
        assert_eq!(env.learners("learners.db", &format!("d{d}")).len(), 50);
    }
}
