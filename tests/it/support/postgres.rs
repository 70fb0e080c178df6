//! A real PostgreSQL for the tests of the PostgreSQL learner store.
//!
//! `server_url()` is the server: `LEARNER_SYNC_TEST_PG` when set (a URL to an existing
//! server whose role may CREATE DATABASE), else ONE throwaway cluster per test process,
//! started on first use by `scripts/pg-cluster start` in a temp directory (Debian's
//! `postgresql` package; .ci/run installs it). `database()` is a fresh, empty database
//! on it for one test; `psql()` runs SQL there, to look at and tamper with the tables.
//!
//! Rust runs no destructors for statics, so the clean-up is a child `sh` that starts the
//! cluster, then blocks reading its stdin, a pipe whose only write end this process keeps
//! for ever. However the process ends (tests done, a panic that aborts, SIGKILL), the
//! kernel closes that end, the child reads EOF and stops the cluster and removes its
//! directory (or, on a `LEARNER_SYNC_TEST_PG` server, drops the databases this process
//! made). On a normal exit an `atexit` handler also waits for it, so nothing is left
//! running when `cargo test` returns. Nothing here skips: no PostgreSQL is a panic.

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// A URL (`postgres://user@host:port/db`) to an existing server to use instead of a
/// throwaway cluster; its role must be allowed to CREATE DATABASE.
pub const ENV: &str = "LEARNER_SYNC_TEST_PG";

struct Server {
    url: String,
    /// The clean-up child and the write end of its stdin (see the module comment).
    cleaner: Mutex<Option<(ChildStdin, Child)>>,
}

static SERVER: OnceLock<Result<Server, String>> = OnceLock::new();

/// The base URL of the server (database `postgres` on the throwaway cluster). Starts
/// the cluster on the first call; panics if it cannot.
pub fn server_url() -> String {
    match SERVER.get_or_init(start) {
        Ok(server) => server.url.clone(),
        Err(e) => panic!("no PostgreSQL for the tests: {e}"),
    }
}

/// A new, empty database (`ls_test_<pid>_<n>`) on the server; its URL.
pub fn database() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = server_url();
    let name = format!(
        "ls_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    // The DROP is for a shared LEARNER_SYNC_TEST_PG server, where a run killed before its
    // clean-up may have left one of this name (a pid used again); a throwaway cluster has none.
    run_psql(
        &base,
        &[
            &format!("DROP DATABASE IF EXISTS {name}"),
            &format!("CREATE DATABASE {name}"),
        ],
    );
    with_database(&base, &name)
}

/// Runs `sql` (one or more statements, one transaction) on `url` with `psql -X -A -t -q`:
/// the rows, `|` between columns, one a line, trimmed. Panics with psql's stderr on error.
pub fn psql(url: &str, sql: &str) -> String {
    run_psql(url, &[sql])
}

/// `url` with its database replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed =
        url::Url::parse(url).unwrap_or_else(|e| panic!("not a PostgreSQL URL: {url}: {e}"));
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

/// The newest PostgreSQL's `bin/` under /usr/lib/postgresql that has `tool`, else `tool`
/// on PATH.
fn pg_tool(tool: &str) -> PathBuf {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|v| v.split('.').next())
                .and_then(|v| v.parse::<u32>().ok())
            else {
                continue;
            };
            let path = entry.path().join("bin").join(tool);
            if path.is_file() && best.as_ref().is_none_or(|(v, _)| version > *v) {
                best = Some((version, path));
            }
        }
    }
    best.map(|(_, path)| path)
        .unwrap_or_else(|| PathBuf::from(tool))
}

fn run_psql(url: &str, commands: &[&str]) -> String {
    try_psql(url, commands).unwrap_or_else(|e| panic!("{e}"))
}

fn try_psql(url: &str, commands: &[&str]) -> Result<String, String> {
    let psql = pg_tool("psql");
    let mut cmd = Command::new(&psql);
    cmd.args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", url]);
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {} ({e}): install the Debian package postgresql-client",
                psql.display()
            )
        })?;
    if !out.status.success() {
        return Err(format!(
            "psql on {url} failed ({}) running {commands:?}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts the clean-up child: `sh` that runs `before` (its stdout is ours to read),
/// then blocks in `read` until this process's end of its stdin closes, then runs
/// `after`. The scripts see `argv` as `$0 "$@"`, so no quoting. In its own process group
/// and deaf to INT/TERM/HUP, so a Ctrl-C or a kill of the test's process group does not
/// take it away before it has cleaned up; and to PIPE, so that writing to this process
/// once it is gone (a start still under way) does not either.
fn spawn_cleaner(before: &str, after: &str, argv: &[&str]) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' INT TERM HUP PIPE\n{before}\nexec >/dev/null\nread _ || true\n{after}"
        ))
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
}

