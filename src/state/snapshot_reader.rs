//! The previous users of one directory, read from the state DB on demand: what a delta
//! source merges its partial changes into, without loading the whole snapshot.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension};

use super::StateError;
use crate::model::DirectoryUser;
use crate::source::PreviousUsers;

pub struct SnapshotReader {
    conn: Mutex<Connection>,
    directory: String,
    /// The first read error: the engine fails the run on it rather than merge into
    /// a user it could not read.
    error: Mutex<Option<String>>,
}

impl SnapshotReader {
    /// A read-only connection of its own; `None` when there is no state DB yet.
    pub fn open(path: &Path, directory: &str) -> Result<Option<SnapshotReader>, StateError> {
        let Some(conn) = crate::db::open_read_only(path)? else {
            return Ok(None);
        };
        Ok(Some(SnapshotReader {
            conn: Mutex::new(conn),
            directory: directory.to_string(),
            error: Mutex::new(None),
        }))
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn fail(&self, message: String) {
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(message);
        }
    }

    fn parse(&self, id: &str, json: &str) -> Option<DirectoryUser> {
        match serde_json::from_str(json) {
            Ok(u) => Some(u),
            Err(e) => {
                self.fail(format!(
                    "snapshot row {}/{id} is corrupt: {e}",
                    self.directory
                ));
                None
            }
        }
    }
}

impl PreviousUsers for SnapshotReader {
    fn get(&self, external_id: &str) -> Option<DirectoryUser> {
        let conn = self.conn.lock().ok()?;
        let json: Result<Option<String>, _> = conn
            .prepare_cached("SELECT user FROM snapshot WHERE directory = ?1 AND external_id = ?2")
            .and_then(|mut s| {
                s.query_row([self.directory.as_str(), external_id], |r| r.get(0))
                    .optional()
            });
        match json {
            Ok(Some(json)) => self.parse(external_id, &json),
            Ok(None) => None,
            Err(e) => {
                self.fail(format!("reading the snapshot: {e}"));
                None
            }
        }
    }

    fn for_each(&self, visit: &mut dyn FnMut(DirectoryUser)) {
        let Ok(conn) = self.conn.lock() else { return };
        let result = conn
            .prepare("SELECT external_id, user FROM snapshot WHERE directory = ?1")
            .and_then(|mut s| {
                let mut rows = s.query([self.directory.as_str()])?;
                while let Some(row) = rows.next()? {
                    let id: String = row.get(0)?;
                    let json: String = row.get(1)?;
                    if let Some(u) = self.parse(&id, &json) {
                        visit(u);
                    }
                }
                Ok(())
            });
        if let Err(e) = result {
            self.fail(format!("reading the snapshot: {e}"));
        }
    }
}
