//! The `csv` source: a file exported from an HR system (format in README).
//!
//! The whole file is validated before anything is returned: a bad row rejects the
//! file with its line number, so a half-read file can never deactivate anyone.
//! A file whose last record has no line break after it is refused too: that is how a
//! file cut short mid-write or mid-copy looks, where the cut falls after a complete row.
//! Excel and HR exports come in more than one shape, so the delimiter (`,` `;` tab)
//! and the encoding (UTF-8, windows-1252, latin-1) are configured or detected.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::check::CheckLine;
use crate::model::{AccountState, DirectoryUser, LearnerFields, FIELD_NAMES};
use crate::source::{Listing, ReadRequest, Scope, SourceError, SourceRead};

/// How every refusal of a file's shape ends: the one export that always reads.
pub const SAVE_AS: &str =
    "from Excel, save it as \"CSV UTF-8 (comma delimited)\" (.csv), or set the directory's `delimiter` and `encoding`";

/// The column separators a file may use.
const DELIMITERS: [u8; 3] = [b',', b';', b'\t'];

/// How a file's bytes are text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvEncoding {
    Utf8,
    /// What Excel writes for "CSV (comma delimited)" on a Western European Windows.
    Windows1252,
    /// ISO-8859-1 proper: every byte is the code point of the same number.
    Latin1,
}

impl CsvEncoding {
    /// The config's `encoding` value, in any case.
    pub fn parse(value: &str) -> Option<CsvEncoding> {
        match value.trim().to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Some(CsvEncoding::Utf8),
            "windows-1252" | "cp1252" => Some(CsvEncoding::Windows1252),
            "latin-1" | "latin1" | "iso-8859-1" => Some(CsvEncoding::Latin1),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CsvEncoding::Utf8 => "utf-8",
            CsvEncoding::Windows1252 => "windows-1252",
            CsvEncoding::Latin1 => "latin-1",
        }
    }
}

/// A directory's `delimiter` and `encoding`; `None` is detected from the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CsvFormat {
    pub delimiter: Option<u8>,
    pub encoding: Option<CsvEncoding>,
}

/// The config's `delimiter` value: `,`, `;`, a tab (`"\t"` in TOML) or `tab`.
pub fn parse_delimiter(value: &str) -> Option<u8> {
    match value {
        "," => Some(b','),
        ";" => Some(b';'),
        // A tab, or `'\t'` written in a TOML literal string.
        "\t" | "\\t" => Some(b'\t'),
        v if v.eq_ignore_ascii_case("tab") => Some(b'\t'),
        _ => None,
    }
}

fn delimiter_name(d: u8) -> &'static str {
    match d {
        b';' => "`;`",
        b'\t' => "tab",
        _ => "`,`",
    }
}

/// A whole file, read and validated, and how it was read.
#[derive(Debug)]
pub struct CsvFile {
    pub users: Vec<DirectoryUser>,
    pub delimiter: u8,
    pub encoding: CsvEncoding,
    /// Set when the encoding was guessed as windows-1252: the admin should know.
    pub warning: Option<String>,
    /// The groups of the `groups` column (names separated by `;`), when it has one.
    pub groups: Option<crate::groups::Groups>,
}

impl CsvFile {
    /// How it was read, for `check`.
    fn shape(&self, format: &CsvFormat) -> String {
        let guessed = |set: bool| if set { "" } else { " (detected)" };
        format!(
            "delimiter {}{}, {}{}",
            delimiter_name(self.delimiter),
            guessed(format.delimiter.is_some()),
            self.encoding.name(),
            guessed(format.encoding.is_some())
        )
    }
}

pub struct CsvSource {
    path: PathBuf,
    format: CsvFormat,
    /// Columns the mappings and filters read, beyond the learner columns.
    attributes: crate::mapping::Attributes,
    /// The groups of the last `read` (`None`: the file has no `groups` column).
    groups: Option<crate::groups::Groups>,
}

impl CsvSource {
    pub fn new(path: PathBuf, format: CsvFormat) -> Self {
        CsvSource {
            path,
            format,
            attributes: Default::default(),
            groups: None,
        }
    }

