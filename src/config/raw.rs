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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: S<String>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub token: Option<S<toml::Value>>,
    pub concurrency: Option<S<i64>>,
    pub deactivate: Option<S<String>>,
    pub dialect: Option<S<String>>,
    pub max_requests_per_second: Option<S<toml::Value>>,
    #[serde(rename = "match")]
    pub match_by: Option<S<String>>,
    pub external_id: Option<S<String>>,
    pub groups: Option<S<bool>>,
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

/// `RawStore` without `kind`.
#[derive(Debug, Default)]
pub struct RawStoreFields {
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub token: Option<S<toml::Value>>,
    pub concurrency: Option<S<i64>>,
    pub deactivate: Option<S<String>>,
    pub dialect: Option<S<String>>,
    pub max_requests_per_second: Option<S<toml::Value>>,
    pub match_by: Option<S<String>>,
    pub external_id: Option<S<String>>,
    pub groups: Option<S<bool>>,
}

impl RawStoreKeys {
    /// The store, once `kind` is known to be there.
    pub fn with_kind(self, kind: S<String>) -> RawStore {
        let f = self.store;
        RawStore {
            kind,
            path: f.path,
            url: f.url,
            token: f.token,
            concurrency: f.concurrency,
            deactivate: f.deactivate,
            dialect: f.dialect,
            max_requests_per_second: f.max_requests_per_second,
            match_by: f.match_by,
            external_id: f.external_id,
            groups: f.groups,
        }
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
                    let f = &mut keys.store;
                    match key.as_str() {
                        "kind" => keys.kind = Some(map.next_value()?),
                        "path" => f.path = Some(map.next_value()?),
                        "url" => f.url = Some(map.next_value()?),
                        "token" => f.token = Some(map.next_value()?),
                        "concurrency" => f.concurrency = Some(map.next_value()?),
                        "deactivate" => f.deactivate = Some(map.next_value()?),
                        "dialect" => f.dialect = Some(map.next_value()?),
                        "max_requests_per_second" => {
                            f.max_requests_per_second = Some(map.next_value()?)
                        }
                        "match" => f.match_by = Some(map.next_value()?),
                        "external_id" => f.external_id = Some(map.next_value()?),
                        "groups" => f.groups = Some(map.next_value()?),
                        // Any other key names a store: its value must be a store table.
                        _ => {
                            out.named.push((key, map.next_value()?));
                            continue;
                        }
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
