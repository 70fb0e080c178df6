//! What the tool shows on a terminal and leaves on disk, through the real binary:
//! user text cannot send escape sequences to the terminal, the files it creates are
//! private whatever the umask, a lock another user left says how to fix it, and a
//! reader that stops early (`status | grep -q`) ends the printing commands quietly.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{bin, code, stderr, stdout, Env};

const HEADER: &str = "external_id,user_name,email,display_name,active\n";
/// An OSC title change (ended by BEL) in a user name.
const EVIL: &str = "E9,evil\u{1b}]0;owned\u{7}@x.io,e@x.io,Plain,true\n";
/// The same user, its display name now an SGR colour and a bidi override.
const EVIL_RED: &str = "E9,evil\u{1b}]0;owned\u{7}@x.io,e@x.io,\u{1b}[31mRed\u{202e},true\n";

fn setup() -> Env {
    let env = Env::new();
    env.write(
        "config.toml",
        r#"[sync]
state_db = "state/state.db"
max_deactivations = 0

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#,
    );
    env
}

fn assert_no_raw_controls(what: &str, text: &str) {
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{202e}'),
        "{what} passes control characters through: {text:?}"
    );
}

#[test]
fn user_text_on_the_terminal_is_escaped_in_dry_run_history_and_status() {
    let env = setup();
    env.write(
        "hr.csv",
        &format!("{HEADER}E1,ann@x.io,ann@x.io,Ann,true\n{EVIL}"),
    );

    let out = env.run(&["sync", "--dry-run"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let plan = stdout(&out);
    assert_no_raw_controls("sync --dry-run", &plan);
    assert!(plan.contains("evil\\x1b]0;owned\\x07@x.io"), "{plan}");

    assert_eq!(code(&env.run(&["sync"])), 0);
    // A changed field shows its old and new value in the plan.
    env.write(
        "hr.csv",
        &format!("{HEADER}E1,ann@x.io,ann@x.io,Ann,true\n{EVIL_RED}"),
    );
    let out = env.run(&["sync", "--dry-run"]);
    let plan = stdout(&out);
    assert_no_raw_controls("sync --dry-run", &plan);
    assert!(plan.contains("Plain -> \\x1b[31mRed\\u{202e}"), "{plan}");

    let out = env.run(&["history"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_raw_controls("history", &stdout(&out));
    assert!(
        stdout(&out).contains("evil\\x1b]0;owned\\x07@x.io"),
        "{}",
        stdout(&out)
    );

    // Gone from the file: the deactivation is held, and `status` lists the user.
    env.write(
        "hr.csv",
        &format!("{HEADER}E1,ann@x.io,ann@x.io,Ann,true\n"),
    );
    assert_eq!(code(&env.run(&["sync"])), 4);
    let out = env.run(&["status"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_no_raw_controls("status", &stdout(&out));
    assert!(
        stdout(&out).contains("evil\\x1b]0;owned\\x07@x.io (E9)"),
        "{}",
        stdout(&out)
    );
    // JSON keeps the exact text (escaped the JSON way).
    let out = env.run(&["status", "--json"]);
    assert!(
        stdout(&out).contains("evil\\u001b]0;owned\\u0007@x.io"),
        "{}",
        stdout(&out)
    );
}

fn mode(env: &Env, rel: &str) -> u32 {
    std::fs::metadata(env.path(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn files_and_folders_the_tool_creates_are_private_whatever_the_umask() {
    let env = setup();
    env.write(
        "hr.csv",
        &format!("{HEADER}E1,ann@x.io,ann@x.io,Ann,true\n"),
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(bin())
        .args(["sync", "--config"])
        .arg(env.config())
        .env_remove("LEARNER_SYNC_CONFIG")
        .env_remove("LEARNER_SYNC_FAULT")
        .current_dir(env.path(""))
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(mode(&env, "state"), 0o700);
    assert_eq!(mode(&env, "state/state.db"), 0o600);
    assert_eq!(mode(&env, "state/state.db.locks"), 0o700);
    assert_eq!(mode(&env, "state/state.db.locks/hr.lock"), 0o600);
    assert_eq!(mode(&env, "learners.db"), 0o600);
    for side in ["learners.db-wal", "learners.db-shm"] {
        if env.path(side).exists() {
            assert_eq!(mode(&env, side), 0o600, "{side}");
        }
    }
}

#[test]
fn a_lock_left_by_a_root_run_names_the_owner_and_the_fix() {
    use std::os::unix::process::CommandExt;
    // Needs a second user: only root can run the binary as one.
    if std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(1)
        != 0
    {
        eprintln!("not root: cannot run as another user; skipped");
        return;
    }
    let env = setup();
    env.write(
        "hr.csv",
        &format!("{HEADER}E1,ann@x.io,ann@x.io,Ann,true\n"),
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    // The service user can read the config, but the state root left is root's.
    for (rel, m) in [("", 0o755), ("config.toml", 0o644), ("hr.csv", 0o644)] {
        std::fs::set_permissions(env.path(rel), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let out = Command::new(bin())
        .args(["sync", "--config"])
        .arg(env.config())
        .env_remove("LEARNER_SYNC_CONFIG")
        .env_remove("LEARNER_SYNC_FAULT")
        .current_dir("/")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}\n{}", stdout(&out), stderr(&out));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("belongs to uid 0"), "{text}");
    assert!(text.contains("runs as uid 65534"), "{text}");
    assert!(text.contains("chown -R <service user>:"), "{text}");
}

#[test]
fn status_and_history_end_quietly_when_the_reader_stops_early() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let env = setup();
    let mut csv = String::from(HEADER);
    for i in 0..300 {
        csv.push_str(&format!("E{i},u{i}@x.io,u{i}@x.io,User {i},true\n"));
    }
    env.write("hr.csv", &csv);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));

    // `learner-sync history | head -n 1`, `status | grep -q ...`: the reader has gone
    // before the first line is written.
    for args in [&["history"][..], &["status"][..]] {
        let mut child = env
            .command(args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = stderr(&out);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{args:?}: {err}"
        );
        assert!(
            out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
            "{args:?} ended with {:?}: {err}",
            out.status
        );
    }
}