    /// The groups of the `groups` column that `selection` picks (by name), from the
    /// file the run just read.
    pub fn read_groups(
        &mut self,
        selection: &crate::groups::GroupSelection,
    ) -> Result<crate::groups::Groups, SourceError> {
        let Some(all) = &self.groups else {
            return Err(SourceError::BadFile {
                path: self.path.display().to_string(),
                line: 1,
                message: "the directory selects groups, but the file has no `groups` column (group names separated by `;`)".to_string(),
            });
        };
        Ok(all
            .iter()
            .filter(|(id, g)| selection.picks(id, &g.display_name, None))
            .map(|(id, g)| (id.clone(), g.clone()))
            .collect())
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
        let format = self.format;
        let attributes = self.attributes.clone();
        let file = tokio::task::spawn_blocking(move || read_file_with(&path, &format, &attributes))
            .await
            .map_err(|e| SourceError::Other(format!("csv reader stopped: {e}")))??;
        let same = |v: &Option<String>| v.as_deref().is_some_and(|v| v.eq_ignore_ascii_case(who));
        let found = file.users.into_iter().find_map(|u| {
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
        let format = self.format;
        let attributes = self.attributes.clone();
        let file = tokio::task::spawn_blocking(move || read_file_with(&path, &format, &attributes))
            .await
            .map_err(|e| SourceError::Other(format!("csv reader stopped: {e}")))??;
        if let Some(warning) = &file.warning {
            tracing::warn!(path = %self.path.display(), "{warning}");
        }
        let users = file.users;
        self.groups = file.groups;
        Ok(SourceRead {
            listing: Listing::Complete(users),
            scope: Scope::All,
            next_cursor: None,
            requests: 0,
        })
    }

    pub async fn check(&mut self) -> Vec<CheckLine> {
        let path = self.path.clone();
        let format = self.format;
        let attributes = self.attributes.clone();
        let result =
            tokio::task::spawn_blocking(move || read_file_with(&path, &format, &attributes)).await;
        let line = match result {
            Ok(Ok(file)) => CheckLine::ok(format!(
                "{} readable, {} users, {}{}",
                self.path.display(),
                file.users.len(),
                file.shape(&self.format),
                file.warning
                    .as_ref()
                    .map(|w| format!("; warning: {w}"))
                    .unwrap_or_default()
            )),
            Ok(Err(e @ SourceError::Io { .. })) => {
                let hint = io_hint(&e, &self.path);
                CheckLine::failed(e.to_string(), hint)
            }
            Ok(Err(e)) => CheckLine::failed(
                e.to_string(),
                format!("fix the file (a header row with external_id and user_name, RFC 4180 quoting); {SAVE_AS}"),
            ),
            Err(e) => CheckLine::failed(e.to_string(), "retry"),
        };
        vec![line]
    }
}

/// The hint for a file that could not be opened: its real cause, not its format.
fn io_hint(e: &SourceError, path: &Path) -> String {
    let SourceError::Io { source, .. } = e else {
        return "retry".to_string();
    };
    match source.kind() {
        std::io::ErrorKind::NotFound => format!(
            "file not found: {} (relative to the config file's directory); fix the directory's `path` or put the export there",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "the user running learner-sync cannot read {}: `chown root:learner-sync` and `chmod 0640` it (`check --as-service` reads as the service)",
            path.display()
        ),
        _ => "check the path and the disk".to_string(),
    }
}

/// The columns a file may have: identity, the learner columns, and `active`.
fn allowed_columns() -> impl Iterator<Item = &'static str> {
    std::iter::once("external_id")
        .chain(FIELD_NAMES)
        .chain(["active", "groups"])
}

/// Read and validate the whole file as UTF-8 with commas.
pub fn read_file(path: &Path) -> Result<Vec<DirectoryUser>, SourceError> {
    let format = CsvFormat {
        delimiter: Some(b','),
        encoding: Some(CsvEncoding::Utf8),
    };
    read_file_as(path, &format).map(|f| f.users)
}

/// Read and validate the whole file in `format`, detecting what it leaves unset.
pub fn read_file_as(path: &Path, format: &CsvFormat) -> Result<CsvFile, SourceError> {
    read_file_with(path, format, &Default::default())
}

/// [`read_file_as`], also reading (and allowing) the columns `attributes` names.
pub fn read_file_with(
    path: &Path,
    format: &CsvFormat,
    attributes: &crate::mapping::Attributes,
) -> Result<CsvFile, SourceError> {
    let shown = path.display().to_string();
    let open = || {
        std::fs::File::open(path).map_err(|source| SourceError::Io {
            path: shown.clone(),
            source,
        })
    };
    let io = |source| SourceError::Io {
        path: shown.clone(),
        source,
    };
    let sniffed = if format.delimiter.is_none() || format.encoding.is_none() {
        sniff(open()?, format.encoding.is_none()).map_err(io)?
    } else {
        Sniffed::default()
    };
    if sniffed.utf16 {
        return Err(SourceError::BadFile {
            path: shown,
            line: 1,
            message: format!(
                "the file is UTF-16 (Excel's \"Unicode Text\"), not CSV text; {SAVE_AS}"
            ),
        });
    }
    let delimiter = format.delimiter.unwrap_or(sniffed.delimiter);
    let (encoding, warning) = match format.encoding {
        Some(e) => (e, None),
        None if sniffed.utf8 => (CsvEncoding::Utf8, None),
        None => (
            CsvEncoding::Windows1252,
            Some(
                "not valid UTF-8, read as windows-1252: set the directory's `encoding` to say so, \
                 or from Excel save it as \"CSV UTF-8 (comma delimited)\""
                    .to_string(),
            ),
        ),
    };
    let file = std::io::BufReader::new(open()?);
    let (users, groups) = match encoding {
        CsvEncoding::Utf8 => parse_as(file, &shown, delimiter, attributes),
        other => parse_as(Decoding::new(file, other), &shown, delimiter, attributes),
    }?;
    Ok(CsvFile {
        users,
        delimiter,
        encoding,
        warning,
        groups,
    })
}

/// What a first pass over the bytes found.
struct Sniffed {
    delimiter: u8,
    /// The whole file is UTF-8 (a UTF-8 BOM declares it so whatever follows).
    utf8: bool,
    /// A UTF-16 byte-order mark.
    utf16: bool,
}

impl Default for Sniffed {
    fn default() -> Self {
        Sniffed {
            delimiter: b',',
            utf8: true,
            utf16: false,
        }
    }
}

/// The delimiter from the header line (the one of `,` `;` tab seen most often outside
/// quotes, `,` on a tie or none), and, when `whole`, whether every byte is UTF-8.
/// All three encodings write the delimiters and quotes as the same ASCII bytes.
fn sniff(mut file: std::fs::File, whole: bool) -> std::io::Result<Sniffed> {
    let mut counts = [0u64; 3];
    let mut in_quotes = false;
    let mut header_done = false;
    let mut utf8 = encoding_rs::UTF_8.new_decoder_without_bom_handling();
    let mut valid = true;
    let mut scratch = vec![0u8; 3 * 65536 + 16];
    let mut buf = vec![0u8; 65536];
    let mut first = true;
    let mut bom = false;
    let mut utf16 = false;
    loop {
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if first {
            first = false;
            bom = chunk.starts_with(&[0xEF, 0xBB, 0xBF]);
            utf16 = chunk.starts_with(&[0xFF, 0xFE]) || chunk.starts_with(&[0xFE, 0xFF]);
        }
        if !header_done {
            for b in chunk {
                match b {
                    b'"' => in_quotes = !in_quotes,
                    b'\n' | b'\r' if !in_quotes => {
                        header_done = true;
                        break;
                    }
                    _ if !in_quotes => {
                        if let Some(i) = DELIMITERS.iter().position(|d| d == b) {
                            counts[i] += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        if whole && valid {
            let (result, _, _) =
                utf8.decode_to_utf8_without_replacement(chunk, &mut scratch, n == 0);
            valid = !matches!(result, encoding_rs::DecoderResult::Malformed(..));
        }
        if n == 0 || (header_done && (!whole || !valid)) {
            break;
        }
    }
    let mut delimiter = b',';
    let mut best = 0;
    for (i, d) in DELIMITERS.iter().enumerate() {
        if counts[i] > best {
            best = counts[i];
            delimiter = *d;
        }
    }
    Ok(Sniffed {
        delimiter,
        utf8: valid || bom,
        utf16,
    })
}

/// A reader that turns windows-1252 or latin-1 bytes into UTF-8 as they go by, so
/// the CSV parser and its byte offsets see UTF-8 text.
struct Decoding<R> {
    inner: R,
    /// `None` for latin-1, which needs no table.
    decoder: Option<encoding_rs::Decoder>,
    raw: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read> Decoding<R> {
    fn new(inner: R, encoding: CsvEncoding) -> Self {
        let decoder = match encoding {
            CsvEncoding::Latin1 => None,
            _ => Some(encoding_rs::WINDOWS_1252.new_decoder_without_bom_handling()),
        };
        Decoding {
            inner,
            decoder,
            raw: vec![0; 16384],
            out: Vec::new(),
            pos: 0,
            done: false,
        }
    }
}

impl<R: Read> Read for Decoding<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() {
            if self.done {
                return Ok(0);
            }
            let n = self.inner.read(&mut self.raw)?;
            let last = n == 0;
            self.out.clear();
            self.pos = 0;
            match &mut self.decoder {
                None => {
                    for b in &self.raw[..n] {
                        let mut tmp = [0u8; 4];
                        self.out
                            .extend_from_slice(char::from(*b).encode_utf8(&mut tmp).as_bytes());
                    }
                }
                Some(decoder) => {
                    // windows-1252 maps every byte, so nothing is replaced.
                    let room = decoder.max_utf8_buffer_length(n).unwrap_or(3 * n + 16);
                    self.out.resize(room, 0);
                    let (_, _, written, _) =
                        decoder.decode_to_utf8(&self.raw[..n], &mut self.out, last);
                    self.out.truncate(written);
                }
            }
            self.done = last;
        }
        let k = buf.len().min(self.out.len() - self.pos);
        buf[..k].copy_from_slice(&self.out[self.pos..self.pos + k]);
        self.pos += k;
        Ok(k)
    }
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

/// Parse comma-separated UTF-8 text; `shown` names the file in errors.
pub fn parse<R: std::io::Read>(reader: R, shown: &str) -> Result<Vec<DirectoryUser>, SourceError> {
    parse_as(reader, shown, b',', &Default::default()).map(|(users, _)| users)
}

/// Parse UTF-8 text separated by `delimiter`.
/// Also reads (and allows) the columns `attributes` names.
fn parse_as<R: std::io::Read>(
    reader: R,
    shown: &str,
    delimiter: u8,
    attributes: &crate::mapping::Attributes,
) -> Result<(Vec<DirectoryUser>, Option<crate::groups::Groups>), SourceError> {
    let mapped = attributes.csv_columns();
    let bad = |line: u64, message: String| SourceError::BadFile {
        path: shown.to_string(),
        line,
        message,
    };
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut rdr = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
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
    let other_delimiters = || {
        DELIMITERS
            .iter()
            .filter(|d| **d != delimiter)
            .map(|d| delimiter_name(*d))
            .collect::<Vec<_>>()
            .join(" or ")
    };
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
                "line 1 has {} column(s), none of them external_id or user_name (read with delimiter {}): this is not a learner CSV with a header row \
                 (check the directory's path; if its columns are separated by {}, {SAVE_AS})",
                names.len(),
                delimiter_name(delimiter),
                other_delimiters()
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
                    "unknown column `{}` (expected some of: {}; {SAVE_AS})",
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
            return Err(bad(
                1,
                format!("missing required column `{required}` ({SAVE_AS})"),
            ));
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
    let mut groups = column
        .contains_key("groups")
        .then(crate::groups::Groups::new);
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
        if let (Some(groups), Some(cell)) = (groups.as_mut(), get("groups")) {
            for name in cell.split(';').map(str::trim).filter(|n| !n.is_empty()) {
                groups
                    .entry(name.to_string())
                    .or_insert_with(|| crate::groups::Group {
                        external_id: name.to_string(),
                        display_name: name.to_string(),
                        ..Default::default()
                    })
                    .members
                    .insert(external_id.clone());
            }
        }
        let mut extra = crate::model::Extra::default();
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
    Ok((users, groups))
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
        ::csv::ErrorKind::Utf8 { .. } => format!(
            "not valid UTF-8 (not \"Unicode Text\" or a local code page: {SAVE_AS})"
        ),
        ::csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("expected {expected_len} fields, found {len} (quote fields that hold the delimiter; {SAVE_AS})"),
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
        assert!(
            err.starts_with("t.csv:3: expected 3 fields, found 2 "),
            "{err}"
        );
        assert!(err.contains("CSV UTF-8 (comma delimited)"), "{err}");
    }

    #[test]
    fn crlf_lines_are_numbered_like_lf_lines() {
        let short = "external_id,user_name,email\r\n1,a@x.io,a@x.io\r\n2,b@x.io\r\n";
        let err = parse(short.as_bytes(), "t.csv").unwrap_err().to_string();
        assert!(
            err.starts_with("t.csv:3: expected 3 fields, found 2 "),
            "{err}"
        );
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
    fn the_delimiter_is_the_one_the_header_line_uses_most_outside_quotes() {
        let dir = tempfile::tempdir().unwrap();
        let cases: &[(&str, u8)] = &[
            ("external_id;user_name;display_name\n", b';'),
            ("external_id\tuser_name\n", b'\t'),
            ("external_id,user_name\n", b','),
            // Commas inside a quoted header cell do not count.
            ("\"a,b,c\";user_name;external_id\n", b';'),
            // No delimiter at all (one column) and a tie fall back to a comma.
            ("external_id\n", b','),
            ("a;b,c\n", b','),
        ];
        for (text, want) in cases {
            let path = dir.path().join("f.csv");
            std::fs::write(&path, text).unwrap();
            let got = sniff(std::fs::File::open(&path).unwrap(), true).unwrap();
            assert_eq!(got.delimiter, *want, "{text:?}");
        }
    }

    #[test]
    fn utf8_is_detected_across_read_chunks_and_a_bom_declares_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.csv");
        // A two-byte character split across the 64 KiB chunk boundary is still UTF-8.
        let mut text = "a".repeat(65535);
        text.push('é');
        text.push('\n');
        std::fs::write(&path, &text).unwrap();
        assert!(
            sniff(std::fs::File::open(&path).unwrap(), true)
                .unwrap()
                .utf8
        );
        std::fs::write(&path, b"a,b\nRen\xe9\n").unwrap();
        assert!(
            !sniff(std::fs::File::open(&path).unwrap(), true)
                .unwrap()
                .utf8
        );
        std::fs::write(&path, b"\xef\xbb\xbfa,b\nRen\xe9\n").unwrap();
        assert!(
            sniff(std::fs::File::open(&path).unwrap(), true)
                .unwrap()
                .utf8
        );
    }

    #[test]
    fn windows_1252_and_latin_1_decode_their_own_way() {
        let bytes: &[u8] = b"external_id,user_name,given_name\n1,a,\x80 Ren\xe9\n";
        let cp = parse_as(
            Decoding::new(bytes, CsvEncoding::Windows1252),
            "t",
            b',',
            &Default::default(),
        )
        .unwrap()
        .0;
        assert_eq!(
            cp[0].fields.given_name.as_deref(),
            Some("\u{20ac} Ren\u{e9}")
        );
        let l1 = parse_as(
            Decoding::new(bytes, CsvEncoding::Latin1),
            "t",
            b',',
            &Default::default(),
        )
        .unwrap()
        .0;
        assert_eq!(l1[0].fields.given_name.as_deref(), Some("\u{80} Ren\u{e9}"));
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
