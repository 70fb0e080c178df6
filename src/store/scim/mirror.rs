//! The SCIM store's mirror: a SQLite file next to the state DB that links each learner
//! (directory, external id) to its SCIM resource id, with the values last pushed and
//! whether it is active. The plan diffs against the mirror; a row is written right
//! after each successful request, so a crash never loses a created resource.
//!
//! One SCIM resource belongs to one learner: `upsert` refuses to link a second learner
//! to a SCIM id that another row holds, and opening the mirror for writing unlinks any
//! SCIM id that an earlier version linked to several learners (each of them is then
//! resolved again against the provider, by externalId, at its next operation).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};

use crate::model::{Field, Learner, LearnerFields};
use crate::store::StoreError;

/// Append-only.
fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE scim_learners (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    scim_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    email TEXT,
    given_name TEXT,
    family_name TEXT,
    display_name TEXT,
    department TEXT,
    job_title TEXT,
    employee_id TEXT,
    manager_email TEXT,
    active INTEGER NOT NULL CHECK (active IN (0, 1)),
    updated_at TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
);
"#,
        ),
        // Runs whose apply started: how a crashed run is told apart from one that sent nothing.
        M::up(
            r#"
CREATE TABLE scim_runs (
    run_key TEXT PRIMARY KEY,
    directory TEXT NOT NULL,
    started_at TEXT NOT NULL
);
"#,
        ),
        // Who holds a SCIM id: checked before every link.
        M::up("CREATE INDEX scim_learners_by_scim_id ON scim_learners (scim_id);"),
        // Which learners' writes of a run landed, recorded with each write: a crashed
        // run keeps the log of those actions only.
        M::up(
            "CREATE TABLE scim_landed (
    run_key TEXT NOT NULL,
    external_id TEXT NOT NULL,
    PRIMARY KEY (run_key, external_id)
) WITHOUT ROWID;",
        ),
        // The provider the links are to (see `provider_key`): SCIM ids mean nothing on
        // another provider, where one may name another person's account.
        M::up(
            "CREATE TABLE scim_provider (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    base TEXT NOT NULL
);",
        ),
        // The extra SCIM attributes last pushed (`[directory.mapping.scim]`), as a JSON
        // object; NULL when none. The plan diffs against them like the columns.
        M::up("ALTER TABLE scim_learners ADD COLUMN scim_extra TEXT;"),
        // Groups pushed to /Groups (issue 16): their SCIM ids and the members that
        // landed, recorded with each request that succeeded.
        M::up(
            "CREATE TABLE scim_groups (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    scim_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT,
    PRIMARY KEY (directory, external_id)
);
CREATE TABLE scim_group_members (
    directory TEXT NOT NULL,
    group_external_id TEXT NOT NULL,
    learner_external_id TEXT NOT NULL,
    PRIMARY KEY (directory, group_external_id, learner_external_id)
) WITHOUT ROWID;",
        ),
    ])
}

/// A learner of the mirror: `(directory, external id)`.
pub type Owner = (String, String);

/// Where the mirror of a state DB lives: `<state_db>.scim-mirror.db`.
pub fn mirror_path(state_db: &Path, store: Option<&str>) -> PathBuf {
    let mut name = state_db.as_os_str().to_owned();
    // The default store's file keeps the name it always had.
    if let Some(store) = store {
        name.push(format!(".{store}"));
    }
    name.push(".scim-mirror.db");
    PathBuf::from(name)
}

pub struct Mirror {
    conn: Option<Connection>,
    path: PathBuf,
    /// Set when the links were made on another provider than the configured one.
    provider_change: Option<Box<ProviderChange>>,
    /// Read-only with another provider's links: they read as none.
    hide_links: bool,
}

/// The SCIM `url` changed since the mirror's links were made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderChange {
    /// The provider the links were made on, and the configured one (see `provider_key`).
    pub from: String,
    pub to: String,
    /// Learners that were linked to resources of `from`.
    pub unlinked: i64,
}

/// What identifies a provider: the base's origin (scheme, host, port) and path, without
/// credentials, query or a trailing slash.
pub fn provider_key(base: &reqwest::Url) -> String {
    format!(
        "{}{}",
        base.origin().ascii_serialization(),
        base.path().trim_end_matches('/')
    )
}

