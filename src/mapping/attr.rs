//! Source attributes the mappings and filters read: which a directory kind has, what a
//! source must request for them (`$select`, `fields`), and how they are taken from a
//! source's JSON into `DirectoryUser::extra` (under [`PREFIX`]) and read back.
//!
//! A path is dotted segments, each optionally with a selector for a list:
//! `[primary]` (the element with `primary: true`, else the first), `[type=work]` (the
//! first whose `type` is `work`, case-insensitively) or `[0]` (by position).
//! `organizations[primary].costCenter`, `externalIds[type=organization]`,
//! `onPremisesExtensionAttributes.extensionAttribute1`, `customSchemas.HR.costCenter`.
//! A value that is a list is read as its elements joined with `,`; an element (or a
//! value) that is an object reads as its `value` (or `skuId`, `id`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Extra;
use serde_json::{Map, Value};

/// Prefix of the `DirectoryUser::extra` keys holding source attributes (the sources'
/// own keys never start with it).
pub const PREFIX: &str = "attr:";

/// The directory kinds, by what their attributes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Entra,
    Google,
    Csv,
}

/// Source attributes a directory's mappings and filters read, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    kind: Option<Kind>,
    /// Each path with its segments, parsed once (read for every user of every run).
    paths: BTreeMap<String, Vec<Segment>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Primary,
    Index(usize),
    Where(String, String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    name: String,
    selector: Option<Selector>,
}

fn segments(path: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() {
            return Err(format!("`{path}` has an empty part"));
        }
        rest = &rest[end..];
        let mut selector = None;
        if let Some(r) = rest.strip_prefix('[') {
            let close = r
                .find(']')
                .ok_or_else(|| format!("`{path}`: `[` is not closed"))?;
            let inner = r[..close].trim();
            selector = Some(if inner == "primary" {
                Selector::Primary
            } else if let Ok(i) = inner.parse::<usize>() {
                Selector::Index(i)
            } else if let Some((k, v)) = inner.split_once('=') {
                let (k, v) = (k.trim(), v.trim().trim_matches(['"', '\'']));
                if k.is_empty() || v.is_empty() {
                    return Err(format!("`{path}`: a selector is `[key=value]`"));
                }
                Selector::Where(k.to_string(), v.to_string())
            } else {
                return Err(format!(
                    "`{path}`: a selector is [primary], [<position>] or [<key>=<value>], not [{inner}]"
                ));
            });
            rest = &r[close + 1..];
        }
        out.push(Segment {
            name: name.to_string(),
            selector,
        });
        match rest.strip_prefix('.') {
            Some("") => return Err(format!("`{path}` ends with `.`")),
            Some(r) => rest = r,
            None if rest.is_empty() => {}
            None => return Err(format!("`{path}`: expected `.` after `]`")),
        }
    }
    Ok(out)
}

/// Microsoft Graph v1.0 user properties a delta query can `$select`.
const ENTRA_PROPERTIES: &[&str] = &[
    "accountEnabled",
    "ageGroup",
    "assignedLicenses",
    "assignedPlans",
    "businessPhones",
    "city",
    "companyName",
    "consentProvidedForMinor",
    "country",
    "createdDateTime",
    "creationType",
    "department",
    "displayName",
    "employeeHireDate",
    "employeeId",
    "employeeLeaveDateTime",
    "employeeOrgData",
    "employeeType",
    "externalUserState",
    "faxNumber",
    "givenName",
    "id",
    "identities",
    "imAddresses",
    "isResourceAccount",
    "jobTitle",
    "legalAgeGroupClassification",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "onPremisesDistinguishedName",
    "onPremisesDomainName",
    "onPremisesExtensionAttributes",
    "onPremisesImmutableId",
    "onPremisesSamAccountName",
    "onPremisesSecurityIdentifier",
    "onPremisesSyncEnabled",
    "onPremisesUserPrincipalName",
    "otherMails",
    "passwordPolicies",
    "postalCode",
    "preferredDataLocation",
    "preferredLanguage",
    "proxyAddresses",
    "showInAddressList",
    "state",
    "streetAddress",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
];

/// Lists whose elements are objects a selector or a sub-attribute may pick into.
const ENTRA_LISTS: &[&str] = &["assignedLicenses", "assignedPlans", "identities"];

