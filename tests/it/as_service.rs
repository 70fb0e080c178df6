//! `check --as-service[=USER]` through the real binary: every file the config names is
//! tried as the service's user, so a file only root can read fails `check` instead of
//! the service. Runs as root (CI does); the unprivileged user is the system's `nobody`,
//! so no account is created.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;

use common::{code, stderr, stdout, ConfigBuilder, Env};

fn root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

fn chmod(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setup() -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .csv("hr", "hr.csv")
        .write(&env);
    env.write(
        "hr.csv",
        "external_id,user_name,email,active\nE1,a@x.io,a@x.io,true\n",
    );
    // The folder itself must be searchable by the service user.
    chmod(&env.path("."), 0o755);
    env
}

#[test]
fn files_only_root_can_read_fail_check_as_the_service_user_with_the_fix() {
    if !root() {
        eprintln!("skipped: needs root to take another user's identity");
        return;
    }
    let env = setup();
    chmod(&env.config(), 0o600);
    chmod(&env.path("hr.csv"), 0o644);
    let out = env.run(&["check", "--as-service=nobody"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}{}", stderr(&out));
    let config = env.config().display().to_string();
    assert!(
        text.contains(&format!(
            "FAIL as nobody: nobody cannot read {config} (config): Permission denied"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hint: chown root:nobody {config} && chmod 0640 {config}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "ok   as nobody: nobody can read {} (hr.path)",
            env.path("hr.csv").display()
        )),
        "{text}"
    );
    assert!(
        text.contains("(the state DB's folder) does not exist yet"),
        "{text}"
    );

    // Fixed as the hint says (group nobody's, here "other" for the test): it passes,
    // and a state folder root made is refused until it belongs to the user.
    chmod(&env.config(), 0o644);
    std::fs::create_dir(env.path("state")).unwrap();
    chmod(&env.path("state"), 0o755);
    let out = env.run(&["check", "--as-service=nobody"]);
    let text = stdout(&out);
    assert!(text.contains("nobody cannot write in"), "{text}");
    chmod(&env.path("state"), 0o777);
    chmod(&env.path("."), 0o777);
    let out = env.run(&["check", "--as-service=nobody"]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains("nobody can write in"), "{text}");
}

#[test]
fn as_service_needs_root_and_a_known_user() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = setup();
    chmod(&env.config(), 0o644);
    let out = env.run(&["check", "--as-service=no-such-user-here"]);
    assert_eq!(code(&out), 3);
    assert!(
        stdout(&out).contains("there is no user no-such-user-here"),
        "{}",
        stdout(&out)
    );

    // The same command by an ordinary user says it needs root.
    let out = env
        .command(&["check", "--as-service"], &[])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("needs root") && text.contains("sudo learner-sync check --as-service"),
        "{text}{}",
        stderr(&out)
    );
}
