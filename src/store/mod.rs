//! Learner stores: where the plan is applied.

#[cfg(test)]
pub mod memory;
pub mod postgres;
pub mod scim;
pub mod sqlite;

use crate::config::SyncSettings;
use std::collections::BTreeMap;

pub use crate::applied::Applied;

use crate::check::CheckLine;
use crate::config::StoreConfig;
use crate::groups::{GroupOp, Groups};
use crate::model::Learner;
use crate::plan::Operation;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("learner store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("learner store {url}: {}", StoreError::describe_postgres(source))]
    Postgres {
        url: String,
        #[source]
        source: tokio_postgres::Error,
    },
    /// Another process holds the directory's lease on a shared PostgreSQL store.
    #[error("another learner-sync ({holder}) is syncing directory `{directory}` into this store (its lease runs until {until}); nothing was done")]
    LeaseBusy {
        directory: String,
        holder: String,
        until: String,
    },
    /// The run's lease expired and another process took the directory over.
    #[error("this run lost its lease on directory `{directory}` (it was paused or cut off for longer than the lease, and another learner-sync took the directory over); nothing more was written, the new holder's run applies the changes")]
    LeaseLost { directory: String },
    #[error("learner store: {0}")]
    Other(String),
    #[error("learner store {0}")]
    Open(#[from] crate::db::DbError),
}

impl StoreError {
    /// Whether the same request can never succeed. A lock held by another process,
    /// or an unreachable or throttling remote, can pass: those are not permanent.
    pub fn is_permanent(&self) -> bool {
        match self {
            StoreError::Sqlite { source, .. } => !crate::db::is_busy(source),
            StoreError::Other(_) => false,
            StoreError::LeaseBusy { .. } | StoreError::LeaseLost { .. } => false,
            StoreError::Open(e) => e.is_permanent(),
            // A refusal by the server is permanent, but for the classes that pass:
            // connection (08), rollback (40: serialization, deadlock), resources (53),
            // operator intervention (57: shutdown, cancel). No code: the connection.
            StoreError::Postgres { source, .. } => source.code().is_some_and(|c| {
                !["08", "40", "53", "57"]
                    .iter()
                    .any(|class| c.code().starts_with(class))
            }),
        }
    }

    /// A PostgreSQL error in one line: the server's message (and its detail) where the
    /// server answered, the client's reason otherwise.
    pub fn describe_postgres(e: &tokio_postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => {
                let mut out = format!("{}: {}", db.severity(), db.message());
                if let Some(detail) = db.detail() {
                    out.push_str(&format!(" ({detail})"));
                }
                out
            }
            None => match std::error::Error::source(e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            },
        }
    }
}

/// What happened to a run's operations. A store that applies all-or-nothing either
/// returns an error or a report with no failures.
#[derive(Debug, Default)]
pub struct ApplyReport {
    /// `(external_id, the store's explanation)` of operations that were refused.
    pub failed: Vec<(String, String)>,
    /// Of the creates, how many found and adopted a user already on the provider
    /// (Entra push provisioning's, say) instead of creating one.
    pub adopted: usize,
}

pub enum Store {
    Sqlite(sqlite::SqliteStore),
    // Boxed: its connection settings make it twice the size of the others.
    Postgres(Box<postgres::PostgresStore>),
    Scim(scim::ScimStore),
    #[cfg(test)]
    Memory(memory::MemoryStore),
}

