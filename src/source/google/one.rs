//! One Google Workspace user for provision on demand: `users.get` by id, primary
//! email or alias, and the scope (org units, group membership) decided for them as a
//! full read decides it.

use super::{map_user, ou_contains, GoogleSource, ORG_UNIT_PATH};
use crate::config::GoogleScope;
use crate::source::one::OneUser;
use crate::source::SourceError;

impl GoogleSource {
    pub async fn read_one(&mut self, who: &str) -> Result<Option<OneUser>, SourceError> {
        let mut dir = self.directory()?;
        self.ensure_tokens().await?;
        let tokens = self.built_tokens()?;
        let Some(api) = dir.get_user(tokens, who).await? else {
            return Ok(None);
        };
        let matched_by = if api.id == who {
            "id"
        } else if api.primary_email.eq_ignore_ascii_case(who) {
            "primaryEmail"
        } else {
            "an email alias"
        };
        let user = map_user(api);
        let (in_scope, scope) = match &self.config.scope {
            GoogleScope::All => (true, "no scope set: every user is in scope".to_string()),
            GoogleScope::OrgUnits(ous) => {
                let path = user.extra.get(ORG_UNIT_PATH).cloned().unwrap_or_default();
                let inside = ous.iter().any(|ou| ou_contains(ou, &path));
                let verdict = if inside { "inside" } else { "outside" };
                (
                    inside,
                    format!("org unit {path} is {verdict} the scope's org units"),
                )
            }
            GoogleScope::Groups(groups) => {
                let mut inside = false;
                for g in groups {
                    if dir
                        .group_user_ids(tokens, g, None)
                        .await?
                        .contains(&user.external_id)
                    {
                        inside = true;
                        break;
                    }
                }
                let scope = if inside {
                    "a member (directly or through nested groups) of a scope group"
                } else {
                    "not a member of any scope group, nested groups included"
                };
                (inside, scope.to_string())
            }
        };
        Ok(Some(OneUser {
            user,
            matched_by,
            in_scope,
            scope,
            requests: dir.requests(),
        }))
    }
}
