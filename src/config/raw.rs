//! The config file as written: strict serde types, validated into `Config` by mod.rs.

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub sync: Option<RawSync>,
    pub daemon: Option<RawDaemon>,
    pub store: Option<S<RawStore>>,
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
