//! The config file as written: strict serde types, validated into `Config` by mod.rs.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub sync: Option<RawSync>,
    pub daemon: Option<RawDaemon>,
    /// `[store]` (the store named "default") or `[store.NAME]` tables.
    pub store: Option<S<RawStoreSection>>,
    #[serde(default)]
    pub directory: Vec<S<RawDirectory>>,
    #[serde(default)]
    pub notify: Vec<S<super::notify::RawNotify>>,
    /// `[credential.NAME]`: one app registration's credential, shared by the Entra
    /// directories that name it (a multi-tenant app consented in many tenants).
    #[serde(default)]
    pub credential: std::collections::BTreeMap<String, S<RawCredential>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCredential {
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<toml::Value>>,
    pub certificate: Option<S<RawCertificate>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    pub schedule: Option<S<String>>,
    pub state_db: Option<S<String>>,
    pub max_deactivations: Option<S<i64>>,
    pub max_deactivation_percent: Option<S<f64>>,
    pub max_deactivation_percent_per_day: Option<S<f64>>,
    pub max_update_percent: Option<S<f64>>,
    pub full_resync: Option<S<String>>,
    pub concurrency: Option<S<i64>>,
    pub run_timeout: Option<S<String>>,
    pub request_timeout: Option<S<String>>,
    pub deactivate_after: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    pub listen: Option<S<String>>,
    pub unhealthy_after: Option<S<i64>>,
}

/// One store's table: `kind` and the other keys.
#[derive(Debug)]
pub struct RawStore {
    pub kind: S<String>,
    pub f: RawStoreFields,
}

/// The `[store]` table: the keys of one store, or named stores (`[store.NAME]`), each
/// a table of a store's keys. Read key by key, so every value keeps its span.
#[derive(Debug, Default)]
pub struct RawStoreSection {
    /// The keys of `[store]` itself, with `kind` (if given).
    pub single: Option<RawStoreKeys>,
    pub named: Vec<(String, S<RawStore>)>,
}

/// A store's keys as `[store]` holds them (`kind` may be missing: an error later).
#[derive(Debug, Default)]
pub struct RawStoreKeys {
    pub kind: Option<S<String>>,
    pub store: RawStoreFields,
}

/// A store's keys but `kind`.
#[derive(Debug, Default)]
pub struct RawStoreFields {
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub token: Option<S<toml::Value>>,
    pub password: Option<S<toml::Value>>,
    pub concurrency: Option<S<i64>>,
    pub deactivate: Option<S<String>>,
    pub dialect: Option<S<String>>,
    pub max_requests_per_second: Option<S<toml::Value>>,
    pub match_by: Option<S<String>>,
    pub external_id: Option<S<String>>,
    pub groups: Option<S<bool>>,
    pub lease: Option<S<String>>,
}

/// The keys of a store table, for "unknown key" errors.
const STORE_KEYS: &[&str] = &[
    "kind",
    "path",
    "url",
    "token",
    "password",
    "concurrency",
    "deactivate",
    "dialect",
    "max_requests_per_second",
    "match",
    "external_id",
    "groups",
    "lease",
];

impl RawStoreFields {
    /// Read `key`'s value into its field; `false` when `key` is not a store key.
    fn take<'de, A: serde::de::MapAccess<'de>>(
        &mut self,
        key: &str,
        map: &mut A,
    ) -> Result<bool, A::Error> {
        match key {
            "path" => self.path = Some(map.next_value()?),
            "url" => self.url = Some(map.next_value()?),
            "token" => self.token = Some(map.next_value()?),
            "password" => self.password = Some(map.next_value()?),
            "concurrency" => self.concurrency = Some(map.next_value()?),
            "deactivate" => self.deactivate = Some(map.next_value()?),
            "dialect" => self.dialect = Some(map.next_value()?),
            "max_requests_per_second" => self.max_requests_per_second = Some(map.next_value()?),
            "match" => self.match_by = Some(map.next_value()?),
            "external_id" => self.external_id = Some(map.next_value()?),
            "groups" => self.groups = Some(map.next_value()?),
            "lease" => self.lease = Some(map.next_value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl RawStoreKeys {
    /// The store, once `kind` is known to be there.
    pub fn with_kind(self, kind: S<String>) -> RawStore {
        RawStore {
            kind,
            f: self.store,
        }
    }
}

impl<'de> Deserialize<'de> for RawStore {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawStore;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a store table")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawStore, A::Error> {
                let mut kind = None;
                let mut f = RawStoreFields::default();
                while let Some(key) = map.next_key::<String>()? {
                    if key == "kind" {
                        kind = Some(map.next_value()?);
                    } else if !f.take(&key, &mut map)? {
                        return Err(serde::de::Error::unknown_field(&key, STORE_KEYS));
                    }
                }
                let kind = kind.ok_or_else(|| serde::de::Error::missing_field("kind"))?;
                Ok(RawStore { kind, f })
            }
        }
        d.deserialize_map(Visit)
    }
}

impl<'de> Deserialize<'de> for RawStoreSection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = RawStoreSection;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a store table ([store] with `kind`, or [store.NAME] tables)")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawStoreSection, A::Error> {
                let mut out = RawStoreSection::default();
                let mut keys = RawStoreKeys::default();
                let mut has_keys = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "kind" {
                        keys.kind = Some(map.next_value()?);
                    } else if !keys.store.take(&key, &mut map)? {
                        // Any other key names a store: its value must be a store table.
                        out.named.push((key, map.next_value()?));
                        continue;
                    }
                    has_keys = true;
                }
                if has_keys {
                    out.single = Some(keys);
                }
                Ok(out)
            }
        }
        d.deserialize_map(Visit)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectory {
    pub name: S<String>,
    pub kind: S<String>,
    pub schedule: Option<S<String>>,
    pub mapping: Option<super::mapping::RawMapping>,
    pub filter: Option<super::mapping::RawFilter>,
    pub deactivate_after: Option<S<String>>,
    pub groups: Option<S<toml::Value>>,
    /// The `[store.NAME]` this directory writes to.
    pub store: Option<S<String>>,
    // csv
    pub path: Option<S<String>>,
    pub delimiter: Option<S<String>>,
    pub encoding: Option<S<String>>,
    // entra and google
    pub scope: Option<S<toml::Value>>,
    // entra
    pub tenant_id: Option<S<String>>,
    pub credential: Option<S<String>>,
    pub client_id: Option<S<String>>,
    pub client_secret: Option<S<toml::Value>>,
    pub certificate: Option<S<RawCertificate>>,
    pub cloud: Option<S<String>>,
    pub exclude_guests: Option<S<bool>>,
    pub authority_url: Option<S<String>>,
    pub graph_url: Option<S<String>>,
    // google
    pub service_account_key: Option<S<toml::Value>>,
    pub admin_email: Option<S<String>>,
    pub customer: Option<S<String>>,
    pub domain: Option<S<String>>,
    pub token_url: Option<S<String>>,
    pub directory_url: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert_file: String,
    pub key_file: String,
}
