//! The TOML config: parsed strictly, validated once, relative paths resolved against
//! the config file's folder.

mod error;
mod mapping;
pub mod notify;
mod raw;
pub mod schedule;
pub mod secret;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::ConfigError;
use error::Locator;
pub use notify::{EmailConfig, EventKind, NotifyConfig, NotifyTarget, SmtpTls, WebhookFormat};
use raw::{RawConfig, RawDirectory, S};
pub use schedule::Schedule;
pub use secret::{Secret, SecretRef};

use crate::mapping::MappingPolicy;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/learner-sync/config.toml";

/// The name of the store `[store]` declares (and of `[store.default]`).
pub const DEFAULT_STORE: &str = "default";

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from.
    pub path: PathBuf,
    pub sync: SyncSettings,
    pub daemon: Option<DaemonSettings>,
    /// The stores by name: `[store]` is the one named `default`, `[store.NAME]` others.
    pub stores: BTreeMap<String, StoreConfig>,
    pub directories: Vec<DirectoryConfig>,
    /// The `[[notify]]` targets.
    pub notify: Vec<NotifyConfig>,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub schedule: Schedule,
    pub state_db: PathBuf,
    pub max_deactivations: u64,
    pub max_deactivation_percent: f64,
    /// Deactivations in any 24 h, as a percentage of the learners active 24 h before.
    pub max_deactivation_percent_per_day: f64,
    /// Learners changing one field in one run, as a percentage of the directory's.
    pub max_update_percent: f64,
    pub full_resync: Duration,
    pub concurrency: usize,
    /// A run taking longer than this is abandoned and counted as failed.
    pub run_timeout: Duration,
    /// One HTTP request to any remote (its body included) taking longer than this fails.
    pub request_timeout: Duration,
    /// How long a leaver stays pending before the deactivation is due (zero: at once).
    pub deactivate_after: Duration,
}

#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub listen: Option<SocketAddr>,
    /// Consecutive failed runs of a directory after which /healthz reports 503.
    pub unhealthy_after: u32,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
    },
    Scim {
        url: reqwest::Url,
        token: SecretRef,
        concurrency: usize,
        deactivate: ScimDeactivate,
        dialect: ScimDialect,
        /// Requests per second to the provider, all concurrent requests together.
        max_requests_per_second: f64,
        /// The attribute an existing SCIM user is found (and adopted) by.
        match_by: ScimMatch,
        /// What is written as a user's `externalId`.
        external_id: ScimExternalId,
        /// Whether the directories' groups are written to `/Groups` (issue 16).
        groups: bool,
        /// The store's name when it is not the default: its SCIM mirror is a file of
        /// its own beside the state DB.
        mirror: Option<String>,
    },
    /// The `learners` table (and the group tables) in a PostgreSQL database.
    Postgres {
        /// Boxed: its connection settings are large next to the other kinds'.
        url: Box<PostgresUrl>,
        password: Option<SecretRef>,
        /// How long a run's lease on a directory lasts unless renewed, and how long a
        /// daemon that stopped renewing its membership still counts as alive.
        lease: Duration,
    },
}

/// A PostgreSQL URL without a password: shown as written, connected to as parsed.
#[derive(Debug, Clone)]
pub struct PostgresUrl {
    text: String,
    config: tokio_postgres::Config,
    /// `sslrootcert`: a PEM file of CA certificates trusted besides the public roots.
    root_cert: Option<PathBuf>,
}

impl PostgresUrl {
    fn new(
        text: String,
        mut config: tokio_postgres::Config,
        root_cert: Option<PathBuf>,
    ) -> PostgresUrl {
        // TLS unless every host is loopback or a Unix socket, or the URL chose a mode.
        let says_mode = text.contains("sslmode=");
        let local = config.get_hosts().iter().all(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            tokio_postgres::config::Host::Unix(_) => true,
        });
        if !says_mode && !local {
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
        }
        PostgresUrl {
            text,
            config,
            root_cert,
        }
    }

    /// The CA file the URL's `sslrootcert` names, if any.
    pub fn root_cert(&self) -> Option<&Path> {
        self.root_cert.as_deref()
    }

    /// The connection settings, without the password.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// The attribute a learner not linked yet is looked up by on the provider (`[store] match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimMatch {
    /// `externalId`, then `userName`: what learner-sync did before `match` existed
    /// (the `rfc` dialect's default).
    ExternalIdThenUserName,
    UserName,
    ExternalId,
    /// The work email (`emails.value`).
    Emails,
}

/// The `[store] external_id` values that name a learner field or the directory's id;
/// any other value is a directory attribute (`ScimExternalId::Mapped`).
const SCIM_EXTERNAL_IDS: &[&str] = &["objectId", "id", "userName", "email", "mail", "employeeId"];

/// What a SCIM user's `externalId` is set to (`[store] external_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimExternalId {
    /// The directory's immutable id (Entra's objectId, Google's user id, the CSV's
    /// `external_id`).
    DirectoryId,
    /// A learner column's value.
    Field(crate::model::Field),
    /// A directory attribute, such as Entra's `mailNickname` (Entra push's default):
    /// each directory's mapping carries it as the extra SCIM attribute `externalId`.
    Mapped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimDeactivate {
    Patch,
    Delete,
}

/// The shape of the PATCH requests a SCIM store sends (`[store] dialect`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScimDialect {
    /// RFC 7644 section 3.5.2: lowercase ops, boolean `active`, complex values.
    Rfc,
    /// What Entra's provisioning sends by default: one op per attribute with a path,
    /// capitalised ops, `emails[type eq "work"].value`, `active` as "True"/"False".
    Entra,
    /// Entra with `aadOptscim062020`: lowercase ops, one no-path `replace` of every
    /// set attribute (dotted keys), boolean `active`.
    Entra2020,
}

#[derive(Debug, Clone)]
pub struct DirectoryConfig {
    pub name: String,
    pub kind: DirectoryKind,
    pub schedule: Option<Schedule>,
    pub mapping: MappingPolicy,
    /// Overrides `[sync] deactivate_after` for this directory.
    pub deactivate_after: Option<Duration>,
    /// Which of the directory's groups reach the store (issue 16).
    pub groups: crate::groups::GroupSelection,
    /// The name of the store the directory's learners go to (`store = "NAME"`).
    pub store: String,
}

impl DirectoryConfig {
    /// The grace period of this directory's leavers.
    pub fn grace(&self, sync: &SyncSettings) -> Duration {
        self.deactivate_after.unwrap_or(sync.deactivate_after)
    }
}

#[derive(Debug, Clone)]
pub enum DirectoryKind {
    Csv {
        path: PathBuf,
        format: crate::source::csv::CsvFormat,
    },
    Entra(EntraConfig),
    Google(GoogleConfig),
}

