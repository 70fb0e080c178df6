//! `[directory.mapping]` and `[directory.filter]`: parsed into a `MappingPolicy`,
//! every expression, attribute and rule checked against the directory's kind.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::error::{ConfigError, Locator};
use super::raw::S;
use crate::mapping::attr::{self, Attributes, Kind};
use crate::mapping::filter::{Clause, Filter, Rule, Subject, Test};
use crate::mapping::{expr, Mapped, MappingPolicy, EXTERNAL_ID};
use crate::model::Field;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMapping {
    pub default_department: Option<S<String>>,
    pub user_name: Option<S<String>>,
    pub email: Option<S<String>>,
    pub given_name: Option<S<String>>,
    pub family_name: Option<S<String>>,
    pub display_name: Option<S<String>>,
    pub department: Option<S<String>>,
    pub job_title: Option<S<String>>,
    pub employee_id: Option<S<String>>,
    pub manager_email: Option<S<String>>,
    /// Extra SCIM attributes: full attribute name = expression.
    #[serde(default)]
    pub scim: BTreeMap<String, S<String>>,
}

impl RawMapping {
    fn field(&self, f: Field) -> Option<&S<String>> {
        match f {
            Field::UserName => self.user_name.as_ref(),
            Field::Email => self.email.as_ref(),
            Field::GivenName => self.given_name.as_ref(),
            Field::FamilyName => self.family_name.as_ref(),
            Field::DisplayName => self.display_name.as_ref(),
            Field::Department => self.department.as_ref(),
            Field::JobTitle => self.job_title.as_ref(),
            Field::EmployeeId => self.employee_id.as_ref(),
            Field::ManagerEmail => self.manager_email.as_ref(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFilter {
    #[serde(default)]
    pub include: Vec<S<RawClause>>,
    #[serde(default)]
    pub exclude: Vec<S<RawClause>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClause {
    pub rules: Vec<S<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub attribute: Option<S<String>>,
    pub field: Option<S<String>>,
    pub equals: Option<S<String>>,
    pub not_equals: Option<S<String>>,
    #[serde(rename = "in")]
    pub in_list: Option<S<Vec<String>>>,
    pub starts_with: Option<S<String>>,
    pub ends_with: Option<S<String>>,
    pub matches: Option<S<String>>,
    pub is_empty: Option<S<bool>>,
    pub is_not_empty: Option<S<bool>>,
    pub case_sensitive: Option<S<bool>>,
}

/// SCIM attributes the learner columns already set (see `Field::scim`) and the
/// resource's own: an extra attribute may not overwrite them.
const RESERVED: &[&str] = &[
    "id",
    "externalId",
    "userName",
    "active",
    "schemas",
    "meta",
    "emails",
    "name",
    "name.givenName",
    "name.familyName",
    "displayName",
    "title",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager",
];

/// Whether `name` is a SCIM attribute we can send: `attr`, `attr.sub`, or
/// `urn:...:<Resource>:attr[.sub]` (an extension's attribute).
fn scim_name_ok(name: &str) -> bool {
    let plain = |s: &str| {
        let mut parts = s.split('.');
        let ok = |p: &str| {
            p.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), None, _) => ok(a),
            (Some(a), Some(b), None) => ok(a) && ok(b),
            _ => false,
        }
    };
    match name.strip_prefix("urn:") {
        Some(rest) => match rest.rsplit_once(':') {
            Some((schema, attr)) => !schema.is_empty() && plain(attr),
            None => false,
        },
        None => plain(name),
    }
}

pub struct Parse<'a> {
    pub loc: &'a Locator<'a>,
    pub index: usize,
    pub kind: Kind,
    /// Whether the store is a SCIM store (only those take extra attributes).
    pub scim_store: bool,
    /// `[store] external_id` when it names a directory attribute: mapped into the
    /// extra SCIM attribute `externalId` (see `ScimExternalId::Mapped`).
    pub external_id: Option<&'a S<String>>,
}

impl Parse<'_> {
    fn key(&self, k: &str) -> String {
        format!("directory[{}].{k}", self.index)
    }

    fn err<T>(&self, at: &S<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.loc.error_at(Some(at.span()), key, message)
    }

    fn expression(
        &self,
        v: &S<String>,
        key: &str,
        attrs: &mut Attributes,
    ) -> Result<Mapped, ConfigError> {
        let text = v.get_ref().trim().to_string();
        let e = expr::parse(&text)
            .map_err(|e| self.err(v, key, format!("bad expression `{text}`: {e}")))?;
        for a in e.attributes() {
            attr::check(self.kind, a)
                .map_err(|m| self.err(v, key, format!("unknown attribute: {m}")))?;
            attrs.insert(a);
        }
        Ok(Mapped { text, expr: e })
    }

    /// The mapping and filter parts of a directory's policy.
    pub fn policy(
        &self,
        exclude_guests: bool,
        mapping: Option<&RawMapping>,
        filter: Option<&RawFilter>,
    ) -> Result<MappingPolicy, ConfigError> {
        let mut attrs = Attributes::new(self.kind);
        let mut policy = MappingPolicy {
            exclude_guests,
            ..Default::default()
        };
        if let Some(m) = mapping {
            policy.default_department = m
                .default_department
                .as_ref()
                .map(|v| v.get_ref().trim().to_string())
                .filter(|v| !v.is_empty());
            for f in Field::ALL {
                if let Some(v) = m.field(f) {
                    let key = self.key(&format!("mapping.{}", f.name()));
                    policy
                        .fields
                        .insert(f, self.expression(v, &key, &mut attrs)?);
                }
            }
            for (name, v) in &m.scim {
                let key = self.key(&format!("mapping.scim.\"{name}\""));
                if !self.scim_store {
                    return Err(self.err(
                        v,
                        &key,
                        "extra SCIM attributes need a `scim` store (the SQLite learners table has fixed columns)",
                    ));
                }
                if !scim_name_ok(name) {
                    return Err(self.err(
                        v,
                        &key,
                        "a SCIM attribute is `name`, `name.sub` or `urn:<schema>:<name>`",
                    ));
                }
                if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
                    return Err(self.err(
                        v,
                        &key,
                        "this attribute is set from a learner field; map the field instead",
                    ));
                }
                policy
                    .scim
                    .insert(name.clone(), self.expression(v, &key, &mut attrs)?);
            }
        }
        if let Some(v) = self.external_id {
            let mapped = self.expression(v, "store.external_id", &mut attrs)?;
            policy.scim.insert(EXTERNAL_ID.to_string(), mapped);
        }
        if let Some(f) = filter {
            policy.filter = Filter {
                include: self.clauses(&f.include, "include", &mut attrs)?,
                exclude: self.clauses(&f.exclude, "exclude", &mut attrs)?,
            };
        }
        policy.attributes = attrs;
        Ok(policy)
    }