/// Admin SDK Directory API user fields.
const GOOGLE_FIELDS: &[&str] = &[
    "id",
    "primaryEmail",
    "name",
    "suspended",
    "archived",
    "isAdmin",
    "isDelegatedAdmin",
    "isEnrolledIn2Sv",
    "isEnforcedIn2Sv",
    "orgUnitPath",
    "organizations",
    "locations",
    "externalIds",
    "relations",
    "emails",
    "aliases",
    "phones",
    "addresses",
    "languages",
    "keywords",
    "gender",
    "recoveryEmail",
    "includeInGlobalAddressList",
    "creationTime",
    "lastLoginTime",
    "customSchemas",
    "ims",
    "websites",
];

const GOOGLE_NAME: &[&str] = &["givenName", "familyName", "fullName", "displayName"];
const GOOGLE_ORGANIZATION: &[&str] = &[
    "name",
    "title",
    "primary",
    "type",
    "customType",
    "department",
    "symbol",
    "location",
    "description",
    "domain",
    "costCenter",
    "fullTimeEquivalent",
];
const GOOGLE_LOCATION: &[&str] = &[
    "type",
    "customType",
    "area",
    "buildingId",
    "floorName",
    "floorSection",
    "deskCode",
];

/// Whether `path` names an attribute a directory of `kind` has; `Err` says why not.
pub fn check(kind: Kind, path: &str) -> Result<(), String> {
    if path.trim().is_empty() {
        return Err("an attribute name is empty".into());
    }
    match kind {
        Kind::Csv => {
            if path.contains(['[', ']']) {
                return Err(format!(
                    "`{path}`: a CSV column is named as in the header row, without selectors"
                ));
            }
            Ok(())
        }
        Kind::Entra => check_entra(path),
        Kind::Google => check_google(path),
    }
}

fn is_extension(name: &str) -> bool {
    // extension_<application id without dashes>_<attribute name>
    let Some(rest) = name.strip_prefix("extension_") else {
        return false;
    };
    let Some((app, attr)) = rest.split_once('_') else {
        return false;
    };
    app.len() == 32
        && app.chars().all(|c| c.is_ascii_hexdigit())
        && !attr.is_empty()
        && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_entra(path: &str) -> Result<(), String> {
    let segs = segments(path)?;
    let unknown = || {
        format!(
            "`{path}` is not a Microsoft Graph user property (e.g. companyName, \
             onPremisesExtensionAttributes.extensionAttribute1, employeeOrgData.costCenter, \
             extension_<app id>_<name>)"
        )
    };
    let top = &segs[0];
    if is_extension(&top.name) {
        return match (segs.len(), &top.selector) {
            (1, None) => Ok(()),
            _ => Err(format!("`{path}`: a directory extension has no parts")),
        };
    }
    if !ENTRA_PROPERTIES.contains(&top.name.as_str()) {
        return Err(unknown());
    }
    let sub: Vec<&str> = segs[1..].iter().map(|s| s.name.as_str()).collect();
    match (top.name.as_str(), sub.as_slice()) {
        ("onPremisesExtensionAttributes", [one]) => {
            let n = one
                .strip_prefix("extensionAttribute")
                .and_then(|n| n.parse::<u8>().ok());
            match n {
                Some(1..=15) if segs[1].selector.is_none() => Ok(()),
                _ => Err(format!(
                    "`{path}`: onPremisesExtensionAttributes has extensionAttribute1 to extensionAttribute15"
                )),
            }
        }
        ("onPremisesExtensionAttributes", _) => Err(format!(
            "`{path}`: name one of onPremisesExtensionAttributes.extensionAttribute1 to 15"
        )),
        ("employeeOrgData", ["costCenter" | "division"]) => Ok(()),
        ("employeeOrgData", _) => Err(format!(
            "`{path}`: employeeOrgData has costCenter and division"
        )),
        (name, _) if ENTRA_LISTS.contains(&name) => Ok(()),
        (_, []) if top.selector.is_none() => Ok(()),
        (name, _) => Err(format!(
            "`{path}`: `{name}` is a plain value, without parts"
        )),
    }
}

fn check_google(path: &str) -> Result<(), String> {
    let segs = segments(path)?;
    let top = &segs[0];
    if !GOOGLE_FIELDS.contains(&top.name.as_str()) {
        return Err(format!(
            "`{path}` is not a Directory API user field (e.g. orgUnitPath, \
             organizations[primary].costCenter, locations[0].buildingId, \
             externalIds[type=organization], customSchemas.<schema>.<field>)"
        ));
    }
    let sub: Vec<&str> = segs[1..].iter().map(|s| s.name.as_str()).collect();
    let allowed = |list: &[&str], what: &str| match sub.as_slice() {
        [] => Ok(()),
        [one] if list.contains(one) => Ok(()),
        _ => Err(format!("`{path}`: {what} has {}", list.join(", "))),
    };
    match top.name.as_str() {
        "name" => allowed(GOOGLE_NAME, "name"),
        "organizations" => allowed(GOOGLE_ORGANIZATION, "an organization"),
        "locations" => allowed(GOOGLE_LOCATION, "a location"),
        "customSchemas" => match segs.len() {
            3 if segs.iter().all(|s| s.selector.is_none()) => Ok(()),
            _ => Err(format!(
                "`{path}`: a custom attribute is customSchemas.<schema>.<field>"
            )),
        },
        "externalIds" | "relations" | "emails" | "phones" | "addresses" | "ims" | "websites"
        | "keywords" | "languages" => match sub.as_slice() {
            [] | [_] => Ok(()),
            _ => Err(format!("`{path}`: one sub-field at most")),
        },
        _ if segs.len() == 1 && top.selector.is_none() => Ok(()),
        name => Err(format!(
            "`{path}`: `{name}` is a plain value, without parts"
        )),
    }
}

/// An object read as one value: by its `value` (Google's typed lists), `skuId`
/// (`assignedLicenses`) or `id`.
fn object_value(o: &Map<String, Value>) -> Option<String> {
    ["value", "skuId", "id"]
        .iter()
        .find_map(|k| o.get(*k).and_then(scalar))
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn text(v: &Value) -> Option<String> {
    let s = match v {
        Value::Null => None,
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|i| match i {
                    Value::Object(o) => object_value(o),
                    other => scalar(other),
                })
                .filter(|s| !s.trim().is_empty())
                .collect();
            Some(parts.join(","))
        }
        Value::Object(o) => object_value(o),
        other => scalar(other),
    };
    s.filter(|s| !s.trim().is_empty())
}

