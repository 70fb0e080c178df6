//! The `csv` source: a file exported from an HR system (format in README).
//!
//! The whole file is validated before anything is returned: a bad row rejects the
//! file with its line number, so a half-read file can never deactivate anyone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::check::CheckLine;
use crate::model::{AccountState, DirectoryUser, LearnerFields, FIELD_NAMES};
use crate::source::{Listing, ReadRequest, Scope, SourceError, SourceRead};

pub struct CsvSource {
    path: PathBuf,
}

impl CsvSource {
    pub fn new(path: PathBuf) -> Self {
        CsvSource { path }
    }

    pub async fn read(&mut self, _req: ReadRequest<'_>) -> Result<SourceRead, SourceError> {
        let path = self.path.clone();
        let users = tokio::task::spawn_blocking(move || read_file(&path))
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
        let result = tokio::task::spawn_blocking(move || read_file(&path)).await;
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
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SourceError::Io {
        path: shown.clone(),
        source,
    })?;
    parse(std::io::BufReader::new(file), &shown)
}

/// Parse CSV text; `shown` names the file in errors.
pub fn parse<R: std::io::Read>(reader: R, shown: &str) -> Result<Vec<DirectoryUser>, SourceError> {
    let bad = |line: u64, message: String| SourceError::BadFile {
        path: shown.to_string(),
        line,
        message,
    };
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| bad(csv_line(&e).unwrap_or(1), csv_message(&e)))?
        .clone();
    let mut column: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, name) in headers.iter().enumerate() {
        let name = name.trim().trim_start_matches('\u{feff}');
        let Some(known) = allowed_columns().find(|a| *a == name) else {
            return Err(bad(
                1,
                format!(
                    "unknown column `{name}` (expected some of: {})",
                    allowed_columns().collect::<Vec<_>>().join(", ")
                ),
            ));
        };
        if column.insert(known, i).is_some() {
            return Err(bad(1, format!("column `{name}` appears twice")));
        }
    }
    for required in ["external_id", "user_name"] {
        if !column.contains_key(required) {
            return Err(bad(1, format!("missing required column `{required}`")));
        }
    }

    let mut users = Vec::new();
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut record = ::csv::StringRecord::new();
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(bad(csv_line(&e).unwrap_or(0), csv_message(&e))),
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
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
        if let Some(first) = seen.insert(external_id.clone(), line) {
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
        };
        users.push(DirectoryUser {
            external_id,
            fields,
            state,
            guest: false,
            extra: BTreeMap::new(),
        });
    }
    Ok(users)
}

fn csv_line(e: &::csv::Error) -> Option<u64> {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { pos, .. } => pos.as_ref().map(|p| p.line()),
        ::csv::ErrorKind::UnequalLengths { pos, .. } => pos.as_ref().map(|p| p.line()),
        ::csv::ErrorKind::Deserialize { pos, .. } => pos.as_ref().map(|p| p.line()),
        _ => None,
    }
}

fn csv_message(e: &::csv::Error) -> String {
    match e.kind() {
        ::csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_string(),
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
