//! The mapping expression language: parsed once from the config, evaluated per user.
//!
//! An expression is an attribute reference (`department`,
//! `onPremisesExtensionAttributes.extensionAttribute3`, `organizations[primary].costCenter`),
//! a string constant (`"Staff"` or `'Staff'`), a whole number (for `part`), or a call:
//! `coalesce(a, b, ...)`, `lower(a)`, `upper(a)`, `trim(a)`, `join(sep, a, b, ...)`,
//! `part(split(a, sep), n)` or `split(a, sep, n)`, `replace(a, from, to)`, `if_empty(a, b)`.
//! A value is a string or nothing; an empty string counts as nothing, so `coalesce`
//! and `if_empty` skip blanks and `join` leaves them out.

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Const(String),
    Attr(String),
    Coalesce(Vec<Expr>),
    Lower(Box<Expr>),
    Upper(Box<Expr>),
    Trim(Box<Expr>),
    Join(Box<Expr>, Vec<Expr>),
    /// The `n`th part (1-based; negative counts from the end) of `a` split at `sep`.
    Part {
        value: Box<Expr>,
        sep: Box<Expr>,
        n: i64,
    },
    Replace(Box<Expr>, Box<Expr>, Box<Expr>),
    IfEmpty(Box<Expr>, Box<Expr>),
}

/// Why an expression does not parse: what and where (a 1-based character position).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

/// A token's text and where it starts.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Str(String),
    Num(i64),
    Name(String),
    Open,
    Close,
    Comma,
}

fn lex(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let err = |at: usize, m: &str| ParseError {
        at: at + 1,
        message: m.to_string(),
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((i, Token::Open));
                i += 1;
            }
            ')' => {
                out.push((i, Token::Close));
                i += 1;
            }
            ',' => {
                out.push((i, Token::Comma));
                i += 1;
            }
            '"' | '\'' => {
                let start = i;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(err(start, "a string constant is not closed")),
                        Some('\\') => match chars.get(i + 1) {
                            Some(n @ ('\\' | '"' | '\'')) => {
                                s.push(*n);
                                i += 2;
                            }
                            _ => {
                                return Err(err(
                                    i,
                                    "only \\\\, \\\" and \\' are escapes in a string constant",
                                ))
                            }
                        },
                        Some(q) if *q == c => {
                            i += 1;
                            break;
                        }
                        Some(other) => {
                            s.push(*other);
                            i += 1;
                        }
                    }
                }
                out.push((start, Token::Str(s)));
            }
            c if c == '-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while chars.get(i).is_some_and(|d| d.is_ascii_digit()) {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                // A name may start with digits (a CSV column `2fa`): only all digits is a number.
                if chars.get(i).is_some_and(|&d| name_char(d)) {
                    let (end, name) = name_from(&chars, start)?;
                    i = end;
                    out.push((start, Token::Name(name)));
                    continue;
                }
                let n = digits
                    .parse::<i64>()
                    .map_err(|_| err(start, "not a whole number"))?;
                out.push((start, Token::Num(n)));
            }
            c if name_char(c) => {
                let start = i;
                let (end, name) = name_from(&chars, start)?;
                i = end;
                out.push((start, Token::Name(name)));
            }
            other => return Err(err(i, &format!("unexpected `{other}`"))),
        }
    }
    Ok(out)
}

/// Characters of an attribute name outside brackets: Graph's `extension_<app>_<name>`,
/// dotted paths, SCIM-ish `a:b`, CSV column names with `-`.
fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '.' | '-' | ':' | '@' | '$')
}

