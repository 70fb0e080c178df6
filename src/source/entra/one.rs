//! One Entra user for provision on demand: `GET /users/{id | userPrincipalName}`, or
//! `GET /users?$filter=mail eq '...'` for an email that is not a UPN, with the same
//! properties a delta round selects (the manager through `$expand`), and the scope
//! resolved as a full read resolves it.

use serde_json::{Map, Value};

use super::graph::{GraphError, Page};
use super::{apply, blank, scope, users_error, EntraSource, SELECT};
use crate::config::EntraScope;
use crate::source::one::OneUser;
use crate::source::SourceError;

impl EntraSource {
    pub async fn read_one(&mut self, who: &str) -> Result<Option<OneUser>, SourceError> {
        let before = self.graph.requests();
        // `manager` is a delta-only property; a single read expands it instead.
        let select: String = self
            .attributes
            .entra_select(SELECT)
            .split(',')
            .filter(|p| *p != "manager")
            .collect::<Vec<_>>()
            .join(",");
        let query = [
            ("$select", select.as_str()),
            ("$expand", "manager($select=id,mail,userPrincipalName)"),
        ];
        let mut found = None;
        // By object id or UPN: one GET; a 404 means neither.
        let mut url = self.graph.url("users", &query);
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.push(who);
        }
        match self.graph.get::<Map<String, Value>>(url.as_str()).await {
            Ok(item) => {
                let by_id = item.get("id").and_then(Value::as_str) == Some(who);
                found = Some((item, if by_id { "id" } else { "userPrincipalName" }))
            }
            Err(e) if e.status() == Some(404) || e.status() == Some(400) => {}
            Err(e) => return Err(users_error(e)),
        }
        if found.is_none() && who.contains('@') {
            let filter = format!("mail eq '{}'", who.replace('\'', "''"));
            let mut q = query.to_vec();
            q.push(("$filter", filter.as_str()));
            let url = self.graph.url("users", &q);
            let page: Page = self.graph.get(url.as_str()).await.map_err(users_error)?;
            if page.value.len() > 1 {
                return Err(SourceError::Other(format!(
                    "{} users have mail {who}: name one by its object id or userPrincipalName",
                    page.value.len()
                )));
            }
            found = page.value.into_iter().next().map(|item| (item, "mail"));
        }
        let Some((mut item, matched_by)) = found else {
            return Ok(None);
        };
        let manager = item.remove("manager");
        let id = match item.get("id").and_then(Value::as_str) {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            _ => return Err(users_error(malformed("a user without a usable `id`"))),
        };
        let mut user = blank(&id);
        apply(&mut user, &item).map_err(|d| users_error(malformed(&d)))?;
        self.attributes.capture(&item, false, &mut user.extra);
        if user.fields.user_name.trim().is_empty() {
            return Err(users_error(malformed(&format!(
                "user {id} has no userPrincipalName"
            ))));
        }
        // The manager's email as a full read resolves it: their mail, else their UPN.
        user.fields.manager_email = manager.as_ref().and_then(|m| {
            let text = |k: &str| m.get(k).and_then(Value::as_str).filter(|v| !v.is_empty());
            text("mail")
                .or(text("userPrincipalName"))
                .map(str::to_string)
        });
        user.fields = user.fields.normalized();

        let resolved = scope::resolve(&mut self.graph, &self.cfg.scope)
            .await
            .map_err(|e| SourceError::Other(e.to_string()))?;
        let in_scope = resolved.includes(&id);
        let scope = match (&self.cfg.scope, in_scope) {
            (EntraScope::All, _) => "no scope set: every user is in scope".to_string(),
            (EntraScope::Groups(_), true) => {
                "a member (directly or through nested groups) of a scope group".to_string()
            }
            (EntraScope::Groups(_), false) => {
                "not a member of any scope group, nested groups included".to_string()
            }
            (EntraScope::App(sp), true) => {
                format!("assigned to enterprise app {sp} (directly or through a group)")
            }
            (EntraScope::App(sp), false) => format!("not assigned to enterprise app {sp}"),
        };
        Ok(Some(OneUser {
            user,
            matched_by,
            in_scope,
            scope,
            requests: self.graph.requests() - before,
        }))
    }
}

fn malformed(detail: &str) -> GraphError {
    GraphError::Malformed {
        path: "users".into(),
        detail: detail.to_string(),
    }
}
