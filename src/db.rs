//! Every SQLite file the tool keeps (state DB, SQLite store, SCIM mirror): how it is
//! opened, migrated and timestamped, in one place.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use rusqlite_migration::Migrations;

/// How long a writer waits for another (a concurrent run, a reader of the store)
/// before the run fails with "database is locked".
pub const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Days a store keeps the key of a run it applied: the key settles a run a crash left
/// open, and the next run of the directory settles it before it applies anything.
pub const KEEP_RUN_KEYS_DAYS: i64 = 30;

/// Why a SQLite file could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{}: migration failed: {source}", path.display())]
    Migration {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl DbError {
    /// Another process holds the file: trying again later can help.
    pub fn is_permanent(&self) -> bool {
        match self {
            DbError::Sqlite { source, .. } => !is_busy(source),
            DbError::Migration { source, .. } => !migration_busy(source),
            DbError::CreateDir { .. } => true,
        }
    }
}

/// SQLITE_BUSY / SQLITE_LOCKED: another connection holds the lock.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

fn migration_busy(e: &rusqlite_migration::Error) -> bool {
    matches!(e, rusqlite_migration::Error::RusqliteError { err, .. } if is_busy(err))
}

/// The time as every table records it: RFC 3339, UTC, whole seconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Migrate to the latest schema. Two processes opening a new file at once both see
/// version 0 and race: the loser either fails with SQLITE_BUSY or finds the winner's
/// tables already there (the version moved under it); a second look then finds the
/// schema in place. Any other error is final and not retried.
pub fn migrate(
    migrations: &Migrations<'_>,
    conn: &mut Connection,
) -> Result<(), rusqlite_migration::Error> {
    let mut attempt = 0;
    loop {
        let before = migrations.current_version(conn)?;
        match migrations.to_latest(conn) {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 4 => {
                let raced = migration_busy(&e)
                    || migrations
                        .current_version(conn)
                        .is_ok_and(|now| now != before);
                if !raced {
                    return Err(e);
                }
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How a writable file is opened.
pub struct Writable<'a> {
    /// `Some(level)`: WAL mode with this `synchronous` level (files other programs read).
    pub wal_synchronous: Option<&'a str>,
    pub foreign_keys: bool,
}

/// Create the folders of a file the tool keeps: 0700 whatever the umask (the files
/// hold who works where; only the service user reads them). Existing folders are
/// left as the admin set them.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Create `path` empty with mode 0600 whatever the umask, unless it exists. SQLite
/// gives its -wal and -shm files the mode of the database file.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Open a file for writing, creating it (0600) and its directory (0700), and migrate it.
pub fn open_writable(
    path: &Path,
    how: Writable<'_>,
    migrations: &Migrations<'_>,
) -> Result<Connection, DbError> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(|source| DbError::CreateDir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    create_private_file(path).map_err(|source| DbError::CreateDir {
        dir: path.to_path_buf(),
        source,
    })?;
    let err = |source| DbError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = Connection::open(path).map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    if let Some(level) = how.wal_synchronous {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", level)
            .map_err(err)?;
    }
    if how.foreign_keys {
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err)?;
    }
    migrate(migrations, &mut conn).map_err(|source| DbError::Migration {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(conn)
}

/// Open a file read-only: `None` when it does not exist yet or was never migrated
/// (a dry run sees an empty file). Never creates or writes.
pub fn open_read_only(path: &Path) -> Result<Option<Connection>, DbError> {
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| DbError::Sqlite {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err)?;
    Ok((version > 0).then_some(conn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_open_of_a_missing_or_blank_file_sees_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        assert!(open_read_only(&path).unwrap().is_none());
        Connection::open(&path).unwrap();
        assert!(open_read_only(&path).unwrap().is_none());
    }

    #[test]
    fn a_writable_open_creates_the_directory_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/x.db");
        let m = Migrations::new(vec![rusqlite_migration::M::up("CREATE TABLE t (x);")]);
        let how = || Writable {
            wal_synchronous: Some("FULL"),
            foreign_keys: false,
        };
        open_writable(&path, how(), &m).unwrap();
        // Opening again finds the schema there.
        open_writable(&path, how(), &m).unwrap();
        assert!(open_read_only(&path).unwrap().is_some());
    }

    #[test]
    fn a_broken_migration_is_not_retried_as_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let m = Migrations::new(vec![rusqlite_migration::M::up("NOT SQL;")]);
        let e = open_writable(
            &path,
            Writable {
                wal_synchronous: None,
                foreign_keys: false,
            },
            &m,
        )
        .unwrap_err();
        assert!(e.is_permanent(), "{e}");
    }
}
