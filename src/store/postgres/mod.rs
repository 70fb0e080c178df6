//! The PostgreSQL learner store (`kind = "postgres"`): the documented `learners` table
//! (and the group tables) in a database the training platform reads. A run's
//! operations are applied in one transaction with the run's key, as in the SQLite
//! store; rows are written a chunk at a time through `unnest` arrays.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, GenericClient, Row};

mod groups;
pub mod lease;
mod schema;

use super::{ApplyReport, StoreError};
use crate::check::CheckLine;
use crate::config::{PostgresUrl, Secret};
use crate::db;
use crate::model::{Field, Learner, LearnerFields};
use crate::plan::Operation;

/// Rows per `unnest` statement: 12 arrays of this many values each.
const CHUNK: usize = 5_000;
/// Rows fetched at a time when every learner of a directory is read.
const FETCH: i32 = 5_000;

pub struct PostgresStore {
    client: Client,
    url: String,
    /// Whether the schema is there: a store opened read-only before its first sync
    /// reads as empty, as a SQLite file that does not exist yet does.
    migrated: bool,
    /// How to connect again (with the password): the lease's renewals.
    connect: tokio_postgres::Config,
    root_cert: Option<std::path::PathBuf>,
    /// How long a lease lasts unless renewed (`[store] lease`).
    lease: Duration,
    /// The lease of the directory this run writes, once taken.
    held: Option<lease::Lease>,
}

/// Connect, with the connection's task on the runtime.
async fn connect(
    config: &tokio_postgres::Config,
    root_cert: Option<&std::path::Path>,
    shown: &str,
) -> Result<Client, StoreError> {
    let (client, connection) =
        config
            .connect(tls(root_cert)?)
            .await
            .map_err(|source| StoreError::Postgres {
                url: shown.to_string(),
                source,
            })?;
    let shown = shown.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(store = %shown, error = %e, "postgres store connection ended");
        }
    });
    Ok(client)
}

/// A client error as the store's, naming the store.
fn at(url: &str) -> impl Fn(tokio_postgres::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Postgres {
        url: url.to_string(),
        source,
    }
}

fn learner_columns() -> String {
    Field::column_list(&["external_id"], &["active"])
}

fn learner_from_row(r: &Row) -> Result<Learner, tokio_postgres::Error> {
    Ok(Learner {
        external_id: r.try_get(0)?,
        fields: LearnerFields::try_from_columns(|i, _| r.try_get(1 + i))?,
        active: r.try_get::<_, i32>(1 + Field::ALL.len())? == 1,
    })
}