fn select<'a>(v: &'a Value, selector: &Selector) -> Option<&'a Value> {
    let items = v.as_array()?;
    match selector {
        Selector::Index(i) => items.get(*i),
        Selector::Primary => items
            .iter()
            .find(|i| i.get("primary").and_then(Value::as_bool) == Some(true))
            .or_else(|| items.first()),
        Selector::Where(k, want) => items.iter().find(|i| {
            i.get(k)
                .and_then(scalar)
                .is_some_and(|v| v.eq_ignore_ascii_case(want))
        }),
    }
}

/// The value at `path` in a user object.
fn lookup(user: &Map<String, Value>, segs: &[Segment]) -> Option<String> {
    let (first, rest) = segs.split_first()?;
    let mut v = user.get(&first.name)?;
    if let Some(s) = &first.selector {
        v = select(v, s)?;
    }
    for seg in rest {
        v = v.get(&seg.name)?;
        if let Some(s) = &seg.selector {
            v = select(v, s)?;
        }
    }
    text(v)
}

impl Attributes {
    pub fn new(kind: Kind) -> Attributes {
        Attributes {
            kind: Some(kind),
            paths: BTreeMap::new(),
        }
    }

    /// Add a path (already checked with [`check`]).
    pub fn insert(&mut self, path: &str) {
        // A CSV column is a whole name (checked paths of the other kinds always parse).
        let segs = segments(path).unwrap_or_default();
        self.paths.insert(path.to_string(), segs);
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.paths.keys().map(String::as_str)
    }

    /// The top-level properties the attributes live in, in order.
    fn tops(&self) -> BTreeSet<String> {
        self.paths
            .values()
            .filter_map(|s| s.first().map(|s| s.name.clone()))
            .collect()
    }

    /// Entra's `$select`: `base` plus every property the attributes live in.
    pub fn entra_select(&self, base: &str) -> String {
        let have: BTreeSet<&str> = base.split(',').collect();
        let mut out = base.to_string();
        for top in self.tops() {
            if !have.contains(top.as_str()) {
                out.push(',');
                out.push_str(&top);
            }
        }
        out
    }