/// One mirrored learner: its SCIM id and what the provider was last told.
#[derive(Debug, Clone)]
pub struct Linked {
    pub scim_id: String,
    pub fields: LearnerFields,
    pub active: bool,
}

impl Mirror {
    /// Open the mirror of the provider `provider` (a `provider_key`). Links made on
    /// another provider are never used: opened for writing, they are dropped and the
    /// mirror is bound to `provider`; read-only (a dry run), the mirror reads as empty.
    /// Either way each learner is then resolved again by lookup on `provider`.
    pub fn open(path: &Path, read_only: bool, provider: &str) -> Result<Mirror, StoreError> {
        // NORMAL in WAL mode: a row survives the process being killed; a power loss may
        // lose the last rows, and the next run re-links those users by lookup.
        let conn = crate::store::sqlite::open_file(path, read_only, "NORMAL", &migrations())?;
        let mut mirror = Mirror {
            conn,
            path: path.to_path_buf(),
            provider_change: None,
            hide_links: false,
        };
        mirror.bind(provider, read_only)?;
        if !read_only {
            mirror.unlink_shared()?;
        }
        Ok(mirror)
    }

    /// Whether the links are to another provider than the configured one.
    pub fn provider_change(&self) -> Option<&ProviderChange> {
        self.provider_change.as_deref()
    }

    /// Check (and, writable, record) which provider the links are to.
    fn bind(&mut self, provider: &str, read_only: bool) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let bound = conn
            .query_row("SELECT base FROM scim_provider WHERE id = 1", [], |r| {
                r.get::<_, String>(0)
            })
            .optional();
        let bound = match bound {
            Ok(bound) => bound,
            // A read-only mirror an older version made has no such table: unbound.
            Err(_) if read_only => None,
            Err(e) => return Err(self.err(e)),
        };
        let from = match bound {
            Some(from) if from == provider => return Ok(()),
            Some(from) => from,
            // Made before mirrors were bound, or new: the links are the configured
            // provider's (the only one a mirror could have been used with).
            None if read_only => return Ok(()),
            None => {
                return conn
                    .execute(
                        "INSERT INTO scim_provider (id, base) VALUES (1, ?1)",
                        [provider],
                    )
                    .map(|_| ())
                    .map_err(|e| self.err(e));
            }
        };
        let unlinked: i64 = conn
            .query_row("SELECT count(*) FROM scim_learners", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        tracing::warn!(
            from,
            to = provider,
            unlinked,
            "the SCIM url changed: the mirror's links are the old provider's resource ids and are not reused; every learner is looked up on the new provider (adopted by externalId or userName) or created"
        );
        if !read_only {
            let tx = conn.unchecked_transaction().map_err(|e| self.err(e))?;
            tx.execute("DELETE FROM scim_learners", [])
                .and_then(|_| tx.execute("DELETE FROM scim_groups", []))
                .and_then(|_| tx.execute("DELETE FROM scim_group_members", []))
                .and_then(|_| {
                    tx.execute(
                        "INSERT OR REPLACE INTO scim_provider (id, base) VALUES (1, ?1)",
                        [provider],
                    )
                })
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
        }
        self.hide_links = read_only;
        self.provider_change = Some(Box::new(ProviderChange {
            from,
            to: provider.to_string(),
            unlinked,
        }));
        Ok(())
    }

    /// The connection for reading links: none when they are another provider's.
    fn links_conn(&self) -> Option<&Connection> {
        self.conn.as_ref().filter(|_| !self.hide_links)
    }

