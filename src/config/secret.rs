//! Secrets named in the config: read from an environment variable, a file or a systemd
//! credential, never written inline, never printed.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A secret file larger than this is refused: client secrets, bearer tokens and
/// service-account keys are a few KiB; anything bigger is the wrong file.
pub const MAX_SECRET_BYTES: u64 = 1024 * 1024;

/// Where a secret comes from: `{ env = "NAME" }`, `{ file = "PATH" }` or
/// `{ credential = "NAME" }` (systemd's `LoadCredential=NAME:PATH`, read from
/// `$CREDENTIALS_DIRECTORY/NAME` of whichever unit runs the command).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
    Credential(String),
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
    #[error("secret file {} is {what}, not a regular file", path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("secret file {} is larger than {} KiB; is it the right file?", path.display(), MAX_SECRET_BYTES / 1024)]
    TooLarge { path: PathBuf },
    #[error("secret file {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
    #[error(
        "systemd credential {0}: $CREDENTIALS_DIRECTORY is not set; systemd sets it for a unit \
         with LoadCredential={0}:PATH (run this command in the unit, e.g. `systemctl start`, \
         or set CREDENTIALS_DIRECTORY to a folder holding {0})"
    )]
    NoCredentialsDirectory(String),
    #[error(
        "systemd credential {name}: {} does not exist; add LoadCredential={name}:PATH to the unit \
         (systemctl edit learner-sync.service, or learner-sync-oneshot.service for the timer)",
        path.display()
    )]
    MissingCredential { name: String, path: PathBuf },
    #[error("{0} is empty")]
    Empty(String),
}

impl SecretRef {
    /// Where it comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(name) => format!("environment variable {name}"),
            SecretRef::File(path) => format!("file {}", path.display()),
            SecretRef::Credential(name) => format!("systemd credential {name}"),
        }
    }

    pub fn resolve(&self) -> Result<Secret, SecretError> {
        let value = match self {
            SecretRef::Env(name) => {
                std::env::var(name).map_err(|_| SecretError::MissingEnv(name.clone()))?
            }
            SecretRef::File(path) => read_secret_file(path)?,
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                let path = Path::new(&dir).join(name);
                match read_secret_file(&path) {
                    Err(SecretError::File { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        return Err(SecretError::MissingCredential {
                            name: name.clone(),
                            path,
                        })
                    }
                    other => other?,
                }
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

/// Read a secret file: a regular file of at most [`MAX_SECRET_BYTES`]. A FIFO or a
/// device named by mistake would block the run or never end, so they are refused.
fn read_secret_file(path: &Path) -> Result<String, SecretError> {
    let io = |source| SecretError::File {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer. It
    // changes nothing for a regular file, and the type is checked on the open file
    // itself, so a swap between a check and the open cannot slip a FIFO in.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let kind = file.metadata().map_err(io)?.file_type();
    if !kind.is_file() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "special"
        };
        return Err(SecretError::NotAFile {
            path: path.to_path_buf(),
            what,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(SecretError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|_| SecretError::NotText {
        path: path.to_path_buf(),
    })
}
