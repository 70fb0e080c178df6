//! Taking over an existing SCIM user (one Entra push provisioning or the platform made):
//! what of it differs from the learner, so that adopting it writes only that, and a dry
//! run can show exactly that.

use serde_json::Value;

use super::resource::ENTERPRISE_SCHEMA;
use crate::model::{Field, LearnerFields, ScimPath};

/// What adopting a user changes on it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Differences {
    /// The learner columns whose value differs (never one the directory has no value
    /// for: like Entra, a takeover does not clear what it does not know).
    pub fields: Vec<Field>,
    /// `Some(written)` when the user's externalId is not what learner-sync writes.
    pub external_id: Option<String>,
    /// `Some(desired)` when `active` differs.
    pub active: Option<bool>,
    /// `(attribute, before, after)` for the dry run and the log.
    pub shown: Vec<(String, Option<String>, Option<String>)>,
}

impl Differences {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.external_id.is_none() && self.active.is_none()
    }
}

/// `resource`'s value of a learner column, as a string (the manager: its id).
pub fn provider_value(resource: &Value, field: Field) -> Option<String> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    match (field, field.scim()) {
        (Field::Email, _) => {
            let emails = resource.get("emails")?.as_array()?;
            let pick = emails
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
                .or_else(|| emails.iter().find(|e| is_true(e.get("primary"))))
                .or_else(|| emails.first())?;
            text(pick.get("value")?)
        }
        (Field::ManagerEmail, _) => {
            let m = resource.get(ENTERPRISE_SCHEMA)?.get("manager")?;
            // `{"value": id}` (RFC 7643) or the bare id some Entra-built endpoints keep.
            text(m.get("value").unwrap_or(m))
        }
        (_, ScimPath::Core(path)) => match path.split_once('.') {
            Some((parent, sub)) => text(resource.get(parent)?.get(sub)?),
            None => text(resource.get(path)?),
        },
        (_, ScimPath::Enterprise(name)) => text(resource.get(ENTERPRISE_SCHEMA)?.get(name)?),
    }
}

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

/// `active` as the provider holds it ("True"/"False" from Entra-built endpoints);
/// absent counts as active.
pub fn provider_active(resource: &Value) -> bool {
    match resource.get("active") {
        None | Some(Value::Null) => true,
        v => is_true(v),
    }
}

/// What differs between the user on the provider and what learner-sync would write.
/// userName and email compare without case (providers often lowercase them).
/// `manager` is the manager's SCIM id when linked; an unlinked one is not compared
/// (the second pass sets it).
pub fn differences(
    resource: &Value,
    written_external_id: &str,
    f: &LearnerFields,
    active: bool,
    enterprise: bool,
    manager: Option<&str>,
) -> Differences {
    let mut d = Differences::default();
    let before_ext = resource
        .get("externalId")
        .and_then(Value::as_str)
        .map(str::to_string);
    if before_ext.as_deref() != Some(written_external_id) {
        d.external_id = Some(written_external_id.to_string());
        d.shown.push((
            "externalId".into(),
            before_ext,
            Some(written_external_id.to_string()),
        ));
    }
    for field in Field::ALL {
        if matches!(field.scim(), ScimPath::Enterprise(_)) && !enterprise {
            continue;
        }
        let want = match field {
            Field::ManagerEmail => manager.map(str::to_string),
            _ => f.get(field).map(str::to_string),
        };
        let Some(want) = want else { continue };
        let have = provider_value(resource, field);
        let same = match (field, &have) {
            (Field::UserName | Field::Email, Some(h)) => h.eq_ignore_ascii_case(&want),
            (_, Some(h)) => *h == want,
            (_, None) => false,
        };
        if !same {
            d.fields.push(field);
            d.shown.push((attribute_name(field), have, Some(want)));
        }
    }
    let was = provider_active(resource);
    if was != active {
        d.active = Some(active);
        d.shown.push((
            "active".into(),
            Some(was.to_string()),
            Some(active.to_string()),
        ));
    }
    d
}

/// A column's SCIM attribute as an admin reads it in the provider's UI.
fn attribute_name(field: Field) -> String {
    match (field, field.scim()) {
        (Field::Email, _) => "emails[type eq \"work\"].value".into(),
        (Field::ManagerEmail, _) => "manager".into(),
        (_, ScimPath::Core(p)) | (_, ScimPath::Enterprise(p)) => p.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::resource::tests::fields;
    use super::*;
    use serde_json::json;

    /// Ann as Entra push created her: externalId is her mailNickname.
    fn entra_made() -> Value {
        json!({
            "id": "u1", "externalId": "ann", "userName": "ANN@example.org", "active": "True",
            "emails": [{"value": "ann@example.org", "type": "work", "primary": true}],
            "name": {"givenName": "Ann"}, "displayName": "Ann",
            ENTERPRISE_SCHEMA: {"department": "R&D", "employeeNumber": "42"},
        })
    }

    #[test]
    fn a_user_that_matches_differs_only_in_what_learner_sync_writes_as_external_id() {
        let d = differences(&entra_made(), "ann", &fields(), true, true, None);
        assert!(d.is_empty(), "{d:?}");
        let d = differences(&entra_made(), "E1", &fields(), true, true, None);
        assert_eq!(d.fields, vec![]);
        assert_eq!(
            d.shown,
            vec![("externalId".into(), Some("ann".into()), Some("E1".into()))]
        );
    }

    #[test]
    fn only_differing_values_count_and_nothing_is_cleared() {
        let mut f = fields();
        f.department = Some("Legal".into());
        f.job_title = Some("Nurse".into());
        f.given_name = None; // unknown to the directory: left as it is
        let d = differences(&entra_made(), "ann", &f, false, true, Some("m1"));
        assert_eq!(
            d.fields,
            vec![Field::Department, Field::JobTitle, Field::ManagerEmail]
        );
        assert_eq!(d.active, Some(false));
        assert_eq!(
            d.shown[0],
            (
                "department".into(),
                Some("R&D".into()),
                Some("Legal".into())
            )
        );
        // The extension is not compared when the provider does not take it.
        let d = differences(&entra_made(), "ann", &f, true, false, Some("m1"));
        assert_eq!(d.fields, vec![Field::JobTitle]);
    }
}
