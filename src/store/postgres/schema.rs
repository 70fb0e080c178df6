//! The PostgreSQL store's schema: the documented tables, created and migrated forward
//! only. Each migration runs in one transaction (PostgreSQL's DDL is transactional)
//! under an advisory lock, so several daemons starting at once migrate once.

use tokio_postgres::Client;

use crate::store::StoreError;

/// Append-only. The `learners` table is read by other programs: never change a column.
/// The columns and their meaning are the SQLite store's (README, "The learner store"),
/// timestamps included: RFC 3339 UTC text, so a reader handles both stores alike.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE learners (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
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
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deactivated_at TEXT,
    PRIMARY KEY (directory, external_id)
);
CREATE INDEX learners_by_user_name ON learners (directory, user_name);

-- Which runs reached this store: how a crashed run is told apart from one that applied.
CREATE TABLE learner_sync_runs (
    run_key TEXT PRIMARY KEY,
    directory TEXT NOT NULL,
    applied_at TEXT NOT NULL
);

-- This store's identity, made once with the schema: a state DB that wrote to another
-- database (dropped and re-created, restored elsewhere) sees a different generation.
CREATE TABLE learner_sync_store (generation TEXT NOT NULL);
INSERT INTO learner_sync_store (generation) VALUES (replace(gen_random_uuid()::text, '-', ''));

CREATE TABLE groups (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    display_name TEXT NOT NULL,
    email TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
);
CREATE TABLE group_members (
    directory TEXT NOT NULL,
    group_external_id TEXT NOT NULL,
    learner_external_id TEXT NOT NULL,
    PRIMARY KEY (directory, group_external_id, learner_external_id)
);
CREATE INDEX group_members_by_learner ON group_members (directory, learner_external_id);
"#,
    // Several daemons on one store (lease.rs): the lease on each directory's runs, with a
    // fencing token that only ever grows, and the daemons that share the directories.
    r#"
CREATE TABLE learner_sync_leases (
    directory TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- The holder's machine (/etc/machine-id) and process: a process of this machine
    -- that died holding a lease (a crashed `sync`) is seen to be gone at once.
    machine TEXT NOT NULL,
    pid INTEGER NOT NULL
);
CREATE TABLE learner_sync_daemons (
    id TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);
"#,
];

/// The advisory lock key migrations take (any fixed number; "lsyn" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c73_796e;

/// The schema version, `None` before the first migration.
pub async fn version(client: &Client) -> Result<Option<i32>, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('learner_sync_schema') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt("SELECT version FROM learner_sync_schema", &[])
        .await?
        .map(|r| r.get(0)))
}

/// Bring the schema to the newest version; refuses a schema newer than this binary's.
pub async fn migrate(client: &mut Client, url: &str) -> Result<(), StoreError> {
    let e = super::at(url);
    let newest = MIGRATIONS.len() as i32;
    // Most opens find the schema current: no lock, no write.
    if version(client).await.map_err(e)? == Some(newest) {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(e)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(e)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS learner_sync_schema (version INTEGER NOT NULL)")
        .await
        .map_err(e)?;
    let at: i32 = match tx
        .query_opt("SELECT version FROM learner_sync_schema", &[])
        .await
        .map_err(e)?
    {
        Some(r) => r.get(0),
        None => {
            tx.execute("INSERT INTO learner_sync_schema (version) VALUES (0)", &[])
                .await
                .map_err(e)?;
            0
        }
    };
    if at > newest {
        return Err(StoreError::Other(format!(
            "postgres store {url}: its schema is version {at}, newer than this learner-sync's \
             ({newest}); upgrade learner-sync"
        )));
    }
    for migration in &MIGRATIONS[at as usize..] {
        tx.batch_execute(migration).await.map_err(e)?;
    }
    tx.execute("UPDATE learner_sync_schema SET version = $1", &[&newest])
        .await
        .map_err(e)?;
    tx.commit().await.map_err(e)
}
