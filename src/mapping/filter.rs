//! Scoping filters (Entra's "scoping filters"): which users of the scope become learners.
//!
//! A filter is `include` and `exclude` clauses; the rules of one clause all have to
//! hold (AND), and any one clause is enough (OR). A user passes when no `include`
//! clause is given or one matches, and no `exclude` clause matches.

/// What a rule tests: a learner field after mapping (`field = "department"`) or a source
/// attribute as the directory has it (`attribute = "userType"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    Field(crate::model::Field),
    Attribute(String),
}

/// A rule's test of one value (absent and blank values are empty).
#[derive(Debug, Clone)]
pub enum Test {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    StartsWith(String),
    EndsWith(String),
    Matches(regex::Regex),
    IsEmpty,
    IsNotEmpty,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub subject: Subject,
    pub test: Test,
    /// Compare case-sensitively; off by default, as directory values (UPNs,
    /// `userType`, countries) are compared by admins. `matches` uses the regex as written.
    pub case_sensitive: bool,
}

/// One clause: every rule must hold.
#[derive(Debug, Clone, Default)]
pub struct Clause {
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub include: Vec<Clause>,
    pub exclude: Vec<Clause>,
}

impl PartialEq for Filter {
    /// Filters compare by what they say (a regex by its text).
    fn eq(&self, other: &Filter) -> bool {
        self.describe() == other.describe()
    }
}

impl Rule {
    pub fn holds(&self, value: Option<&str>) -> bool {
        let value = value.map(str::trim).filter(|v| !v.is_empty());
        let eq = |a: &str, b: &str| {
            if self.case_sensitive {
                a == b
            } else {
                a.to_lowercase() == b.to_lowercase()
            }
        };
        let fold = |s: &str| {
            if self.case_sensitive {
                s.to_string()
            } else {
                s.to_lowercase()
            }
        };
        let v = value.unwrap_or("");
        match &self.test {
            Test::Equals(want) => eq(v, want),
            Test::NotEquals(want) => !eq(v, want),
            Test::In(list) => list.iter().any(|w| eq(v, w)),
            Test::StartsWith(p) => value.is_some() && fold(v).starts_with(&fold(p)),
            Test::EndsWith(s) => value.is_some() && fold(v).ends_with(&fold(s)),
            Test::Matches(re) => re.is_match(v),
            Test::IsEmpty => value.is_none(),
            Test::IsNotEmpty => value.is_some(),
        }
    }

    fn describe(&self) -> String {
        let subject = match &self.subject {
            Subject::Field(f) => format!("field {}", f.name()),
            Subject::Attribute(a) => format!("attribute {a}"),
        };
        let test = match &self.test {
            Test::Equals(v) => format!("equals {v:?}"),
            Test::NotEquals(v) => format!("not_equals {v:?}"),
            Test::In(v) => format!("in {v:?}"),
            Test::StartsWith(v) => format!("starts_with {v:?}"),
            Test::EndsWith(v) => format!("ends_with {v:?}"),
            Test::Matches(re) => format!("matches {:?}", re.as_str()),
            Test::IsEmpty => "is_empty".into(),
            Test::IsNotEmpty => "is_not_empty".into(),
        };
        let case = if self.case_sensitive {
            " case_sensitive"
        } else {
            ""
        };
        format!("{subject} {test}{case}")
    }
}

impl Clause {
    pub fn matches(&self, value: &dyn Fn(&Subject) -> Option<String>) -> bool {
        self.rules
            .iter()
            .all(|r| r.holds(value(&r.subject).as_deref()))
    }
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether a user passes; `value` reads a rule's subject for that user.
    pub fn passes(&self, value: &dyn Fn(&Subject) -> Option<String>) -> bool {
        let included = self.include.is_empty() || self.include.iter().any(|c| c.matches(value));
        included && !self.exclude.iter().any(|c| c.matches(value))
    }

    /// Every source attribute a rule reads.
    pub fn attributes(&self) -> impl Iterator<Item = &str> {
        self.include
            .iter()
            .chain(&self.exclude)
            .flat_map(|c| &c.rules)
            .filter_map(|r| match &r.subject {
                Subject::Attribute(a) => Some(a.as_str()),
                Subject::Field(_) => None,
            })
    }