    /// Google's `fields` mask (`base` widened to the attributes, under `users(...)`) and
    /// the custom schemas to ask for (`projection=custom&customFieldMask=...`).
    pub fn google_query(&self, base: &str) -> (String, Vec<String>) {
        if self.paths.is_empty() {
            return (base.to_string(), vec![]);
        }
        let mut tree = mask::parse(base);
        let mut schemas = BTreeSet::new();
        for segs in self.paths.values().filter(|s| !s.is_empty()) {
            if segs[0].name == "customSchemas" {
                if let Some(s) = segs.get(1) {
                    schemas.insert(s.name.clone());
                }
            }
            let mut names: Vec<Vec<String>> = Vec::new();
            let last = segs.len() - 1;
            for (i, s) in segs.iter().enumerate() {
                let mut at: Vec<String> = names.last().cloned().unwrap_or_default();
                at.push(s.name.clone());
                let key = match &s.selector {
                    Some(Selector::Primary) => Some("primary".to_string()),
                    Some(Selector::Where(k, _)) => Some(k.clone()),
                    _ => None,
                };
                if let Some(k) = key {
                    let mut sel = at.clone();
                    sel.push(k);
                    mask::add(&mut tree, &prefixed(&sel));
                    if i == last {
                        // A picked element reads as its `value`.
                        let mut value = at.clone();
                        value.push("value".into());
                        mask::add(&mut tree, &prefixed(&value));
                    }
                } else if i == last {
                    mask::add(&mut tree, &prefixed(&at));
                }
                names.push(at);
            }
        }
        (mask::render(&tree), schemas.into_iter().collect())
    }

    /// CSV columns the attributes are (lowercase, as the header is read).
    pub fn csv_columns(&self) -> BTreeSet<String> {
        self.paths.keys().map(|p| p.to_lowercase()).collect()
    }

    /// Take the attributes from one user object into `extra`. With `partial` (a delta
    /// item), an attribute whose top-level property is absent keeps its stored value;
    /// otherwise (a whole user) an absent attribute is cleared.
    pub fn capture(&self, user: &Map<String, Value>, partial: bool, extra: &mut Extra) {
        for (path, segs) in &self.paths {
            let Some(top) = segs.first() else { continue };
            if partial && !user.contains_key(&top.name) {
                continue;
            }
            set(extra, path, lookup(user, segs));
        }
    }

    /// Take the attributes from a CSV row, `column` reading a (lowercase) column.
    pub fn capture_columns(&self, column: &dyn Fn(&str) -> Option<String>, extra: &mut Extra) {
        for path in self.paths.keys() {
            set(extra, path, column(&path.to_lowercase()));
        }
    }

    /// The kind the attributes were checked for.
    pub fn kind(&self) -> Option<Kind> {
        self.kind
    }
}

fn prefixed(at: &[String]) -> Vec<String> {
    std::iter::once("users".to_string())
        .chain(at.iter().cloned())
        .collect()
}

fn set(extra: &mut Extra, path: &str, value: Option<String>) {
    let key = format!("{PREFIX}{path}");
    match value.filter(|v| !v.trim().is_empty()) {
        Some(v) => {
            extra.insert(key, v);
        }
        None => {
            extra.remove(&key);
        }
    }
}

/// A source attribute of a user, as the source stored it.
pub fn read(extra: &Extra, path: &str) -> Option<String> {
    extra.get(&format!("{PREFIX}{path}")).cloned()
}

/// Google's partial-response `fields` syntax: `a,b(c,d(e))`.
mod mask {
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Node {
        pub name: String,
        /// `None`: the whole field.
        pub children: Option<Vec<Node>>,
    }

    pub fn parse(text: &str) -> Vec<Node> {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        list(&chars, &mut i)
    }

    fn list(chars: &[char], i: &mut usize) -> Vec<Node> {
        let mut out = Vec::new();
        loop {
            let mut name = String::new();
            while let Some(&c) = chars.get(*i) {
                if matches!(c, ',' | '(' | ')') {
                    break;
                }
                name.push(c);
                *i += 1;
            }
            let children = if chars.get(*i) == Some(&'(') {
                *i += 1;
                let c = list(chars, i);
                *i += 1; // `)`
                Some(c)
            } else {
                None
            };
            if !name.is_empty() {
                out.push(Node { name, children });
            }
            match chars.get(*i) {
                Some(',') => *i += 1,
                _ => return out,
            }
        }
    }

