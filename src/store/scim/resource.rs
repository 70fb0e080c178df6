//! The SCIM resource shapes: the JSON bodies sent (User resources, PatchOps, filters)
//! and what is read from the provider's discovery endpoints.

use serde_json::{json, Map, Value};

use crate::model::{Field, LearnerFields, ScimPath};

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
    body.insert("externalId".into(), json!(external_id));
    let mut ext = Map::new();
    for field in Field::ALL {
        let value = match field {
            // The manager is sent whenever it is linked (its SCIM id is known).
            Field::ManagerEmail => manager.map(|id| json!({ "value": id })),
            _ => f.get(field).map(|v| value(field, v)),
        };
        let Some(value) = value else { continue };
        match field.scim() {
            ScimPath::Core(path) => insert_at(&mut body, path, value),
            ScimPath::Enterprise(name) if enterprise => {
                ext.insert(name.into(), value);
            }
            ScimPath::Enterprise(_) => {}
        }
    }
    body.insert("active".into(), json!(active));
    if !ext.is_empty() {
        schemas.push(ENTERPRISE_SCHEMA);
        body.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
    }
    body.insert("schemas".into(), json!(schemas));
    Value::Object(body)
}

/// Put `value` at a core path: `a` or `a.b` (a sub-attribute of the complex `a`).
fn insert_at(body: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((parent, sub)) => {
            if let Value::Object(parent) = body
                .entry(parent)
                .or_insert_with(|| Value::Object(Map::new()))
            {
                parent.insert(sub.into(), value);
            }
        }
        None => {
            body.insert(path.into(), value);
        }
    }
}

/// A column's value as SCIM has it (but the manager, a reference: see `attribute`).
fn value(field: Field, v: &str) -> Value {
    match field {
        Field::Email => emails(v),
        _ => json!(v),
    }
}

fn emails(value: &str) -> Value {
    json!([{ "value": value, "type": "work", "primary": true }])
}

/// The SCIM attribute path of a learner column, and its value; `None` for a column
/// the provider is not sent (the extension when not announced, a manager not linked).
fn attribute(
    field: Field,
    value: Option<&str>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<(String, Option<Value>)> {
    let path = match field.scim() {
        ScimPath::Core(path) => path.to_string(),
        ScimPath::Enterprise(name) if enterprise => format!("{ENTERPRISE_SCHEMA}:{name}"),
        ScimPath::Enterprise(_) => return None,
    };
    let value = match (field, value, manager) {
        (_, None, _) => None,
        (Field::ManagerEmail, Some(_), Some(id)) => Some(json!({ "value": id })),
        // Not linked yet: set by the second pass once the manager is.
        (Field::ManagerEmail, Some(_), None) => return None,
        (_, Some(v), _) => Some(self::value(field, v)),
    };
    Some((path, value))
}

/// A PatchOp setting the columns given (`remove` for a cleared one) and maybe `active`.
pub fn patch_body(
    f: &LearnerFields,
    fields: &[Field],
    active: Option<bool>,
    enterprise: bool,
    manager: Option<&str>,
) -> Option<Value> {
    let mut ops: Vec<Value> = fields
        .iter()
        .filter_map(|&field| attribute(field, f.get(field), enterprise, manager))
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
        let body = patch_body(
            &fields(),
            &[Field::Department, Field::FamilyName],
            None,
            true,
            None,
        )
        .unwrap_or_default();
        let ops = body["Operations"].as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["path"], format!("{ENTERPRISE_SCHEMA}:department"));
        assert_eq!(ops[1], json!({"op": "remove", "path": "name.familyName"}));
        assert!(patch_body(&fields(), &[Field::ManagerEmail], None, false, None).is_none());
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