/// A name from `start`, brackets (`[primary]`, `[type=work]`) included whole.
fn name_from(chars: &[char], start: usize) -> Result<(usize, String), ParseError> {
    let mut i = start;
    let mut name = String::new();
    while let Some(&c) = chars.get(i) {
        if name_char(c) {
            name.push(c);
            i += 1;
        } else if c == '[' {
            let open = i;
            while chars.get(i).is_some_and(|&c| c != ']') {
                name.push(chars[i]);
                i += 1;
            }
            if chars.get(i).is_none() {
                return Err(ParseError {
                    at: open + 1,
                    message: "`[` is not closed by `]`".into(),
                });
            }
            name.push(']');
            i += 1;
        } else {
            break;
        }
    }
    Ok((i, name))
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    /// Characters in the text, for errors at its end.
    len: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.tokens
            .get(self.pos)
            .map(|(at, _)| at + 1)
            .unwrap_or(self.len + 1)
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn expr(&mut self) -> Result<Arg, ParseError> {
        let start = self.at();
        match self.next() {
            Some(Token::Str(s)) => Ok(Arg::Expr(Expr::Const(s))),
            Some(Token::Num(n)) => Ok(Arg::Num(n)),
            Some(Token::Name(name)) if self.peek() == Some(&Token::Open) => {
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() == Some(&Token::Close) {
                    self.pos += 1;
                } else {
                    loop {
                        args.push(self.expr()?);
                        match self.next() {
                            Some(Token::Comma) => {}
                            Some(Token::Close) => break,
                            _ => {
                                self.pos -= 1;
                                return self.fail(format!("expected `,` or `)` in {name}(...)"));
                            }
                        }
                    }
                }
                call(&name, args, start)
            }
            Some(Token::Name(name)) => Ok(Arg::Expr(Expr::Attr(name))),
            Some(_) => {
                self.pos -= 1;
                self.fail("expected an attribute, a \"constant\" or a function call")
            }
            None => self.fail("the expression ends early"),
        }
    }
}

/// A parsed argument: an expression, or a number (only `part` and `split` take one).
enum Arg {
    Expr(Expr),
    Num(i64),
}

const FUNCTIONS: &str = "coalesce, lower, upper, trim, join, split, part, replace, if_empty";

fn call(name: &str, args: Vec<Arg>, at: usize) -> Result<Arg, ParseError> {
    let fail = |message: String| Err(ParseError { at, message });
    let count = args.len();
    let arity = |want: &str| format!("{name}() takes {want}, not {count}");
    // Every argument but a number, which only `part` and `split` take (checked there).
    let exprs = |args: Vec<Arg>| -> Result<Vec<Expr>, ParseError> {
        args.into_iter()
            .map(|a| match a {
                Arg::Expr(e) => Ok(e),
                Arg::Num(n) => Ok(Expr::Const(n.to_string())),
            })
            .collect()
    };
    let one = |args: Vec<Arg>| -> Result<Box<Expr>, ParseError> {
        let mut v = exprs(args)?;
        Ok(Box::new(v.remove(0)))
    };
    let expr = match name {
        "coalesce" if count >= 1 => Expr::Coalesce(exprs(args)?),
        "coalesce" => return fail(arity("at least one argument")),
        "lower" | "upper" | "trim" if count == 1 => {
            let a = one(args)?;
            match name {
                "lower" => Expr::Lower(a),
                "upper" => Expr::Upper(a),
                _ => Expr::Trim(a),
            }
        }
        "lower" | "upper" | "trim" => return fail(arity("one argument")),
        "join" if count >= 2 => {
            let mut v = exprs(args)?;
            let sep = v.remove(0);
            Expr::Join(Box::new(sep), v)
        }
        "join" => return fail(arity("a separator and at least one value")),
        "replace" if count == 3 => {
            let mut v = exprs(args)?.into_iter();
            match (v.next(), v.next(), v.next()) {
                (Some(a), Some(from), Some(to)) => {
                    Expr::Replace(Box::new(a), Box::new(from), Box::new(to))
                }
                _ => return fail(arity("three arguments")),
            }
        }
        "replace" => return fail(arity("three arguments (value, from, to)")),
        "if_empty" if count == 2 => {
            let mut v = exprs(args)?.into_iter();
            match (v.next(), v.next()) {
                (Some(a), Some(b)) => Expr::IfEmpty(Box::new(a), Box::new(b)),
                _ => return fail(arity("two arguments")),
            }
        }
        "if_empty" => return fail(arity("two arguments (value, fallback)")),
        "split" if count == 3 => {
            let mut it = args.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(Arg::Expr(value)), Some(Arg::Expr(sep)), Some(Arg::Num(n))) => {
                    part(value, sep, n, at)?
                }
                _ => return fail("split(value, separator, n) takes a whole number n".into()),
            }
        }
        "split" if count == 2 => {
            // Only meaningful inside part(): a split keeps its pieces until then.
            let mut v = exprs(args)?.into_iter();
            match (v.next(), v.next()) {
                (Some(value), Some(sep)) => {
                    return Ok(Arg::Expr(Expr::Part {
                        value: Box::new(value),
                        sep: Box::new(sep),
                        n: 0,
                    }))
                }
                _ => return fail(arity("two or three arguments")),
            }
        }
        "split" => return fail(arity("two or three arguments")),
        "part" if count == 2 => {
            let mut it = args.into_iter();
            match (it.next(), it.next()) {
                (Some(Arg::Expr(Expr::Part { value, sep, n: 0 })), Some(Arg::Num(n))) => {
                    part(*value, *sep, n, at)?
                }
                (Some(Arg::Expr(_)), Some(Arg::Num(_))) => {
                    return fail("part() takes split(value, separator) and a number".into())
                }
                _ => return fail("part(split(value, separator), n) takes a whole number n".into()),
            }
        }
        "part" => return fail(arity("two arguments")),
        other => return fail(format!("unknown function `{other}` (known: {FUNCTIONS})")),
    };
    Ok(Arg::Expr(expr))
}

