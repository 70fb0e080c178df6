//! Several daemons on one PostgreSQL store: a run of a directory holds the directory's
//! lease (`learner_sync_leases`), renewed while the run lasts; the lease's fencing token
//! only ever grows, and every write of the run checks it in the write's own
//! transaction, so a process that lost its lease (paused past its expiry, cut off from
//! the database) cannot write after another took the directory over. The daemons that
//! share the store say they are alive in `learner_sync_daemons`; each directory is run
//! by one of the living (`owner`, rendezvous hashing), and a daemon that stops saying
//! so loses its directories to the others within one lease period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

use super::PostgresStore;
use crate::store::StoreError;

/// This process as a lease holder and daemon: `host:pid:random`, new with each start.
pub fn holder() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = hostname();
        let random = uuid::Uuid::new_v4().simple().to_string();
        format!("{host}:{}:{}", std::process::id(), &random[..8])
    })
}

/// This machine's id (systemd's /etc/machine-id), else its host name.
fn machine() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/etc/machine-id")
            .map(|m| m.trim().to_string())
            .ok()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(hostname)
    })
}

/// Whether process `pid` of this machine is alive (or not ours to signal).
fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The living daemon that runs `directory`: the one whose id hashes highest with it
/// (rendezvous hashing: when a daemon leaves, only its directories move, spread over
/// the others).
pub fn owner<'a>(directory: &str, live: &'a [String]) -> Option<&'a str> {
    live.iter()
        .max_by_key(|id| {
            let mut h = Sha256::new();
            h.update(id.as_bytes());
            h.update([0]);
            h.update(directory.as_bytes());
            let d = h.finalize();
            u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
        })
        .map(String::as_str)
}

/// A run's lease on its directory.
pub(super) struct Lease {
    directory: String,
    token: i64,
    /// Set by the renewal task when the lease is gone (expired and taken).
    lost: Arc<AtomicBool>,
    /// Dropped (or sent) to end the renewal task.
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Take the lease of `directory` for `holder` when it is free, expired, this
/// process's own, or held by a process of this machine that is gone (a crashed
/// `sync`): the new token, or who holds it and until when.
async fn acquire(
    client: &impl GenericClient,
    directory: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Result<i64, (String, String)>, tokio_postgres::Error> {
    let pid = std::process::id() as i32;
    let take = |stale_token: Option<i64>| async move {
        client
            .query_opt(
                "INSERT INTO learner_sync_leases (directory, holder, token, expires_at, machine, pid)
                 VALUES ($1, $2, 1, now() + make_interval(secs => $3), $4, $5)
                 ON CONFLICT (directory) DO UPDATE SET holder = excluded.holder,
                    token = learner_sync_leases.token + 1, expires_at = excluded.expires_at,
                    machine = excluded.machine, pid = excluded.pid
                 WHERE learner_sync_leases.expires_at <= now()
                    OR learner_sync_leases.holder = excluded.holder
                    OR learner_sync_leases.token = $6
                 RETURNING token",
                &[&directory, &holder, &seconds(ttl), &machine(), &pid, &stale_token],
            )
            .await
    };
    if let Some(row) = take(None).await? {
        return Ok(Ok(row.get(0)));
    }
    let row = client
        .query_one(
            "SELECT holder, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                machine, pid, token
             FROM learner_sync_leases WHERE directory = $1",
            &[&directory],
        )
        .await?;
    let (held_by, until, on, their_pid, token): (String, String, String, i32, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
    if on == machine() && !alive(their_pid) {
        // Taken only if nobody else took it meanwhile (the token is still the dead one's).
        if let Some(row) = take(Some(token)).await? {
            tracing::info!(directory, dead = %held_by, "took over the lease of a process of this machine that is gone");
            return Ok(Ok(row.get(0)));
        }
    }
    Ok(Err((held_by, until)))
}

/// Extend the lease if it is still ours: `false` once another holds it.
async fn renew(
    client: &Client,
    directory: &str,
    token: i64,
    ttl: Duration,
) -> Result<bool, tokio_postgres::Error> {
    let n = client
        .execute(
            "UPDATE learner_sync_leases SET expires_at = now() + make_interval(secs => $3)
             WHERE directory = $1 AND token = $2 AND expires_at > now()",
            &[&directory, &token, &seconds(ttl)],
        )
        .await?;
    Ok(n == 1)
}

impl PostgresStore {
    /// Hold `directory`'s lease for this run (renewed every third of `lease` until the
    /// store is released or dropped); refused while another process holds it.
    pub async fn take_lease(&mut self, directory: &str) -> Result<(), StoreError> {
        let ttl = self.lease;
        let token = match acquire(&self.client, directory, holder(), ttl)
            .await
            .map_err(|e| self.err(e))?
        {
            Ok(token) => token,
            Err((holder, until)) => {
                return Err(StoreError::LeaseBusy {
                    directory: directory.to_string(),
                    holder,
                    until,
                })
            }
        };
        // Renewed on a connection of its own: the run's may be inside a long write.
        let renewer = self.connect_again().await?;
        let lost = Arc::new(AtomicBool::new(false));
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (name, flag) = (directory.to_string(), lost.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut stop_rx => return,
                }
                match renew(&renewer, &name, token, ttl).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(directory = %name, "the directory's lease was taken over; this run writes nothing more");
                        flag.store(true, Ordering::SeqCst);
                        return;
                    }
                    // The write checks the lease itself: a failed renewal only means it
                    // may expire.
                    Err(e) => {
                        tracing::warn!(directory = %name, error = %e, "cannot renew the directory's lease")
                    }
                }
            }
        });
        self.held = Some(Lease {
            directory: directory.to_string(),
            token,
            lost,
            _stop: stop_tx,
        });
        Ok(())
    }

    /// Give the lease back (it expires now; its token stays, so it only grows).
    pub async fn release_lease(&mut self) {
        if let Some(lease) = self.held.take() {
            let released = self
                .client
                .execute(
                    "UPDATE learner_sync_leases SET expires_at = now() WHERE directory = $1 AND token = $2",
                    &[&lease.directory, &lease.token],
                )
                .await;
            if let Err(e) = released {
                tracing::warn!(directory = %lease.directory, error = %e, "cannot release the directory's lease; it expires on its own");
            }
        }
    }
}

