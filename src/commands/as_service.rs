//! `check --as-service[=USER]`: open every file the config names as the service user
//! would, in a child process that switched to that user, so a key or secret only
//! root can read fails here and not in the service.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{CommandError, Exit};
use crate::config::{Config, DirectoryKind, EntraCredential, SecretRef, StoreConfig};

/// (what, path) of each file the service reads.
type Files = Vec<(String, PathBuf)>;
/// (what, name) of each systemd credential.
type Credentials = Vec<(String, String)>;

/// What the service reads: files, and systemd credential names.
fn files(config: &Config) -> (Files, Credentials) {
    let mut files = vec![("config".to_string(), config.path.clone())];
    let mut credentials = Vec::new();
    let mut secret = |what: String, s: &SecretRef, files: &mut Vec<(String, PathBuf)>| match s {
        SecretRef::File(p) => files.push((what, p.clone())),
        SecretRef::Credential(name) => credentials.push((what, name.clone())),
        SecretRef::Env(_) => {}
    };
    if let StoreConfig::Scim { token, .. } = &config.store {
        secret("store.token".into(), token, &mut files);
    }
    for d in &config.directories {
        match &d.kind {
            DirectoryKind::Csv { path, .. } => {
                files.push((format!("{}.path", d.name), path.clone()))
            }
            DirectoryKind::Entra(e) => match &e.credential {
                EntraCredential::Secret(s) => {
                    secret(format!("{}.client_secret", d.name), s, &mut files)
                }
                EntraCredential::Certificate {
                    cert_file,
                    key_file,
                } => {
                    files.push((
                        format!("{}.certificate.cert_file", d.name),
                        cert_file.clone(),
                    ));
                    files.push((format!("{}.certificate.key_file", d.name), key_file.clone()));
                }
            },
            DirectoryKind::Google(g) => secret(
                format!("{}.service_account_key", d.name),
                &g.service_account_key,
                &mut files,
            ),
        }
    }
    (files, credentials)
}

/// The fix for a file the service user cannot open.
pub fn fix(path: &std::path::Path, errno: i32, user: &str) -> String {
    match errno {
        libc::EACCES | libc::EPERM => format!(
            "`chown root:{user} {0}` and `chmod 0640 {0}` (and let {user} enter its folders)",
            path.display()
        ),
        libc::ENOENT => format!("file not found: {}", path.display()),
        _ => "check the path".to_string(),
    }
}

pub fn run(config: &Config, user: &str) -> Result<Exit, CommandError> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CommandError::Usage(format!(
            "check --as-service must run as root: it switches to the user `{user}` to open the files (run `sudo learner-sync check --as-service`)"
        )));
    }
    let Ok(cname) = CString::new(user) else {
        return Err(CommandError::Usage(format!("no user `{user}`")));
    };
    // SAFETY: getpwnam returns a pointer to static storage or null; read at once.
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        return Err(CommandError::Usage(format!(
            "no user `{user}` on this machine (the package creates `learner-sync`; name another with --as-service=USER)"
        )));
    }
    // SAFETY: pw is non-null and points at a passwd record.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    let (files, credentials) = files(config);
    // A path with a NUL byte cannot be opened by anyone: it is not asked about.
    let (files, paths): (Vec<_>, Vec<CString>) = files
        .into_iter()
        .filter_map(|(w, p)| {
            let c = CString::new(p.as_os_str().as_bytes()).ok()?;
            Some(((w, p), c))
        })
        .unzip();
    let errnos = open_as(uid, gid, &paths)?;
    let mut ok = true;
    for ((what, path), errno) in files.iter().zip(errnos) {
        if errno == 0 {
            println!("ok   as {user}: {what}: {} readable", path.display());
        } else {
            ok = false;
            println!(
                "FAIL as {user}: {what}: cannot open {}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(errno)
            );
            println!("     hint: {}", fix(path, errno, user));
        }
    }
    for (what, name) in credentials {
        println!(
            "note as {user}: {what}: systemd credential `{name}`: the unit needs `LoadCredential={name}:PATH` (systemctl edit learner-sync.service); systemd reads PATH as root, so it may stay root:root 0600"
        );
    }
    Ok(if ok { Exit::Ok } else { Exit::Failed })
}

/// In a forked child that became `uid`/`gid`, open each path; its errno (0 = opened).
/// The child only makes system calls (no allocation): the parent has other threads.
fn open_as(uid: u32, gid: u32, paths: &[CString]) -> Result<Vec<i32>, CommandError> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe(2) into a two-int array.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(CommandError::Usage(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    let ptrs: Vec<*const libc::c_char> = paths.iter().map(|p| p.as_ptr()).collect();
    // SAFETY: the child below calls only async-signal-safe functions and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(CommandError::Usage(format!(
            "fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: child after fork; only raw system calls, then _exit.
        unsafe {
            libc::close(fds[0]);
            let groups = [gid];
            if libc::setgroups(1, groups.as_ptr()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                libc::_exit(2);
            }
            for p in &ptrs {
                let fd = libc::open(*p, libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC);
                let errno: i32 = if fd >= 0 {
                    libc::close(fd);
                    0
                } else {
                    *libc::__errno_location()
                };
                let bytes = errno.to_ne_bytes();
                libc::write(fds[1], bytes.as_ptr().cast(), bytes.len());
            }
            libc::_exit(0);
        }
    }
    // SAFETY: close our copy of the write end; read the child's answers.
    unsafe { libc::close(fds[1]) };
    let mut out = Vec::new();
    let mut buf = [0u8; 4];
    for _ in 0..paths.len() {
        // SAFETY: reading 4 bytes into a 4-byte buffer.
        let n = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), 4) };
        if n != 4 {
            break;
        }
        out.push(i32::from_ne_bytes(buf));
    }
    let mut status = 0;
    // SAFETY: reap our own child; close the read end.
    unsafe {
        libc::close(fds[0]);
        libc::waitpid(pid, &mut status, 0);
    }
    if out.len() != paths.len() {
        return Err(CommandError::Usage(format!(
            "could not switch to uid {uid} gid {gid} to open the files"
        )));
    }
    Ok(out)
}
