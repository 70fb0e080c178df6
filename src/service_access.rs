//! `check --as-service`: every file and folder the config makes the service use,
//! tried as the service user (`learner-sync` by default), so a key only root can read
//! fails here and not first under systemd. The probe is this binary run again as that
//! user (`__probe-access`), so nothing in this process changes identity.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use crate::check::CheckLine;
use crate::config::{Config, DirectoryKind, EntraCredential, StoreConfig};

/// The user the packaged units run as.
pub const SERVICE_USER: &str = "learner-sync";

/// One file the service reads, or a folder it writes in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub what: String,
    pub path: PathBuf,
    /// A folder the service creates files in (the state DB's, the SQLite store's).
    pub writes: bool,
}

/// What the config makes the service read and write.
pub fn needs(config: &Config) -> Vec<Need> {
    let read = |what: String, path: &Path| Need {
        what,
        path: path.to_path_buf(),
        writes: false,
    };
    let folder = |what: &str, file: &Path| Need {
        what: what.to_string(),
        path: file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
        writes: true,
    };
    let mut out = vec![read("config".into(), &config.path)];
    out.push(folder("the state DB's folder", &config.sync.state_db));
    for store in config.stores.values() {
        match store {
            StoreConfig::Sqlite { path } => out.push(folder("the SQLite store's folder", path)),
            StoreConfig::Postgres { url, .. } => {
                if let Some(ca) = url.root_cert() {
                    out.push(read("the PostgreSQL store's sslrootcert".into(), ca));
                }
            }
            StoreConfig::Scim { .. } => {}
        }
    }
    for d in &config.directories {
        match &d.kind {
            DirectoryKind::Csv { path, .. } => out.push(read(format!("{}.path", d.name), path)),
            DirectoryKind::Entra(e) => {
                if let EntraCredential::Certificate { cert_file, .. } = &e.credential {
                    out.push(read(format!("{}.certificate.cert_file", d.name), cert_file));
                }
            }
            DirectoryKind::Google(_) => {}
        }
    }
    for (what, path) in config.secret_files() {
        out.push(read(what, &path));
    }
    out.sort_by(|a, b| (&a.path, &a.what).cmp(&(&b.path, &b.what)));
    out.dedup_by(|a, b| a.path == b.path && a.writes == b.writes);
    out
}

/// Try every need as `user`; one line each. Only root can take another user's identity.
pub fn check(user: &str, needs: &[Need]) -> Vec<CheckLine> {
    if unsafe { libc::geteuid() } != 0 {
        return vec![CheckLine::failed(
            format!("--as-service tries the files as user {user}, which needs root"),
            format!("run `sudo learner-sync check --as-service` (or --as-service={user})"),
        )];
    }
    let Some((uid, gid)) = lookup(user) else {
        return vec![CheckLine::failed(
            format!("there is no user {user} on this machine"),
            "the Debian package creates `learner-sync` (systemd-sysusers); name the service's user with --as-service=USER",
        )];
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return vec![CheckLine::failed(
                format!("cannot find this program: {e}"),
                "",
            )]
        }
    };
    let args: Vec<String> = needs
        .iter()
        .map(|n| format!("{}:{}", if n.writes { 'w' } else { 'r' }, n.path.display()))
        .collect();
    let output = {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new(exe);
        // std drops root's supplementary groups before it takes the uid, so only the
        // user's own group counts, as under systemd's User=.
        cmd.arg("__probe-access").args(&args).uid(uid).gid(gid);
        cmd.output()
    };
    let output = match output {
        Ok(o) => o,
        Err(e) => {
            return vec![CheckLine::failed(
                format!("cannot run the probe as {user}: {e}"),
                "",
            )]
        }
    };
    let answers = String::from_utf8_lossy(&output.stdout);
    let mut lines = Vec::new();
    for (need, answer) in needs.iter().zip(answers.lines()) {
        let path = need.path.display();
        if need.writes && !need.path.exists() {
            lines.push(CheckLine::warning(
                format!("{path} ({}) does not exist yet", need.what),
                format!("the packaged units' StateDirectory= makes /var/lib/learner-sync for {user}; elsewhere: mkdir -p {path} && chown {user}: {path}"),
            ));
            continue;
        }
        lines.push(match answer.split_once('\t') {
            None if answer == "ok" => CheckLine::ok(format!(
                "{user} can {} {path} ({})",
                if need.writes { "write in" } else { "read" },
                need.what
            )),
            _ => {
                let why = answer.split_once('\t').map(|(_, w)| w).unwrap_or(answer);
                let fix = if need.writes {
                    format!("chown {user}: {path} && chmod 0700 {path} (or let systemd's StateDirectory= make it)")
                } else {
                    format!("chown root:{user} {path} && chmod 0640 {path} (and make its folders searchable by {user})")
                };
                CheckLine::failed(
                    format!(
                        "{user} cannot {} {path} ({}): {why}",
                        if need.writes { "write in" } else { "read" },
                        need.what
                    ),
                    fix,
                )
            }
        });
    }
    if lines.len() != needs.len() {
        lines.push(CheckLine::failed(
            format!("the probe as {user} stopped early ({})", output.status),
            "",
        ));
    }
    lines
}

fn lookup(user: &str) -> Option<(u32, u32)> {
    let name = CString::new(user).ok()?;
    // SAFETY: getpwnam returns a pointer into static storage or null; it is read at
    // once, before any other call could reuse that storage.
    unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return None;
        }
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

/// The probe's side (`learner-sync __probe-access r:PATH w:DIR ...`), already running
/// as the service user: one line per item, `ok` or `no<TAB>why`.
pub fn probe(items: &[String]) {
    for item in items {
        let (mode, path) = item.split_at(item.find(':').map_or(0, |i| i + 1));
        let path = Path::new(path);
        let result = if mode == "w:" {
            let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
            // SAFETY: access(2) with a valid C string.
            if unsafe { libc::access(c.as_ptr(), libc::W_OK | libc::X_OK) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        } else {
            std::fs::File::open(path).map(|_| ())
        };
        match result {
            Ok(()) => println!("ok"),
            Err(e) => println!("no\t{e}"),
        }
    }
}
