//! State DB schema, append-only: never edit a released migration, add a new one.

use rusqlite_migration::{Migrations, M};

pub fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    run_key TEXT NOT NULL UNIQUE,
    directory TEXT NOT NULL,
    kind TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    outcome TEXT NOT NULL,
    full_read INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL DEFAULT 0,
    updated INTEGER NOT NULL DEFAULT 0,
    deactivated INTEGER NOT NULL DEFAULT 0,
    reactivated INTEGER NOT NULL DEFAULT 0,
    held INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    error TEXT
);
CREATE INDEX runs_by_directory ON runs(directory, id);

CREATE TABLE snapshot (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
) WITHOUT ROWID;

CREATE TABLE cursors (
    directory TEXT PRIMARY KEY,
    cursor TEXT,
    full_read_at TEXT
);

CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id),
    time TEXT NOT NULL,
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    action TEXT NOT NULL,
    reason TEXT NOT NULL,
    changes TEXT NOT NULL
);
CREATE INDEX actions_by_directory ON actions(directory, id);
CREATE INDEX actions_by_run ON actions(run_id);

CREATE TABLE held (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    reason TEXT NOT NULL,
    hold_reason TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (directory, external_id)
) WITHOUT ROWID;
"#,
        ),
        // What the cursor and snapshot were read from, and which store the runs wrote
        // to (issue 14.2): a mismatch makes the next run a full read.
        M::up(
            r#"
ALTER TABLE cursors ADD COLUMN origin TEXT;
ALTER TABLE cursors ADD COLUMN store TEXT;
ALTER TABLE cursors ADD COLUMN store_learners INTEGER;
"#,
        ),
        // The guards across runs: field changes held for `approve`, a directory whose
        // creates are held because it looks renamed, and the action log by time for
        // the 24-hour deactivation window.
        M::up(
            r#"
CREATE TABLE held_updates (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    field TEXT NOT NULL,
    user_name TEXT NOT NULL,
    before TEXT,
    after TEXT,
    hold_reason TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    PRIMARY KEY (directory, external_id, field)
) WITHOUT ROWID;

CREATE TABLE directory_holds (
    directory TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    approved_at TEXT
);

CREATE INDEX actions_by_time ON actions(directory, action, time);
"#,
        ),
        // Leavers inside their grace period (`deactivate_after`, issue 18.4): gone from
        // the directory since `since`, deactivated once the period has passed.
        M::up(
            r#"
CREATE TABLE pending_deactivations (
    directory TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    since TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (directory, external_id)
) WITHOUT ROWID;
"#,
        ),
        // Migration 5 (issue 19): the running daemon's pid, heartbeat, config
        // generation, last reload error and next runs, for `status`; and who approved
        // what when.
        M::up(
            r#"
CREATE TABLE daemon (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL,
    generation INTEGER NOT NULL,
    last_reload_error TEXT,
    next_runs TEXT NOT NULL
);

CREATE TABLE approvals (
    id INTEGER PRIMARY KEY,
    directory TEXT NOT NULL,
    run_id INTEGER,
    approved_by TEXT NOT NULL,
    approved_at TEXT NOT NULL,
    what TEXT NOT NULL
);
"#,
        ),
        // Migration 6 (issue 16): a group step's counts (JSON) on its `groups` run, the
        // last whole read of the groups with its delta cursor, and the group removals
        // held because many groups disappeared at once.
        M::up(
            r#"
ALTER TABLE runs ADD COLUMN groups TEXT;

-- The last whole read of a directory's groups (members before the scope limit), with
-- the group delta cursor that says whether it still stands, and what it selected.
CREATE TABLE group_reads (
    directory TEXT PRIMARY KEY,
    selection TEXT NOT NULL,
    cursor TEXT,
    groups TEXT NOT NULL,
    read_at TEXT NOT NULL
);

CREATE TABLE group_holds (
    directory TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    removals INTEGER NOT NULL,
    run_id INTEGER NOT NULL,
    approved_at TEXT
);
"#,
        ),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn migrations_are_valid() {
        assert!(super::migrations().validate().is_ok());
    }
}