fn part(value: Expr, sep: Expr, n: i64, at: usize) -> Result<Expr, ParseError> {
    if n == 0 {
        return Err(ParseError {
            at,
            message: "parts count from 1 (or from -1 at the end), not 0".into(),
        });
    }
    Ok(Expr::Part {
        value: Box::new(value),
        sep: Box::new(sep),
        n,
    })
}

/// Parse one expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        len: text.chars().count(),
    };
    let e = match p.expr()? {
        Arg::Expr(Expr::Part { n: 0, .. }) => {
            return Err(ParseError {
                at: 1,
                message: "split(value, separator) needs a part: part(split(...), n) or split(value, separator, n)".into(),
            })
        }
        Arg::Expr(e) => e,
        Arg::Num(n) => Expr::Const(n.to_string()),
    };
    if p.pos < p.tokens.len() {
        return p.fail("unexpected text after the expression");
    }
    check_splits(&e)?;
    Ok(e)
}

/// A bare `split(a, sep)` anywhere but directly in `part()` has no single value.
fn check_splits(e: &Expr) -> Result<(), ParseError> {
    let bad = ParseError {
        at: 1,
        message: "split(value, separator) needs a part: part(split(...), n) or split(value, separator, n)".into(),
    };
    match e {
        Expr::Part { n: 0, .. } => Err(bad),
        Expr::Const(_) | Expr::Attr(_) => Ok(()),
        Expr::Lower(a) | Expr::Upper(a) | Expr::Trim(a) => check_splits(a),
        Expr::Coalesce(v) => v.iter().try_for_each(check_splits),
        Expr::Join(s, v) => {
            check_splits(s)?;
            v.iter().try_for_each(check_splits)
        }
        Expr::Part { value, sep, .. } => {
            check_splits(value)?;
            check_splits(sep)
        }
        Expr::Replace(a, b, c) => {
            check_splits(a)?;
            check_splits(b)?;
            check_splits(c)
        }
        Expr::IfEmpty(a, b) => {
            check_splits(a)?;
            check_splits(b)
        }
    }
}

