//! The `csv` source: a file exported from an HR system (format in README).
//!
//! The whole file is validated before anything is returned: a bad row rejects the
//! file with its line number, so a half-read file can never deactivate anyone.
//! A file whose last record has no line break after it is refused too: that is how a
//! file cut short mid-write or mid-copy looks, where the cut falls after a complete row.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;

use crate::check::CheckLine;
use crate::model::{AccountState, DirectoryUser, LearnerFields, FIELD_NAMES};
use crate::source::{Listing, ReadRequest, Scope, SourceError, SourceRead};

pub struct CsvSource {
    path: PathBuf,
    /// Columns the mappings and filters read, beyond the learner columns.
    attributes: crate::mapping::Attributes,
}

impl CsvSource {
    pub fn new(path: PathBuf) -> Self {
        CsvSource {
            path,
            attributes: Default::default(),
        }
    }

    /// Read (and allow) the columns the directory's mappings and filters name.
    pub fn with_attributes(mut self, attributes: crate::mapping::Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Provision on demand: the row whose `external_id`, `user_name` or `email` is
    /// `who` (emails and user names compared without case). The whole file is read and
    /// checked, as for a run, so a broken file is refused here too.
    pub async fn read_one(
        &mut self,
        who: &str,
    ) -> Result<Option<crate::source::one::OneUser>, SourceError> {
        let path = self.path.clone();
        let attributes = self.attributes.clone();
        let users = tokio::task::spawn_blocking(move || read_file_with(&path, &attributes))
            .await
            .map_err(|e| SourceError::Other(format!("csv reader stopped: {e}")))??;
        let same = |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(who));
        let found = users.into_iter().find_map(|u| {
            let by = if u.external_id == who {
                "external_id"
            } else if u.fields.user_name.eq_ignore_ascii_case(who) {
                "user_name"
            } else if same(&u.fields.email) {
                "email"
            } else {
                return None;
            };
            Some((u, by))
        });
        Ok(found.map(|(user, matched_by)| crate::source::one::OneUser {
            user,
            matched_by,
            in_scope: true,
            scope: "a CSV directory has no scope: every row is in scope".to_string(),
            requests: 0,
        }))
    }

    pub async fn read(&mut self, _req: ReadRequest<'_>) -> Result<SourceRead, SourceError> {
        let path = self.path.clone();
        let attributes = self.attributes.clone();
        let users = tokio::task::spawn_blocking(move || read_file_with(&path, &attributes))
            .await
            .map_err(|e| SourceError::Other(format!("csv reader stopped: {e}")))??;
        Ok(SourceRead {
            listing: Listing::Complete(users),
            scope: Scope::All,
            next_cursor: None,
            requests: 0,
        })
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        let path = self.path.clone();
        let attributes = self.attributes.clone();
        let result = tokio::task::spawn_blocking(move || read_file_with(&path, &attributes)).await;
        let line = match result {
            Ok(Ok(users)) => CheckLine::ok(format!(
                "{} readable, {} users",
                self.path.display(),
                users.len()
            )),
            Ok(Err(e)) => CheckLine::failed(
                e.to_string(),
                "fix the file (header row with external_id and user_name, UTF-8, RFC 4180 quoting)",
            ),
            Err(e) => CheckLine::failed(e.to_string(), "retry"),
        };
        vec![line]
    }
}

/// The columns a file may have: identity, the learner columns, and `active`.
fn allowed_columns() -> impl Iterator<Item = &'static str> {
    std::iter::once("external_id")
        .chain(FIELD_NAMES)
        .chain(std::iter::once("active"))
}

/// Read and validate the whole file.
pub fn read_file(path: &std::path::Path) -> Result<Vec<DirectoryUser>, SourceError> {
    read_file_with(path, &Default::default())
}

/// Read and validate the whole file, keeping the columns `attributes` names.
pub fn read_file_with(
    path: &std::path::Path,
    attributes: &crate::mapping::Attributes,
) -> Result<Vec<DirectoryUser>, SourceError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SourceError::Io {
        path: shown.clone(),
        source,
    })?;
    parse_with(std::io::BufReader::new(file), &shown, attributes)
}

/// What the reader has seen of the raw bytes: where each line-break byte is (to
/// number lines by byte offset; the csv crate's own line count is one short per
/// CRLF) and the last byte (to tell a file that ends with a line break).
#[derive(Default)]
struct Seen {
    /// Offsets of `\r` and `\n` bytes not yet passed by a record, and which it is.
    breaks: VecDeque<(u64, bool)>,
    /// `\n` bytes before the oldest one in `breaks`.
    passed: u64,
    read: u64,
    last: Option<u8>,
}