    /// Unlink every learner whose SCIM id another learner shares too (left by a version
    /// that could link two learners to one resource). The mirror cannot tell which of
    /// them the resource belongs to; the provider's externalId can, so each of them is
    /// resolved again (adopted by externalId, created, or refused) like a new learner.
    fn unlink_shared(&self) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let shared: Vec<(String, String, String)> = conn
            .prepare(
                "SELECT scim_id, directory, external_id FROM scim_learners WHERE scim_id IN
                 (SELECT scim_id FROM scim_learners GROUP BY scim_id HAVING count(*) > 1)
                 ORDER BY scim_id, directory, external_id",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect()
            })
            .map_err(|e| self.err(e))?;
        if shared.is_empty() {
            return Ok(());
        }
        for (scim_id, directory, external_id) in &shared {
            tracing::warn!(
                directory,
                external_id,
                scim_id,
                "the mirror linked this learner and other ones to one SCIM user; unlinked them all, the next operation resolves each again by externalId"
            );
        }
        conn.execute(
            "DELETE FROM scim_learners WHERE scim_id IN
             (SELECT scim_id FROM scim_learners GROUP BY scim_id HAVING count(*) > 1)",
            [],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// The learner linked to each SCIM id, over every directory.
    pub fn owners(&self) -> Result<HashMap<String, Owner>, StoreError> {
        let Some(conn) = self.links_conn() else {
            return Ok(HashMap::new());
        };
        conn.prepare("SELECT scim_id, directory, external_id FROM scim_learners")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
                    .collect()
            })
            .map_err(|e| self.err(e))
    }

    /// The learner other than `(directory, external_id)` linked to `scim_id`, if any.
    fn other_owner(
        &self,
        conn: &Connection,
        directory: &str,
        external_id: &str,
        scim_id: &str,
    ) -> Result<Option<Owner>, StoreError> {
        conn.query_row(
            "SELECT directory, external_id FROM scim_learners
             WHERE scim_id = ?1 AND NOT (directory = ?2 AND external_id = ?3)
             ORDER BY directory, external_id LIMIT 1",
            params![scim_id, directory, external_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    pub fn for_each(
        &self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        let Some(conn) = self.links_conn() else {
            return Ok(());
        };
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {} FROM scim_learners WHERE directory = ?1",
                Field::column_list(&["external_id"], &["active", "scim_extra"])
            ))
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok(Learner {
                    external_id: r.get(0)?,
                    fields: with_extra(fields_from(r, 1)?, r)?,
                    active: r.get::<_, i64>(ACTIVE_AT)? == 1,
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            visit(row.map_err(|e| self.err(e))?);
        }
        Ok(())
    }

    pub fn get(&self, directory: &str, external_id: &str) -> Result<Option<Linked>, StoreError> {
        let Some(conn) = self.links_conn() else {
            return Ok(None);
        };
        conn.query_row(
            &format!(
                "SELECT {} FROM scim_learners WHERE directory = ?1 AND external_id = ?2",
                Field::column_list(&["scim_id"], &["active", "scim_extra"])
            ),
            params![directory, external_id],
            |r| {
                Ok(Linked {
                    scim_id: r.get(0)?,
                    fields: with_extra(fields_from(r, 1)?, r)?,
                    active: r.get::<_, i64>(ACTIVE_AT)? == 1,
                })
            },
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Record what the provider now holds for one learner (one committed write) and,
    /// with `landed`, that this run's operation for that learner landed, in one
    /// transaction. `Ok(Some(owner))`: nothing written, because `owner`, another
    /// learner, is linked to that SCIM id.
    #[must_use = "a refused link must be reported"]
    pub fn upsert(
        &self,
        directory: &str,
        external_id: &str,
        linked: &Linked,
        landed: Option<&str>,
    ) -> Result<Option<Owner>, StoreError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        // Rolled back on any early return.
        let tx = conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let f = &linked.fields;
        // One statement, so that the check and the write cannot be split by another
        // process writing the same mirror. (`WHERE` also lets SQLite parse the upsert.)
        let n = Field::ALL.len();
        // ?1 directory, ?2 external id, ?3 SCIM id, then the fields, `active` and the time.
        let values: Vec<String> = (1..=n + 6).map(|i| format!("?{i}")).collect();
        let updates: Vec<String> = ["scim_id"]
            .into_iter()
            .chain(Field::ALL.map(Field::name))
            .chain(["active", "updated_at", "scim_extra"])
            .map(|c| format!("{c} = excluded.{c}"))
            .collect();
        let sql = format!(
            "INSERT INTO scim_learners ({})
             SELECT {}
             WHERE NOT EXISTS (SELECT 1 FROM scim_learners
                               WHERE scim_id = ?3 AND NOT (directory = ?1 AND external_id = ?2))
             ON CONFLICT (directory, external_id) DO UPDATE SET {}",
            Field::column_list(
                &["directory", "external_id", "scim_id"],
                &["active", "updated_at", "scim_extra"]
            ),
            values.join(", "),
            updates.join(", "),
        );
        let mut row: Vec<rusqlite::types::Value> = vec![
            directory.to_string().into(),
            external_id.to_string().into(),
            linked.scim_id.clone().into(),
        ];
        row.extend(Field::ALL.map(|field| f.get(field).map(str::to_string).into()));
        row.push((linked.active as i64).into());
        row.push(crate::db::now().into());
        let extra =
            (!f.scim.is_empty()).then(|| serde_json::to_string(&f.scim).unwrap_or_default());
        row.push(extra.into());
        let written = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(row)))
            .map_err(|e| self.err(e))?;
        if written > 0 {
            if let Some(run_key) = landed {
                tx.execute(
                    "INSERT OR IGNORE INTO scim_landed (run_key, external_id) VALUES (?1, ?2)",
                    params![run_key, external_id],
                )
                .map_err(|e| self.err(e))?;
            }
            tx.commit().map_err(|e| self.err(e))?;
            return Ok(None);
        }
        match self.other_owner(conn, directory, external_id, &linked.scim_id)? {
            Some(owner) => Ok(Some(owner)),
            None => Err(StoreError::Other(format!(
                "the mirror {} wrote no row for learner {external_id}",
                self.path.display()
            ))),
        }
    }

    /// `(userName or email, scim id)` of every linked learner of a directory, for
    /// resolving managers (emails last, so that they win).
    pub fn links(&self, directory: &str) -> Result<Vec<(String, String)>, StoreError> {
        let Some(conn) = self.links_conn() else {
            return Ok(vec![]);
        };
        let mut stmt = conn
            .prepare(
                "SELECT user_name, scim_id FROM scim_learners WHERE directory = ?1
                 UNION ALL SELECT email, scim_id FROM scim_learners WHERE directory = ?1 AND email IS NOT NULL",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// `external id -> SCIM id` of every linked learner of a directory.
    pub fn scim_ids(&self, directory: &str) -> Result<HashMap<String, String>, StoreError> {
        let Some(conn) = self.links_conn() else {
            return Ok(HashMap::new());
        };
        let mut stmt = conn
            .prepare("SELECT external_id, scim_id FROM scim_learners WHERE directory = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([directory], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| self.err(e))?
            .collect::<Result<HashMap<_, _>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// Record that a run's apply is starting, before anything is sent.
    pub fn begin_run(&self, directory: &str, run_key: &str) -> Result<(), StoreError> {
        let conn = self
            .conn
            .as_ref()
            .ok_or_else(|| StoreError::Other("store opened read-only".to_string()))?;
        conn.execute(
            "INSERT OR IGNORE INTO scim_runs (run_key, directory, started_at) VALUES (?1, ?2, ?3)",
            params![run_key, directory, crate::db::now()],
        )
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// The learners whose operation of `run_key` landed (see `upsert`).
    pub fn landed(&self, run_key: &str) -> Result<BTreeSet<String>, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(BTreeSet::new());
        };
        let mut stmt = conn
            .prepare("SELECT external_id FROM scim_landed WHERE run_key = ?1")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([run_key], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<BTreeSet<String>, _>>()
            .map_err(|e| self.err(e));
        rows
    }

    /// The groups pushed for a directory: `(group, SCIM id)` by external id.
    pub fn groups(
        &self,
        directory: &str,
    ) -> Result<BTreeMap<String, (crate::groups::Group, String)>, StoreError> {
        let mut out = BTreeMap::new();
        let Some(conn) = self.links_conn() else {
            return Ok(out);
        };
        let e = |err| self.err(err);
        let mut stmt = conn
            .prepare("SELECT external_id, scim_id, display_name, email FROM scim_groups WHERE directory = ?1")
            .map_err(e)?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok((
                    crate::groups::Group {
                        external_id: r.get(0)?,
                        display_name: r.get(2)?,
                        email: r.get(3)?,
                        members: Default::default(),
                    },
                    r.get::<_, String>(1)?,
                ))
            })
            .map_err(e)?;
        for row in rows {
            let (g, id) = row.map_err(e)?;
            out.insert(g.external_id.clone(), (g, id));
        }
        let mut stmt = conn
            .prepare("SELECT group_external_id, learner_external_id FROM scim_group_members WHERE directory = ?1")
            .map_err(e)?;
        let rows = stmt
            .query_map([directory], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(e)?;
        for row in rows {
            let (g, m) = row.map_err(e)?;
            if let Some((group, _)) = out.get_mut(&g) {
                group.members.insert(m);
            }
        }
        Ok(out)
    }

    /// One write of the group step in one transaction: `write`, then that each of
    /// `landed` (group or learner external ids) landed in `run_key`.
    fn group_write(
        &self,
        run_key: &str,
        landed: &[&str],
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        let e = |err| self.err(err);
        let tx = conn.unchecked_transaction().map_err(e)?;
        write(&tx).map_err(e)?;
        for id in landed {
            tx.execute(
                "INSERT OR IGNORE INTO scim_landed (run_key, external_id) VALUES (?1, ?2)",
                params![run_key, id],
            )
            .map_err(e)?;
        }
        tx.commit().map_err(e)
    }

    /// Record a group created or adopted on the provider (or its new name), and that
    /// it landed in `run_key`. `members`, when given, replace the recorded ones.
    pub fn link_group(
        &self,
        directory: &str,
        group: &crate::groups::Group,
        scim_id: &str,
        members: Option<&BTreeSet<String>>,
        run_key: &str,
    ) -> Result<(), StoreError> {
        let id = group.external_id.as_str();
        self.group_write(run_key, &[id], |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO scim_groups (directory, external_id, scim_id, display_name, email) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![directory, id, scim_id, group.display_name, group.email],
            )?;
            if let Some(members) = members {
                tx.execute(
                    "DELETE FROM scim_group_members WHERE directory = ?1 AND group_external_id = ?2",
                    params![directory, id],
                )?;
                for m in members {
                    tx.execute(
                        "INSERT OR IGNORE INTO scim_group_members (directory, group_external_id, learner_external_id) VALUES (?1, ?2, ?3)",
                        params![directory, id, m],
                    )?;
                }
            }
            Ok(())
        })
    }

    /// Record members added to (`added`) or removed from a group, that landed in `run_key`.
    pub fn group_members(
        &self,
        directory: &str,
        group: &str,
        members: &[String],
        added: bool,
        run_key: &str,
    ) -> Result<(), StoreError> {
        let sql = if added {
            "INSERT OR IGNORE INTO scim_group_members (directory, group_external_id, learner_external_id) VALUES (?1, ?2, ?3)"
        } else {
            "DELETE FROM scim_group_members WHERE directory = ?1 AND group_external_id = ?2 AND learner_external_id = ?3"
        };
        let landed: Vec<&str> = members.iter().map(String::as_str).collect();
        self.group_write(run_key, &landed, |tx| {
            for m in members {
                tx.execute(sql, params![directory, group, m])?;
            }
            Ok(())
        })
    }

    /// Forget a group removed from the provider (or found gone there).
    pub fn unlink_group(
        &self,
        directory: &str,
        group: &str,
        run_key: &str,
    ) -> Result<(), StoreError> {
        self.group_write(run_key, &[group], |tx| {
            tx.execute(
                "DELETE FROM scim_group_members WHERE directory = ?1 AND group_external_id = ?2",
                params![directory, group],
            )?;
            tx.execute(
                "DELETE FROM scim_groups WHERE directory = ?1 AND external_id = ?2",
                params![directory, group],
            )
            .map(|_| ())
        })
    }

    /// Forget what landed in a run the state DB has closed.
    pub fn forget_run(&self, run_key: &str) -> Result<(), StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        conn.execute("DELETE FROM scim_landed WHERE run_key = ?1", [run_key])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Whether a run's apply started (and so may have sent requests).
    pub fn run_started(&self, run_key: &str) -> Result<bool, StoreError> {
        let Some(conn) = &self.conn else {
            return Ok(false);
        };
        conn.query_row(
            "SELECT count(*) FROM scim_runs WHERE run_key = ?1",
            [run_key],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)
        .map_err(|e| self.err(e))
    }

    /// Move a directory's learners to a new name (`rename-directory`); refuses when
    /// `new` already has learners. The provider's users are untouched: the directory
    /// is only the mirror's key. Returns how many moved.
    pub fn rename_directory(&mut self, old: &str, new: &str) -> Result<usize, StoreError> {
        crate::store::rename_directory(
            self.conn.as_mut(),
            &self.path,
            "scim_learners",
            &["scim_runs", "scim_groups", "scim_group_members"],
            old,
            new,
        )
    }

    pub fn count(&self) -> Result<i64, StoreError> {
        match self.links_conn() {
            Some(c) => c
                .query_row("SELECT count(*) FROM scim_learners", [], |r| r.get(0))
                .map_err(|e| self.err(e)),
            None => Ok(0),
        }
    }
}

fn fields_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<LearnerFields> {
    LearnerFields::try_from_columns(|i, _| r.get(at + i))
}

/// The index of `active` in a row of `SELECT <one column>, <the fields>, active`.
const ACTIVE_AT: usize = 1 + Field::ALL.len();

/// The fields with the extra SCIM attributes of the row (after `active`).
fn with_extra(mut f: LearnerFields, r: &rusqlite::Row<'_>) -> rusqlite::Result<LearnerFields> {
    if let Some(text) = r.get::<_, Option<String>>(ACTIVE_AT + 1)? {
        f.scim = serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                ACTIVE_AT + 1,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linked(scim_id: &str, user_name: &str) -> Linked {
        Linked {
            scim_id: scim_id.into(),
            fields: LearnerFields {
                user_name: user_name.into(),
                email: None,
                given_name: None,
                family_name: None,
                display_name: None,
                department: None,
                job_title: None,
                employee_id: None,
                manager_email: None,
                scim: Default::default(),
            },
            active: true,
        }
    }

    fn rows(m: &Mirror) -> Vec<(String, String, String)> {
        let conn = m.conn.as_ref().unwrap();
        let mut stmt = conn
            .prepare("SELECT directory, external_id, scim_id FROM scim_learners ORDER BY 1, 2")
            .unwrap();
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        rows
    }

    fn row(d: &str, e: &str, s: &str) -> (String, String, String) {
        (d.into(), e.into(), s.into())
    }

    #[test]
    fn migrations_are_valid() {
        migrations().validate().unwrap();
    }

    #[test]
    fn a_second_learner_is_never_linked_to_one_scim_id() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::open(&dir.path().join("m.db"), false, "http://a").unwrap();
        assert_eq!(
            m.upsert("hr", "E1", &linked("r1", "dup@x.io"), None)
                .unwrap(),
            None
        );
        // Rewriting the same learner's row is fine.
        assert_eq!(
            m.upsert("hr", "E1", &linked("r1", "ann@x.io"), None)
                .unwrap(),
            None
        );
        // Another learner, in this directory or another one: refused, nothing written.
        assert_eq!(
            m.upsert("hr", "E2", &linked("r1", "dup@x.io"), None)
                .unwrap(),
            Some(("hr".to_string(), "E1".to_string()))
        );
        assert_eq!(
            m.upsert("other", "E1", &linked("r1", "dup@x.io"), None)
                .unwrap(),
            Some(("hr".to_string(), "E1".to_string()))
        );
        // An existing learner relinked onto another's resource: refused, its row kept.
        assert_eq!(
            m.upsert("hr", "E3", &linked("r3", "cy@x.io"), None)
                .unwrap(),
            None
        );
        assert!(m
            .upsert("hr", "E3", &linked("r1", "cy@x.io"), None)
            .unwrap()
            .is_some());
        assert_eq!(rows(&m), [row("hr", "E1", "r1"), row("hr", "E3", "r3")]);
        assert_eq!(
            m.get("hr", "E1").unwrap().unwrap().fields.user_name,
            "ann@x.io"
        );
        assert_eq!(
            m.owners().unwrap(),
            HashMap::from([
                ("r1".to_string(), ("hr".to_string(), "E1".to_string())),
                ("r3".to_string(), ("hr".to_string(), "E3".to_string())),
            ])
        );
    }

    #[test]
    fn a_write_records_its_run_landed_and_a_refused_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let m = Mirror::open(&dir.path().join("m.db"), false, "http://a").unwrap();
        m.begin_run("hr", "run-1").unwrap();
        assert_eq!(
            m.upsert("hr", "E1", &linked("r1", "a@x.io"), Some("run-1"))
                .unwrap(),
            None
        );
        // E2 onto E1's resource: refused, so not landed either.
        assert!(m
            .upsert("hr", "E2", &linked("r1", "b@x.io"), Some("run-1"))
            .unwrap()
            .is_some());
        assert_eq!(
            m.landed("run-1").unwrap(),
            BTreeSet::from(["E1".to_string()])
        );
        assert!(m.landed("run-2").unwrap().is_empty());
        m.forget_run("run-1").unwrap();
        assert!(m.landed("run-1").unwrap().is_empty());
    }

    #[test]
    fn opening_unlinks_the_learners_an_earlier_version_linked_to_one_scim_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let m = Mirror::open(&path, false, "http://a").unwrap();
            assert_eq!(
                m.upsert("hr", "E1", &linked("r1", "dup@x.io"), None)
                    .unwrap(),
                None
            );
            assert_eq!(
                m.upsert("hr", "E9", &linked("r9", "oz@x.io"), None)
                    .unwrap(),
                None
            );
            // What the old upsert let through.
            m.conn
                .as_ref()
                .unwrap()
                .execute(
                    "INSERT INTO scim_learners (directory, external_id, scim_id, user_name, active, updated_at)
                     VALUES ('hr', 'E2', 'r1', 'dup@x.io', 1, 'x')",
                    [],
                )
                .unwrap();
        }
        // Read-only (status, --dry-run) changes nothing.
        let ro = Mirror::open(&path, true, "http://a").unwrap();
        assert_eq!(ro.count().unwrap(), 3);
        drop(ro);
        let m = Mirror::open(&path, false, "http://a").unwrap();
        assert_eq!(rows(&m), [row("hr", "E9", "r9")]);
    }

    #[test]
    fn links_made_on_another_provider_are_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        {
            let m = Mirror::open(&path, false, "http://a/scim").unwrap();
            assert_eq!(m.provider_change(), None);
            assert_eq!(
                m.upsert("hr", "E1", &linked("u1", "ann@x.io"), None)
                    .unwrap(),
                None
            );
        }
        // Same provider: the links are used.
        let m = Mirror::open(&path, false, "http://a/scim").unwrap();
        assert_eq!(m.get("hr", "E1").unwrap().unwrap().scim_id, "u1");
        drop(m);
        // Another provider, read-only: nothing changes, nothing is read.
        let ro = Mirror::open(&path, true, "http://b/scim").unwrap();
        assert_eq!(ro.provider_change().map(|c| c.unlinked), Some(1));
        assert!(ro.get("hr", "E1").unwrap().is_none());
        assert!(ro.owners().unwrap().is_empty());
        drop(ro);
        assert!(Mirror::open(&path, true, "http://a/scim")
            .unwrap()
            .get("hr", "E1")
            .unwrap()
            .is_some());
        // Writable: the links are dropped, the mirror is bound to the new provider.
        let m = Mirror::open(&path, false, "http://b/scim").unwrap();
        assert_eq!(
            m.provider_change(),
            Some(&ProviderChange {
                from: "http://a/scim".into(),
                to: "http://b/scim".into(),
                unlinked: 1
            })
        );
        assert_eq!(m.count().unwrap(), 0);
        assert_eq!(
            m.upsert("hr", "E1", &linked("u9", "ann@x.io"), None)
                .unwrap(),
            None
        );
        assert_eq!(m.get("hr", "E1").unwrap().unwrap().scim_id, "u9");
        drop(m);
        let m = Mirror::open(&path, false, "http://b/scim").unwrap();
        assert_eq!(m.provider_change(), None);
        assert_eq!(m.get("hr", "E1").unwrap().unwrap().scim_id, "u9");
    }

    #[test]
    fn a_provider_is_its_origin_and_path_without_credentials_or_trailing_slash() {
        let key = |u: &str| provider_key(&reqwest::Url::parse(u).unwrap());
        assert_eq!(
            key("https://user:pw@LMS.example.com:443/scim/v2/"),
            "https://lms.example.com/scim/v2"
        );
        assert_ne!(
            key("https://lms.example.com/scim/v2"),
            key("https://lms.example.com:8443/scim/v2")
        );
        assert_ne!(
            key("https://lms.example.com/a/v2"),
            key("https://lms.example.com/b/v2")
        );
    }
}