impl Expr {
    /// Every attribute the expression reads, in order of first use.
    pub fn attributes(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a str>) {
        let mut add = |e: &'a Expr| e.collect(out);
        match self {
            Expr::Const(_) => {}
            Expr::Attr(a) => {
                if !out.contains(&a.as_str()) {
                    out.push(a)
                }
            }
            Expr::Lower(a) | Expr::Upper(a) | Expr::Trim(a) => add(a),
            Expr::Coalesce(v) => v.iter().for_each(add),
            Expr::Join(s, v) => {
                add(s);
                v.iter().for_each(add);
            }
            Expr::Part { value, sep, .. } => {
                add(value);
                add(sep);
            }
            Expr::Replace(a, b, c) => {
                add(a);
                add(b);
                add(c);
            }
            Expr::IfEmpty(a, b) => {
                add(a);
                add(b);
            }
        }
    }

    /// The value for one user; `attr` reads a source attribute (`None`: not set).
    pub fn eval(&self, attr: &dyn Fn(&str) -> Option<String>) -> Option<String> {
        let some = |s: String| Some(s).filter(|s| !s.is_empty());
        match self {
            Expr::Const(c) => some(c.clone()),
            Expr::Attr(a) => attr(a).and_then(some),
            Expr::Coalesce(v) => v.iter().find_map(|e| e.eval(attr)),
            Expr::Lower(a) => a.eval(attr).map(|s| s.to_lowercase()),
            Expr::Upper(a) => a.eval(attr).map(|s| s.to_uppercase()),
            Expr::Trim(a) => a.eval(attr).and_then(|s| some(s.trim().to_string())),
            Expr::Join(sep, v) => {
                let sep = sep.eval(attr).unwrap_or_default();
                let parts: Vec<String> = v.iter().filter_map(|e| e.eval(attr)).collect();
                some(parts.join(&sep))
            }
            Expr::Part { value, sep, n } => {
                let value = value.eval(attr)?;
                let sep = sep.eval(attr).unwrap_or_default();
                let parts: Vec<&str> = if sep.is_empty() {
                    vec![value.as_str()]
                } else {
                    value.split(sep.as_str()).collect()
                };
                let index = if *n > 0 {
                    usize::try_from(n - 1).ok()?
                } else {
                    parts
                        .len()
                        .checked_sub(usize::try_from(n.unsigned_abs()).ok()?)?
                };
                parts.get(index).and_then(|p| some(p.to_string()))
            }
            Expr::Replace(a, from, to) => {
                let a = a.eval(attr)?;
                match from.eval(attr) {
                    Some(from) => some(a.replace(&from, &to.eval(attr).unwrap_or_default())),
                    None => Some(a),
                }
            }
            Expr::IfEmpty(a, b) => a.eval(attr).or_else(|| b.eval(attr)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn eval(text: &str) -> Option<String> {
        let attrs: BTreeMap<&str, &str> = BTreeMap::from([
            ("upn", "Ada.Lovelace@Contoso.com"),
            ("given", "Ada"),
            ("family", "Lovelace"),
            ("blank", "   "),
            ("empty", ""),
            ("onPremisesExtensionAttributes.extensionAttribute3", "R&D"),
            ("organizations[primary].costCenter", "CC-42"),
            ("2fa", "yes"),
        ]);
        let e = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        e.eval(&|a| attrs.get(a).map(|v| v.to_string()))
    }

    #[test]
    fn expressions_evaluate_as_the_table_says() {
        let table: &[(&str, Option<&str>)] = &[
            ("upn", Some("Ada.Lovelace@Contoso.com")),
            ("missing", None),
            ("empty", None),
            ("\"Staff\"", Some("Staff")),
            ("'Staff'", Some("Staff")),
            (r#""say \"hi\"""#, Some("say \"hi\"")),
            ("\"\"", None),
            ("onPremisesExtensionAttributes.extensionAttribute3", Some("R&D")),
            ("organizations[primary].costCenter", Some("CC-42")),
            ("2fa", Some("yes")),
            ("coalesce(missing, empty, family, given)", Some("Lovelace")),
            ("coalesce(missing, 'fallback')", Some("fallback")),
            ("coalesce(missing)", None),
            ("lower(upn)", Some("ada.lovelace@contoso.com")),
            ("upper(given)", Some("ADA")),
            ("trim(blank)", None),
            ("trim('  x ')", Some("x")),
            ("join(' ', given, missing, family)", Some("Ada Lovelace")),
            ("join(', ', missing)", None),
            ("join('', given, family)", Some("AdaLovelace")),
            ("part(split(upn, '@'), 1)", Some("Ada.Lovelace")),
            ("part(split(upn, '@'), 2)", Some("Contoso.com")),
            ("part(split(upn, '@'), 3)", None),
            ("part(split(upn, '.'), -1)", Some("com")),
            ("part(split(upn, '.'), -4)", None),
            ("split(upn, '@', 1)", Some("Ada.Lovelace")),
            ("lower(split(upn, '@', 2))", Some("contoso.com")),
            ("replace(upn, 'Contoso.com', 'fabrikam.example')", Some("Ada.Lovelace@fabrikam.example")),
            ("replace(upn, missing, 'x')", Some("Ada.Lovelace@Contoso.com")),
            ("replace(given, 'Ada', '')", None),
            ("if_empty(missing, 'none')", Some("none")),
            ("if_empty(given, 'none')", Some("Ada")),
            ("if_empty(trim(blank), family)", Some("Lovelace")),
            (
                "coalesce(onPremisesExtensionAttributes.extensionAttribute9, upper(part(split(upn, '@'), 2)))",
                Some("CONTOSO.COM"),
            ),
        ];
        for (text, want) in table {
            assert_eq!(eval(text).as_deref(), *want, "{text}");
        }
    }

    #[test]
    fn bad_expressions_say_what_and_where() {
        let table: &[(&str, &str)] = &[
            ("", "at character 1: the expression ends early"),
            ("lower(", "at character 7: the expression ends early"),
            (
                "lower(upn",
                "at character 10: expected `,` or `)` in lower(...)",
            ),
            (
                "lower(upn, given)",
                "at character 1: lower() takes one argument, not 2",
            ),
            (
                "upn given",
                "at character 5: unexpected text after the expression",
            ),
            ("'open", "at character 1: a string constant is not closed"),
            (
                "frobnicate(upn)",
                "at character 1: unknown function `frobnicate`",
            ),
            (
                "coalesce()",
                "at character 1: coalesce() takes at least one argument, not 0",
            ),
            (
                "join(' ')",
                "at character 1: join() takes a separator and at least one value, not 1",
            ),
            ("split(upn, '@')", "needs a part"),
            ("lower(split(upn, '@'))", "needs a part"),
            ("part(split(upn, '@'), 0)", "parts count from 1"),
            (
                "part(upn, 1)",
                "part() takes split(value, separator) and a number",
            ),
            ("split(upn, '@', given)", "takes a whole number n"),
            (
                "organizations[primary.costCenter",
                "at character 14: `[` is not closed by `]`",
            ),
            (
                "lower(upn))",
                "at character 11: unexpected text after the expression",
            ),
            ("a ; b", "at character 3: unexpected `;`"),
            ("replace(upn, 'a')", "replace() takes three arguments"),
            ("if_empty(upn)", "if_empty() takes two arguments"),
        ];
        for (text, want) in table {
            let got = parse(text)
                .map(|e| format!("{e:?}"))
                .unwrap_err()
                .to_string();
            assert!(got.contains(want), "{text}: got {got}, want {want}");
        }
    }

    #[test]
    fn attributes_lists_each_reference_once_in_order() {
        let e = parse("coalesce(b, join(' ', a, b), lower('c'), d[type=x])").unwrap();
        assert_eq!(e.attributes(), vec!["b", "a", "d[type=x]"]);
    }
}
