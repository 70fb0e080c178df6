//! Claims and linking: which learner each SCIM resource belongs to, and what to do
//! with the users a lookup found for a learner not linked yet (adopt, create, refuse).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde_json::Value;

use super::mirror::Owner;

/// Which learner each SCIM id belongs to: the mirror's links when the apply started,
/// plus each resource a task of this apply adopted or created. A task claims a
/// resource before writing to it, so two learners never take one, even concurrently.
#[derive(Debug, Default)]
pub struct Claims(Mutex<HashMap<String, Owner>>, HashSet<String>);

impl Claims {
    pub fn new(owners: HashMap<String, Owner>) -> Claims {
        let known = owners.values().map(|(_, ext)| ext.clone()).collect();
        Claims(Mutex::new(owners), known)
    }

    /// Also count as ours the learners this run creates, not yet linked to anything.
    pub fn with_learners<'a>(mut self, external_ids: impl IntoIterator<Item = &'a str>) -> Claims {
        self.1.extend(external_ids.into_iter().map(str::to_string));
        self
    }

    /// Whether `external_id` is one of our learners' (linked in the mirror, or written
    /// by this run). A provider user carrying any other externalId came from elsewhere,
    /// e.g. Entra's own push provisioning, which sets `externalId = mailNickname`.
    pub fn is_a_learner(&self, external_id: &str) -> bool {
        self.1.contains(external_id)
    }

    pub fn lock(&self) -> MutexGuard<'_, HashMap<String, Owner>> {
        // The map stays consistent whatever a panicking holder did: it only inserts.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claim `scim_id` for `me`: `Ok(true)` newly claimed, `Ok(false)` already ours,
    /// `Err(owner)` another learner's.
    pub fn claim(&self, scim_id: &str, me: &Owner) -> Result<bool, Owner> {
        let mut map = self.lock();
        match map.get(scim_id) {
            Some(owner) if owner == me => Ok(false),
            Some(owner) => Err(owner.clone()),
            None => {
                map.insert(scim_id.to_string(), me.clone());
                Ok(true)
            }
        }
    }

    /// Give back a claim whose write failed.
    pub fn release(&self, scim_id: &str, me: &Owner) {
        let mut map = self.lock();
        if map.get(scim_id) == Some(me) {
            map.remove(scim_id);
        }
    }
}

/// A user on the provider that a lookup found.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub id: String,
    /// `None` when absent or empty.
    pub external_id: Option<String>,
    pub active: Option<bool>,
    /// The whole resource, when the lookup returned it (a listing has only a few
    /// attributes).
    pub resource: Option<Value>,
}

impl Found {
    pub fn from_resource(user: &Value) -> Option<Found> {
        Some(Found {
            id: user.get("id")?.as_str()?.to_string(),
            external_id: user
                .get("externalId")
                .and_then(Value::as_str)
                .filter(|e| !e.is_empty())
                .map(str::to_string),
            // Providers built for Entra may answer "True"/"False" (what Entra sends).
            active: user.get("active").and_then(|a| match a {
                Value::Bool(b) => Some(*b),
                Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
                _ => None,
            }),
            resource: None,
        })
    }
}

/// What a lookup found for a learner: the user whose externalId is the learner's,
/// else the user that holds the learner's userName.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    pub by_external_id: Option<Found>,
    pub by_user_name: Option<Found>,
}

/// What to do for a learner that is not linked yet.
#[derive(Debug, PartialEq)]
pub enum Resolution {
    /// Link and overwrite this resource, now claimed for the learner.
    Adopt {
        id: String,
        newly_claimed: bool,
    },
    Create,
    /// The resource found belongs to another learner: fail this learner, with why.
    Refuse(String),
}

/// Decide what to do with what a lookup found, claiming an adopted resource.
pub fn resolve(claims: &Claims, me: &Owner, user_name: &str, found: &Candidates) -> Resolution {
    let (directory, ext) = (me.0.as_str(), me.1.as_str());
    if let Some(own) = &found.by_external_id {
        return match claims.claim(&own.id, me) {
            Ok(newly_claimed) => Resolution::Adopt {
                id: own.id.clone(),
                newly_claimed,
            },
            Err(owner) => Resolution::Refuse(format!(
                "the SCIM user {} with externalId {ext} is linked to learner {}",
                own.id,
                describe(&owner, directory)
            )),
        };
    }
    let Some(holder) = &found.by_user_name else {
        return Resolution::Create;
    };
    let holder_owner = match &holder.external_id {
        Some(other) if other != ext && claims.is_a_learner(other) => Err(other.clone()),
        // Ours (found by userName when the provider cannot filter on externalId), a
        // user without one, or one another provisioning tool made with an id of its
        // own: adopt it unless another learner is linked to it.
        _ => claims
            .claim(&holder.id, me)
            .map_err(|owner| describe(&owner, directory)),
    };
    match holder_owner {
        Ok(newly_claimed) => Resolution::Adopt {
            id: holder.id.clone(),
            newly_claimed,
        },
        Err(owner) if holder.active == Some(false) => Resolution::Refuse(format!(
            "userName {user_name} belongs to the SCIM user of {owner} (deactivated); a SCIM user is never passed to another learner: rename or delete that user on the provider to free the userName"
        )),
        Err(owner) => Resolution::Refuse(format!(
            "userName {user_name} belongs to the SCIM user of {owner}; a SCIM user is never linked to two learners: give one of them another userName in the directory, or free it on the provider"
        )),
    }
}

