//! The groups an Entra directory selects (`groups = ...`), with their members flattened
//! (`transitiveMembers/microsoft.graph.user`): by object id, by display name
//! (`$filter=displayName eq`), by prefix (`$filter=startswith(displayName, ...)`), or
//! the groups of the scope (for an app scope: the groups assigned to the app).
//!
//! Graph's group delta (`/groups/delta` with `members`) tells whether any group
//! changed since the last read: when none did, the run is one request and the last
//! read's groups stand. When any did, the selected groups are read whole again: the
//! delta reports direct members only, so a change deep in a nested group can only be
//! flattened by reading the groups (one request per group, plus pages).

use std::collections::BTreeSet;

use serde_json::Value;

use super::graph::{Graph, GraphError};
use super::scope::{self, ScopeError};
use crate::config::EntraScope;
use crate::groups::{Group, GroupSelection, Groups};
use crate::source::{GroupRead, SourceError};

const SELECT: &str = "id,displayName,mail";

/// The properties the group delta tracks: any change to them, members included.
const DELTA_SELECT: &str = "displayName,mail,members";

pub async fn read(
    graph: &mut Graph,
    scope_cfg: &EntraScope,
    selection: &GroupSelection,
    cursor: Option<&str>,
) -> Result<GroupRead, SourceError> {
    if let Some(link) = cursor {
        let mut changed = 0usize;
        let round = super::walk(graph, "groups/delta", link.to_string(), |page| {
            changed += page.len();
            Ok(())
        })
        .await;
        match round {
            Ok(next) if changed == 0 => {
                return Ok(GroupRead {
                    groups: None,
                    cursor: Some(next),
                })
            }
            // Something changed: the new cursor covers it, and the groups are read again.
            Ok(next) => return read_whole(graph, scope_cfg, selection, Some(next)).await,
            Err(e) if e.needs_resync() => {
                tracing::info!(error = %e, "the group delta token is no longer valid: reading the groups whole");
            }
            Err(e) => {
                return Err(SourceError::Other(format!(
                    "cannot read the group delta: {e}"
                )))
            }
        }
    }
    // "From now", asked before the read: a change during the read shows in the next round.
    let url = graph.url(
        "groups/delta",
        &[("$select", DELTA_SELECT), ("$deltatoken", "latest")],
    );
    let latest = match super::walk(graph, "groups/delta", url.to_string(), |_| Ok(())).await {
        Ok(link) => Some(link),
        Err(e) => {
            // Without one, every run reads the groups whole: slower, never wrong.
            tracing::warn!(error = %e, "no group delta token; the groups are read whole every run");
            None
        }
    };
    read_whole(graph, scope_cfg, selection, latest).await
}

async fn read_whole(
    graph: &mut Graph,
    scope_cfg: &EntraScope,
    selection: &GroupSelection,
    cursor: Option<String>,
) -> Result<GroupRead, SourceError> {
    let groups = read_groups(graph, scope_cfg, selection)
        .await
        .map_err(|e| SourceError::Other(e.to_string()))?;
    Ok(GroupRead {
        groups: Some(groups),
        cursor,
    })
}

/// Why reading the groups failed: Graph's error with the hint, or a name no group has.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Graph(#[from] ScopeError),
    #[error("no group is named `{0}` (`groups = {{ names = [...] }}` takes display names)")]
    NoSuchName(String),
}

async fn read_groups(
    graph: &mut Graph,
    scope_cfg: &EntraScope,
    selection: &GroupSelection,
) -> Result<Groups, Error> {
    let found = match selection {
        GroupSelection::None => return Ok(Groups::new()),
        GroupSelection::Ids(ids) => by_ids(graph, ids).await?,
        GroupSelection::Scoped => {
            let ids: Vec<String> = match scope_cfg {
                EntraScope::All => vec![],
                EntraScope::Groups(ids) => ids.clone(),
                EntraScope::App(sp) => scope::assigned(graph, sp).await?.1.into_iter().collect(),
            };
            by_ids(graph, &ids).await?
        }
        GroupSelection::Names(names) => {
            let mut out = Vec::new();
            for name in names {
                let filter = format!("displayName eq '{}'", name.replace('\'', "''"));
                let hits = list(graph, &filter).await?;
                if hits.is_empty() {
                    return Err(Error::NoSuchName(name.clone()));
                }
                out.extend(hits);
            }
            out
        }
        GroupSelection::Prefix(p) => {
            let filter = format!("startswith(displayName,'{}')", p.replace('\'', "''"));
            list(graph, &filter).await?
        }
    };
    let mut groups = Groups::new();
    for mut g in found {
        if groups.contains_key(&g.external_id) {
            continue;
        }
        g.members = scope::group_members(graph, &g.external_id)
            .await?
            .into_iter()
            .collect::<BTreeSet<_>>();
        groups.insert(g.external_id.clone(), g);
    }
    Ok(groups)
}

fn group_of(v: &serde_json::Map<String, Value>) -> Option<Group> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    Some(Group {
        external_id: s("id")?,
        display_name: s("displayName").unwrap_or_default(),
        email: s("mail").filter(|m| !m.is_empty()),
        members: BTreeSet::new(),
    })
}

async fn by_ids(graph: &mut Graph, ids: &[String]) -> Result<Vec<Group>, ScopeError> {
    let mut out = Vec::new();
    for id in ids {
        let url = graph.url(&format!("groups/{id}"), &[("$select", SELECT)]);
        let v: serde_json::Map<String, Value> =
            graph.get(url.as_str()).await.map_err(|source| ScopeError {
                what: format!("cannot read group {id}"),
                hint: scope::hint(&source, "GroupMember.Read.All"),
                source,
            })?;
        out.push(group_of(&v).ok_or_else(|| malformed(url.path()))?);
    }
    Ok(out)
}

async fn list(graph: &mut Graph, filter: &str) -> Result<Vec<Group>, ScopeError> {
    let url = graph.url(
        "groups",
        &[("$filter", filter), ("$select", SELECT), ("$top", "999")],
    );
    let items = graph
        .collect(url.as_str())
        .await
        .map_err(|source| ScopeError {
            what: "cannot list groups".to_string(),
            hint: scope::hint(&source, "GroupMember.Read.All"),
            source,
        })?;
    let mut out = Vec::with_capacity(items.len());
    for v in &items {
        match group_of(v) {
            Some(g) => out.push(g),
            None => return Err(malformed(url.path())),
        }
    }
    Ok(out)
}

fn malformed(path: &str) -> ScopeError {
    ScopeError {
        what: "cannot read the groups".to_string(),
        hint: String::new(),
        source: GraphError::Malformed {
            path: path.to_string(),
            detail: "a group without an id".to_string(),
        },
    }
}
