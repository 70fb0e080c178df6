//! Secrets named in the config: read from an environment variable or a file, never
//! written inline, never printed.

use std::path::PathBuf;

/// Where a secret comes from: `{ env = "NAME" }` or `{ file = "PATH" }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

/// A secret value. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    #[error("cannot read secret file {}: {source}", path.display())]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Where it comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("environment variable {name}"),
            SecretRef::File(path) => format!("file {}", path.display()),
        }
    }

    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            SecretRef::File(path) => {
                std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?
            }
        };
        // Files written by editors and `echo` end in a newline that is not part of the secret.
        let value = value.trim_end_matches(['\r', '\n']).to_string();
        if value.is_empty() {
            return Err(SecretError::Empty(self.describe()));
        }
        crate::redact::register(&value);
        Ok(Secret(value))
    }
}
