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

/// A unit folder for `SYSTEMD_UNIT_PATH` (systemd's own variable) with both packaged
/// units, and a config whose webhook URL is the systemd credential `hook`.
fn units_and_credential(env: &Env, oneshot_loads: bool) -> String {
    let text = std::fs::read_to_string(env.config()).unwrap();
    env.write(
        "config.toml",
        &format!("{text}\n[[notify]]\nkind = \"webhook\"\nurl = {{ credential = \"hook\" }}\n"),
    );
    let units = env.path("units");
    env.write(
        "units/learner-sync.service",
        "[Unit]\nDescription=x\n[Service]\nExecStart=/usr/bin/learner-sync daemon\n#LoadCredential=hook:/nowhere\n",
    );
    env.write(
        "units/learner-sync-oneshot.service",
        "[Service]\nType=oneshot\nExecStart=/usr/bin/learner-sync sync\n",
    );
    // The admin's drop-in (what `systemctl edit` writes), naming a file that exists.
    let secret = env.write("secrets/hook", "https://127.0.0.1:9/x\n");
    env.write(
        "units/learner-sync.service.d/override.conf",
        &format!("[Service]\nLoadCredential=hook:{}\n", secret.display()),
    );
    if oneshot_loads {
        env.write(
            "units/learner-sync-oneshot.service.d/override.conf",
            "[Service]\nLoadCredential=hook:/etc/learner-sync/no-such-secret\n",
        );
    }
    units.display().to_string()
}

#[test]
fn check_as_service_says_which_unit_loads_each_credential_and_from_where() {
    let env = setup();
    let units = units_and_credential(&env, false);
    let out = env.run_with(&["check", "--as-service"], &[("SYSTEMD_UNIT_PATH", &units)]);
    let text = stdout(&out);
    let secret = env.path("secrets/hook").display().to_string();
    assert!(
        text.contains(&format!(
            "ok   units: learner-sync.service loads credential hook (notify[0].url) from {secret}"
        )),
        "{text}"
    );
    assert!(
        text.contains("warn units: learner-sync-oneshot.service does not load credential hook (notify[0].url)"),
        "{text}"
    );
    assert!(
        text.contains("sudo systemctl edit learner-sync-oneshot.service` and add `[Service]` `LoadCredential=hook:/etc/learner-sync/secrets/hook`"),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1:9"),
        "the secret is never printed: {text}"
    );

    // A LoadCredential= naming a missing file fails: that unit would not start.
    let env = setup();
    let units = units_and_credential(&env, true);
    let out = env.run_with(&["check", "--as-service"], &[("SYSTEMD_UNIT_PATH", &units)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 3, "{text}");
    assert!(
        text.contains("FAIL units: learner-sync-oneshot.service loads credential hook (notify[0].url) from /etc/learner-sync/no-such-secret, which does not exist"),
        "{text}"
    );

    // No unit loads it at all: a failure with the line to add.
    let env = setup();
    let units = units_and_credential(&env, false);
    std::fs::remove_dir_all(env.path("units/learner-sync.service.d")).unwrap();
    let out = env.run_with(&["check", "--as-service"], &[("SYSTEMD_UNIT_PATH", &units)]);
    let text = stdout(&out);
    assert!(
        text.contains("FAIL units: learner-sync.service does not load credential hook (notify[0].url): the service it runs cannot read the secret"),
        "{text}"
    );
}

#[test]
fn the_postgres_stores_ca_file_must_be_readable_by_the_service_user() {
    if !root() {
        eprintln!("skipped: needs root to take another user's identity");
        return;
    }
    let env = setup();
    ConfigBuilder::new()
        .state_db("state/state.db")
        .csv("hr", "hr.csv")
        .postgres("postgres://u@127.0.0.1:1/db?sslrootcert=ca.pem")
        .write(&env);
    chmod(&env.config(), 0o644);
    chmod(&env.path("hr.csv"), 0o644);
    env.write("ca.pem", "not read by check\n");
    chmod(&env.path("ca.pem"), 0o600);
    let out = env.run(&["check", "--as-service=nobody"]);
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "FAIL as nobody: nobody cannot read {} (the PostgreSQL store's sslrootcert)",
            env.path("ca.pem").display()
        )),
        "{text}"
    );
    chmod(&env.path("ca.pem"), 0o644);
    let text = stdout(&env.run(&["check", "--as-service=nobody"]));
    assert!(
        text.contains(&format!(
            "ok   as nobody: nobody can read {} (the PostgreSQL store's sslrootcert)",
            env.path("ca.pem").display()
        )),
        "{text}"
    );
}
