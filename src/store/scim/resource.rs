//! The SCIM resource shapes: the JSON bodies sent (User resources, PatchOps, filters)
//! and what is read from the provider's discovery endpoints.

use serde_json::{json, Map, Value};

use crate::model::LearnerFields;

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

pub fn announces_enterprise(resource_types: &Value) -> bool {
    let list: Vec<&Value> = match resource_types.get("Resources") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => match resource_types {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        },
    };
    list.iter()
        .filter(|rt| {
            rt.get("endpoint").and_then(Value::as_str) == Some("/Users")
                || rt.get("schema").and_then(Value::as_str) == Some(USER_SCHEMA)
        })
        .any(|rt| {
            rt.get("schemaExtensions")
                .and_then(Value::as_array)
                .is_some_and(|exts| {
                    exts.iter()
                        .any(|x| x.get("schema").and_then(Value::as_str) == Some(ENTERPRISE_SCHEMA))
                })
        })
}

/// The full SCIM User resource for a learner (POST and PUT bodies).
pub fn user_resource(
    external_id: &str,
    f: &LearnerFields,
    active: bool,
    enterprise: bool,
    manager: Option<&str>,
) -> Value {
    let mut schemas = vec![USER_SCHEMA];
    let mut body = Map::new();
    body.insert("userName".into(), json!(f.user_name));
    body.insert("externalId".into(), json!(external_id));
    let mut name = Map::new();
    if let Some(v) = &f.given_name {
        name.insert("givenName".into(), json!(v));
    }
    if let Some(v) = &f.family_name {
        name.insert("familyName".into(), json!(v));
    }
    if !name.is_empty() {
        body.insert("name".into(), Value::Object(name));
    }
    if let Some(v) = &f.display_name {
        body.insert("displayName".into(), json!(v));
    }
    if let Some(v) = &f.email {
        body.insert("emails".into(), emails(v));
    }
    if let Some(v) = &f.job_title {
        body.insert("title".into(), json!(v));
    }
    body.insert("active".into(), json!(active));
    if enterprise {
        let mut ext = Map::new();
        if let Some(v) = &f.department {
            ext.insert("department".into(), json!(v));
        }
        if let Some(v) = &f.employee_id {
            ext.insert("employeeNumber".into(), json!(v));
        }
        if let Some(id) = manager {
            ext.insert("manager".into(), json!({ "value": id }));
        }
        if !ext.is_empty() {
            schemas.push(ENTERPRISE_SCHEMA);
            body.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
        }
    }
    body.insert("schemas".into(), json!(schemas));
    Value::Object(body)
}

fn emails(value: &str) -> Value {
    json!([{ "value": value, "type": "work", "primary": true }])
}

/// The SCIM attribute path of a learner column, and its value; `None` for a column
/// the provider is not sent (the extension when not announced, a manager not linked).
fn attribute(
    field: &str,
    value: Option<&str>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<(String, Option<Value>)> {
    if field == "manager_email" && enterprise {
        let path = format!("{ENTERPRISE_SCHEMA}:manager");
        return match (value, manager) {
            (None, _) => Some((path, None)),
            (Some(_), Some(id)) => Some((path, Some(json!({ "value": id })))),
            // Not linked yet: set by the second pass once the manager is.
            (Some(_), None) => None,
        };
    }
    let path = match field {
        "user_name" => "userName".to_string(),
        "email" => "emails".to_string(),
        "given_name" => "name.givenName".to_string(),
        "family_name" => "name.familyName".to_string(),
        "display_name" => "displayName".to_string(),
        "job_title" => "title".to_string(),
        "department" if enterprise => format!("{ENTERPRISE_SCHEMA}:department"),
        "employee_id" if enterprise => format!("{ENTERPRISE_SCHEMA}:employeeNumber"),
        _ => return None,
    };
    let value = value.map(|v| {
        if field == "email" {
            emails(v)
        } else {
            json!(v)
        }
    });
    Some((path, value))
}

/// A PatchOp setting the columns given (`remove` for a cleared one) and maybe `active`.
pub fn patch_body(
    f: &LearnerFields,
    fields: &[&str],
    active: Option<bool>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<Value> {
    let mut ops: Vec<Value> = fields
        .iter()
        .filter_map(|name| attribute(name, f.get(name), enterprise, manager))
        .map(|(path, value)| match value {
            Some(v) => json!({"op": "replace", "path": path, "value": v}),
            None => json!({"op": "remove", "path": path}),
        })
        .collect();
    if let Some(a) = active {
        ops.push(json!({"op": "replace", "path": "active", "value": a}));
    }
    (!ops.is_empty()).then(|| json!({"schemas": [PATCH_SCHEMA], "Operations": ops}))
}

/// A SCIM filter string literal: quotes and backslashes escaped.
pub fn filter_eq(attribute: &str, value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
    format!("{attribute} eq \"{escaped}\"")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(crate) fn fields() -> LearnerFields {
        LearnerFields {
            user_name: "ann@example.org".into(),
            email: Some("ann@example.org".into()),
            given_name: Some("Ann".into()),
            family_name: None,
            display_name: Some("Ann".into()),
            department: Some("R&D".into()),
            job_title: None,
            employee_id: Some("42".into()),
            manager_email: None,
        }
    }

    #[test]
    fn filter_values_escape_quotes_and_backslashes() {
        assert_eq!(
            filter_eq("userName", r#"a"b\c"#),
            r#"userName eq "a\"b\\c""#
        );
    }

    #[test]
    fn create_body_has_the_enterprise_extension_only_when_announced() {
        let with = user_resource("e1", &fields(), true, true, Some("m1"));
        assert_eq!(with[ENTERPRISE_SCHEMA]["employeeNumber"], "42");
        assert_eq!(with[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m1"}));
        assert_eq!(with["emails"][0]["type"], "work");
        assert_eq!(with["emails"][0]["primary"], true);
        assert_eq!(with["externalId"], "e1");
        let without = user_resource("e1", &fields(), true, false, Some("m1"));
        assert!(without.get(ENTERPRISE_SCHEMA).is_none());
        assert_eq!(without["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn patch_sends_only_changed_attributes_and_removes_cleared_ones() {
        let body = patch_body(&fields(), &["department", "family_name"], None, true, None)
            .unwrap_or_default();
        let ops = body["Operations"].as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["path"], format!("{ENTERPRISE_SCHEMA}:department"));
        assert_eq!(ops[1], json!({"op": "remove", "path": "name.familyName"}));
        assert!(patch_body(&fields(), &["manager_email"], None, false, None).is_none());
    }

    #[test]
    fn resource_types_announcing_the_enterprise_extension_are_recognised() {
        let v = json!({"Resources": [{"endpoint": "/Users", "schema": USER_SCHEMA,
            "schemaExtensions": [{"schema": ENTERPRISE_SCHEMA, "required": false}]}]});
        assert!(announces_enterprise(&v));
        assert!(!announces_enterprise(
            &json!({"Resources": [{"endpoint": "/Users"}]})
        ));
    }

    // --- Adoption: identity is the externalId, a userName never ties two learners ---
}