    /// Ask for the field at `path` (whole).
    pub fn add(nodes: &mut Vec<Node>, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let at = match nodes.iter().position(|n| &n.name == first) {
            Some(at) => at,
            None => {
                nodes.push(Node {
                    name: first.clone(),
                    children: if rest.is_empty() { None } else { Some(vec![]) },
                });
                nodes.len() - 1
            }
        };
        let node = &mut nodes[at];
        if rest.is_empty() {
            node.children = None;
        } else if let Some(children) = &mut node.children {
            add(children, rest);
        }
    }

    pub fn render(nodes: &[Node]) -> String {
        nodes
            .iter()
            .map(|n| match &n.children {
                None => n.name.clone(),
                Some(c) => format!("{}({})", n.name, render(c)),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_are_checked_against_the_directory_kind() {
        let table: &[(Kind, &str, bool)] = &[
            (Kind::Entra, "companyName", true),
            (
                Kind::Entra,
                "onPremisesExtensionAttributes.extensionAttribute1",
                true,
            ),
            (
                Kind::Entra,
                "onPremisesExtensionAttributes.extensionAttribute15",
                true,
            ),
            (
                Kind::Entra,
                "onPremisesExtensionAttributes.extensionAttribute16",
                false,
            ),
            (Kind::Entra, "onPremisesExtensionAttributes", false),
            (Kind::Entra, "employeeOrgData.costCenter", true),
            (Kind::Entra, "employeeOrgData.boss", false),
            (
                Kind::Entra,
                "extension_0123456789abcdef0123456789abcdef_costCentre",
                true,
            ),
            (Kind::Entra, "extension_0123_costCentre", false),
            (Kind::Entra, "assignedLicenses", true),
            (Kind::Entra, "userType", true),
            (Kind::Entra, "usertype", false),
            (Kind::Entra, "companyName.x", false),
            (Kind::Entra, "costCenter", false),
            (Kind::Google, "organizations[primary].costCenter", true),
            (Kind::Google, "organizations[primary].budget", false),
            (Kind::Google, "locations", true),
            (Kind::Google, "locations[0].buildingId", true),
            (Kind::Google, "externalIds[type=organization]", true),
            (Kind::Google, "customSchemas.HR.costCenter", true),
            (Kind::Google, "customSchemas.HR", false),
            (Kind::Google, "name.givenName", true),
            (Kind::Google, "orgUnitPath", true),
            (Kind::Google, "companyName", false),
            (Kind::Google, "organizations[first].title", false),
            (Kind::Csv, "cost_center", true),
            (Kind::Csv, "x[0]", false),
        ];
        for (kind, path, ok) in table {
            assert_eq!(
                check(*kind, path).is_ok(),
                *ok,
                "{kind:?} {path}: {:?}",
                check(*kind, path)
            );
        }
    }

    fn attrs(kind: Kind, paths: &[&str]) -> Attributes {
        let mut a = Attributes::new(kind);
        for p in paths {
            a.insert(p);
        }
        a
    }

    #[test]
    fn values_are_read_from_json_by_path_and_partial_items_keep_the_rest() {
        let a = attrs(
            Kind::Entra,
            &[
                "onPremisesExtensionAttributes.extensionAttribute3",
                "companyName",
                "assignedLicenses",
                "employeeOrgData.costCenter",
            ],
        );
        let mut extra: Extra = [("emailFromUpn".to_string(), "true".to_string())]
            .into_iter()
            .collect();
        let full = json!({
            "id": "1",
            "companyName": "Contoso",
            "onPremisesExtensionAttributes": {"extensionAttribute3": "R&D", "extensionAttribute4": null},
            "assignedLicenses": [{"skuId": "sku-1", "disabledPlans": []}, {"skuId": "sku-2"}],
            "employeeOrgData": {"costCenter": 42, "division": null},
        });
        a.capture(full.as_object().unwrap(), false, &mut extra);
        let got = |e: &Extra, p: &str| read(e, p);
        assert_eq!(got(&extra, "companyName").as_deref(), Some("Contoso"));
        assert_eq!(
            got(&extra, "onPremisesExtensionAttributes.extensionAttribute3").as_deref(),
            Some("R&D")
        );
        assert_eq!(
            got(&extra, "assignedLicenses").as_deref(),
            Some("sku-1,sku-2")
        );
        assert_eq!(
            got(&extra, "employeeOrgData.costCenter").as_deref(),
            Some("42")
        );
        // A delta item with only the licenses: the rest stays; an empty list clears.
        a.capture(
            json!({"id":"1","assignedLicenses":[]}).as_object().unwrap(),
            true,
            &mut extra,
        );
        assert_eq!(got(&extra, "assignedLicenses"), None);
        assert_eq!(got(&extra, "companyName").as_deref(), Some("Contoso"));
        // A complex property comes whole: a missing sub-attribute is cleared.
        a.capture(
            json!({"onPremisesExtensionAttributes":{"extensionAttribute1":"x"}})
                .as_object()
                .unwrap(),
            true,
            &mut extra,
        );
        assert_eq!(
            got(&extra, "onPremisesExtensionAttributes.extensionAttribute3"),
            None
        );
        assert_eq!(
            extra.get("emailFromUpn").map(String::as_str),
            Some("true"),
            "other keys stay"
        );
        // A whole user without a property clears it.
        a.capture(json!({"id":"1"}).as_object().unwrap(), false, &mut extra);
        assert_eq!(got(&extra, "companyName"), None);
    }

    #[test]
    fn csv_columns_are_whole_names_read_lowercase() {
        let a = attrs(Kind::Csv, &["Cost.Center", "a..b"]);
        let mut extra = Extra::default();
        a.capture_columns(&|c| Some(format!("<{c}>")), &mut extra);
        assert_eq!(
            read(&extra, "Cost.Center").as_deref(),
            Some("<cost.center>")
        );
        assert_eq!(read(&extra, "a..b").as_deref(), Some("<a..b>"));
    }

    #[test]
    fn google_selectors_pick_list_elements() {
        let a = attrs(
            Kind::Google,
            &[
                "organizations[primary].costCenter",
                "externalIds[type=organization]",
                "locations[0].buildingId",
                "customSchemas.HR.costCenter",
                "relations[type=manager]",
            ],
        );
        let user = json!({
            "organizations": [{"costCenter": "old"}, {"costCenter": "CC-9", "primary": true}],
            "externalIds": [{"value": "acct", "type": "account"}, {"value": "E7", "type": "Organization"}],
            "locations": [{"type": "desk", "buildingId": "B1"}],
            "customSchemas": {"HR": {"costCenter": "HR-1"}},
        });
        let mut extra = Extra::default();
        a.capture(user.as_object().unwrap(), false, &mut extra);
        let want: Extra = [
            ("organizations[primary].costCenter", "CC-9"),
            ("externalIds[type=organization]", "E7"),
            ("locations[0].buildingId", "B1"),
            ("customSchemas.HR.costCenter", "HR-1"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect();
        assert_eq!(extra, want);
    }

    #[test]
    fn the_select_and_fields_grow_by_exactly_what_is_read() {
        let base = "id,userPrincipalName,userType";
        assert_eq!(Attributes::new(Kind::Entra).entra_select(base), base);
        let a = attrs(
            Kind::Entra,
            &[
                "onPremisesExtensionAttributes.extensionAttribute1",
                "onPremisesExtensionAttributes.extensionAttribute2",
                "userType",
                "companyName",
            ],
        );
        assert_eq!(
            a.entra_select(base),
            "id,userPrincipalName,userType,companyName,onPremisesExtensionAttributes"
        );
        let base = "nextPageToken,users(id,organizations(department,title,primary),externalIds(value,type)),kind";
        assert_eq!(
            Attributes::new(Kind::Google).google_query(base),
            (base.to_string(), vec![])
        );
        let g = attrs(
            Kind::Google,
            &[
                "organizations[primary].costCenter",
                "locations",
                "customSchemas.HR.costCenter",
                "externalIds[type=organization]",
                "phones[type=work]",
            ],
        );
        assert_eq!(
            g.google_query(base),
            (
                "nextPageToken,users(id,organizations(department,title,primary,costCenter),externalIds(value,type),customSchemas(HR(costCenter)),locations,phones(type,value)),kind".to_string(),
                vec!["HR".to_string()]
            )
        );
    }
}