/// The TLS a connection uses when the URL's `sslmode` asks for it (`prefer`, the
/// default, and `require`; a non-loopback host without `sslmode` requires it): the
/// public web roots, as reqwest uses.
fn tls(
    root_cert: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = root_cert {
        let bad = |e: String| {
            StoreError::Other(format!(
                "postgres store: sslrootcert {}: {e}",
                path.display()
            ))
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("holds no PEM certificate".to_string()));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Other(format!("TLS for the postgres store: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Connect; unless `read_only`, create or migrate the schema (forward only).
    pub async fn open(
        url: &PostgresUrl,
        password: Option<&Secret>,
        connect_timeout: Duration,
        lease: Duration,
        read_only: bool,
    ) -> Result<PostgresStore, StoreError> {
        let shown = url.to_string();
        let mut config = url.config().clone();
        if let Some(p) = password {
            config.password(p.expose());
        }
        config.connect_timeout(connect_timeout);
        config.application_name("learner-sync");
        let root_cert = url.root_cert().map(std::path::Path::to_path_buf);
        let mut client = connect(&config, root_cert.as_deref(), &shown).await?;
        let e = at(&shown);
        let migrated = if read_only {
            schema::version(&client).await.map_err(e)?.is_some()
        } else {
            schema::migrate(&mut client, &shown).await?;
            true
        };
        Ok(PostgresStore {
            client,
            url: shown.clone(),
            migrated,
            connect: config,
            root_cert,
            lease,
            held: None,
        })
    }

    async fn connect_again(&self) -> Result<Client, StoreError> {
        connect(&self.connect, self.root_cert.as_deref(), &self.url).await
    }

    fn err(&self, source: tokio_postgres::Error) -> StoreError {
        StoreError::Postgres {
            url: self.url.clone(),
            source,
        }
    }

    /// Visit every learner of a directory, a chunk of rows at a time (a portal in a
    /// read-only transaction), never all of them at once.
    pub async fn for_each_learner(
        &mut self,
        directory: &str,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        if !self.migrated {
            return Ok(());
        }
        let url = self.url.clone();
        let e = at(&url);
        let tx = self
            .client
            .build_transaction()
            .read_only(true)
            .start()
            .await
            .map_err(e)?;
        let statement = tx
            .prepare(&format!(
                "SELECT {} FROM learners WHERE directory = $1",
                learner_columns()
            ))
            .await
            .map_err(e)?;
        let portal = tx.bind(&statement, &[&directory]).await.map_err(e)?;
        loop {
            let rows = tx.query_portal(&portal, FETCH).await.map_err(e)?;
            for row in &rows {
                visit(learner_from_row(row).map_err(e)?);
            }
            if rows.len() < FETCH as usize {
                break;
            }
        }
        tx.commit().await.map_err(e)
    }

    pub async fn learners_by_id(
        &mut self,
        directory: &str,
        ids: &BTreeSet<String>,
        visit: &mut dyn FnMut(Learner),
    ) -> Result<(), StoreError> {
        if !self.migrated || ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "SELECT {} FROM learners WHERE directory = $1 AND external_id = ANY($2)",
            learner_columns()
        );
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for chunk in ids.chunks(CHUNK) {
            let rows = self
                .client
                .query(&sql, &[&directory, &chunk])
                .await
                .map_err(|e| self.err(e))?;
            for row in &rows {
                visit(learner_from_row(row).map_err(|e| self.err(e))?);
            }
        }
        Ok(())
    }

    /// `(learners, active learners)` of a directory (an index scan of its rows).
    pub async fn counts(&mut self, directory: &str) -> Result<(usize, usize), StoreError> {
        if !self.migrated {
            return Ok((0, 0));
        }
        let row = self
            .client
            .query_one(
                "SELECT count(*), coalesce(sum(active), 0)::bigint FROM learners WHERE directory = $1",
                &[&directory],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok((row.get::<_, i64>(0) as usize, row.get::<_, i64>(1) as usize))
    }

    /// Apply every operation and record the run, all in one transaction.
    /// Idempotent: replaying the same operations leaves the same rows.
    pub async fn apply(
        &mut self,
        directory: &str,
        run_key: &str,
        operations: &[Operation],
    ) -> Result<ApplyReport, StoreError> {
        if !self.migrated {
            return Err(StoreError::Other("store opened read-only".to_string()));
        }
        let url = self.url.clone();
        let e = at(&url);
        let now = db::now();
        let tx = self.client.transaction().await.map_err(e)?;
        lease::fence(self.held.as_ref(), &tx, &url).await?;
        // Creates, reactivations and deactivations set `active`; updates keep it.
        let (sets_state, updates): (Vec<&Operation>, Vec<&Operation>) = operations
            .iter()
            .partition(|op| !matches!(op, Operation::Update { .. }));
        upsert(&tx, directory, &now, &sets_state, true)
            .await
            .map_err(e)?;
        upsert(&tx, directory, &now, &updates, false)
            .await
            .map_err(e)?;
        record_run(&tx, directory, run_key, &now).await.map_err(e)?;
        tx.commit().await.map_err(e)?;
        Ok(ApplyReport::default())
    }

    /// The store's generation id (`None` before its first sync made the schema).
    pub async fn generation(&self) -> Result<Option<String>, StoreError> {
        if !self.migrated {
            return Ok(None);
        }
        self.client
            .query_one("SELECT generation FROM learner_sync_store", &[])
            .await
            .map(|r| Some(r.get(0)))
            .map_err(|e| self.err(e))
    }

    /// Move a directory's rows to a new name (`rename-directory`) in one transaction;
    /// refuses when `new` already has learners. Returns how many learners moved.
    pub async fn rename_directory(&mut self, old: &str, new: &str) -> Result<usize, StoreError> {
        if !self.migrated {
            return Ok(0);
        }
        let url = self.url.clone();
        let e = at(&url);
        let tx = self.client.transaction().await.map_err(e)?;
        let taken: i64 = tx
            .query_one(
                "SELECT count(*) FROM learners WHERE directory = $1",
                &[&new],
            )
            .await
            .map_err(e)?
            .get(0);
        if taken > 0 {
            return Err(StoreError::Other(format!(
                "{url}: directory `{new}` already has {taken} learners"
            )));
        }
        let moved = tx
            .execute(
                "UPDATE learners SET directory = $2 WHERE directory = $1",
                &[&old, &new],
            )
            .await
            .map_err(e)?;
        for table in ["learner_sync_runs", "groups", "group_members"] {
            tx.execute(
                &format!("UPDATE {table} SET directory = $2 WHERE directory = $1"),
                &[&old, &new],
            )
            .await
            .map_err(e)?;
        }
        tx.commit().await.map_err(e)?;
        Ok(moved as usize)
    }

    pub async fn was_applied(&mut self, run_key: &str) -> Result<bool, StoreError> {
        if !self.migrated {
            return Ok(false);
        }
        self.client
            .query_one(
                "SELECT count(*) FROM learner_sync_runs WHERE run_key = $1",
                &[&run_key],
            )
            .await
            .map(|r| r.get::<_, i64>(0) > 0)
            .map_err(|e| self.err(e))
    }

    pub async fn check(&self) -> CheckLine {
        if !self.migrated {
            return CheckLine::ok(format!(
                "postgres store {}: connected; no learner-sync tables yet (the first sync creates them)",
                self.url
            ));
        }
        match self
            .client
            .query_one("SELECT count(*) FROM learners", &[])
            .await
        {
            Ok(r) => CheckLine::ok(format!(
                "postgres store {}: {} learners",
                self.url,
                r.get::<_, i64>(0)
            )),
            Err(e) => CheckLine::failed(
                format!("postgres store {}: {}", self.url, StoreError::describe_postgres(&e)),
                "grant the store's user SELECT, INSERT, UPDATE and DELETE on the learner-sync tables",
            ),
        }
    }
}

/// Upsert `operations` a chunk at a time. `sets_state`: the operations set `active`
/// (and `deactivated_at`); otherwise they are updates, which keep both.
async fn upsert(
    tx: &impl GenericClient,
    directory: &str,
    now: &str,
    operations: &[&Operation],
    sets_state: bool,
) -> Result<(), tokio_postgres::Error> {
    if operations.is_empty() {
        return Ok(());
    }
    let names = Field::ALL.map(Field::name);
    let fields = names.join(", ");
    let t_fields = names.map(|n| format!("t.{n}")).join(", ");
    let arrays = (0..names.len())
        .map(|i| format!("${}::text[]", i + 4))
        .collect::<Vec<_>>()
        .join(", ");
    let active_param = names.len() + 4;
    let set_fields = names.map(|n| format!("{n} = excluded.{n}")).join(", ");
    let state = if sets_state {
        "active = excluded.active, deactivated_at = CASE WHEN excluded.active = 1 THEN NULL \
         ELSE coalesce(learners.deactivated_at, $2) END,"
    } else {
        ""
    };
    let sql = format!(
        "INSERT INTO learners (directory, external_id, {fields}, active, created_at, updated_at, deactivated_at)
         SELECT $1, t.external_id, {t_fields}, t.active, $2, $2, CASE WHEN t.active = 0 THEN $2 END
         FROM unnest($3::text[], {arrays}, ${active_param}::int4[]) AS t(external_id, {fields}, active)
         ON CONFLICT (directory, external_id) DO UPDATE SET {set_fields}, {state} updated_at = $2"
    );
    let statement = tx.prepare(&sql).await?;
    for chunk in operations.chunks(CHUNK) {
        let ids: Vec<&str> = chunk.iter().map(|op| op.external_id()).collect();
        let columns: Vec<Vec<Option<&str>>> = Field::ALL
            .iter()
            .map(|f| chunk.iter().map(|op| op.fields().get(*f)).collect())
            .collect();
        let active: Vec<i32> = chunk
            .iter()
            .map(|op| i32::from(!matches!(op, Operation::Deactivate { .. })))
            .collect();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&directory, &now, &ids];
        params.extend(columns.iter().map(|c| c as &(dyn ToSql + Sync)));
        params.push(&active);
        tx.execute(&statement, &params).await?;
    }
    Ok(())
}

/// Record that `run_key` reached this store; drop the directory's older keys (a key
/// only settles a crashed run of its directory, and a run settles those first).
async fn record_run(
    tx: &impl GenericClient,
    directory: &str,
    run_key: &str,
    now: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "INSERT INTO learner_sync_runs (run_key, directory, applied_at) VALUES ($1, $2, $3)
         ON CONFLICT (run_key) DO NOTHING",
        &[&run_key, &directory, &now],
    )
    .await?;
    tx.execute(
        "DELETE FROM learner_sync_runs WHERE directory = $1 AND run_key <> $2 AND applied_at < $3",
        &[&directory, &run_key, &super::sqlite::prune_before(now)],
    )
    .await?;
    Ok(())
}