impl DirectoryKind {
    pub fn name(&self) -> &'static str {
        match self {
            DirectoryKind::Csv { .. } => "csv",
            DirectoryKind::Entra(_) => "entra",
            DirectoryKind::Google(_) => "google",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    pub credential: EntraCredential,
    /// The `[credential.NAME]` the client id and credential come from, if shared.
    pub credential_name: Option<String>,
    pub cloud: Cloud,
    pub scope: EntraScope,
    /// Login authority root, e.g. `https://login.microsoftonline.com`.
    pub authority_url: reqwest::Url,
    /// Graph root including the version, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: reqwest::Url,
}

impl EntraConfig {
    /// Where `key` of this directory's credential is written: under a shared
    /// `[credential.NAME]` (the same for every directory naming it, so it is listed
    /// once), else under the directory.
    fn credential_key(&self, directory: &str, key: &str) -> String {
        match &self.credential_name {
            Some(c) => format!("credential.{c}.{key}"),
            None => format!("{directory}.{key}"),
        }
    }
}

#[derive(Debug, Clone)]
pub enum EntraCredential {
    Secret(SecretRef),
    Certificate {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
}

/// A closed set of names: parsed by serde from the key's string, so the names live in
/// one place (`#[serde(rename_all)]`), while the error still names file:line:key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Global,
    UsGov,
    Dod,
    China,
}

impl Cloud {
    /// (authority, graph root) per national cloud.
    pub fn endpoints(self) -> (&'static str, &'static str) {
        match self {
            Cloud::Global => (
                "https://login.microsoftonline.com",
                "https://graph.microsoft.com/v1.0",
            ),
            Cloud::UsGov => (
                "https://login.microsoftonline.us",
                "https://graph.microsoft.us/v1.0",
            ),
            Cloud::Dod => (
                "https://login.microsoftonline.us",
                "https://dod-graph.microsoft.us/v1.0",
            ),
            Cloud::China => (
                "https://login.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn/v1.0",
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntraScope {
    All,
    Groups(Vec<String>),
    App(String),
}

#[derive(Debug, Clone)]
pub struct GoogleConfig {
    pub service_account_key: SecretRef,
    pub admin_email: String,
    /// `customer=` (default `my_customer`) unless `domain` is set.
    pub customer: String,
    pub domain: Option<String>,
    pub scope: GoogleScope,
    /// Overrides the key file's `token_uri`.
    pub token_url: Option<reqwest::Url>,
    pub directory_url: reqwest::Url,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoogleScope {
    All,
    OrgUnits(Vec<String>),
    Groups(Vec<String>),
}

impl Config {
    /// The config path: `--config`, else `$LEARNER_SYNC_CONFIG`, else the default.
    pub fn resolve_path(flag: Option<&Path>) -> PathBuf {
        if let Some(p) = flag {
            return p.to_path_buf();
        }
        match std::env::var_os("LEARNER_SYNC_CONFIG") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => PathBuf::from(DEFAULT_CONFIG_PATH),
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parse config text as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let loc = Locator { path, text };
        let mut raw: RawConfig = toml::from_str(text).map_err(|e| loc.toml_error(&e))?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let v = Validator {
            loc,
            base,
            credentials: std::mem::take(&mut raw.credential),
        };
        v.config(raw, path)
    }

    pub fn directory(&self, name: &str) -> Option<&DirectoryConfig> {
        self.directories.iter().find(|d| d.name == name)
    }

    /// The name and config of the store directory `name` writes to (for a name the
    /// config does not have: the default store, else the first).
    pub fn store_named_for(&self, name: &str) -> (&str, &StoreConfig) {
        let wanted = self
            .directory(name)
            .map_or(DEFAULT_STORE, |d| d.store.as_str());
        // Parsing makes at least one store; a config built by hand may have none.
        static NONE: std::sync::LazyLock<StoreConfig> =
            std::sync::LazyLock::new(|| StoreConfig::Sqlite {
                path: PathBuf::from("/var/lib/learner-sync/learners.db"),
            });
        self.stores
            .get_key_value(wanted)
            .or_else(|| self.stores.iter().next())
            .map(|(n, s)| (n.as_str(), s))
            .unwrap_or((DEFAULT_STORE, &NONE))
    }

    /// The config of the store directory `name` writes to (see `store_named_for`).
    pub fn store_for(&self, name: &str) -> &StoreConfig {
        self.store_named_for(name).1
    }
}

/// Reads a required string key of a directory, or says which is missing.
type Required<'a> = dyn Fn(&Option<S<String>>, &str) -> Result<String, ConfigError> + 'a;

struct Validator<'a> {
    loc: Locator<'a>,
    base: PathBuf,
    /// The `[credential.NAME]` tables, which Entra directories refer to.
    credentials: BTreeMap<String, S<raw::RawCredential>>,
}

fn span<T>(s: &S<T>) -> Option<std::ops::Range<usize>> {
    Some(s.span())
}

impl Validator<'_> {
    fn err<T>(&self, at: &S<T>, key: &str, message: impl Into<String>) -> ConfigError {
        self.loc.error_at(span(at), key, message)
    }

    /// One of a closed set of names (a serde enum), or `message` at the key.
    fn closed<T: serde::de::DeserializeOwned>(
        &self,
        v: &S<String>,
        key: &str,
        message: &str,
    ) -> Result<T, ConfigError> {
        use serde::de::value::{Error, StrDeserializer};
        T::deserialize(StrDeserializer::<Error>::new(v.get_ref()))
            .map_err(|_| self.err(v, key, message))
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn config(&self, raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
        let sync = self.sync(raw.sync)?;
        let daemon = match raw.daemon {
            None => None,
            Some(d) => {
                let listen = match d.listen {
                    None => None,
                    Some(l) => Some(l.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                        self.err(
                            &l,
                            "daemon.listen",
                            "expected an address like \"127.0.0.1:9464\"",
                        )
                    })?),
                };
                let unhealthy_after = match d.unhealthy_after {
                    None => 3,
                    Some(n) => u32::try_from(*n.get_ref())
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| {
                            self.err(&n, "daemon.unhealthy_after", "must be a whole number >= 1")
                        })?,
                };
                Some(DaemonSettings {
                    listen,
                    unhealthy_after,
                })
            }
        };
        let (stores, external_id_exprs) = self.stores(raw.store)?;
        let mut names = BTreeSet::new();
        let mut directories = Vec::new();
        for (i, d) in raw.directory.into_iter().enumerate() {
            let store = self.store_of(i, &d, &stores)?;
            let scim_store = matches!(stores.get(&store), Some(StoreConfig::Scim { .. }));
            // `external_id = "<directory attribute>"` (Entra push's `mailNickname`, say):
            // each directory maps it into the SCIM `externalId`, checked for its kind.
            let external_id_expr = external_id_exprs
                .get(&store)
                .and_then(|e| e.as_ref())
                .filter(|_| scim_store);
            let mut dir = self.directory(i, d, &mut names, scim_store, external_id_expr)?;
            dir.store = store;
            directories.push(dir);
        }
        let notify = self.notify_tables(raw.notify, &names)?;
        Ok(Config {
            path: path.to_path_buf(),
            sync,
            daemon,
            stores,
            directories,
            notify,
        })
    }

    /// The stores by name, and the directory attribute each SCIM store writes as
    /// `externalId` (if any).
    #[allow(clippy::type_complexity)]
    fn stores(
        &self,
        raw: Option<S<raw::RawStoreSection>>,
    ) -> Result<
        (
            BTreeMap<String, StoreConfig>,
            BTreeMap<String, Option<S<String>>>,
        ),
        ConfigError,
    > {
        let mut stores = BTreeMap::new();
        let mut exprs = BTreeMap::new();
        let Some(raw) = raw else {
            stores.insert(
                DEFAULT_STORE.to_string(),
                StoreConfig::Sqlite {
                    path: PathBuf::from("/var/lib/learner-sync/learners.db"),
                },
            );
            return Ok((stores, exprs));
        };
        let span = raw.span();
        let section = raw.into_inner();
        let expr = |s: &raw::RawStore| {
            s.f.external_id
                .clone()
                .filter(|v| !SCIM_EXTERNAL_IDS.contains(&v.get_ref().as_str()))
        };
        if let Some(keys) = section.single {
            if let Some((name, at)) = section.named.first() {
                return Err(self.loc.error_at(
                    Some(at.span()),
                    format!("store.{name}"),
                    "[store] has keys of its own (the store named \"default\"), so it cannot also hold named stores; name every store ([store.default], [store.NAME])",
                ));
            }
            let Some(kind) = keys.kind.clone() else {
                return Err(self.loc.error_at(
                    Some(span),
                    "store.kind",
                    "a store needs `kind` (\"sqlite\", \"scim\" or \"postgres\")",
                ));
            };
            let one = keys.with_kind(kind);
            exprs.insert(DEFAULT_STORE.to_string(), expr(&one));
            let store = self.store(S::new(span, one), "store", None)?;
            stores.insert(DEFAULT_STORE.to_string(), store);
            return Ok((stores, exprs));
        }
        for (name, table) in section.named {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(self.err(
                    &table,
                    &format!("store.{name}"),
                    "a store's name uses only letters, digits, '-', '_' and '.'",
                ));
            }
            exprs.insert(name.clone(), expr(table.get_ref()));
            let mirror = (name != DEFAULT_STORE).then(|| name.clone());
            let store = self.store(table, &format!("store.{name}"), mirror)?;
            stores.insert(name, store);
        }
        if stores.is_empty() {
            return Err(self.loc.error_at(
                Some(span),
                "store",
                "no store: give [store] a `kind`, or add [store.NAME] tables",
            ));
        }
        Ok((stores, exprs))
    }

