//! Config errors that name the file, the line and the key.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {}: {source}{}", path.display(), read_hint(path, source))]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {key}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
}

/// A config that is not where it was looked for: say where else it can be named.
fn read_hint(path: &Path, source: &std::io::Error) -> String {
    match source.kind() {
        std::io::ErrorKind::NotFound if path == Path::new(super::DEFAULT_CONFIG_PATH) => {
            " (the default; give another with --config PATH or the LEARNER_SYNC_CONFIG environment variable, \
             or start from /usr/share/doc/learner-sync/config.example.toml)"
                .to_string()
        }
        std::io::ErrorKind::NotFound => {
            " (from --config or LEARNER_SYNC_CONFIG; check the path)".to_string()
        }
        std::io::ErrorKind::PermissionDenied => {
            " (run as root or the learner-sync user; the packaged config is root:learner-sync 0640)"
                .to_string()
        }
        _ => String::new(),
    }
}

/// Where a key sits in the config text, for errors found after parsing.
pub struct Locator<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Locator<'_> {
    pub fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text[..end].bytes().filter(|b| *b == b'\n').count() + 1
    }

    pub fn error_at(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)).unwrap_or(1),
            key: key.into(),
            message: message.into(),
        }
    }

    /// Turn a TOML syntax or type error into one naming the line and the dotted key.
    pub fn toml_error(&self, err: &toml::de::Error) -> ConfigError {
        let line = err.span().map(|s| self.line_of(s.start)).unwrap_or(1);
        let message = err.message().trim().to_string();
        let key = unknown_field(&message)
            .map(|field| match self.section_at(line) {
                Some(section) => format!("{section}.{field}"),
                None => field,
            })
            .unwrap_or_else(|| self.key_at(line));
        // A line too broken to name a key (`[`, `=`) still gets a non-empty one.
        let key = if key.trim_matches('.').is_empty() {
            "(top level)".to_string()
        } else {
            key
        };
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            key,
            message,
        }
    }

    /// The dotted key written on a line (`sync.max_deactivations`, `directory[1].scope`).
    fn key_at(&self, line: usize) -> String {
        let text = self.text.lines().nth(line.saturating_sub(1)).unwrap_or("");
        let own = text
            .split_once('=')
            .map(|(k, _)| k.trim().trim_matches('"').to_string())
            .filter(|k| !k.is_empty());
        match (self.section_at(line), own) {
            (Some(section), Some(k)) => format!("{section}.{k}"),
            (None, Some(k)) => k,
            (Some(section), None) => section,
            (None, None) => "(top level)".to_string(),
        }
    }

    /// The table a line belongs to, numbering `[[directory]]` entries from 0.
    fn section_at(&self, line: usize) -> Option<String> {
        let mut section = None;
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for text in self.text.lines().take(line) {
            let t = text.trim();
            if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
                let name = name.trim().to_string();
                let n = counts.entry(name.clone()).or_insert(0);
                section = Some(format!("{name}[{n}]"));
                *n += 1;
            } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
                let name = name.trim();
                // `[directory.mapping]` belongs to the latest `[[directory]]`.
                section = Some(match name.split_once('.') {
                    Some((parent, child)) if counts.contains_key(parent) => {
                        format!("{parent}[{}].{child}", counts[parent] - 1)
                    }
                    _ => name.to_string(),
                });
            }
        }
        section
    }
}

fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next().map(str::to_string)
}
