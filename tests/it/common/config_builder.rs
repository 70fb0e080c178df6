//! One builder for the TOML configs the tests write: a `[sync]` table, one `[store]`
//! (SQLite or SCIM) and `[[directory]]` tables for the CSV, Entra (mock Graph) and
//! Google (mock Directory API) sources, each with the keys a test varies. Shared with
//! examples/soak.rs, so it knows nothing of the tests' `Env`.
#![allow(dead_code)]

/// Values are TOML as written (`"state.db"` with its quotes, `100`, `{ env = "X" }`);
/// the typed helpers quote for you.
pub struct ConfigBuilder {
    sync: Vec<(String, String)>,
    store: Vec<(String, String)>,
    /// Tables other than these (`[daemon]`), by name.
    tables: Vec<(String, Vec<(String, String)>)>,
    directories: Vec<Vec<(String, String)>>,
}

/// A TOML basic string.
pub fn q(s: &str) -> String {
    format!("{s:?}")
}

/// The `key = value` lines of a TOML snippet, one key a line.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.split_once(" = ").expect("a `key = value` line"))
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBuilder {
    /// `state_db = "state.db"` and a SQLite store in `learners.db`, no directory yet.
    pub fn new() -> ConfigBuilder {
        ConfigBuilder {
            sync: vec![("state_db".into(), q("state.db"))],
            store: vec![
                ("kind".into(), q("sqlite")),
                ("path".into(), q("learners.db")),
            ],
            tables: Vec::new(),
            directories: Vec::new(),
        }
    }

    fn set(table: &mut Vec<(String, String)>, key: &str, value: &str) {
        match table.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => table.push((key.to_string(), value.to_string())),
        }
    }

    /// Set a key of `[sync]` (replacing it if set).
    pub fn sync(mut self, key: &str, value: &str) -> Self {
        Self::set(&mut self.sync, key, value);
        self
    }

    /// Set `key = value` lines (TOML as written, one key a line) in `[sync]`.
    pub fn sync_lines(mut self, text: &str) -> Self {
        for (k, v) in key_values(text) {
            self = self.sync(k, v);
        }
        self
    }

    pub fn state_db(self, path: &str) -> Self {
        self.sync("state_db", &q(path))
    }

    /// The deactivation guards: at most `count`, and at most `percent` of a directory.
    pub fn guards(self, count: u32, percent: u32) -> Self {
        self.sync("max_deactivations", &count.to_string())
            .sync("max_deactivation_percent", &percent.to_string())
    }

    /// Another table (`[daemon]`) with these keys, in order.
    pub fn table(mut self, name: &str, keys: &[(&str, &str)]) -> Self {
        let keys = keys
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.tables.push((name.to_string(), keys));
        self
    }

    /// Set a key of `[store]` (replacing it if set).
    pub fn store(mut self, key: &str, value: &str) -> Self {
        Self::set(&mut self.store, key, value);
        self
    }

    /// Set `key = value` lines (TOML as written, one key a line) in `[store]`.
    pub fn store_lines(mut self, text: &str) -> Self {
        for (k, v) in key_values(text) {
            self = self.store(k, v);
        }
        self
    }

    /// A PostgreSQL store at `url` (no password: the test cluster trusts loopback).
    pub fn postgres(mut self, url: &str) -> Self {
        self.store = vec![("kind".into(), q("postgres")), ("url".into(), q(url))];
        self
    }

    /// A SCIM store at `url` with the bearer token as TOML (`{ env = "SCIM_TOKEN" }`).
    pub fn scim(mut self, url: &str, token: &str) -> Self {
        self.store = vec![
            ("kind".into(), q("scim")),
            ("url".into(), q(url)),
            ("token".into(), token.to_string()),
        ];
        self
    }

    /// A new `[[directory]]` with these keys, in order.
    pub fn directory(mut self, keys: &[(&str, &str)]) -> Self {
        self.directories.push(
            keys.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self
    }

    /// Set a key of the last `[[directory]]` (replacing it if set).
    pub fn dir(mut self, key: &str, value: &str) -> Self {
        let last = self.directories.last_mut().expect("a directory first");
        Self::set(last, key, value);
        self
    }

    /// Set `key = value` lines (TOML as written, one key a line) in the last directory.
    pub fn dir_lines(mut self, text: &str) -> Self {
        for (k, v) in key_values(text) {
            self = self.dir(k, v);
        }
        self
    }

    pub fn csv(self, name: &str, path: &str) -> Self {
        self.directory(&[("name", &q(name)), ("kind", &q("csv")), ("path", &q(path))])
    }

    /// An Entra directory against the mock Graph at `base` (tenant-1, client-1), with
    /// the credential as TOML (`client_secret = { env = "X" }` or a certificate).
    pub fn entra(self, name: &str, base: &str, credential: &[(&str, &str)]) -> Self {
        let mut b = self.directory(&[
            ("name", &q(name)),
            ("kind", &q("entra")),
            ("tenant_id", &q("tenant-1")),
            ("client_id", &q("client-1")),
        ]);
        for (k, v) in credential {
            b = b.dir(k, v);
        }
        b.dir("authority_url", &q(base))
            .dir("graph_url", &q(&format!("{base}/v1.0")))
    }

    /// A Google directory against the mock Directory API at `url`, the service
    /// account key in `key_file`.
    pub fn google(self, name: &str, url: &str, key_file: &str, admin: &str) -> Self {
        self.directory(&[
            ("name", &q(name)),
            ("kind", &q("google")),
            (
                "service_account_key",
                &format!("{{ file = {} }}", q(key_file)),
            ),
            ("admin_email", &q(admin)),
        ])
        .dir("directory_url", &q(url))
    }

    pub fn build(&self) -> String {
        let table = |out: &mut String, keys: &[(String, String)]| {
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
        };
        let mut out = String::from("[sync]\n");
        table(&mut out, &self.sync);
        for (name, keys) in &self.tables {
            out.push_str(&format!("\n[{name}]\n"));
            table(&mut out, keys);
        }
        out.push_str("\n[store]\n");
        table(&mut out, &self.store);
        for d in &self.directories {
            out.push_str("\n[[directory]]\n");
            table(&mut out, d);
        }
        out
    }
}