/// A learner as named in a reason: its external id, and its directory if not ours.
pub fn describe(owner: &Owner, directory: &str) -> String {
    if owner.0 == directory {
        owner.1.clone()
    } else {
        format!("{} of directory {}", owner.1, owner.0)
    }
}

/// A run creating at least this many users lists the provider's users once instead
/// of looking each one up with two filtered requests.
pub const INDEX_THRESHOLD: usize = 50;
/// Page size asked for when listing (providers may cap it lower).
pub const PAGE: usize = 1000;

/// The provider's users by externalId and by userName (case-insensitive), listed once.
#[derive(Debug, Default)]
pub struct Index {
    pub by_external_id: HashMap<String, Found>,
    pub by_user_name: HashMap<String, Found>,
}

impl Index {
    pub fn find(&self, ext: &str, user_name: &str) -> Candidates {
        match self.by_external_id.get(ext) {
            Some(own) => Candidates {
                by_external_id: Some(own.clone()),
                by_user_name: None,
            },
            None => Candidates {
                by_external_id: None,
                by_user_name: self.by_user_name.get(&user_name.to_lowercase()).cloned(),
            },
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    pub(crate) fn me(ext: &str) -> Owner {
        ("hr".to_string(), ext.to_string())
    }

    fn found(id: &str, ext: Option<&str>, active: bool) -> Found {
        Found {
            id: id.into(),
            external_id: ext.map(String::from),
            active: Some(active),
            resource: None,
        }
    }

    fn by_user_name(f: Found) -> Candidates {
        Candidates {
            by_external_id: None,
            by_user_name: Some(f),
        }
    }

    fn refused(r: Resolution) -> String {
        match r {
            Resolution::Refuse(detail) => detail,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn our_own_user_and_an_unlinked_user_without_external_id_are_adopted() {
        let claims = Claims::default();
        let own = Candidates {
            by_external_id: Some(found("r1", Some("E1"), false)),
            by_user_name: None,
        };
        assert_eq!(
            resolve(&claims, &me("E1"), "ann@x.io", &own),
            Resolution::Adopt {
                id: "r1".into(),
                newly_claimed: true
            }
        );
        // Found by userName, but the externalId is ours (no externalId filter).
        let ours = by_user_name(found("r2", Some("E2"), true));
        assert!(matches!(
            resolve(&claims, &me("E2"), "bea@x.io", &ours),
            Resolution::Adopt { id, .. } if id == "r2"
        ));
        // Made by the platform before us, matched by userName.
        let pre = by_user_name(found("r3", None, true));
        assert!(matches!(
            resolve(&claims, &me("E3"), "cy@x.io", &pre),
            Resolution::Adopt { id, .. } if id == "r3"
        ));
        // Already ours in the mirror: adopted again, not newly claimed.
        assert_eq!(
            resolve(&claims, &me("E3"), "cy@x.io", &pre),
            Resolution::Adopt {
                id: "r3".into(),
                newly_claimed: false
            }
        );
        assert_eq!(
            resolve(&claims, &me("E4"), "dan@x.io", &Candidates::default()),
            Resolution::Create
        );
    }

    #[test]
    fn a_user_name_held_by_another_learners_user_is_refused_and_the_holder_named() {
        let claims = Claims::default().with_learners(["E1", "E2"]);
        let held = by_user_name(found("r1", Some("E1"), true));
        let detail = refused(resolve(&claims, &me("E2"), "dup@x.io", &held));
        assert!(
            detail.starts_with("userName dup@x.io belongs to the SCIM user of E1;"),
            "{detail}"
        );
        // A leaver's deactivated user keeps its userName: not handed to the new hire.
        let leaver = by_user_name(found("r1", Some("E1"), false));
        let detail = refused(resolve(&claims, &me("E2"), "ada@x.io", &leaver));
        assert!(
            detail.starts_with("userName ada@x.io belongs to the SCIM user of E1 (deactivated)"),
            "{detail}"
        );
        assert!(detail.contains("rename or delete that user"), "{detail}");
        assert!(claims.lock().is_empty(), "a refusal claims nothing");
    }

    #[test]
    fn a_user_another_provisioning_tool_made_is_adopted_by_user_name() {
        // Entra's push provisioning sets externalId = mailNickname ("ada"): not an id of
        // any learner, so the user is the platform's, taken over once, by one learner.
        let claims = Claims::default().with_learners(["E1", "E2"]);
        let pushed = by_user_name(found("r7", Some("ada"), true));
        assert_eq!(
            resolve(&claims, &me("E1"), "ada@x.io", &pushed),
            Resolution::Adopt {
                id: "r7".into(),
                newly_claimed: true
            }
        );
        let detail = refused(resolve(&claims, &me("E2"), "ada@x.io", &pushed));
        assert!(
            detail.starts_with("userName ada@x.io belongs to the SCIM user of E1;"),
            "{detail}"
        );
    }

    #[test]
    fn a_user_the_mirror_links_to_another_learner_is_refused() {
        let claims = Claims::new(HashMap::from([
            ("r1".to_string(), me("E1")),
            ("r2".to_string(), ("other".to_string(), "E2".to_string())),
        ]));
        // No externalId on the provider, but linked to E1.
        let detail = refused(resolve(
            &claims,
            &me("E9"),
            "dup@x.io",
            &by_user_name(found("r1", None, true)),
        ));
        assert!(
            detail.starts_with("userName dup@x.io belongs to the SCIM user of E1;"),
            "{detail}"
        );
        // Our externalId, but linked to a learner of another directory.
        let detail = refused(resolve(
            &claims,
            &me("E2"),
            "bea@x.io",
            &Candidates {
                by_external_id: Some(found("r2", Some("E2"), true)),
                by_user_name: None,
            },
        ));
        assert_eq!(
            detail,
            "the SCIM user r2 with externalId E2 is linked to learner E2 of directory other"
        );
    }

    #[test]
    fn two_learners_racing_for_one_unlinked_user_never_both_get_it() {
        for _ in 0..50 {
            let claims = Arc::new(Claims::default());
            let threads: Vec<_> = (0..4)
                .map(|i| {
                    let claims = claims.clone();
                    std::thread::spawn(move || {
                        let pre = by_user_name(found("r0", None, true));
                        resolve(&claims, &me(&format!("E{i}")), "pre@x.io", &pre)
                    })
                })
                .collect();
            let adopted = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|r| matches!(r, Resolution::Adopt { .. }))
                .count();
            assert_eq!(adopted, 1);
        }
    }

    #[test]
    fn a_released_claim_can_be_taken_by_another_learner_and_only_by_its_holder() {
        let claims = Claims::default();
        assert_eq!(claims.claim("r1", &me("E1")), Ok(true));
        claims.release("r1", &me("E2"));
        assert_eq!(claims.claim("r1", &me("E2")), Err(me("E1")));
        claims.release("r1", &me("E1"));
        assert_eq!(claims.claim("r1", &me("E2")), Ok(true));
    }

    #[test]
    fn the_index_keeps_who_holds_a_user_name() {
        let mut index = Index::default();
        for user in [
            json!({"id": "r1", "externalId": "E1", "userName": "Dup@X.io", "active": false}),
            json!({"id": "r2", "externalId": "", "userName": "pre@x.io"}),
        ] {
            let f = Found::from_resource(&user).unwrap();
            if let Some(ext) = &f.external_id {
                index.by_external_id.insert(ext.clone(), f.clone());
            }
            let name = user["userName"].as_str().unwrap().to_lowercase();
            index.by_user_name.insert(name, f);
        }
        let c = index.find("E2", "dup@x.io");
        assert_eq!(c.by_external_id, None);
        assert_eq!(c.by_user_name, Some(found("r1", Some("E1"), false)));
        assert_eq!(
            index.find("E1", "new@x.io").by_external_id.map(|f| f.id),
            Some("r1".to_string())
        );
        // An empty externalId is none.
        assert_eq!(
            index
                .find("E3", "pre@x.io")
                .by_user_name
                .unwrap()
                .external_id,
            None
        );
        let detail = refused(resolve(
            &Claims::default().with_learners(["E1", "E2"]),
            &me("E2"),
            "dup@x.io",
            &index.find("E2", "dup@x.io"),
        ));
        assert!(detail.contains("of E1 (deactivated)"), "{detail}");
    }
}
