//! The per-directory lock, so that a `sync`, an `approve` and a daemon never run one
//! directory at once.

use std::path::{Path, PathBuf};

use crate::config::Config;

/// Held for as long as the run lasts; the OS releases it if the process dies.
pub struct DirectoryLock {
    _file: std::fs::File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another learner-sync process{holder} is syncing directory `{directory}` (lock {}); wait for it to finish, or stop it", path.display())]
    Busy {
        directory: String,
        path: PathBuf,
        /// ` (pid N: COMMAND)` as the holder wrote it into the lock, or empty.
        holder: String,
    },
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open lock {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The lock (or its folder) belongs to another user: typically a run as root.
    #[error("cannot open lock {}: {source}; it belongs to uid {owner}, this process runs as uid {me} (a run as another user, often root, left it): run learner-sync as the user that owns the state DB, or give the files back with `chown -R <service user>: {}*`", path.display(), state_db.display())]
    NotOurs {
        path: PathBuf,
        state_db: PathBuf,
        owner: u32,
        me: u32,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LockError {
    /// Another run holding the lock ends; a file the process cannot open stays so.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, LockError::Busy { .. })
    }
}

/// `<state_db>.locks/<directory>.lock`.
pub fn lock_path(config: &Config, directory: &str) -> PathBuf {
    let mut name = config.sync.state_db.as_os_str().to_owned();
    name.push(".locks");
    PathBuf::from(name).join(format!("{directory}.lock"))
}

pub fn lock_directory(config: &Config, directory: &str) -> Result<DirectoryLock, LockError> {
    lock_file(&lock_path(config, directory), directory)
        .map_err(|e| not_ours(e, &config.sync.state_db))
}

/// A lock another user owns: say whose it is and how to give it back.
fn not_ours(e: LockError, state_db: &Path) -> LockError {
    use std::os::unix::fs::MetadataExt;
    let (LockError::Open { path, source } | LockError::CreateDir { path, source }) = e else {
        return e;
    };
    let me = process_uid();
    let owner = std::iter::successors(Some(path.as_path()), |p| p.parent())
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.uid());
    match owner {
        Some(owner) if source.kind() == std::io::ErrorKind::PermissionDenied && owner != me => {
            LockError::NotOurs {
                path,
                state_db: state_db.to_path_buf(),
                owner,
                me,
                source,
            }
        }
        _ => LockError::Open { path, source },
    }
}

/// This process's uid: the owner of /proc/self.
fn process_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

fn lock_file(path: &Path, directory: &str) -> Result<DirectoryLock, LockError> {
    if let Some(dir) = path.parent() {
        crate::db::create_private_dir(dir).map_err(|source| LockError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| LockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => {
            // Who holds it, for the next process's error; the lock works without it.
            let _ = write_holder(&file);
            Ok(DirectoryLock { _file: file })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(LockError::Busy {
            directory: directory.to_string(),
            path: path.to_path_buf(),
            holder: read_holder(path),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(LockError::Lock {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Whether another process holds the directory's lock now, and who (` (pid N: CMD)`).
/// Reads only: a lock file that does not exist is not held.
pub fn holder(config: &Config, directory: &str) -> Option<String> {
    let path = lock_path(config, directory);
    let file = std::fs::File::open(&path).ok()?;
    match file.try_lock_shared() {
        Ok(()) => None,
        Err(std::fs::TryLockError::WouldBlock) => Some(read_holder(&path)),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

/// `pid N\ncommand line\n` into the held lock file, replacing what was there.
fn write_holder(mut file: &std::fs::File) -> std::io::Result<()> {
    use std::io::{Seek, Write};
    let command: Vec<String> = std::env::args().collect();
    // Arguments never hold secrets (they come from env, file or credential), but
    // keep it one short line.
    let mut line: String = command.join(" ").chars().take(200).collect();
    line.retain(|c| !c.is_control());
    file.set_len(0)?;
    file.seek(std::io::SeekFrom::Start(0))?;
    write!(file, "pid {}\n{line}\n", std::process::id())?;
    file.flush()
}

/// ` (pid N: COMMAND)` from a held lock file, or empty if it says nothing readable.
fn read_holder(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let mut lines = text.lines();
    let pid = lines
        .next()
        .and_then(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse::<u32>().ok());
    match (pid, lines.next()) {
        (Some(pid), Some(cmd)) if !cmd.trim().is_empty() => {
            let cmd: String = cmd.chars().filter(|c| !c.is_control()).take(200).collect();
            format!(" (pid {pid}: {cmd})")
        }
        (Some(pid), _) => format!(" (pid {pid})"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_one_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/hr.lock");
        let first = lock_file(&path, "hr").unwrap();
        let e = lock_file(&path, "hr").err().unwrap();
        assert!(matches!(e, LockError::Busy { .. }), "{e}");
        let pid = std::process::id();
        assert!(e.to_string().contains(&format!("(pid {pid}: ")), "{e}");
        assert!(!e.is_permanent());
        drop(first);
        lock_file(&path, "hr").unwrap();
    }
}