    fn clauses(
        &self,
        raw: &[S<RawClause>],
        which: &str,
        attrs: &mut Attributes,
    ) -> Result<Vec<Clause>, ConfigError> {
        let mut out = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let at = self.key(&format!("filter.{which}[{i}]"));
            if c.get_ref().rules.is_empty() {
                return Err(self.err(
                    c,
                    &format!("{at}.rules"),
                    "a clause needs at least one rule",
                ));
            }
            let mut rules = Vec::new();
            for (j, r) in c.get_ref().rules.iter().enumerate() {
                rules.push(self.rule(r, &format!("{at}.rules[{j}]"), attrs)?);
            }
            out.push(Clause { rules });
        }
        Ok(out)
    }

    fn rule(
        &self,
        raw: &S<RawRule>,
        key: &str,
        attrs: &mut Attributes,
    ) -> Result<Rule, ConfigError> {
        let r = raw.get_ref();
        let subject = match (&r.attribute, &r.field) {
            (Some(a), None) => {
                let name = a.get_ref().trim();
                attr::check(self.kind, name).map_err(|m| {
                    self.err(a, &format!("{key}.attribute"), format!("unknown attribute: {m}"))
                })?;
                attrs.insert(name);
                Subject::Attribute(name.to_string())
            }
            (None, Some(f)) => Subject::Field(Field::parse(f.get_ref().trim()).ok_or_else(|| {
                self.err(
                    f,
                    &format!("{key}.field"),
                    format!(
                        "not a learner field (one of {})",
                        crate::model::FIELD_NAMES.join(", ")
                    ),
                )
            })?),
            (Some(a), Some(_)) => {
                return Err(self.err(a, key, "give either `attribute` or `field`, not both"))
            }
            (None, None) => {
                return Err(self.err(
                    raw,
                    key,
                    "a rule names an `attribute` (as the directory has it) or a `field` (a learner field after mapping)",
                ))
            }
        };
        let mut tests: Vec<(std::ops::Range<usize>, &str, Test)> = Vec::new();
        let text = |v: &S<String>| v.get_ref().clone();
        if let Some(v) = &r.equals {
            tests.push((v.span(), "equals", Test::Equals(text(v))));
        }
        if let Some(v) = &r.not_equals {
            tests.push((v.span(), "not_equals", Test::NotEquals(text(v))));
        }
        if let Some(v) = &r.in_list {
            if v.get_ref().is_empty() {
                return Err(self.err(v, &format!("{key}.in"), "`in` needs at least one value"));
            }
            tests.push((v.span(), "in", Test::In(v.get_ref().clone())));
        }
        if let Some(v) = &r.starts_with {
            tests.push((v.span(), "starts_with", Test::StartsWith(text(v))));
        }
        if let Some(v) = &r.ends_with {
            tests.push((v.span(), "ends_with", Test::EndsWith(text(v))));
        }
        if let Some(v) = &r.matches {
            let re = regex::Regex::new(v.get_ref()).map_err(|e| {
                // The regex crate's message spans lines; the first names the problem.
                let first = e
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                self.err(v, &format!("{key}.matches"), format!("bad regex: {first}"))
            })?;
            tests.push((v.span(), "matches", Test::Matches(re)));
        }
        for (v, name, test) in [
            (&r.is_empty, "is_empty", Test::IsEmpty),
            (&r.is_not_empty, "is_not_empty", Test::IsNotEmpty),
        ] {
            if let Some(v) = v {
                if !*v.get_ref() {
                    return Err(self.err(
                        v,
                        &format!("{key}.{name}"),
                        format!("write `{name} = true`, or leave it out"),
                    ));
                }
                tests.push((v.span(), name, test));
            }
        }
        let ops = "equals, not_equals, in, starts_with, ends_with, matches, is_empty, is_not_empty";
        let test = match tests.len() {
            0 => return Err(self.err(raw, key, format!("a rule needs one test: {ops}"))),
            1 => tests.remove(0).2,
            _ => {
                let (span, name, _) = &tests[1];
                return Err(self.loc.error_at(
                    Some(span.clone()),
                    format!("{key}.{name}"),
                    "one test per rule: put a second one in another rule of the clause",
                ));
            }
        };
        Ok(Rule {
            subject,
            test,
            case_sensitive: r.case_sensitive.as_ref().is_some_and(|v| *v.get_ref()),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(kind: &str, store: &str, tail: &str) -> Result<Config, String> {
        let dir = match kind {
            "csv" => "kind = \"csv\"\npath = \"u.csv\"\n",
            _ => "kind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = { env = \"S\" }\n",
        };
        let text = format!("{store}[[directory]]\nname = \"d\"\n{dir}{tail}");
        Config::parse(Path::new("/etc/ls/config.toml"), &text).map_err(|e| e.to_string())
    }

    const SCIM: &str =
        "[store]\nkind = \"scim\"\nurl = \"https://scim.example/scim\"\ntoken = { env = \"T\" }\n";

    #[test]
    fn mappings_and_filters_parse_into_the_policy() {
        let c = parse(
            "entra",
            SCIM,
            r#"[directory.mapping]
department = "coalesce(onPremisesExtensionAttributes.extensionAttribute3, department)"
[directory.mapping.scim]
"urn:ietf:params:scim:schemas:extension:knowbe4:kmsat:2.0:User:customField1" = "companyName"
[[directory.filter.exclude]]
rules = [{ attribute = "userType", equals = "Guest" }]
[[directory.filter.exclude]]
rules = [{ attribute = "userPrincipalName", matches = "^(room|svc)-" }, { field = "department", is_empty = true }]
"#,
        )
        .unwrap();
        let p = &c.directories[0].mapping;
        assert_eq!(p.fields.len(), 1);
        assert_eq!(p.scim.len(), 1);
        assert_eq!(p.filter.exclude.len(), 2);
        let attrs: Vec<&str> = p.attributes.paths().collect();
        assert_eq!(
            attrs,
            [
                "companyName",
                "department",
                "onPremisesExtensionAttributes.extensionAttribute3",
                "userPrincipalName",
                "userType"
            ]
        );
    }

    #[test]
    fn bad_mappings_and_rules_name_file_line_and_key() {
        let table: &[(&str, &str, &str, &str)] = &[
            (
                "entra",
                "",
                "[directory.mapping]\ndepartment = \"coalesce(companyName\"\n",
                "/etc/ls/config.toml:8: directory[0].mapping.department: bad expression `coalesce(companyName`: at character 21: expected `,` or `)` in coalesce(...)",
            ),
            (
                "entra",
                "",
                "[directory.mapping]\n\njob_title = \"lower(costCentre)\"\n",
                "/etc/ls/config.toml:9: directory[0].mapping.job_title: unknown attribute: `costCentre` is not a Microsoft Graph user property",
            ),
            (
                "csv",
                "",
                "[directory.mapping]\n[directory.mapping.scim]\nnickName = \"x\"\n",
                "/etc/ls/config.toml:7: directory[0].mapping.scim.\"nickName\": extra SCIM attributes need a `scim` store",
            ),
            (
                "csv",
                SCIM,
                "[directory.mapping.scim]\nuserName = \"x\"\n",
                "directory[0].mapping.scim.\"userName\": this attribute is set from a learner field",
            ),
            (
                "entra",
                "",
                "[[directory.filter.include]]\nrules = [{ attribute = \"country\" }]\n",
                ":8: directory[0].filter.include[0].rules[0]: a rule needs one test",
            ),
            (
                "entra",
                "",
                "[[directory.filter.include]]\nrules = [{ attribute = \"country\", equals = \"DE\", in = [\"AT\"] }]\n",
                ":8: directory[0].filter.include[0].rules[0].in: one test per rule",
            ),
            (
                "entra",
                "",
                "[[directory.filter.exclude]]\nrules = [\n  { attribute = \"userPrincipalName\", matches = \"(room\" },\n]\n",
                ":9: directory[0].filter.exclude[0].rules[0].matches: bad regex",
            ),
            (
                "entra",
                "",
                "[[directory.filter.exclude]]\nrules = [{ field = \"dept\", is_empty = true }]\n",
                "directory[0].filter.exclude[0].rules[0].field: not a learner field",
            ),
            (
                "entra",
                "",
                "[[directory.filter.exclude]]\nrules = [{ attribute = \"shoeSize\", is_empty = true }]\n",
                "directory[0].filter.exclude[0].rules[0].attribute: unknown attribute",
            ),
            (
                "entra",
                "",
                "[[directory.filter.exclude]]\nrules = []\n",
                "directory[0].filter.exclude[0].rules: a clause needs at least one rule",
            ),
        ];
        for (kind, store, tail, want) in table {
            let err = parse(kind, store, tail).unwrap_err();
            assert!(err.contains(want), "{tail}\n got: {err}\nwant: {want}");
        }
    }
}
