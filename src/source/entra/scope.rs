//! Which users an Entra directory's scope includes: everyone, the transitive members
//! of some groups, or the users assigned to an enterprise app (directly or through a group).

use std::collections::BTreeSet;

use super::graph::{Graph, GraphError};
use crate::config::EntraScope;
use crate::source::Scope;

/// Why resolving the scope failed, with the permission or id an admin should check.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}{hint}")]
pub struct ScopeError {
    pub what: String,
    pub hint: String,
    #[source]
    pub source: GraphError,
}

pub async fn resolve(graph: &mut Graph, scope: &EntraScope) -> Result<Scope, ScopeError> {
    match scope {
        EntraScope::All => Ok(Scope::All),
        EntraScope::Groups(groups) => {
            let mut ids = BTreeSet::new();
            for group in groups {
                ids.extend(group_members(graph, group).await?);
            }
            Ok(Scope::Only(ids))
        }
        EntraScope::App(sp) => {
            let (mut ids, groups) = assigned(graph, sp).await?;
            for group in &groups {
                ids.extend(group_members(graph, group).await?);
            }
            Ok(Scope::Only(ids))
        }
    }
}

/// The users and the groups assigned to enterprise app `sp`.
pub async fn assigned(
    graph: &mut Graph,
    sp: &str,
) -> Result<(BTreeSet<String>, BTreeSet<String>), ScopeError> {
    let url = graph.url(
        &format!("servicePrincipals/{sp}/appRoleAssignedTo"),
        &[("$select", "principalId,principalType"), ("$top", "999")],
    );
    let assignments = graph.collect(url.as_str()).await.map_err(|source| {
        let hint = match source.status() {
            Some(404) => " (use the Object ID shown under Enterprise applications, not the app registration's client id)".to_string(),
            _ => hint(&source, "Application.Read.All"),
        };
        ScopeError {
            what: format!("cannot read the assignments of enterprise app {sp}"),
            hint,
            source,
        }
    })?;
    let mut ids = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for a in assignments {
        let principal = a.get("principalId").and_then(|v| v.as_str());
        let kind = a.get("principalType").and_then(|v| v.as_str());
        match (principal, kind) {
            (Some(id), Some("User")) => {
                ids.insert(id.to_string());
            }
            (Some(id), Some("Group")) => {
                groups.insert(id.to_string());
            }
            _ => {}
        }
    }
    Ok((ids, groups))
}

/// What to tell an admin about a Graph error reading groups or assignments.
pub fn hint(source: &GraphError, permission: &str) -> String {
    match source.status() {
        Some(403) => format!(
            " (grant the Microsoft Graph application permission {permission} and admin consent)"
        ),
        Some(404) => " (check the group's Object ID in the config)".to_string(),
        _ => String::new(),
    }
}

/// The ids of the users in a group, nested groups included.
pub async fn group_members(graph: &mut Graph, group: &str) -> Result<Vec<String>, ScopeError> {
    let url = graph.url(
        &format!("groups/{group}/transitiveMembers/microsoft.graph.user"),
        &[("$select", "id"), ("$top", "999")],
    );
    let members = graph
        .collect(url.as_str())
        .await
        .map_err(|source| ScopeError {
            what: format!("cannot read the members of group {group}"),
            hint: hint(&source, "GroupMember.Read.All"),
            source,
        })?;
    Ok(members
        .into_iter()
        .filter_map(|m| m.get("id").and_then(|v| v.as_str()).map(str::to_string))
        .collect())
}