/// In a write's transaction: the run still holds the lease, and keeps it (the row is
/// locked) until the write commits. Without a lease (a dry run), nothing to check.
pub(super) async fn fence(
    lease: Option<&Lease>,
    tx: &impl GenericClient,
    url: &str,
) -> Result<(), StoreError> {
    let Some(lease) = lease else {
        return Ok(());
    };
    let lost = || StoreError::LeaseLost {
        directory: lease.directory.clone(),
    };
    if lease.lost.load(Ordering::SeqCst) {
        return Err(lost());
    }
    let ours = tx
        .query_opt(
            "SELECT 1 FROM learner_sync_leases WHERE directory = $1 AND token = $2 AND expires_at > now() FOR UPDATE",
            &[&lease.directory, &lease.token],
        )
        .await
        .map_err(super::at(url))?;
    ours.map(|_| ()).ok_or_else(lost)
}

/// Who shares a store and who runs a directory in it, for `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sharing {
    /// The daemons alive now (seen within one lease).
    pub daemons: Vec<String>,
    /// The living daemon that runs the directory (`owner`).
    pub runs_on: Option<String>,
    /// The directory's lease: who took it last, until when, and whether it still holds.
    pub lease: Option<LeaseView>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaseView {
    pub holder: String,
    pub until: String,
    pub held: bool,
    pub token: i64,
}

impl PostgresStore {
    /// Who shares this store, and the directory's lease (`None` before the first sync).
    pub async fn sharing(&self, directory: &str) -> Result<Option<Sharing>, StoreError> {
        if !self.migrated {
            return Ok(None);
        }
        let e = super::at(&self.url);
        let daemons: Vec<String> = self
            .client
            .query(
                "SELECT id FROM learner_sync_daemons WHERE seen_at > now() - make_interval(secs => $1) ORDER BY id",
                &[&seconds(self.lease)],
            )
            .await
            .map_err(e)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let lease = self
            .client
            .query_opt(
                "SELECT holder, to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                    expires_at > now(), token
                 FROM learner_sync_leases WHERE directory = $1",
                &[&directory],
            )
            .await
            .map_err(e)?
            .map(|r| LeaseView {
                holder: r.get(0),
                until: r.get(1),
                held: r.get(2),
                token: r.get(3),
            });
        Ok(Some(Sharing {
            runs_on: owner(directory, &daemons).map(str::to_string),
            daemons,
            lease,
        }))
    }
}

/// A daemon's membership of the daemons sharing one store.
pub struct Membership {
    client: Client,
    ttl: Duration,
}

impl Membership {
    /// Connect to the store (migrating it if needed) as this process's daemon.
    pub async fn join(
        store: &crate::config::StoreConfig,
        sync: &crate::config::SyncSettings,
    ) -> Result<Membership, StoreError> {
        let crate::store::Store::Postgres(s) =
            crate::store::Store::open(store, sync, false).await?
        else {
            return Err(StoreError::Other("not a postgres store".to_string()));
        };
        Ok(Membership {
            ttl: s.lease,
            client: s.client,
        })
    }

    /// Say this daemon is alive; the daemons alive now (seen within one lease), this
    /// one included, sorted.
    pub async fn beat(&self) -> Result<Vec<String>, tokio_postgres::Error> {
        self.client
            .execute(
                "INSERT INTO learner_sync_daemons (id, host, pid, seen_at) VALUES ($1, $2, $3, now())
                 ON CONFLICT (id) DO UPDATE SET seen_at = now()",
                &[&holder(), &hostname(), &(std::process::id() as i32)],
            )
            .await?;
        let rows = self
            .client
            .query(
                "SELECT id FROM learner_sync_daemons WHERE seen_at > now() - make_interval(secs => $1) ORDER BY id",
                &[&seconds(self.ttl)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Leave at shutdown: the others take this daemon's directories at their next beat.
    /// Rows of daemons gone for a day are removed too.
    pub async fn leave(&self) {
        let _ = self
            .client
            .execute(
                "DELETE FROM learner_sync_daemons WHERE id = $1 OR seen_at < now() - interval '1 day'",
                &[&holder()],
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_directory_has_one_owner_and_a_leaver_only_moves_its_own() {
        let three: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let two: Vec<String> = ["a", "c"].map(String::from).to_vec();
        let dirs: Vec<String> = (0..300).map(|i| format!("dir{i}")).collect();
        let mut per = std::collections::BTreeMap::<&str, usize>::new();
        for d in &dirs {
            let before = owner(d, &three).unwrap();
            *per.entry(before).or_default() += 1;
            let after = owner(d, &two).unwrap();
            if before != "b" {
                assert_eq!(before, after, "{d} moved though its owner stayed");
            } else {
                assert_ne!(after, "b");
            }
        }
        // Spread over all three, roughly evenly.
        assert_eq!(per.len(), 3);
        assert!(per.values().all(|n| (60..=140).contains(n)), "{per:?}");
        assert_eq!(owner("x", &[]), None);
    }
}
