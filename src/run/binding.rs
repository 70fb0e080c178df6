//! What a directory's state is bound to: the origin its cursor and snapshot were read
//! from and the store its runs wrote to. Pure: fingerprints from the config and the
//! store's marker, and the check that turns a mismatch into a full read.

use crate::config::{DirectoryConfig, DirectoryKind, StoreConfig};
use crate::state::Binding;

/// The directory's origin: kind, tenant or customer, and the hosts or file it is read
/// from. A cursor of one tenant means nothing to another.
pub fn origin(dir: &DirectoryConfig) -> String {
    let origin = match &dir.kind {
        DirectoryKind::Csv { path, .. } => format!("csv {}", path.display()),
        DirectoryKind::Entra(e) => format!(
            "entra tenant={} cloud={:?} graph={} authority={}",
            e.tenant_id, e.cloud, e.graph_url, e.authority_url
        ),
        DirectoryKind::Google(g) => format!(
            "google customer={} domain={} directory={}",
            g.customer,
            g.domain.as_deref().unwrap_or(""),
            g.directory_url
        ),
    };
    // Mapping expressions and filters read other attributes and decide other values:
    // once they change, a delta (which names only changed users) is not enough.
    match dir.mapping.fingerprint() {
        fp if fp.is_empty() => origin,
        fp => format!("{origin} {MAPPING}{fp}"),
    }
}

const MAPPING: &str = "mapping=";

/// The origin without the mapping fingerprint.
fn source_part(origin: &str) -> &str {
    origin
        .split_once(&format!(" {MAPPING}"))
        .map_or(origin, |(o, _)| o)
}

/// The store: kind, url or path, and the store's own marker (`Store::marker`).
pub fn store(config: &StoreConfig, marker: Option<&str>) -> String {
    let marker = marker.unwrap_or("-");
    match config {
        StoreConfig::Sqlite { path } => format!("sqlite {} {marker}", path.display()),
        StoreConfig::Scim { url, .. } => format!("scim {url} {marker}"),
        StoreConfig::Postgres { url, .. } => format!("postgres {url} {marker}"),
    }
}

/// Why the recorded binding does not hold any more, if it does not: another origin,
/// another store, or a store with fewer learners than the last run left (a restored
/// old copy, learners deleted by hand). Unrecorded parts (older state DBs) hold.
pub fn mismatch(recorded: &Binding, now: &Binding, store_learners_now: u64) -> Option<String> {
    if recorded.origin.is_some() && recorded.origin != now.origin {
        let same_source =
            recorded.origin.as_deref().map(source_part) == now.origin.as_deref().map(source_part);
        if same_source {
            return Some("the directory's mappings or filters changed since the last run".into());
        }
        return Some("the directory's origin changed since the cursor was stored".into());
    }
    if recorded.store.is_some() && recorded.store != now.store {
        return Some("the state DB last wrote to another store".into());
    }
    match recorded.store_learners {
        Some(n) if store_learners_now < n => Some(format!(
            "the store holds {store_learners_now} learners of the directory, the last run left {n}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(origin: &str, store: &str, learners: Option<u64>) -> Binding {
        Binding {
            origin: Some(origin.into()),
            store: Some(store.into()),
            store_learners: learners,
        }
    }

    #[test]
    fn a_binding_holds_while_origin_store_and_count_agree() {
        let b = binding("entra t1", "sqlite a g1", Some(3));
        assert_eq!(
            mismatch(&b, &binding("entra t1", "sqlite a g1", None), 3),
            None
        );
        assert_eq!(
            mismatch(&b, &binding("entra t1", "sqlite a g1", None), 4),
            None
        );
        // A state DB from before bindings were recorded.
        assert_eq!(mismatch(&Binding::default(), &b, 0), None);
    }

    #[test]
    fn another_origin_another_store_or_lost_learners_break_it() {
        let b = binding("entra t1", "sqlite a g1", Some(3));
        assert!(mismatch(&b, &binding("entra t2", "sqlite a g1", None), 3).is_some());
        assert!(mismatch(&b, &binding("entra t1", "sqlite a g2", None), 3).is_some());
        assert!(mismatch(&b, &binding("entra t1", "scim u -", None), 3).is_some());
        let remapped = mismatch(
            &b,
            &binding("entra t1 mapping=ab12", "sqlite a g1", None),
            3,
        );
        assert!(remapped.unwrap().contains("mappings or filters changed"));
        let lost = mismatch(&b, &binding("entra t1", "sqlite a g1", None), 2).unwrap();
        assert!(lost.contains("holds 2"), "{lost}");
    }
}
