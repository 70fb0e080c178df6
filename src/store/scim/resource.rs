//! The SCIM resource shapes: the JSON bodies sent (User resources, PatchOps, filters)
//! and what is read from the provider's discovery endpoints.

use serde_json::{json, Map, Value};

use crate::config::ScimDialect;
use crate::model::{Field, LearnerFields, ScimPath};

pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
pub const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

fn user_types(resource_types: &Value) -> Vec<&Value> {
    let list: Vec<&Value> = match resource_types.get("Resources") {
        Some(Value::Array(a)) => a.iter().collect(),
        _ => match resource_types {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        },
    };
    list.into_iter()
        .filter(|rt| {
            rt.get("endpoint").and_then(Value::as_str) == Some("/Users")
                || rt.get("schema").and_then(Value::as_str) == Some(USER_SCHEMA)
        })
        .collect()
}

/// Whether /ResourceTypes describes the User type at all (else it says nothing
/// about the extension).
pub fn lists_user_type(resource_types: &Value) -> bool {
    !user_types(resource_types).is_empty()
}

pub fn announces_enterprise(resource_types: &Value) -> bool {
    user_types(resource_types).into_iter().any(|rt| {
        rt.get("schemaExtensions")
            .and_then(Value::as_array)
            .is_some_and(|exts| {
                exts.iter()
                    .any(|x| x.get("schema").and_then(Value::as_str) == Some(ENTERPRISE_SCHEMA))
            })
    })
}

/// The full SCIM User resource for a learner (POST and PUT bodies). In Entra's
/// dialects it is what Entra's create sends: both schemas, `meta.resourceType` and no
/// null attribute (its create has no manager: the caller passes none, and sets it by
/// a second request, an `Add` of the bare id).
pub fn user_resource(
    external_id: &str,
    f: &LearnerFields,
    active: bool,
    enterprise: bool,
    manager: Option<&str>,
    dialect: ScimDialect,
) -> Value {
    let entra = dialect != ScimDialect::Rfc;
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
    if !ext.is_empty() || (entra && enterprise) {
        schemas.push(ENTERPRISE_SCHEMA);
    }
    if !ext.is_empty() {
        body.insert(ENTERPRISE_SCHEMA.into(), Value::Object(ext));
    }
    if entra {
        body.insert("meta".into(), json!({ "resourceType": "User" }));
    }
    body.insert("schemas".into(), json!(schemas));
    let mut body = Value::Object(body);
    add_extras(&mut body, f);
    body
}

/// The extra attributes of `[directory.mapping.scim]`: `urn:<schema>:<attr>` goes in
/// the extension's object (its schema added to `schemas`), a plain name in the core.
fn add_extras(body: &mut Value, f: &LearnerFields) {
    let Value::Object(body) = body else { return };
    for (name, v) in &f.scim {
        match name.strip_prefix("urn:").and(name.rsplit_once(':')) {
            Some((schema, attr)) => {
                if let Some(Value::Array(schemas)) = body.get_mut("schemas") {
                    if !schemas.iter().any(|s| s == schema) {
                        schemas.push(json!(schema));
                    }
                }
                if let Value::Object(ext) = body
                    .entry(schema)
                    .or_insert_with(|| Value::Object(Map::new()))
                {
                    insert_at(ext, attr, json!(v));
                }
            }
            None => insert_at(body, name, json!(v)),
        }
    }
}

