//! The second, independent SCIM server: SCIMMY (npm) behind scripts/scim-gateway.mjs,
//! installed into .scim-gateway/ by scripts/scim-gateway, started on a free loopback
//! port with a bearer token. Missing, the tests FAIL, unless
//! LEARNER_SYNC_SKIP_SCIM_GATEWAY=1 says to skip them (never in CI).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const TOKEN: &str = "scimmy-bearer-3e9a51-never-printed";

fn server_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".scim-gateway/server.mjs")
}

pub struct ScimGateway {
    child: Child,
    pub base: String,
}

impl ScimGateway {
    /// The server, or `None` (with a loud message) when it is not installed and
    /// LEARNER_SYNC_SKIP_SCIM_GATEWAY=1.
    pub fn start() -> Option<ScimGateway> {
        let script = server_script();
        let node = Command::new("node").arg("--version").output().is_ok();
        if !script.exists() || !node {
            let skip = std::env::var("LEARNER_SYNC_SKIP_SCIM_GATEWAY").as_deref() == Ok("1");
            let why = format!(
                "the second SCIM server is not installed ({} missing or no node): run scripts/scim-gateway",
                script.display()
            );
            assert!(skip && std::env::var_os("CI").is_none(), "{why}");
            eprintln!("SKIPPED (LEARNER_SYNC_SKIP_SCIM_GATEWAY=1): {why}");
            return None;
        }
        let mut child = Command::new("node")
            .arg(&script)
            .args(["0", TOKEN])
            .current_dir(script.parent().unwrap())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the SCIMMY server");
        // It prints "listening PORT" once it listens (on 127.0.0.1 only).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SCIMMY server said {line:?}"));
        Some(ScimGateway {
            child,
            base: format!("http://127.0.0.1:{port}/scim/v2"),
        })
    }

    /// One authenticated request; the status and the JSON body (Null when empty).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut req = reqwest::Client::new()
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{}{path}", self.base),
                )
                .bearer_auth(TOKEN);
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/scim+json")
                    .body(serde_json::to_vec(b).unwrap());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await.unwrap();
            (
                status,
                serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            )
        })
    }

    pub fn users(&self) -> Vec<Value> {
        let (status, page) = self.request("GET", "/Users?count=1000", None);
        assert_eq!(status, 200, "{page}");
        page["Resources"].as_array().cloned().unwrap_or_default()
    }

    /// The user with this userName (panics unless exactly one).
    pub fn user(&self, user_name: &str) -> Value {
        let found: Vec<Value> = self
            .users()
            .into_iter()
            .filter(|u| u["userName"] == user_name)
            .collect();
        assert_eq!(found.len(), 1, "users named {user_name}: {found:?}");
        found.into_iter().next().unwrap()
    }
}

impl Drop for ScimGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
