//! `check --as-service`, for the `{ credential = "NAME" }` secrets: systemd hands them
//! to the service in `$CREDENTIALS_DIRECTORY`, which exists only while a unit runs, so
//! `check` outside the unit cannot read them. What it can check is what the installed
//! units will load: each credential the config names needs a `LoadCredential=NAME:PATH`
//! (or `SetCredential=`) in the unit, and PATH must exist. systemd reads PATH as root,
//! so a 0600 root-owned file is right; the service user never opens it.

use std::path::{Path, PathBuf};

use crate::check::CheckLine;
use crate::config::{Config, SecretRef};

/// The packaged units that run learner-sync.
pub const UNITS: [&str; 2] = ["learner-sync.service", "learner-sync-oneshot.service"];

/// Where systemd looks for system units, in its order; `SYSTEMD_UNIT_PATH` (systemd's
/// own variable, colon-separated) replaces it.
fn search_path() -> Vec<PathBuf> {
    match std::env::var_os("SYSTEMD_UNIT_PATH").filter(|p| !p.is_empty()) {
        Some(p) => std::env::split_paths(&p).collect(),
        None => [
            "/etc/systemd/system",
            "/run/systemd/system",
            "/usr/local/lib/systemd/system",
            "/usr/lib/systemd/system",
            "/lib/systemd/system",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    }
}

/// Where systemd looks for a credential given without an absolute path.
const CREDSTORES: [&str; 3] = ["/etc/credstore", "/run/credstore", "/usr/lib/credstore"];

/// How a unit provides one credential.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// `LoadCredential[Encrypted]=NAME[:PATH]`: a file systemd reads.
    Load(Option<String>),
    /// `SetCredential[Encrypted]=NAME:VALUE`: written in the unit itself.
    Set,
}

/// An installed unit: the file and its drop-ins, and the credentials they provide.
#[derive(Debug)]
struct Unit {
    file: PathBuf,
    credentials: Vec<(String, Source)>,
}

fn read_unit(dirs: &[PathBuf], name: &str) -> Option<Unit> {
    let file = dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())?;
    let mut files = vec![file.clone()];
    let mut dropins: Vec<PathBuf> = dirs
        .iter()
        .filter_map(|d| std::fs::read_dir(d.join(format!("{name}.d"))).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    // Drop-ins apply in the order of their file names, whichever folder holds them;
    // of two with one name, the one in the earlier folder (/etc over /usr) hides the other.
    dropins.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    dropins.dedup_by(|later, first| later.file_name() == first.file_name());
    files.extend(dropins);
    let mut credentials = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        parse(&text, &mut credentials);
    }
    Some(Unit { file, credentials })
}

/// The `[Service]` credential lines of one unit file, applied to `out` in order (an
/// empty `LoadCredential=` clears what came before, as in systemd).
fn parse(text: &str, out: &mut Vec<(String, Source)>) {
    let mut service = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            service = line == "[Service]";
            continue;
        }
        if !service || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        let load = matches!(key, "LoadCredential" | "LoadCredentialEncrypted");
        let set = matches!(key, "SetCredential" | "SetCredentialEncrypted");
        if !load && !set {
            continue;
        }
        if value.is_empty() {
            // An empty assignment resets only its own kind of line.
            out.retain(|(_, s)| (*s == Source::Set) == load);
            continue;
        }
        let (id, rest) = match value.split_once(':') {
            Some((id, rest)) => (id, Some(rest.to_string())),
            None => (value, None),
        };
        let source = if load {
            Source::Load(rest.filter(|r| !r.is_empty()))
        } else {
            Source::Set
        };
        out.retain(|(n, _)| n != id);
        out.push((id.to_string(), source));
    }
}