impl Store {
    /// Open the configured store. `read_only` (dry runs, status) never creates or writes.
    /// `state_db` places the files a store keeps beside the state DB (the SCIM mirror).
    pub async fn open(
        config: &StoreConfig,
        sync: &SyncSettings,
        read_only: bool,
    ) -> Result<Store, StoreError> {
        let state_db = sync.state_db.as_path();
        match config {
            StoreConfig::Sqlite { path } => {
                Ok(Store::Sqlite(sqlite::SqliteStore::open(path, read_only)?))
            }
            StoreConfig::Postgres {
                url,
                password,
                lease,
            } => {
                let password = password
                    .as_ref()
                    .map(|p| p.resolve())
                    .transpose()
                    .map_err(|e| StoreError::Other(format!("[store] password: {e}")))?;
                Ok(Store::Postgres(Box::new(
                    postgres::PostgresStore::open(
                        url,
                        password.as_ref(),
                        sync.request_timeout,
                        *lease,
                        read_only,
                    )
                    .await?,
                )))
            }
            StoreConfig::Scim {
                url,
                token,
                concurrency,
                deactivate,
                dialect,
                max_requests_per_second,
                match_by,
                external_id,
                groups,
                mirror,
            } => {
                let token = token
                    .resolve()
                    .map_err(|e| StoreError::Other(format!("[store] token: {e}")))?;
                Ok(Store::Scim(
                    scim::ScimStore::open(
                        url,
                        token,
                        sync.request_timeout,
                        *concurrency,
                        *deactivate,
                        &scim::mirror::mirror_path(state_db, mirror.as_deref()),
                        read_only,
                    )?
                    .with_protocol(scim::Protocol {
                        dialect: *dialect,
                        match_by: *match_by,
                        external_id: *external_id,
                    })
                    .with_rate_limit(*max_requests_per_second)
                    .with_groups(*groups),
                ))
            }
        }
    }