/// `body` (a PatchOp, or none) with an operation per changed extra attribute (a
/// change whose name is not a learner column): its full name as the path.
pub fn with_extras(
    body: Option<Value>,
    f: &LearnerFields,
    changes: &[crate::plan::FieldChange],
    dialect: ScimDialect,
) -> Option<Value> {
    let ops: Vec<Value> = changes
        .iter()
        .filter(|c| Field::parse(&c.field).is_none())
        .map(|c| match f.scim.get(&c.field) {
            Some(v) => json!({"op": op("replace", dialect), "path": c.field, "value": v}),
            None => json!({"op": op("remove", dialect), "path": c.field}),
        })
        .collect();
    if ops.is_empty() {
        return body;
    }
    let mut body = body.unwrap_or_else(|| json!({"schemas": [PATCH_SCHEMA], "Operations": []}));
    if let Some(Value::Array(all)) = body.get_mut("Operations") {
        all.extend(ops);
    }
    Some(body)
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
/// Entra's dialects address the work email by a filter path and send plain strings.
fn attribute(
    field: Field,
    value: Option<&str>,
    enterprise: bool,
    manager: Option<&str>,
    dialect: ScimDialect,
) -> Option<(String, Option<Value>)> {
    let entra = dialect != ScimDialect::Rfc;
    let path = match field.scim() {
        ScimPath::Core(_) if entra && field == Field::Email => WORK_EMAIL.to_string(),
        ScimPath::Core(path) => path.to_string(),
        ScimPath::Enterprise(name) if enterprise => format!("{ENTERPRISE_SCHEMA}:{name}"),
        ScimPath::Enterprise(_) => return None,
    };
    let value = match (field, value, manager) {
        (_, None, _) => None,
        (Field::ManagerEmail, Some(_), Some(id)) => Some(manager_value(id, dialect)),
        // Not linked yet: set by the second pass once the manager is.
        (Field::ManagerEmail, Some(_), None) => return None,
        (Field::Email, Some(v), _) if entra => Some(json!(v)),
        (_, Some(v), _) => Some(self::value(field, v)),
    };
    Some((path, value))
}

/// The path Entra sets the work email by.
const WORK_EMAIL: &str = "emails[type eq \"work\"].value";

/// The manager reference: `{"value": id}` (RFC 7643), or the bare id (Entra).
fn manager_value(id: &str, dialect: ScimDialect) -> Value {
    match dialect {
        ScimDialect::Rfc => json!({ "value": id }),
        ScimDialect::Entra | ScimDialect::Entra2020 => json!(id),
    }
}

pub const GROUP_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";

/// `POST /Groups`: display name and externalId, no members (Entra's shape; the
/// members follow in PATCHes).
pub fn group_body(display_name: &str, external_id: &str) -> Value {
    json!({
        "schemas": [GROUP_SCHEMA],
        "displayName": display_name,
        "externalId": external_id,
        "meta": {"resourceType": "Group"},
    })
}

/// A PatchOp renaming a group.
pub fn group_rename(display_name: &str, dialect: ScimDialect) -> Value {
    json!({"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": op("replace", dialect), "path": "displayName", "value": display_name}
    ]})
}

/// A PatchOp adding (or removing) members by SCIM user id: Entra's `Add`/`Remove` of
/// `members` with `value` ids; the 2020 flag and RFC 7644 remove by path filter.
pub fn group_members(ids: &[&str], add: bool, dialect: ScimDialect) -> Value {
    let values: Vec<Value> = ids.iter().map(|id| json!({"value": id})).collect();
    let ops: Vec<Value> = match (add, dialect) {
        (true, _) => vec![json!({"op": op("add", dialect), "path": "members", "value": values})],
        (false, ScimDialect::Entra) => {
            vec![json!({"op": "Remove", "path": "members", "value": values})]
        }
        (false, _) => ids
            .iter()
            .map(|id| json!({"op": "remove", "path": format!("members[{}]", filter_eq("value", id))}))
            .collect(),
    };
    json!({"schemas": [PATCH_SCHEMA], "Operations": ops})
}