    /// A stable text of the whole filter (what a change of it is detected by).
    pub fn describe(&self) -> String {
        let clauses = |name: &str, cs: &[Clause]| -> Vec<String> {
            cs.iter()
                .map(|c| {
                    let rules: Vec<String> = c.rules.iter().map(Rule::describe).collect();
                    format!("{name}({})", rules.join(" and "))
                })
                .collect()
        };
        let mut all = clauses("include", &self.include);
        all.extend(clauses("exclude", &self.exclude));
        all.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Field;
    use std::collections::BTreeMap;

    fn rule(attr: &str, test: Test) -> Rule {
        Rule {
            subject: Subject::Attribute(attr.into()),
            test,
            case_sensitive: false,
        }
    }

    #[test]
    fn each_operator_holds_as_the_table_says() {
        let s = |v: &str| v.to_string();
        let re = |r: &str| Test::Matches(regex::Regex::new(r).unwrap());
        let table: Vec<(Test, Option<&str>, bool)> = vec![
            (Test::Equals(s("Guest")), Some("guest"), true),
            (Test::Equals(s("Guest")), Some("Member"), false),
            (Test::Equals(s("")), None, true),
            (Test::NotEquals(s("Guest")), Some("Member"), true),
            (Test::NotEquals(s("Guest")), None, true),
            (Test::NotEquals(s("Guest")), Some("GUEST"), false),
            (Test::In(vec![s("DE"), s("AT")]), Some("at"), true),
            (Test::In(vec![s("DE"), s("AT")]), Some("CH"), false),
            (Test::In(vec![s("DE")]), None, false),
            (Test::StartsWith(s("room-")), Some("Room-4.01@x"), true),
            (Test::StartsWith(s("room-")), Some("ada@x"), false),
            (Test::StartsWith(s("")), None, false),
            (
                Test::EndsWith(s("@svc.contoso.com")),
                Some("backup@SVC.contoso.com"),
                true,
            ),
            (
                Test::EndsWith(s("@svc.contoso.com")),
                Some("ada@contoso.com"),
                false,
            ),
            (re(r"^(svc|sa)[-_]"), Some("svc-backup@x"), true),
            (re(r"^(svc|sa)[-_]"), Some("Svc-backup@x"), false),
            (re(r"(?i)^(svc|sa)[-_]"), Some("Svc-backup@x"), true),
            (re(r"^$"), None, true),
            (Test::IsEmpty, None, true),
            (Test::IsEmpty, Some("  "), true),
            (Test::IsEmpty, Some("x"), false),
            (Test::IsNotEmpty, Some("x"), true),
            (Test::IsNotEmpty, None, false),
        ];
        for (test, value, want) in table {
            let r = rule("a", test);
            assert_eq!(r.holds(value), want, "{} on {value:?}", r.describe());
        }
        let strict = Rule {
            case_sensitive: true,
            ..rule("a", Test::Equals(s("Guest")))
        };
        assert!(!strict.holds(Some("guest")));
        assert!(strict.holds(Some("Guest")));
    }

    #[test]
    fn rules_and_within_a_clause_clauses_or_and_exclude_wins() {
        let user = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let filter = Filter {
            include: vec![
                Clause {
                    rules: vec![
                        rule("country", Test::Equals("DE".into())),
                        rule("companyName", Test::Equals("Contoso".into())),
                    ],
                },
                Clause {
                    rules: vec![Rule {
                        subject: Subject::Field(Field::Department),
                        test: Test::Equals("Security".into()),
                        case_sensitive: false,
                    }],
                },
            ],
            exclude: vec![Clause {
                rules: vec![rule("userType", Test::Equals("Guest".into()))],
            }],
        };
        let passes = |u: BTreeMap<String, String>| {
            filter.passes(&|s| match s {
                Subject::Attribute(a) => u.get(a).cloned(),
                Subject::Field(f) => u.get(f.name()).cloned(),
            })
        };
        let table = [
            (user(&[("country", "DE"), ("companyName", "Contoso")]), true),
            (
                user(&[("country", "DE"), ("companyName", "Fabrikam")]),
                false,
            ),
            (user(&[("country", "FR"), ("department", "security")]), true),
            (
                user(&[
                    ("country", "DE"),
                    ("companyName", "Contoso"),
                    ("userType", "Guest"),
                ]),
                false,
            ),
            (user(&[]), false),
        ];
        for (u, want) in table {
            assert_eq!(passes(u.clone()), want, "{u:?}");
        }
        let only_exclude = Filter {
            include: vec![],
            exclude: filter.exclude.clone(),
        };
        assert!(
            only_exclude.passes(&|_| None),
            "no include clause: everyone is in"
        );
        assert!(Filter::default().passes(&|_| None));
        assert_eq!(
            filter.attributes().collect::<Vec<_>>(),
            ["country", "companyName", "userType"]
        );
    }
}
