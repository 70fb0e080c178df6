//! Daemons sharing PostgreSQL stores: which directories this daemon runs. Every third
//! of the store's lease, the daemon says it is alive in the store and reads who else
//! is; each directory of the store is run by one living daemon (`lease::owner`). A
//! daemon that stops saying so (killed, paused, cut off) is no longer alive after one
//! lease, and its directories move to the others, which run them at once. Directories
//! on other stores are always this daemon's. The runs' own leases keep two daemons that
//! disagree for a moment (one has not seen the other yet) from writing at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Config, StoreConfig};
use crate::store::postgres::lease::{self, Membership};

/// The directories another daemon runs now (everything else is this daemon's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owned {
    others: Arc<BTreeSet<String>>,
}

impl Owned {
    pub fn runs(&self, directory: &str) -> bool {
        !self.others.contains(directory)
    }
}

/// The shared stores of a config: name -> its directories.
fn shared_stores(config: &Config) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for d in &config.directories {
        let (store, settings) = config.store_named_for(&d.name);
        if matches!(settings, StoreConfig::Postgres { .. }) {
            out.entry(store.to_string())
                .or_default()
                .push(d.name.clone());
        }
    }
    out
}

/// One round: say this daemon is alive in each shared store, and which directories
/// the others run. A store that cannot be reached keeps what the last round said.
async fn round(
    config: &Config,
    members: &mut BTreeMap<String, Membership>,
    last: &BTreeMap<String, BTreeSet<String>>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (store, directories) in shared_stores(config) {
        if !members.contains_key(&store) {
            let Some(settings) = config.stores.get(&store) else {
                continue;
            };
            match Membership::join(settings, &config.sync).await {
                Ok(m) => {
                    members.insert(store.clone(), m);
                }
                Err(e) => {
                    tracing::warn!(store = %store, error = %e, "cannot join the daemons sharing this store; trying again");
                    out.insert(store.clone(), last.get(&store).cloned().unwrap_or_default());
                    continue;
                }
            }
        }
        let Some(m) = members.get(&store) else {
            continue;
        };
        match m.beat().await {
            Ok(live) => {
                let others: BTreeSet<String> = directories
                    .iter()
                    .filter(|d| lease::owner(d, &live).is_some_and(|o| o != lease::holder()))
                    .cloned()
                    .collect();
                tracing::debug!(store = %store, daemons = live.len(), others = others.len(), "daemons sharing the store");
                out.insert(store, others);
            }
            Err(e) => {
                tracing::warn!(store = %store, error = %e, "cannot reach the daemons sharing this store; trying again");
                members.remove(&store);
                out.insert(store.clone(), last.get(&store).cloned().unwrap_or_default());
            }
        }
    }
    out
}

fn owned(per_store: &BTreeMap<String, BTreeSet<String>>) -> Owned {
    Owned {
        others: Arc::new(per_store.values().flatten().cloned().collect()),
    }
}

/// How often the daemon says it is alive: a third of the shortest lease.
fn every(config: &Config) -> Duration {
    config
        .stores
        .values()
        .filter_map(|s| match s {
            StoreConfig::Postgres { lease, .. } => Some(*lease / 3),
            _ => None,
        })
        .min()
        .unwrap_or(Duration::from_secs(10))
        .max(Duration::from_millis(200))
}

/// The first round, before any directory runs, and the task that keeps it up to date
/// (following config reloads) until `stop`; then it leaves every shared store.
pub async fn start(
    mut config: watch::Receiver<Arc<Config>>,
    mut stop: watch::Receiver<bool>,
) -> (watch::Receiver<Owned>, tokio::task::JoinHandle<()>) {
    let mut members = BTreeMap::new();
    let first = config.borrow_and_update().clone();
    let mut last = round(&first, &mut members, &BTreeMap::new()).await;
    let (tx, rx) = watch::channel(owned(&last));
    let task = tokio::spawn(async move {
        loop {
            let current = config.borrow().clone();
            tokio::select! {
                _ = tokio::time::sleep(every(&current)) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let current = config.borrow_and_update().clone();
            last = round(&current, &mut members, &last).await;
            tx.send_if_modified(|o| {
                let next = owned(&last);
                let changed = *o != next;
                if changed {
                    tracing::info!(
                        others = next.others.len(),
                        "the directories this daemon runs changed"
                    );
                }
                *o = next;
                changed
            });
        }
        for m in members.values() {
            m.leave().await;
        }
    });
    (rx, task)
}