/// An operation's name in the dialect: Entra's default capitalises it.
fn op(name: &'static str, dialect: ScimDialect) -> &'static str {
    match (dialect, name) {
        (ScimDialect::Entra, "add") => "Add",
        (ScimDialect::Entra, "replace") => "Replace",
        (ScimDialect::Entra, "remove") => "Remove",
        _ => name,
    }
}

/// `active` as the dialect sends it: Entra's default sends the strings "True"/"False".
fn active_value(active: bool, dialect: ScimDialect) -> Value {
    match (dialect, active) {
        (ScimDialect::Entra, true) => json!("True"),
        (ScimDialect::Entra, false) => json!("False"),
        _ => json!(active),
    }
}

/// A PatchOp setting the columns given (`remove` for a cleared one), maybe the
/// `externalId` and maybe `active`, in the dialect's shape: one operation per attribute
/// with a path, except Entra's 2020 dialect, which sets every value in one no-path
/// `replace` with dotted keys.
pub fn patch_body(
    f: &LearnerFields,
    fields: &[Field],
    active: Option<bool>,
    enterprise: bool,
    manager: Option<&str>,
    dialect: ScimDialect,
    external_id: Option<&str>,
) -> Option<Value> {
    let attributes = external_id
        .map(|e| ("externalId".to_string(), Some(json!(e))))
        .into_iter()
        .chain(
            fields
                .iter()
                .filter_map(|&field| attribute(field, f.get(field), enterprise, manager, dialect)),
        );
    let mut ops: Vec<Value> = Vec::new();
    let mut values = Map::new();
    for (path, value) in attributes {
        match value {
            None => ops.push(json!({"op": op("remove", dialect), "path": path})),
            Some(v) if dialect == ScimDialect::Entra2020 => {
                values.insert(path, v);
            }
            Some(v) => ops.push(json!({"op": op("replace", dialect), "path": path, "value": v})),
        }
    }
    match (active, dialect) {
        (Some(a), ScimDialect::Entra2020) => {
            values.insert("active".into(), json!(a));
        }
        (Some(a), _) => ops.push(
            json!({"op": op("replace", dialect), "path": "active", "value": active_value(a, dialect)}),
        ),
        (None, _) => {}
    }
    if !values.is_empty() {
        ops.push(json!({"op": "replace", "value": values}));
    }
    (!ops.is_empty()).then(|| json!({"schemas": [PATCH_SCHEMA], "Operations": ops}))
}

/// The second pass's PatchOp setting a manager linked after its report.
pub fn manager_patch(id: &str, dialect: ScimDialect) -> Value {
    let (name, value) = match dialect {
        ScimDialect::Rfc => ("replace", manager_value(id, dialect)),
        // What Entra sends once the manager exists: an `Add` of the bare id.
        ScimDialect::Entra | ScimDialect::Entra2020 => ("add", manager_value(id, dialect)),
    };
    json!({"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": op(name, dialect), "path": format!("{ENTERPRISE_SCHEMA}:manager"), "value": value}
    ]})
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
            scim: Default::default(),
        }
    }

    #[test]
    fn extra_attributes_go_in_their_extension_and_changed_ones_are_patched() {
        let ext = "urn:ietf:params:scim:schemas:extension:knowbe4:kmsat:2.0:User";
        let mut f = fields();
        f.scim.insert(format!("{ext}:customField1"), "R&D".into());
        f.scim.insert("nickName".into(), "ada".into());
        let body = user_resource("e1", &f, true, false, None, ScimDialect::Entra);
        assert_eq!(body[ext]["customField1"], "R&D");
        assert_eq!(body["nickName"], "ada");
        assert!(body["schemas"].as_array().unwrap().contains(&json!(ext)));
        let change = |name: &str| crate::plan::FieldChange {
            field: name.to_string(),
            before: None,
            after: None,
        };
        let changes = [
            change("department"),
            change(&format!("{ext}:customField1")),
            change("preferredLanguage"),
        ];
        let patch = with_extras(None, &f, &changes, ScimDialect::Entra).unwrap();
        assert_eq!(
            patch["Operations"],
            json!([
                {"op": "Replace", "path": format!("{ext}:customField1"), "value": "R&D"},
                {"op": "Remove", "path": "preferredLanguage"},
            ])
        );
        assert_eq!(with_extras(None, &f, &changes[..1], ScimDialect::Rfc), None);
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
        let with = user_resource("e1", &fields(), true, true, Some("m1"), ScimDialect::Rfc);
        assert_eq!(with[ENTERPRISE_SCHEMA]["employeeNumber"], "42");
        assert_eq!(with[ENTERPRISE_SCHEMA]["manager"], json!({"value": "m1"}));
        assert_eq!(with["emails"][0]["type"], "work");
        assert_eq!(with["emails"][0]["primary"], true);
        assert_eq!(with["externalId"], "e1");
        let without = user_resource("e1", &fields(), true, false, Some("m1"), ScimDialect::Rfc);
        assert!(without.get(ENTERPRISE_SCHEMA).is_none());
        assert_eq!(without["schemas"], json!([USER_SCHEMA]));
    }

    #[test]
    fn the_entra_create_body_is_what_entra_posts() {
        let mut f = fields();
        f.department = None;
        f.employee_id = None;
        let body = user_resource("ann", &f, true, true, None, ScimDialect::Entra);
        assert_eq!(
            body,
            json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
                "externalId": "ann",
                "userName": "ann@example.org",
                "active": true,
                "emails": [{"value": "ann@example.org", "type": "work", "primary": true}],
                "name": {"givenName": "Ann"},
                "displayName": "Ann",
                "meta": {"resourceType": "User"},
            })
        );
    }

    #[test]
    fn patch_sends_only_changed_attributes_and_removes_cleared_ones() {
        let body = patch_body(
            &fields(),
            &[Field::Department, Field::FamilyName],
            None,
            true,
            None,
            ScimDialect::Rfc,
            None,
        )
        .unwrap_or_default();
        let ops = body["Operations"].as_array().cloned().unwrap_or_default();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0]["path"], format!("{ENTERPRISE_SCHEMA}:department"));
        assert_eq!(ops[1], json!({"op": "remove", "path": "name.familyName"}));
        assert!(patch_body(
            &fields(),
            &[Field::ManagerEmail],
            None,
            false,
            None,
            ScimDialect::Rfc,
            None
        )
        .is_none());
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

    #[test]
    fn the_entra_dialect_sends_one_capitalised_op_per_attribute_with_a_path() {
        let body = patch_body(
            &fields(),
            &[Field::Email, Field::Department, Field::FamilyName],
            Some(false),
            true,
            None,
            ScimDialect::Entra,
            None,
        )
        .unwrap();
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "Replace", "path": "emails[type eq \"work\"].value", "value": "ann@example.org"},
                {"op": "Replace", "path": format!("{ENTERPRISE_SCHEMA}:department"), "value": "R&D"},
                {"op": "Remove", "path": "name.familyName"},
                {"op": "Replace", "path": "active", "value": "False"},
            ])
        );
        assert_eq!(
            manager_patch("m1", ScimDialect::Entra)["Operations"],
            json!([{"op": "Add", "path": format!("{ENTERPRISE_SCHEMA}:manager"), "value": "m1"}])
        );
        assert_eq!(
            manager_patch("m1", ScimDialect::Rfc)["Operations"][0]["value"],
            json!({"value": "m1"})
        );
    }

    #[test]
    fn the_entra_2020_dialect_sets_values_in_one_no_path_replace() {
        let body = patch_body(
            &fields(),
            &[Field::Email, Field::EmployeeId, Field::FamilyName],
            Some(true),
            true,
            None,
            ScimDialect::Entra2020,
            Some("E1"),
        )
        .unwrap();
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "remove", "path": "name.familyName"},
                {"op": "replace", "value": {
                    "externalId": "E1",
                    "emails[type eq \"work\"].value": "ann@example.org",
                    format!("{ENTERPRISE_SCHEMA}:employeeNumber"): "42",
                    "active": true,
                }},
            ])
        );
    }

    #[test]
    fn group_bodies_are_entras_shapes_in_each_dialect() {
        assert_eq!(
            group_body("Sales", "g1"),
            json!({"schemas": [GROUP_SCHEMA], "displayName": "Sales", "externalId": "g1", "meta": {"resourceType": "Group"}})
        );
        assert_eq!(
            group_members(&["u1", "u2"], true, ScimDialect::Entra)["Operations"],
            json!([{"op": "Add", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}])
        );
        assert_eq!(
            group_members(&["u1"], false, ScimDialect::Entra)["Operations"],
            json!([{"op": "Remove", "path": "members", "value": [{"value": "u1"}]}])
        );
        assert_eq!(
            group_members(&["u\"1"], false, ScimDialect::Entra2020)["Operations"],
            json!([{"op": "remove", "path": "members[value eq \"u\\\"1\"]"}])
        );
        assert_eq!(
            group_members(&["u1"], true, ScimDialect::Rfc)["Operations"][0]["op"],
            "add"
        );
        assert_eq!(
            group_rename("Sales EMEA", ScimDialect::Entra)["Operations"],
            json!([{"op": "Replace", "path": "displayName", "value": "Sales EMEA"}])
        );
    }
}