/// Where a `LoadCredential=` source is found, if it is.
fn located(name: &str, path: Option<&str>) -> Result<PathBuf, String> {
    let candidates: Vec<PathBuf> = match path {
        Some(p) if Path::new(p).is_absolute() => vec![PathBuf::from(p)],
        other => {
            let file = other.unwrap_or(name);
            CREDSTORES
                .iter()
                .flat_map(|d| {
                    [
                        Path::new(d).join(file),
                        Path::new(d).join(format!("{file}.encrypted")),
                    ]
                })
                .collect()
        }
    };
    candidates
        .iter()
        .find(|c| c.exists())
        .cloned()
        .ok_or_else(|| {
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
}

/// One line per credential the config names and installed unit: whether the unit will
/// hand it to the service.
pub fn check(config: &Config) -> Vec<CheckLine> {
    let mut names: Vec<(String, String)> = config
        .secrets()
        .into_iter()
        .filter_map(|(what, s)| match s {
            SecretRef::Credential(name) => Some((name.clone(), what)),
            _ => None,
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    names.sort();
    let dirs = search_path();
    let units: Vec<(&str, Unit)> = UNITS
        .iter()
        .filter_map(|u| read_unit(&dirs, u).map(|unit| (*u, unit)))
        .collect();
    let add = |unit: &str, name: &str| {
        format!(
            "`sudo systemctl edit {unit}` and add `[Service]` `LoadCredential={name}:/etc/learner-sync/secrets/{name}` (root-owned, 0600: systemd reads it as root)"
        )
    };
    if units.is_empty() {
        return names
            .iter()
            .map(|(name, what)| {
                CheckLine::warning(
                    format!(
                        "{what} is systemd credential {name}, and no learner-sync unit is installed (looked in {})",
                        dirs.iter()
                            .map(|d| d.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "the secret reaches the service only through a unit's LoadCredential=; install the package, or use { file = ... }",
                )
            })
            .collect();
    }
    let mut lines = Vec::new();
    for (name, what) in &names {
        let mut loaded = false;
        let mut missing = Vec::new();
        for (unit, u) in &units {
            match u.credentials.iter().find(|(n, _)| n == name).map(|(_, s)| s) {
                Some(Source::Set) => {
                    loaded = true;
                    lines.push(CheckLine::ok(format!(
                        "{unit} sets credential {name} ({what}) in the unit itself"
                    )));
                }
                Some(Source::Load(path)) => match located(name, path.as_deref()) {
                    Ok(found) => {
                        loaded = true;
                        lines.push(CheckLine::ok(format!(
                            "{unit} loads credential {name} ({what}) from {}",
                            found.display()
                        )));
                    }
                    Err(looked) => lines.push(CheckLine::failed(
                        format!(
                            "{unit} loads credential {name} ({what}) from {looked}, which does not exist: the unit will not start"
                        ),
                        format!("put the secret there, readable by root (0600 is fine), or fix the LoadCredential= line ({})", u.file.display()),
                    )),
                },
                None => missing.push(*unit),
            }
        }
        for unit in missing {
            let line = format!(
                "{unit} does not load credential {name} ({what}): the service it runs cannot read the secret"
            );
            lines.push(if loaded {
                CheckLine::warning(
                    format!("{line}; fine if you run only the other unit"),
                    add(unit, name),
                )
            } else {
                CheckLine::failed(line, add(unit, name))
            });
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, Source)> {
        let mut out = Vec::new();
        parse(text, &mut out);
        out
    }

    #[test]
    fn credential_lines_of_the_service_section_only_and_a_reset() {
        let text = "[Unit]\nLoadCredential=u:/x\n[Service]\n# LoadCredential=c:/no\nLoadCredential=a:/etc/a\nLoadCredential=b\nSetCredential=c:plain\n";
        assert_eq!(
            parsed(text),
            vec![
                ("a".to_string(), Source::Load(Some("/etc/a".into()))),
                ("b".to_string(), Source::Load(None)),
                ("c".to_string(), Source::Set),
            ]
        );
        let reset = format!("{text}LoadCredential=\nLoadCredential=d:/etc/d\n");
        assert_eq!(
            parsed(&reset),
            vec![
                ("c".to_string(), Source::Set),
                ("d".to_string(), Source::Load(Some("/etc/d".into()))),
            ]
        );
    }

    #[test]
    fn a_drop_in_in_etc_hides_the_one_of_the_same_name_in_usr() {
        let dir = tempfile::tempdir().unwrap();
        let (etc, usr) = (dir.path().join("etc"), dir.path().join("usr"));
        for (d, text) in [
            (&usr, "[Service]\nLoadCredential=a:/usr-one\n"),
            (&etc, "[Service]\nLoadCredential=b:/etc-one\n"),
        ] {
            std::fs::create_dir_all(d.join("x.service.d")).unwrap();
            std::fs::write(d.join("x.service.d/override.conf"), text).unwrap();
        }
        std::fs::write(usr.join("x.service"), "[Service]\nExecStart=/bin/true\n").unwrap();
        let unit = read_unit(&[etc, usr], "x.service").unwrap();
        assert_eq!(
            unit.credentials,
            vec![("b".to_string(), Source::Load(Some("/etc-one".into())))]
        );
    }

    #[test]
    fn a_later_line_for_the_same_credential_wins() {
        let text = "[Service]\nLoadCredential=a:/old\nLoadCredential=a:/new\n";
        assert_eq!(
            parsed(text),
            vec![("a".to_string(), Source::Load(Some("/new".into())))]
        );
    }
}
