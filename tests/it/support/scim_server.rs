//! The real SCIM reference server (`scim2-server` from PyPI, installed by
//! scripts/scim-venv), started on a free loopback port with a bearer token.
//! The tests FAIL when it is missing: they are the SCIM store's interop proof.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const TOKEN: &str = "scim-bearer-7d1c0e44-never-printed";

pub fn server_bin() -> PathBuf {
    let bin = std::env::var_os("SCIM2_SERVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-scim/bin/scim2-server")
        });
    assert!(
        bin.exists(),
        "scim2-server not found at {} (set SCIM2_SERVER_BIN or run scripts/scim-venv)",
        bin.display()
    );
    bin
}

pub struct ScimServer {
    child: Child,
    pub base: String,
}

impl ScimServer {
    pub fn start() -> ScimServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(server_bin())
            .args(["--hostname", "127.0.0.1", "--port", &port.to_string()])
            .args(["--bearer-token", TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start scim2-server");
        let server = ScimServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "scim2-server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// One authenticated request; the status and the JSON body (Null when empty).
    pub fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            let mut req = client
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
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, json)
        })
    }

    /// Every user on the server.
    pub fn users(&self) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let (status, page) = self.request(
                "GET",
                &format!("/Users?startIndex={}&count=500", all.len() + 1),
                None,
            );
            assert_eq!(status, 200, "{page}");
            let resources = page["Resources"].as_array().cloned().unwrap_or_default();
            let total = page["totalResults"].as_u64().unwrap_or(0) as usize;
            let empty = resources.is_empty();
            all.extend(resources);
            if empty || all.len() >= total {
                return all;
            }
        }
    }

    /// The user with this externalId (panics unless exactly one).
    pub fn user(&self, external_id: &str) -> Value {
        let found: Vec<Value> = self
            .users()
            .into_iter()
            .filter(|u| u["externalId"] == external_id)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "users with externalId {external_id}: {found:?}"
        );
        found.into_iter().next().unwrap()
    }
}

impl Drop for ScimServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