    /// The store directory `index` writes to: its `store = "NAME"`, else the one named
    /// "default", else the only one.
    fn store_of(
        &self,
        index: usize,
        d: &S<RawDirectory>,
        stores: &BTreeMap<String, StoreConfig>,
    ) -> Result<String, ConfigError> {
        let names = || {
            stores
                .keys()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match &d.get_ref().store {
            Some(v) => {
                let name = v.get_ref().trim();
                if stores.contains_key(name) {
                    Ok(name.to_string())
                } else {
                    Err(self.err(
                        v,
                        &format!("directory[{index}].store"),
                        format!("no store is named `{name}` (the stores: {})", names()),
                    ))
                }
            }
            None if stores.contains_key(DEFAULT_STORE) => Ok(DEFAULT_STORE.to_string()),
            None if stores.len() == 1 => Ok(stores.keys().next().cloned().unwrap_or_default()),
            None => Err(self.err(
                d,
                &format!("directory[{index}].store"),
                format!(
                    "several stores and none named \"default\": name this directory's with store = \"NAME\" (the stores: {})",
                    names()
                ),
            )),
        }
    }

    fn sync(&self, raw: Option<raw::RawSync>) -> Result<SyncSettings, ConfigError> {
        let mut s = SyncSettings {
            schedule: Schedule::Every(Duration::from_secs(40 * 60)),
            state_db: PathBuf::from("/var/lib/learner-sync/state.db"),
            max_deactivations: 50,
            max_deactivation_percent: 10.0,
            max_deactivation_percent_per_day: 20.0,
            max_update_percent: 50.0,
            full_resync: Duration::from_secs(24 * 3600),
            concurrency: 4,
            run_timeout: Duration::from_secs(2 * 3600),
            request_timeout: Duration::from_secs(120),
            deactivate_after: Duration::ZERO,
        };
        let Some(raw) = raw else { return Ok(s) };
        if let Some(v) = raw.schedule {
            s.schedule = schedule::parse_schedule(v.get_ref())
                .map_err(|m| self.err(&v, "sync.schedule", m))?;
        }
        if let Some(v) = raw.state_db {
            s.state_db = self.non_empty_path(&v, "sync.state_db")?;
        }
        if let Some(v) = raw.max_deactivations {
            s.max_deactivations = u64::try_from(*v.get_ref())
                .map_err(|_| self.err(&v, "sync.max_deactivations", "must not be negative"))?;
        }
        // A day may always take what one run may: with no explicit daily limit, a
        // per-run limit above the daily default raises it.
        let daily_given = raw.max_deactivation_percent_per_day.is_some();
        for (v, key, slot) in [
            (
                raw.max_deactivation_percent,
                "sync.max_deactivation_percent",
                &mut s.max_deactivation_percent,
            ),
            (
                raw.max_deactivation_percent_per_day,
                "sync.max_deactivation_percent_per_day",
                &mut s.max_deactivation_percent_per_day,
            ),
            (
                raw.max_update_percent,
                "sync.max_update_percent",
                &mut s.max_update_percent,
            ),
        ] {
            if let Some(v) = v {
                let p = *v.get_ref();
                if !(0.0..=100.0).contains(&p) {
                    return Err(self.err(&v, key, "must be between 0 and 100"));
                }
                *slot = p;
            }
        }
        if !daily_given {
            s.max_deactivation_percent_per_day = s
                .max_deactivation_percent_per_day
                .max(s.max_deactivation_percent);
        }
        if let Some(v) = raw.full_resync {
            s.full_resync = schedule::parse_duration(v.get_ref())
                .map_err(|m| self.err(&v, "sync.full_resync", m))?;
        }
        if let Some(v) = raw.concurrency {
            s.concurrency = usize::try_from(*v.get_ref())
                .ok()
                .filter(|n| (1..=64).contains(n))
                .ok_or_else(|| self.err(&v, "sync.concurrency", "must be between 1 and 64"))?;
        }
        if let Some(v) = raw.run_timeout {
            s.run_timeout = schedule::parse_duration(v.get_ref())
                .map_err(|m| self.err(&v, "sync.run_timeout", m))?;
        }
        if let Some(v) = raw.request_timeout {
            s.request_timeout = schedule::parse_duration(v.get_ref())
                .map_err(|m| self.err(&v, "sync.request_timeout", m))?;
        }
        if let Some(v) = raw.deactivate_after {
            s.deactivate_after = self.grace(&v, "sync.deactivate_after")?;
        }
        Ok(s)
    }

    fn non_empty_path(&self, v: &S<String>, key: &str) -> Result<PathBuf, ConfigError> {
        if v.get_ref().trim().is_empty() {
            return Err(self.err(v, key, "must not be empty"));
        }
        Ok(self.path(v.get_ref()))
    }

    /// One store's table; `at` is where its keys are written (`store`, `store.NAME`)
    /// and `mirror` the name its SCIM mirror is kept under (`None`: the default's).
    fn store(
        &self,
        raw: S<raw::RawStore>,
        at: &str,
        mirror: Option<String>,
    ) -> Result<StoreConfig, ConfigError> {
        let s = &raw.get_ref().f;
        let kind = raw.get_ref().kind.get_ref().as_str();
        let k = |key: &str| format!("{at}.{key}");
        let only = |allowed: &[&str]| -> Result<(), ConfigError> {
            let present: [(&str, Option<std::ops::Range<usize>>); 12] = [
                ("path", s.path.as_ref().map(|v| v.span())),
                ("url", s.url.as_ref().map(|v| v.span())),
                ("token", s.token.as_ref().map(|v| v.span())),
                ("password", s.password.as_ref().map(|v| v.span())),
                ("concurrency", s.concurrency.as_ref().map(|v| v.span())),
                ("deactivate", s.deactivate.as_ref().map(|v| v.span())),
                ("dialect", s.dialect.as_ref().map(|v| v.span())),
                (
                    "max_requests_per_second",
                    s.max_requests_per_second.as_ref().map(|v| v.span()),
                ),
                ("match", s.match_by.as_ref().map(|v| v.span())),
                ("external_id", s.external_id.as_ref().map(|v| v.span())),
                ("groups", s.groups.as_ref().map(|v| v.span())),
                ("lease", s.lease.as_ref().map(|v| v.span())),
            ];
            for (key, at) in present {
                if let (Some(at), false) = (at, allowed.contains(&key)) {
                    return Err(self.loc.error_at(
                        Some(at),
                        k(key),
                        format!("not a key of a `{kind}` store"),
                    ));
                }
            }
            Ok(())
        };
        match kind {
            "sqlite" => {
                only(&["path"])?;
                let path = match &s.path {
                    Some(p) => self.non_empty_path(p, &k("path"))?,
                    None => PathBuf::from("/var/lib/learner-sync/learners.db"),
                };
                Ok(StoreConfig::Sqlite { path })
            }
            "scim" => {
                only(&[
                    "url",
                    "token",
                    "concurrency",
                    "deactivate",
                    "dialect",
                    "max_requests_per_second",
                    "match",
                    "external_id",
                    "groups",
                ])?;
                let url = s
                    .url
                    .as_ref()
                    .ok_or_else(|| self.err(&raw, &k("url"), "a scim store needs `url`"))?;
                let url = self.url(url, &k("url"))?;
                let token = s
                    .token
                    .as_ref()
                    .ok_or_else(|| self.err(&raw, &k("token"), "a scim store needs `token`"))?;
                let token = self.secret(token, &k("token"))?;
                let concurrency = match &s.concurrency {
                    None => 4,
                    Some(v) => usize::try_from(*v.get_ref())
                        .ok()
                        .filter(|n| (1..=64).contains(n))
                        .ok_or_else(|| {
                            self.err(v, &k("concurrency"), "must be between 1 and 64")
                        })?,
                };
                let deactivate = match s.deactivate.as_ref() {
                    None => ScimDeactivate::Patch,
                    Some(v) => match v.get_ref().as_str() {
                        "patch" => ScimDeactivate::Patch,
                        "delete" => ScimDeactivate::Delete,
                        _ => {
                            return Err(self.err(
                                v,
                                &k("deactivate"),
                                "must be \"patch\" or \"delete\"",
                            ))
                        }
                    },
                };
                // Entra's dialect by default: what the platforms' endpoints were
                // built and tested against.
                let dialect = match s.dialect.as_ref() {
                    None => ScimDialect::Entra,
                    Some(v) => match v.get_ref().as_str() {
                        "rfc" => ScimDialect::Rfc,
                        "entra" => ScimDialect::Entra,
                        "entra-2020" => ScimDialect::Entra2020,
                        _ => {
                            return Err(self.err(
                                v,
                                &k("dialect"),
                                "must be \"entra\", \"entra-2020\" or \"rfc\"",
                            ))
                        }
                    },
                };
                let max_requests_per_second = match &s.max_requests_per_second {
                    // Entra's figure for gallery apps.
                    None => 25.0,
                    Some(v) => {
                        let n = match v.get_ref() {
                            toml::Value::Integer(i) => *i as f64,
                            toml::Value::Float(f) => *f,
                            _ => f64::NAN,
                        };
                        // 0: no limit, for a provider of one's own that takes whatever
                        // the concurrency sends (and for benchmarks of the provider).
                        if !(n == 0.0 || (0.1..=1000.0).contains(&n)) {
                            return Err(self.err(
                                v,
                                &k("max_requests_per_second"),
                                "must be a number between 0.1 and 1000, or 0 for no limit",
                            ));
                        }
                        n
                    }
                };
                let match_by = match s.match_by.as_ref() {
                    None if dialect == ScimDialect::Rfc => ScimMatch::ExternalIdThenUserName,
                    // Entra's default matching attribute.
                    None => ScimMatch::UserName,
                    Some(v) => match v.get_ref().as_str() {
                        "userName" => ScimMatch::UserName,
                        "externalId" => ScimMatch::ExternalId,
                        "emails" => ScimMatch::Emails,
                        _ => {
                            return Err(self.err(
                                v,
                                &k("match"),
                                "must be \"userName\", \"externalId\" or \"emails\"",
                            ))
                        }
                    },
                };
                let external_id = match s.external_id.as_ref() {
                    None => ScimExternalId::DirectoryId,
                    Some(v) => match v.get_ref().as_str() {
                        "objectId" | "id" => ScimExternalId::DirectoryId,
                        "userName" => ScimExternalId::Field(crate::model::Field::UserName),
                        "email" | "mail" => ScimExternalId::Field(crate::model::Field::Email),
                        "employeeId" => ScimExternalId::Field(crate::model::Field::EmployeeId),
                        // Anything else is a directory attribute (or an expression of
                        // them): each directory maps it into `externalId`.
                        _ => ScimExternalId::Mapped,
                    },
                };
                Ok(StoreConfig::Scim {
                    url,
                    token,
                    concurrency,
                    deactivate,
                    dialect,
                    max_requests_per_second,
                    match_by,
                    external_id,
                    groups: s.groups.as_ref().is_some_and(|v| *v.get_ref()),
                    mirror,
                })
            }
            "postgres" => {
                only(&["url", "password", "lease"])?;
                let url = s
                    .url
                    .as_ref()
                    .ok_or_else(|| self.err(&raw, &k("url"), "a postgres store needs `url`"))?;
                let url = Box::new(self.postgres_url(url, &k("url"))?);
                let password = s
                    .password
                    .as_ref()
                    .map(|v| self.secret(v, &k("password")))
                    .transpose()?;
                let lease = match &s.lease {
                    None => Duration::from_secs(30),
                    Some(v) => schedule::parse_duration(v.get_ref())
                        .map_err(|m| self.err(v, &k("lease"), m))
                        .and_then(|d| {
                            if (Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&d) {
                                Ok(d)
                            } else {
                                Err(self.err(v, &k("lease"), "must be between 1s and 1h"))
                            }
                        })?,
                };
                Ok(StoreConfig::Postgres {
                    url,
                    password,
                    lease,
                })
            }
            _ => Err(self.err(
                &raw.get_ref().kind,
                &k("kind"),
                "must be \"sqlite\", \"scim\" or \"postgres\"",
            )),
        }
    }

    /// A PostgreSQL connection URL (`postgres://user@host:port/db?sslmode=...`): no
    /// password in it (that is a secret: `password = { env = "..." }`), a user and a
    /// database named, and TLS required for a host that is not loopback unless the URL
    /// says `sslmode=disable` itself.
    fn postgres_url(&self, v: &S<String>, key: &str) -> Result<PostgresUrl, ConfigError> {
        let text = v.get_ref().trim();
        let parsed = url::Url::parse(text)
            .ok()
            .filter(|u| matches!(u.scheme(), "postgres" | "postgresql"))
            .ok_or_else(|| {
                self.err(
                    v,
                    key,
                    "must be a postgres:// URL, e.g. \"postgres://learner_sync@db.example.com/training\"",
                )
            })?;
        if parsed.password().is_some() || parsed.query_pairs().any(|(k, _)| k == "password") {
            return Err(self.err(
                v,
                key,
                "holds a password: a secret is never written inline; put it in `password = { env = \"...\" }` (or file, or credential) and take it out of the URL",
            ));
        }
        // libpq's `sslrootcert` (a CA file) and `sslmode=verify-ca|verify-full` are taken
        // here: the client knows neither, and always verifies the chain and the host
        // name when it uses TLS (what libpq calls verify-full).
        let mut root_cert = None;
        let mut client_url = parsed.clone();
        client_url.set_query(None);
        let mut pairs = Vec::new();
        for (k, val) in parsed.query_pairs() {
            match (k.as_ref(), val.as_ref()) {
                ("sslrootcert", file) => root_cert = Some(self.path(file)),
                ("sslmode", "verify-ca" | "verify-full") => {
                    pairs.push(("sslmode".to_string(), "require".to_string()))
                }
                _ => pairs.push((k.into_owned(), val.into_owned())),
            }
        }
        if !pairs.is_empty() {
            client_url.query_pairs_mut().extend_pairs(pairs);
        }
        let config: tokio_postgres::Config = client_url
            .as_str()
            .parse()
            .map_err(|e| self.err(v, key, format!("is not a PostgreSQL URL: {e}")))?;
        if config.get_user().is_none_or(str::is_empty) {
            return Err(self.err(v, key, "names no user (postgres://USER@host/database)"));
        }
        if config.get_dbname().is_none_or(str::is_empty) {
            return Err(self.err(v, key, "names no database (postgres://user@host/DATABASE)"));
        }
        Ok(PostgresUrl::new(text.to_string(), config, root_cert))
    }

    /// A URL override: https anywhere, plain http only for loopback hosts.
    fn url(&self, v: &S<String>, key: &str) -> Result<reqwest::Url, ConfigError> {
        let url = reqwest::Url::parse(v.get_ref().trim())
            .map_err(|e| self.err(v, key, format!("not a URL: {e}")))?;
        match url.scheme() {
            "https" => Ok(url),
            "http" if is_loopback(&url) => Ok(url),
            "http" => Err(self.err(
                v,
                key,
                "plain http:// is accepted only for loopback hosts; use https://",
            )),
            other => Err(self.err(v, key, format!("unsupported scheme `{other}`"))),
        }
    }

    fn secret(&self, v: &S<toml::Value>, key: &str) -> Result<SecretRef, ConfigError> {
        let refused = || {
            self.err(
                v,
                key,
                "secrets are not written in the config; use { env = \"NAME\" }, { file = \"PATH\" } \
                 or { credential = \"NAME\" } (systemd's LoadCredential=NAME:PATH)",
            )
        };
        let table = match v.get_ref() {
            toml::Value::Table(t) => t,
            _ => return Err(refused()),
        };
        let given: Vec<&str> = ["env", "file", "credential"]
            .into_iter()
            .filter(|k| table.contains_key(*k))
            .collect();
        if given.len() > 1 {
            return Err(self.err(
                v,
                key,
                format!(
                    "give only one of env, file or credential, not {}",
                    given.join(" and ")
                ),
            ));
        }
        if let Some(other) = table
            .keys()
            .find(|k| !["env", "file", "credential"].contains(&k.as_str()))
        {
            return Err(self.err(
                v,
                key,
                format!(
                    "unknown key `{}` in a secret: give one of env, file or credential",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
        let only = |k: &str| match (table.len(), table.get(k)) {
            (1, Some(toml::Value::String(s))) if !s.is_empty() => Some(s),
            _ => None,
        };
        if let Some(name) = only("env") {
            return Ok(SecretRef::Env(name.clone()));
        }
        if let Some(path) = only("file") {
            return Ok(SecretRef::File(self.path(path)));
        }
        if let Some(name) = only("credential") {
            // A name systemd accepts in LoadCredential=: one path component.
            if name.contains('/') || name == "." || name == ".." || name.len() > 255 {
                return Err(self.err(
                    v,
                    key,
                    "a credential name is one file name as given to LoadCredential=NAME:PATH \
                     (no '/'); it is read from $CREDENTIALS_DIRECTORY/NAME",
                ));
            }
            return Ok(SecretRef::Credential(name.clone()));
        }
        Err(refused())
    }

    fn directory(
        &self,
        index: usize,
        raw: S<RawDirectory>,
        names: &mut BTreeSet<String>,
        scim_store: bool,
        external_id_expr: Option<&S<String>>,
    ) -> Result<DirectoryConfig, ConfigError> {
        let d = raw.get_ref();
        let key = |k: &str| format!("directory[{index}].{k}");
        let name = d.name.get_ref().trim().to_string();
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(self.err(
                &d.name,
                &key("name"),
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            ));
        }
        if !names.insert(name.clone()) {
            return Err(self.err(
                &d.name,
                &key("name"),
                format!("duplicate directory name `{name}`"),
            ));
        }
        let kind_name = d.kind.get_ref().as_str();
        let allowed: &[&str] = match kind_name {
            "csv" => &["path", "delimiter", "encoding"],
            "entra" => &[
                "tenant_id",
                "credential",
                "client_id",
                "client_secret",
                "certificate",
                "cloud",
                "scope",
                "exclude_guests",
                "authority_url",
                "graph_url",
            ],
            "google" => &[
                "service_account_key",
                "admin_email",
                "customer",
                "domain",
                "scope",
                "token_url",
                "directory_url",
            ],
            _ => {
                return Err(self.err(
                    &d.kind,
                    &key("kind"),
                    "must be \"entra\", \"google\" or \"csv\"",
                ))
            }
        };
        for (k, at) in present_keys(d) {
            if !allowed.contains(&k) {
                return Err(self.loc.error_at(
                    Some(at),
                    key(k),
                    format!("not a key of a `{kind_name}` directory"),
                ));
            }
        }
        let required = |v: &Option<S<String>>, k: &str| -> Result<String, ConfigError> {
            match v {
                Some(v) if !v.get_ref().trim().is_empty() => Ok(v.get_ref().trim().to_string()),
                Some(v) => Err(self.err(v, &key(k), "must not be empty")),
                None => Err(self.err(
                    &raw,
                    &key(k),
                    format!("a `{kind_name}` directory needs `{k}`"),
                )),
            }
        };
        let kind = match kind_name {
            "csv" => DirectoryKind::Csv {
                path: self.path(&required(&d.path, "path")?),
                format: self.csv_format(d, &key)?,
            },
            "entra" => DirectoryKind::Entra(self.entra(index, &raw, &required)?),
            _ => DirectoryKind::Google(self.google(index, &raw, &required)?),
        };
        let schedule = match &d.schedule {
            None => None,
            Some(v) => Some(
                schedule::parse_schedule(v.get_ref())
                    .map_err(|m| self.err(v, &key("schedule"), m))?,
            ),
        };
        let exclude_guests = d
            .exclude_guests
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(true);
        let attr_kind = match kind {
            DirectoryKind::Csv { .. } => crate::mapping::attr::Kind::Csv,
            DirectoryKind::Entra(_) => crate::mapping::attr::Kind::Entra,
            DirectoryKind::Google(_) => crate::mapping::attr::Kind::Google,
        };
        let deactivate_after = match &d.deactivate_after {
            None => None,
            Some(v) => Some(self.grace(v, &key("deactivate_after"))?),
        };
        let mapping = mapping::Parse {
            loc: &self.loc,
            index,
            kind: attr_kind,
            scim_store,
            external_id: external_id_expr,
        }
        .policy(exclude_guests, d.mapping.as_ref(), d.filter.as_ref())?;
        let groups = match &d.groups {
            None => crate::groups::GroupSelection::None,
            Some(v) => self.groups(v, &key("groups"), &kind)?,
        };
        Ok(DirectoryConfig {
            name,
            kind,
            schedule,
            mapping,
            deactivate_after,
            groups,
            store: DEFAULT_STORE.to_string(),
        })
    }

    /// `groups = "none" | "scoped" | { names = [...] } | { ids = [...] } | { prefix = "..." }`.
    fn groups(
        &self,
        v: &S<toml::Value>,
        key: &str,
        kind: &DirectoryKind,
    ) -> Result<crate::groups::GroupSelection, ConfigError> {
        use crate::groups::GroupSelection;
        let expected = "must be \"none\", \"scoped\", { names = [...] }, { ids = [...] } or { prefix = \"...\" }";
        let strings = |val: &toml::Value, k: &str| self.strings(v, key, k, val, "name");
        let selection = match v.get_ref() {
            toml::Value::String(s) if s == "none" => GroupSelection::None,
            toml::Value::String(s) if s == "scoped" => GroupSelection::Scoped,
            toml::Value::Table(t) if t.len() == 1 => match t.iter().next() {
                Some((k, val)) if k == "names" => GroupSelection::Names(strings(val, k)?),
                Some((k, val)) if k == "ids" => GroupSelection::Ids(strings(val, k)?),
                Some((k, toml::Value::String(p))) if k == "prefix" => {
                    GroupSelection::Prefix(p.clone())
                }
                Some((k, _)) if k == "prefix" => {
                    return Err(self.err(v, key, "`prefix` takes a string"))
                }
                _ => return Err(self.err(v, key, expected)),
            },
            _ => return Err(self.err(v, key, expected)),
        };
        if selection == GroupSelection::Scoped {
            let scoped = match kind {
                DirectoryKind::Entra(e) => !matches!(e.scope, EntraScope::All),
                DirectoryKind::Google(g) => matches!(g.scope, GoogleScope::Groups(_)),
                DirectoryKind::Csv { .. } => false,
            };
            if !scoped {
                return Err(self.err(
                    v,
                    key,
                    "\"scoped\" takes the groups the scope names, and this directory's scope names none: set scope = { groups = [...] } (or an app), or name the groups here",
                ));
            }
        }
        Ok(selection)
    }

    /// A CSV directory's `delimiter` and `encoding`; unset ones are detected per file.
    fn csv_format(
        &self,
        d: &RawDirectory,
        key: &dyn Fn(&str) -> String,
    ) -> Result<crate::source::csv::CsvFormat, ConfigError> {
        use crate::source::csv::{parse_delimiter, CsvEncoding, CsvFormat};
        let delimiter = match &d.delimiter {
            None => None,
            Some(v) => Some(parse_delimiter(v.get_ref()).ok_or_else(|| {
                self.err(
                    v,
                    &key("delimiter"),
                    "must be \",\", \";\" or \"\\t\" (tab); leave it out to detect it from the header line",
                )
            })?),
        };
        let encoding = match &d.encoding {
            None => None,
            Some(v) => Some(CsvEncoding::parse(v.get_ref()).ok_or_else(|| {
                self.err(
                    v,
                    &key("encoding"),
                    "must be \"utf-8\", \"windows-1252\" or \"latin-1\"; leave it out to detect it (UTF-8, else windows-1252)",
                )
            })?),
        };
        Ok(CsvFormat {
            delimiter,
            encoding,
        })
    }

    fn entra(
        &self,
        index: usize,
        raw: &S<RawDirectory>,
        required: &Required<'_>,
    ) -> Result<EntraConfig, ConfigError> {
        let d = raw.get_ref();
        let key = |k: &str| format!("directory[{index}].{k}");
        let tenant_id = required(&d.tenant_id, "tenant_id")?;
        let (client_id, credential, credential_name) = match &d.credential {
            Some(name) => {
                let (client_id, credential) = self.shared_credential(index, d, name)?;
                (client_id, credential, Some(name.get_ref().clone()))
            }
            None => {
                let client_id = required(&d.client_id, "client_id")?;
                let credential = self.app_credential(
                    &d.client_secret,
                    &d.certificate,
                    &key("client_secret"),
                    raw,
                    "an entra directory needs client_secret or certificate (or credential = \"NAME\" of a [credential.NAME] table)",
                )?;
                (client_id, credential, None)
            }
        };
        let cloud = match &d.cloud {
            None => Cloud::Global,
            Some(v) => self.closed(
                v,
                &key("cloud"),
                "must be \"global\", \"usgov\", \"dod\" or \"china\"",
            )?,
        };
        let (authority, graph) = cloud.endpoints();
        let authority_url = match &d.authority_url {
            Some(v) => self.url(v, &key("authority_url"))?,
            None => reqwest::Url::parse(authority)
                .map_err(|e| self.err(raw, &key("cloud"), e.to_string()))?,
        };
        let graph_url = match &d.graph_url {
            Some(v) => self.url(v, &key("graph_url"))?,
            None => reqwest::Url::parse(graph)
                .map_err(|e| self.err(raw, &key("cloud"), e.to_string()))?,
        };
        let scope = match &d.scope {
            None => EntraScope::All,
            Some(v) => {
                let (k, ids) = self.scope(v, &key("scope"), &["groups", "app"])?;
                match k.as_str() {
                    "all" => EntraScope::All,
                    "groups" => EntraScope::Groups(ids),
                    _ => match ids.as_slice() {
                        [one] => EntraScope::App(one.clone()),
                        _ => {
                            return Err(self.err(
                                v,
                                &key("scope"),
                                "`app` takes one service principal id",
                            ))
                        }
                    },
                }
            }
        };
        Ok(EntraConfig {
            tenant_id,
            client_id,
            credential,
            credential_name,
            cloud,
            scope,
            authority_url,
            graph_url,
        })
    }

    /// `credential = "NAME"`: the client id and secret or certificate of the
    /// `[credential.NAME]` table, which the directory must then not repeat.
    fn shared_credential(
        &self,
        index: usize,
        d: &RawDirectory,
        name: &S<String>,
    ) -> Result<(String, EntraCredential), ConfigError> {
        let key = |k: &str| format!("directory[{index}].{k}");
        for (k, at) in [
            ("client_id", d.client_id.as_ref().map(|v| v.span())),
            ("client_secret", d.client_secret.as_ref().map(|v| v.span())),
            ("certificate", d.certificate.as_ref().map(|v| v.span())),
        ] {
            if let Some(at) = at {
                return Err(self.loc.error_at(
                    Some(at),
                    key(k),
                    format!(
                        "this directory uses credential = \"{}\": its {k} is in [credential.{}], remove it here",
                        name.get_ref(),
                        name.get_ref()
                    ),
                ));
            }
        }
        let Some(table) = self.credentials.get(name.get_ref()) else {
            let known: Vec<&str> = self.credentials.keys().map(String::as_str).collect();
            let message = if known.is_empty() {
                format!(
                    "no [credential.{}] table in this file: declare the app's client_id and client_secret or certificate there",
                    name.get_ref()
                )
            } else {
                format!(
                    "no [credential.{}] table; declared: {}",
                    name.get_ref(),
                    known.join(", ")
                )
            };
            return Err(self.err(name, &key("credential"), message));
        };
        let c = table.get_ref();
        let ckey = |k: &str| format!("credential.{}.{k}", name.get_ref());
        let client_id = match &c.client_id {
            Some(v) if !v.get_ref().trim().is_empty() => v.get_ref().trim().to_string(),
            Some(v) => return Err(self.err(v, &ckey("client_id"), "must not be empty")),
            None => {
                return Err(self.err(table, &ckey("client_id"), "missing: the app's client id"))
            }
        };
        let credential = self.app_credential(
            &c.client_secret,
            &c.certificate,
            &ckey("client_secret"),
            table,
            "a credential needs client_secret or certificate",
        )?;
        Ok((client_id, credential))
    }

    /// An app registration's client secret or certificate (exactly one of them).
    fn app_credential<T>(
        &self,
        secret: &Option<S<toml::Value>>,
        certificate: &Option<S<raw::RawCertificate>>,
        secret_key: &str,
        table: &S<T>,
        missing: &str,
    ) -> Result<EntraCredential, ConfigError> {
        match (secret, certificate) {
            (Some(s), None) => Ok(EntraCredential::Secret(self.secret(s, secret_key)?)),
            (None, Some(c)) => Ok(EntraCredential::Certificate {
                cert_file: self.path(&c.get_ref().cert_file),
                key_file: self.path(&c.get_ref().key_file),
            }),
            (Some(s), Some(_)) => Err(self.err(
                s,
                secret_key,
                "give either client_secret or certificate, not both",
            )),
            (None, None) => Err(self.err(table, secret_key, missing)),
        }
    }

    fn google(
        &self,
        index: usize,
        raw: &S<RawDirectory>,
        required: &Required<'_>,
    ) -> Result<GoogleConfig, ConfigError> {
        let d = raw.get_ref();
        let key = |k: &str| format!("directory[{index}].{k}");
        let service_account_key = match &d.service_account_key {
            Some(v) => self.secret(v, &key("service_account_key"))?,
            None => {
                return Err(self.err(
                    raw,
                    &key("service_account_key"),
                    "a google directory needs `service_account_key`",
                ))
            }
        };
        let admin_email = required(&d.admin_email, "admin_email")?;
        if !admin_email.contains('@') {
            if let Some(v) = &d.admin_email {
                return Err(self.err(v, &key("admin_email"), "must be an email address"));
            }
        }
        if let (Some(_), Some(dom)) = (&d.customer, &d.domain) {
            return Err(self.err(
                dom,
                &key("domain"),
                "give either customer or domain, not both",
            ));
        }
        let customer = d
            .customer
            .as_ref()
            .map(|v| v.get_ref().trim().to_string())
            .unwrap_or_else(|| "my_customer".to_string());
        let domain = d.domain.as_ref().map(|v| v.get_ref().trim().to_string());
        let token_url = match &d.token_url {
            Some(v) => Some(self.url(v, &key("token_url"))?),
            None => None,
        };
        let directory_url = match &d.directory_url {
            Some(v) => self.url(v, &key("directory_url"))?,
            None => reqwest::Url::parse("https://admin.googleapis.com")
                .map_err(|e| self.err(raw, &key("directory_url"), e.to_string()))?,
        };
        let scope = match &d.scope {
            None => GoogleScope::All,
            Some(v) => {
                let (k, ids) = self.scope(v, &key("scope"), &["org_units", "groups"])?;
                match k.as_str() {
                    "all" => GoogleScope::All,
                    "org_units" => {
                        if let Some(bad) = ids.iter().find(|ou| !ou.starts_with('/')) {
                            return Err(self.err(
                                v,
                                &key("scope"),
                                format!("org unit paths start with '/', not `{bad}`"),
                            ));
                        }
                        GoogleScope::OrgUnits(ids)
                    }
                    _ => GoogleScope::Groups(ids),
                }
            }
        };
        Ok(GoogleConfig {
            service_account_key,
            admin_email,
            customer,
            domain,
            scope,
            token_url,
            directory_url,
        })
    }

    /// The strings of `k = "one"` or `k = ["a", "b"]` in the value `v` of `key`: at
    /// least one, none empty (each trimmed); `what` names one in the error.
    fn strings(
        &self,
        v: &S<toml::Value>,
        key: &str,
        k: &str,
        val: &toml::Value,
        what: &str,
    ) -> Result<Vec<String>, ConfigError> {
        let items = match val {
            toml::Value::String(s) => vec![s.trim().to_string()],
            toml::Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().map(|s| s.trim().to_string()))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.err(v, key, format!("`{k}` takes strings")))?,
            _ => return Err(self.err(v, key, format!("`{k}` takes strings"))),
        };
        if items.is_empty() || items.iter().any(String::is_empty) {
            return Err(self.err(
                v,
                key,
                format!("`{k}` must list at least one non-empty {what}"),
            ));
        }
        Ok(items)
    }

    /// `"all"` or a one-key table `{ <kind> = [ids] }` (or `{ app = "id" }`).
    fn scope(
        &self,
        v: &S<toml::Value>,
        key: &str,
        kinds: &[&str],
    ) -> Result<(String, Vec<String>), ConfigError> {
        let expected = format!(
            "must be \"all\" or one of {}",
            kinds
                .iter()
                .map(|k| format!("{{ {k} = [...] }}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        match v.get_ref() {
            toml::Value::String(s) if s == "all" => Ok(("all".to_string(), vec![])),
            toml::Value::Table(t) if t.len() == 1 => {
                let (k, val) = t.iter().next().ok_or_else(|| self.err(v, key, &expected))?;
                if !kinds.contains(&k.as_str()) {
                    return Err(self.err(v, key, expected));
                }
                let ids = self.strings(v, key, k, val, "id")?;
                Ok((k.clone(), ids))
            }
            _ => Err(self.err(v, key, expected)),
        }
    }
}

fn present_keys(d: &RawDirectory) -> Vec<(&'static str, std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut add = |k: &'static str, at: Option<std::ops::Range<usize>>| {
        if let Some(at) = at {
            out.push((k, at));
        }
    };
    add("path", d.path.as_ref().map(|v| v.span()));
    add("delimiter", d.delimiter.as_ref().map(|v| v.span()));
    add("encoding", d.encoding.as_ref().map(|v| v.span()));
    add("scope", d.scope.as_ref().map(|v| v.span()));
    add("tenant_id", d.tenant_id.as_ref().map(|v| v.span()));
    add("credential", d.credential.as_ref().map(|v| v.span()));
    add("client_id", d.client_id.as_ref().map(|v| v.span()));
    add("client_secret", d.client_secret.as_ref().map(|v| v.span()));
    add("certificate", d.certificate.as_ref().map(|v| v.span()));
    add("cloud", d.cloud.as_ref().map(|v| v.span()));
    add(
        "exclude_guests",
        d.exclude_guests.as_ref().map(|v| v.span()),
    );
    add("authority_url", d.authority_url.as_ref().map(|v| v.span()));
    add("graph_url", d.graph_url.as_ref().map(|v| v.span()));
    add(
        "service_account_key",
        d.service_account_key.as_ref().map(|v| v.span()),
    );
    add("admin_email", d.admin_email.as_ref().map(|v| v.span()));
    add("customer", d.customer.as_ref().map(|v| v.span()));
    add("domain", d.domain.as_ref().map(|v| v.span()));
    add("token_url", d.token_url.as_ref().map(|v| v.span()));
    add("directory_url", d.directory_url.as_ref().map(|v| v.span()));
    out
}

fn is_loopback(url: &reqwest::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Config {
    /// Files holding secrets: the config itself, secret files and certificate keys.
    pub fn secret_files(&self) -> Vec<(String, PathBuf)> {
        // Secrets are never written in the config (they are env, file or credential
        // references), so the config itself is sensitive only if a URL in it carries
        // a password: a fresh clone's 0644 demo config is not worth a warning.
        let mut out = Vec::new();
        if self.urls().iter().any(|u| u.password().is_some()) {
            out.push(("config".to_string(), self.path.clone()));
        }
        for (what, secret) in self.secrets() {
            if let SecretRef::File(p) = secret {
                out.push((what, p.clone()));
            }
        }
        for d in &self.directories {
            if let DirectoryKind::Entra(e) = &d.kind {
                if let EntraCredential::Certificate { key_file, .. } = &e.credential {
                    let label = e.credential_key(&d.name, "certificate.key_file");
                    if !out.iter().any(|(l, _)| *l == label) {
                        out.push((label, key_file.clone()))
                    }
                }
            }
        }
        out
    }

    /// Every secret reference of the config (env, file or systemd credential), by key.
    pub fn secrets(&self) -> Vec<(String, &SecretRef)> {
        let mut out = Vec::new();
        for (name, store) in &self.stores {
            if let StoreConfig::Scim { token, mirror, .. } = store {
                let label = match mirror {
                    None => "store.token".to_string(),
                    Some(_) => format!("store.{name}.token"),
                };
                out.push((label, token));
            }
            if let StoreConfig::Postgres {
                password: Some(password),
                ..
            } = store
            {
                let label = match name.as_str() {
                    DEFAULT_STORE => "store.password".to_string(),
                    _ => format!("store.{name}.password"),
                };
                out.push((label, password));
            }
        }
        for d in &self.directories {
            match &d.kind {
                DirectoryKind::Entra(e) => {
                    if let EntraCredential::Secret(s) = &e.credential {
                        let label = e.credential_key(&d.name, "client_secret");
                        if !out.iter().any(|(l, _)| *l == label) {
                            out.push((label, s));
                        }
                    }
                }
                DirectoryKind::Google(g) => {
                    out.push((
                        format!("{}.service_account_key", d.name),
                        &g.service_account_key,
                    ));
                }
                DirectoryKind::Csv { .. } => {}
            }
        }
        for (i, n) in self.notify.iter().enumerate() {
            if let Some((key, secret)) = n.secret() {
                out.push((format!("notify[{i}].{key}"), secret));
            }
        }
        out
    }

    /// Every URL the config names.
    fn urls(&self) -> Vec<&reqwest::Url> {
        let mut out = Vec::new();
        for store in self.stores.values() {
            if let StoreConfig::Scim { url, .. } = store {
                out.push(url);
            }
        }
        for d in &self.directories {
            match &d.kind {
                DirectoryKind::Entra(e) => out.extend([&e.authority_url, &e.graph_url]),
                DirectoryKind::Google(g) => {
                    out.extend(g.token_url.iter());
                    out.push(&g.directory_url);
                }
                DirectoryKind::Csv { .. } => {}
            }
        }
        out
    }

    /// Warnings about how the config is kept: files with secrets that other users
    /// of the machine can read.
    pub fn warnings(&self) -> Vec<String> {
        use std::os::unix::fs::PermissionsExt;
        self.secret_files()
            .into_iter()
            .filter_map(|(what, path)| {
                let mode = std::fs::metadata(&path).ok()?.permissions().mode();
                (mode & 0o007 != 0).then(|| {
                    format!(
                        "{what}: {} is readable by other users (mode {:04o}); run `chmod o-rwx {}`",
                        path.display(),
                        mode & 0o7777,
                        path.display()
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra(cloud: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[directory]]\nname = \"c\"\nkind = \"entra\"\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = {{ env = \"S\" }}\ncloud = \"{cloud}\"\n"
        );
        Config::parse(Path::new("/etc/ls/config.toml"), &text)
    }

    #[test]
    fn a_closed_name_parses_to_its_variant_and_a_stranger_names_file_line_and_key() {
        let c = entra("usgov").unwrap();
        let DirectoryKind::Entra(e) = &c.directories[0].kind else {
            panic!("entra")
        };
        assert_eq!(e.cloud, Cloud::UsGov);
        let e = entra("mars").unwrap_err().to_string();
        assert!(e.starts_with("/etc/ls/config.toml:7:"), "{e}");
        assert!(e.contains("cloud"), "{e}");
        assert!(
            e.contains(r#"must be "global", "usgov", "dod" or "china""#),
            "{e}"
        );
    }
}