fn take_stdin(child: &mut Child) -> ChildStdin {
    child.stdin.take().expect("piped stdin")
}

/// On a normal exit: close the pipe and wait until the clean-up is done.
extern "C" fn clean_up_at_exit() {
    if let Some(Ok(server)) = SERVER.get() {
        if let Ok(mut guard) = server.cleaner.try_lock() {
            if let Some((stdin, mut child)) = guard.take() {
                drop(stdin);
                let _ = child.wait();
            }
        }
    }
}

fn register_at_exit() {
    // SAFETY: atexit with a plain extern "C" fn that neither panics nor unwinds.
    unsafe {
        libc::atexit(clean_up_at_exit);
    }
}

fn start() -> Result<Server, String> {
    if let Some(url) = std::env::var_os(ENV) {
        let url = url
            .into_string()
            .map_err(|_| format!("{ENV} is not UTF-8"))?;
        let parsed = url::Url::parse(&url).map_err(|e| format!("{ENV}={url}: {e}"))?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!("{ENV}={url}: not a postgres:// URL"));
        }
        // Fail here, once, rather than in every test.
        try_psql(&url, &["select 1"]).map_err(|e| format!("{ENV} is set but unusable: {e}"))?;
        // The databases of this process, dropped at exit (WITH (FORCE), PostgreSQL 13+,
        // in case a test left a connection open; plain DROP on an older server).
        let pattern = format!("^ls_test_{}_[0-9]+$", std::process::id());
        let script = format!(
            r#"for db in $("$0" -XAtq -d "$1" -c "select datname from pg_database where datname ~ '{pattern}'"); do
                 "$0" -XAtq -d "$1" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null ||
                 "$0" -XAtq -d "$1" -c "DROP DATABASE IF EXISTS $db"
               done"#
        );
        let psql = pg_tool("psql");
        let mut child = spawn_cleaner("", &script, &[&psql.to_string_lossy(), &url])
            .map_err(|e| format!("cannot start sh: {e}"))?;
        let stdin = take_stdin(&mut child);
        let server = Server {
            url,
            cleaner: Mutex::new(Some((stdin, child))),
        };
        register_at_exit();
        return Ok(server);
    }

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/pg-cluster");
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Not created here: the script makes it (owned by `postgres` when we are root).
    let dir = std::env::temp_dir().join(format!(
        "learner-sync-pg-{}-{nanos:08x}",
        std::process::id()
    ));
    let script_s = script.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();

    // Start and stop in one child, one after the other: should this process die while
    // the cluster starts, the start still finishes before the stop begins.
    const DONE: &str = "pg-cluster-exit ";
    let mut child = spawn_cleaner(
        &format!(r#""$0" start "$1" </dev/null 2>&1; echo "{DONE}$?""#),
        r#"exec "$0" stop "$1""#,
        &[&script_s, &dir_s],
    )
    .map_err(|e| format!("cannot start sh: {e}"))?;
    let stdin = take_stdin(&mut child);
    let mut lines = Vec::new();
    let mut status = None;
    if let Some(out) = child.stdout.take() {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { break };
            if let Some(code) = line.strip_prefix(DONE) {
                status = Some(code.to_string());
                break;
            }
            lines.push(line);
        }
    }
    let url = match (status.as_deref(), lines.as_slice()) {
        (Some("0"), [url]) if url.starts_with("postgres://") => Ok(url.clone()),
        (Some("0"), _) => Err(format!(
            "{script_s} start printed {lines:?}, not one postgres:// URL"
        )),
        (Some(code), _) => Err(format!(
            "{script_s} start {dir_s} failed (exit {code}):\n{}",
            lines.join("\n")
        )),
        (None, _) => Err(format!(
            "{script_s} start {dir_s} died:\n{}",
            lines.join("\n")
        )),
    };
    match url {
        Ok(url) => {
            let server = Server {
                url,
                cleaner: Mutex::new(Some((stdin, child))),
            };
            register_at_exit();
            Ok(server)
        }
        Err(e) => {
            // Remove what the failed start left, now.
            drop(stdin);
            let _ = child.wait();
            Err(e)
        }
    }
}