impl Seen {
    /// The 1-based line of a record starting at byte `offset`. Offsets must not go
    /// backwards. The csv crate may start a record at the line breaks before it (the
    /// `\n` of a CRLF, blank lines), so the record's line is that of its first byte
    /// that is not a line break.
    fn line_at(&mut self, offset: u64) -> u64 {
        let mut at = offset;
        while let Some(&(b, newline)) = self.breaks.front() {
            if b > at {
                break;
            }
            if b == at {
                at += 1;
            }
            self.breaks.pop_front();
            self.passed += u64::from(newline);
        }
        self.passed + 1
    }
}

/// A reader that records line breaks into `Seen` as bytes go by.
struct Tracking<R> {
    inner: R,
    seen: Rc<RefCell<Seen>>,
}

impl<R: std::io::Read> std::io::Read for Tracking<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut seen = self.seen.borrow_mut();
        let start = seen.read;
        for (i, b) in buf[..n].iter().enumerate() {
            if matches!(b, b'\n' | b'\r') {
                seen.breaks.push_back((start + i as u64, *b == b'\n'));
            }
        }
        seen.read += n as u64;
        if n > 0 {
            seen.last = buf.get(n - 1).copied();
        }
        Ok(n)
    }
}

/// A header cell shown in an error: cut short, since a file that is not a CSV
/// export at all (a key, a password file) must not be echoed.
fn shown_name(name: &str) -> String {
    let mut s: String = name.chars().take(40).collect();
    if s.len() < name.len() {
        s.push_str("...");
    }
    s
}

/// Parse CSV text; `shown` names the file in errors.
pub fn parse<R: std::io::Read>(reader: R, shown: &str) -> Result<Vec<DirectoryUser>, SourceError> {
    parse_with(reader, shown, &Default::default())
}

/// Parse CSV text, also reading (and allowing) the columns `attributes` names.
pub fn parse_with<R: std::io::Read>(
    reader: R,
    shown: &str,
    attributes: &crate::mapping::Attributes,
) -> Result<Vec<DirectoryUser>, SourceError> {
    let mapped = attributes.csv_columns();
    let bad = |line: u64, message: String| SourceError::BadFile {
        path: shown.to_string(),
        line,
        message,
    };
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(Tracking {
            inner: reader,
            seen: seen.clone(),
        });
    let line_of = |pos: Option<&::csv::Position>| pos.map(|p| seen.borrow_mut().line_at(p.byte()));
    let headers = rdr
        .headers()
        .map_err(|e| bad(csv_line(&e, &line_of).unwrap_or(1), csv_message(&e)))?
        .clone();
    // Header names as Excel users type them: any case, stray spaces, a BOM.
    let names: Vec<String> = headers
        .iter()
        .map(|n| {
            n.trim()
                .trim_start_matches('\u{feff}')
                .trim()
                .to_lowercase()
        })
        .collect();
    if !names.iter().any(|n| n == "external_id" || n == "user_name") {
        // Not a header of this format at all: say its shape, never its content.
        return Err(bad(
            1,
            format!(
                "line 1 has {} column(s), none of them external_id or user_name: this is not a learner CSV with a header row (check the directory's path)",
                names.len()
            ),
        ));
    }
    let mut column: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let known = allowed_columns()
            .find(|a| a == name)
            .or_else(|| mapped.get(name).map(String::as_str));
        let Some(known) = known else {
            return Err(bad(
                1,
                format!(
                    "unknown column `{}` (expected some of: {})",
                    shown_name(name),
                    allowed_columns().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if column.insert(known, i).is_some() {
            return Err(bad(1, format!("column `{known}` appears twice")));
        }
    }
    for required in ["external_id", "user_name"] {
        if !column.contains_key(required) {
            return Err(bad(1, format!("missing required column `{required}`")));
        }
    }
    if let Some(missing) = mapped.iter().find(|c| !column.contains_key(c.as_str())) {
        return Err(bad(
            1,
            format!(
                "the directory's mapping or filter reads column `{missing}`, which the file lacks"
            ),
        ));
    }

    let mut users = Vec::new();
    let mut ids: BTreeMap<String, u64> = BTreeMap::new();
    let mut record = ::csv::StringRecord::new();
    // The first of a run of all-empty rows (`,,,,`, which Excel leaves below the
    // data): ignored at the end of the file, an error if a row follows.
    let mut blank_since: Option<u64> = None;
    let mut last_line = 1;
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(bad(csv_line(&e, &line_of).unwrap_or(0), csv_message(&e))),
        }
        let line = line_of(record.position()).unwrap_or(0);
        last_line = line;
        if record.iter().all(|f| f.trim().is_empty()) {
            blank_since.get_or_insert(line);
            continue;
        }
        if let Some(blank) = blank_since {
            return Err(bad(
                blank,
                "empty row in the middle of the file (every field is empty)".to_string(),
            ));
        }
        let get = |name: &str| {
            column
                .get(name)
                .and_then(|i| record.get(*i))
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let external_id =
            get("external_id").ok_or_else(|| bad(line, "empty external_id".to_string()))?;
        let user_name = get("user_name").ok_or_else(|| bad(line, "empty user_name".to_string()))?;
        let state = match get("active")
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("true") | Some("1") => AccountState::Enabled,
            Some("false") | Some("0") => AccountState::Disabled,
            Some(other) => {
                return Err(bad(
                    line,
                    format!("active must be true, false, 1 or 0, not `{other}`"),
                ))
            }
        };
        if let Some(first) = ids.insert(external_id.clone(), line) {
            return Err(bad(
                line,
                format!("external_id `{external_id}` already appears on line {first}"),
            ));
        }
        let fields = LearnerFields {
            user_name,
            email: get(FIELD_NAMES[1]),
            given_name: get("given_name"),
            family_name: get("family_name"),
            display_name: get("display_name"),
            department: get("department"),
            job_title: get("job_title"),
            employee_id: get("employee_id"),
            manager_email: get("manager_email"),
            scim: BTreeMap::new(),
        };
        let mut extra = BTreeMap::new();
        attributes.capture_columns(&get, &mut extra);
        users.push(DirectoryUser {
            external_id,
            fields,
            state,
            guest: false,
            extra,
        });
    }
    let last = seen.borrow().last;
    if !matches!(last, Some(b'\n' | b'\r') | None) {
        return Err(bad(
            last_line,
            "the file does not end with a line break after its last row, as a file cut short while being written or copied looks; \
             re-export it (if it is complete, add a line break at the end)"
                .to_string(),
        ));
    }
    Ok(users)
}

fn csv_line(
    e: &::csv::Error,
    line_of: &dyn Fn(Option<&::csv::Position>) -> Option<u64>,
) -> Option<u64> {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { pos, .. } => line_of(pos.as_ref()),
        ::csv::ErrorKind::UnequalLengths { pos, .. } => line_of(pos.as_ref()),
        ::csv::ErrorKind::Deserialize { pos, .. } => line_of(pos.as_ref()),
        _ => None,
    }
}