    /// Hold the directory's lease for this run, where the store is one several
    /// processes share (PostgreSQL); refused while another holds it.
    pub async fn take_lease(&mut self, directory: &str) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.take_lease(directory).await,
            _ => Ok(()),
        }
    }

    /// Who shares this store and runs `directory` (PostgreSQL stores only).
    pub async fn sharing(
        &self,
        directory: &str,
    ) -> Result<Option<postgres::lease::Sharing>, StoreError> {
        match self {
            Store::Postgres(s) => s.sharing(directory).await,
            _ => Ok(None),
        }
    }

    /// Give the run's lease back, if it holds one.
    pub async fn release_lease(&mut self) {
        if let Store::Postgres(s) = self {
            s.release_lease().await;
        }
    }

    /// Every learner of a directory, active or not, by external id.
    pub async fn load(&mut self, directory: &str) -> Result<BTreeMap<String, Learner>, StoreError> {
        let mut out = BTreeMap::new();
        self.for_each_learner(directory, &mut |l| {
            out.insert(l.external_id.clone(), l);
        })
        .await?;
        Ok(out)
    }

    /// Visit every learner of a directory without holding them all in memory.
    pub async fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.for_each_learner(directory, visit),
            Store::Postgres(s) => s.for_each_learner(directory, visit).await,
            Store::Scim(s) => s.for_each_learner(directory, visit),
            #[cfg(test)]
            Store::Memory(s) => {
                s.for_each_learner(directory, visit);
                Ok(())
            }
        }
    }

    /// Visit the learners of a directory with these external ids (those the store has).
    pub async fn learners_by_id(
        &mut self,
        directory: &str,
        ids: &std::collections::BTreeSet<String>,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.learners_by_id(directory, ids, visit),
            Store::Postgres(s) => s.learners_by_id(directory, ids, visit).await,
            // The mirror is small next to the provider; a filtered scan is enough.
            Store::Scim(s) => s.for_each_learner(directory, &mut |l| {
                if ids.contains(&l.external_id) {
                    visit(l)
                }
            }),
            #[cfg(test)]
            Store::Memory(s) => {
                s.for_each_learner(directory, &mut |l| {
                    if ids.contains(&l.external_id) {
                        visit(l)
                    }
                });
                Ok(())
            }
        }
    }

    /// `(learners, active learners)` of a directory.
    pub async fn counts(&mut self, directory: &str) -> Result<(usize, usize), StoreError> {
        match self {
            Store::Sqlite(s) => s.counts(directory),
            Store::Postgres(s) => s.counts(directory).await,
            Store::Scim(s) => {
                let (mut total, mut active) = (0, 0);
                s.for_each_learner(directory, &mut |l| {
                    total += 1;
                    active += usize::from(l.active);
                })?;
                Ok((total, active))
            }
            #[cfg(test)]
            Store::Memory(s) => {
                let (mut total, mut active) = (0, 0);
                s.for_each_learner(directory, &mut |l| {
                    total += 1;
                    active += usize::from(l.active);
                });
                Ok((total, active))
            }
        }
    }

    /// Apply operations, recording `run_key` so a crashed run can be told apart later.
    pub async fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        match self {
            Store::Sqlite(s) => s.apply(directory, run_key, operations),
            Store::Postgres(s) => s.apply(directory, run_key, operations).await,
            // Each write is recorded in the mirror as it succeeds.
            Store::Scim(s) => s.apply(directory, run_key, operations).await,
            #[cfg(test)]
            Store::Memory(s) => s.apply(directory, run_key, operations),
        }
    }

    /// What of a run's operations reached the store, for settling a run a crash left
    /// open.
    pub async fn applied(&mut self, run_key: &str) -> Result<Applied, StoreError> {
        match self {
            // One transaction: all or nothing.
            Store::Sqlite(s) => Ok(if s.was_applied(run_key)? {
                Applied::All
            } else {
                Applied::Nothing
            }),
            Store::Postgres(s) => Ok(if s.was_applied(run_key).await? {
                Applied::All
            } else {
                Applied::Nothing
            }),
            // Request by request: the mirror recorded each write that landed, and the
            // next run's plan (made against the mirror) retries the rest.
            Store::Scim(s) => Ok(match s.landed(run_key)? {
                None => Applied::Nothing,
                Some(landed) => Applied::Only(landed),
            }),
            #[cfg(test)]
            Store::Memory(s) => Ok(if s.run_keys.contains(run_key) {
                Applied::All
            } else {
                Applied::Nothing
            }),
        }
    }

    /// Whether this store takes groups: the SQLite and PostgreSQL stores always (their
    /// tables are there), a SCIM store when `[store] groups = true`.
    pub fn takes_groups(&self) -> bool {
        match self {
            Store::Sqlite(_) | Store::Postgres(_) => true,
            Store::Scim(s) => s.takes_groups(),
            #[cfg(test)]
            Store::Memory(_) => true,
        }
    }

    /// The groups the store holds for a directory, with their members.
    pub async fn groups(&mut self, directory: &str) -> Result<Groups, StoreError> {
        match self {
            Store::Sqlite(s) => s.groups(directory),
            Store::Postgres(s) => s.groups(directory).await,
            Store::Scim(s) => s.groups(directory),
            #[cfg(test)]
            Store::Memory(s) => Ok(s.groups.get(directory).cloned().unwrap_or_default()),
        }
    }

    /// Apply a group step's operations with its run key (settled like a run's after a
    /// crash: `applied`).
    pub async fn apply_groups(
        &mut self,
        directory: &str,
        run_key: &str,
        ops: &[GroupOp],
    ) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.apply_groups(directory, run_key, ops),
            Store::Postgres(s) => s.apply_groups(directory, run_key, ops).await,
            Store::Scim(s) => s.apply_groups(directory, run_key, ops).await,
            #[cfg(test)]
            Store::Memory(s) => {
                let mut g = s.groups.remove(directory).unwrap_or_default();
                for op in ops {
                    crate::groups::apply_to(&mut g, op);
                }
                s.groups.insert(directory.to_string(), g);
                s.run_keys.insert(run_key.to_string());
                Ok(())
            }
        }
    }

    /// Move a directory's learners to a new name (`rename-directory`); refuses when
    /// `new` already has learners. Returns how many moved.
    pub async fn rename_directory(&mut self, old: &str, new: &str) -> Result<usize, StoreError> {
        match self {
            Store::Sqlite(s) => s.rename_directory(old, new),
            Store::Postgres(s) => s.rename_directory(old, new).await,
            Store::Scim(s) => s.rename_directory(old, new),
            #[cfg(test)]
            Store::Memory(s) => {
                let moving: Vec<(String, String)> = s
                    .learners
                    .keys()
                    .filter(|(d, _)| d == old)
                    .cloned()
                    .collect();
                if s.learners.keys().any(|(d, _)| d == new) {
                    return Err(StoreError::Other(format!(
                        "directory `{new}` already has learners"
                    )));
                }
                for key in &moving {
                    if let Some(l) = s.learners.remove(key) {
                        s.learners.insert((new.to_string(), key.1.clone()), l);
                    }
                }
                Ok(moving.len())
            }
        }
    }

    /// The state DB has closed a run; a store may drop what it kept to settle it.
    pub async fn forget_run(&mut self, run_key: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) | Store::Postgres(_) => Ok(()),
            Store::Scim(s) => s.forget_run(run_key),
            #[cfg(test)]
            Store::Memory(s) => {
                s.run_keys.remove(run_key);
                Ok(())
            }
        }
    }

    /// What this store says it is, beyond its config: a state DB bound to another
    /// store (a re-created file, another provider's mirror) sees a different marker.
    /// The SQLite or PostgreSQL store's generation id; `None` where the store has
    /// none (yet).
    pub async fn marker(&self) -> Result<Option<String>, StoreError> {
        match self {
            Store::Sqlite(s) => s.generation(),
            Store::Postgres(s) => s.generation().await,
            // The provider URL is in the config fingerprint; the SCIM mirror may add
            // its own generation here.
            Store::Scim(_) => Ok(None),
            #[cfg(test)]
            Store::Memory(_) => Ok(Some("memory".to_string())),
        }
    }

    /// For `sync --dry-run`: what the store adds to the plan's lines. The SCIM store
    /// shows which existing users the creates take over and what that changes on them.
    pub async fn preview(&mut self, directory: &str, operations: &[Operation]) -> Vec<String> {
        match self {
            Store::Scim(s) => s
                .preview(directory, operations)
                .await
                .unwrap_or_else(|e| vec![format!("{directory}: takeover not previewed: {e}")]),
            _ => vec![],
        }
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        match self {
            Store::Sqlite(s) => vec![s.check()],
            Store::Postgres(s) => vec![s.check().await],
            Store::Scim(s) => s.check().await,
            #[cfg(test)]
            Store::Memory(_) => vec![],
        }
    }
}

/// Move a directory's rows to a new name in one transaction (`rename-directory`), in a
/// store-side SQLite file: `learners` is its learner table, `others` the other tables
/// keyed by directory (run keys, groups).
/// Refuses when `new` already has learners; returns how many moved (0 for a file that
/// does not exist yet).
fn rename_directory(
    conn: Option<&mut rusqlite::Connection>,
    path: &std::path::Path,
    learners: &str,
    others: &[&str],
    old: &str,
    new: &str,
) -> Result<usize, StoreError> {
    let shown = path.display().to_string();
    let e = |source| StoreError::Sqlite {
        path: shown.clone(),
        source,
    };
    let Some(conn) = conn else {
        return Ok(0);
    };
    let tx = conn.transaction().map_err(e)?;
    let taken: i64 = tx
        .query_row(
            &format!("SELECT count(*) FROM {learners} WHERE directory = ?1"),
            [new],
            |r| r.get(0),
        )
        .map_err(e)?;
    if taken > 0 {
        return Err(StoreError::Other(format!(
            "{shown}: directory `{new}` already has {taken} learners"
        )));
    }
    let moved = tx
        .execute(
            &format!("UPDATE {learners} SET directory = ?2 WHERE directory = ?1"),
            [old, new],
        )
        .map_err(e)?;
    for table in others {
        tx.execute(
            &format!("UPDATE {table} SET directory = ?2 WHERE directory = ?1"),
            [old, new],
        )
        .map_err(e)?;
    }
    tx.commit().map_err(e)?;
    Ok(moved)
}