fn csv_message(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => {
            "not valid UTF-8 (from Excel, save as \"CSV UTF-8\", not \"Unicode Text\" or a local code page)".to_string()
        }
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_with_commas_and_newlines_parse() {
        let text = "external_id,user_name,display_name,active\n1,a@x.io,\"Smith, Ann\nJr\",false\n";
        let users = parse(text.as_bytes(), "t.csv").unwrap();
        assert_eq!(
            users[0].fields.display_name.as_deref(),
            Some("Smith, Ann\nJr")
        );
        assert_eq!(users[0].state, AccountState::Disabled);
    }

    #[test]
    fn a_short_row_rejects_the_file_with_its_line() {
        let text = "external_id,user_name,email\n1,a@x.io,a@x.io\n2,b@x.io\n";
        let err = parse(text.as_bytes(), "t.csv").unwrap_err().to_string();
        assert_eq!(err, "t.csv:3: expected 3 fields, found 2");
    }

    #[test]
    fn crlf_lines_are_numbered_like_lf_lines() {
        let short = "external_id,user_name,email\r\n1,a@x.io,a@x.io\r\n2,b@x.io\r\n";
        let err = parse(short.as_bytes(), "t.csv").unwrap_err().to_string();
        assert_eq!(err, "t.csv:3: expected 3 fields, found 2");
        let dup = "external_id,user_name\r\n1,a\r\n2,b\r\n1,c\r\n";
        let err = parse(dup.as_bytes(), "t").unwrap_err().to_string();
        assert!(
            err.contains("t:4: external_id `1` already appears on line 2"),
            "{err}"
        );
        let quoted = "external_id,user_name,display_name\r\n1,a,\"two\r\nlines\"\r\n1,b,c\r\n";
        let err = parse(quoted.as_bytes(), "t").unwrap_err().to_string();
        assert!(
            err.contains("t:4: external_id `1` already appears on line 2"),
            "{err}"
        );
        for gap in ["\n\n", "\r\n\r\n", "\n\n\n"] {
            let text = format!("external_id,user_name\n1,a{gap}1,b\n");
            let want = 2 + gap.matches('\n').count();
            let err = parse(text.as_bytes(), "t").unwrap_err().to_string();
            assert!(err.starts_with(&format!("t:{want}: ")), "{gap:?}: {err}");
        }
    }

    #[test]
    fn duplicate_ids_and_unknown_columns_are_refused() {
        let dup = "external_id,user_name\n1,a\n1,b\n";
        assert!(parse(dup.as_bytes(), "t")
            .unwrap_err()
            .to_string()
            .contains("t:3: external_id `1` already appears on line 2"));
        let typo = "external_id,user_name,departmnet\n";
        assert!(parse(typo.as_bytes(), "t")
            .unwrap_err()
            .to_string()
            .contains("unknown column `departmnet`"));
    }
}
