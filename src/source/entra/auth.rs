//! App-only tokens from the Microsoft identity platform (client credentials grant),
//! with a client secret or a certificate-signed client assertion, cached until shortly
//! before they expire.

use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use sha2::{Digest, Sha256};

use crate::config::{Cloud, EntraConfig, EntraCredential, Secret};

/// Renew a cached token this long before Entra says it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// The longest lifetime believed: Entra's tokens last 60 to 90 minutes, and a huge
/// `expires_in` would overflow the clock (and keep a revoked token for ever).
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// How long a client assertion is valid (Entra wants "a few minutes").
const ASSERTION_LIFETIME: i64 = 300;
/// Token requests answered 429/5xx, as for Graph: tries in all.
const MAX_ATTEMPTS: usize = 6;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The identity platform refused the credentials (`invalid_client`, ...).
    #[error("token request refused: {code}: {description}")]
    Refused { code: String, description: String },
    #[error("cannot reach the token endpoint {url}: {detail}")]
    Transport { url: String, detail: String },
    #[error("unexpected answer from the token endpoint ({status}): {detail}")]
    Unexpected { status: u16, detail: String },
    /// 429 or a 5xx, still so after the retries.
    #[error("the token endpoint is throttling or unavailable ({status}): {detail}")]
    Unavailable {
        status: u16,
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Credential(String),
}

impl AuthError {
    /// What an admin should do about it.
    pub fn hint(&self) -> String {
        match self {
            AuthError::Refused { code, description } => {
                if code == "invalid_client" && description.contains("AADSTS7000215") {
                    "the client secret is wrong: copy the secret's Value (not its ID) from Certificates & secrets".into()
                } else if code == "invalid_client" && description.contains("AADSTS7000222") {
                    "the client secret has expired: create a new one under Certificates & secrets"
                        .into()
                } else if code == "invalid_client" {
                    "check client_id and the secret or certificate uploaded under Certificates & secrets".into()
                } else if code == "unauthorized_client" || description.contains("AADSTS700016") {
                    "the app registration was not found in this tenant: check tenant_id and client_id; a multi-tenant app needs that tenant's admin to consent first (https://login.microsoftonline.com/<tenant_id>/adminconsent?client_id=<client_id>)".into()
                } else if description.contains("AADSTS90002") {
                    "the tenant was not found: check tenant_id and cloud".into()
                } else {
                    "check tenant_id, client_id and the credential".into()
                }
            }
            AuthError::Transport { .. } => {
                "check the network path to the authority (proxy, firewall, authority_url)".into()
            }
            AuthError::Unexpected { .. } => "check authority_url".into(),
            AuthError::Unavailable { .. } => {
                "the identity platform is busy or down; the next run tries again".into()
            }
            AuthError::Credential(what) if what.starts_with("client_secret") => {
                "fix client_secret in the config: its environment variable, file or systemd credential (LoadCredential=)".into()
            }
            AuthError::Credential(_) => "fix the certificate files named in the config".into(),
        }
    }
}

enum Credential {
    Secret(Secret),
    Certificate {
        key: EncodingKey,
        /// base64url SHA-256 of the certificate's DER (`x5t#S256`).
        thumbprint: String,
    },
}

/// Gets and caches app-only tokens for one tenant and app.
pub struct TokenProvider {
    http: reqwest::Client,
    token_url: reqwest::Url,
    client_id: String,
    scope: String,
    credential: Credential,
    cached: Option<(Secret, Instant)>,
}

impl TokenProvider {
    pub fn new(http: reqwest::Client, cfg: &EntraConfig) -> Result<Self, AuthError> {
        let credential = match &cfg.credential {
            EntraCredential::Secret(r) => Credential::Secret(
                r.resolve()
                    .map_err(|e| AuthError::Credential(format!("client_secret: {e}")))?,
            ),
            EntraCredential::Certificate {
                cert_file,
                key_file,
            } => {
                let cert = std::fs::read_to_string(cert_file).map_err(|e| {
                    AuthError::Credential(format!("cannot read {}: {e}", cert_file.display()))
                })?;
                let der = cert_der(&cert).ok_or_else(|| {
                    AuthError::Credential(format!(
                        "{} holds no PEM CERTIFICATE block",
                        cert_file.display()
                    ))
                })?;
                let key_pem = std::fs::read(key_file).map_err(|e| {
                    AuthError::Credential(format!("cannot read {}: {e}", key_file.display()))
                })?;
                crate::redact::register_pem(&String::from_utf8_lossy(&key_pem));
                let key = EncodingKey::from_rsa_pem(&key_pem).map_err(|e| {
                    AuthError::Credential(format!(
                        "{} is not an RSA private key in PEM: {e}",
                        key_file.display()
                    ))
                })?;
                Credential::Certificate {
                    key,
                    thumbprint: base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(Sha256::digest(&der)),
                }
            }
        };
        Ok(TokenProvider {
            http,
            token_url: token_url(&cfg.authority_url, &cfg.tenant_id),
            client_id: cfg.client_id.clone(),
            scope: graph_scope(cfg.cloud),
            credential,
            cached: None,
        })
    }

    /// A valid token, from the cache unless it is missing or about to expire.
    pub async fn token(&mut self) -> Result<Secret, AuthError> {
        if let Some((token, renew_at)) = &self.cached {
            if Instant::now() < *renew_at {
                return Ok(token.clone());
            }
        }
        let retries = crate::http::Retries::new(
            Duration::from_secs(1),
            Duration::from_secs(32),
            MAX_ATTEMPTS,
        );
        let (token, lifetime) = crate::http::retrying("the token endpoint", retries, || async {
            match self.request().await {
                Err(
                    error @ AuthError::Unavailable {
                        status,
                        retry_after,
                        ..
                    },
                ) => crate::http::Attempt::Again {
                    status,
                    retry_after,
                    error,
                },
                other => crate::http::Attempt::Done(other),
            }
        })
        .await?;
        let now = Instant::now();
        let renew_at = now
            .checked_add(lifetime.min(MAX_LIFETIME).saturating_sub(RENEW_BEFORE))
            .unwrap_or(now);
        self.cached = Some((token.clone(), renew_at));
        Ok(token)
    }

    /// Forget the cached token (after a 401).
    pub fn invalidate(&mut self) {
        self.cached = None;
    }

    async fn request(&self) -> Result<(Secret, Duration), AuthError> {
        let mut form: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", self.client_id.clone()),
            ("scope", self.scope.clone()),
        ];
        match &self.credential {
            Credential::Secret(s) => form.push(("client_secret", s.expose().to_string())),
            Credential::Certificate { key, thumbprint } => {
                form.push((
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
                ));
                form.push(("client_assertion", self.assertion(key, thumbprint)?));
            }
        }
        let shown = self.token_url.to_string();
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&form)
            .send()
            .await
            .map_err(|e| AuthError::Transport {
                url: shown.clone(),
                detail: crate::http::error_chain(&e.without_url()),
            })?;
        let status = resp.status();
        let retry_after = crate::http::retry_after(&resp);
        let body = crate::http::read_body(resp).await.map_err(|e| match e {
            crate::http::BodyError::TooLarge => AuthError::Unexpected {
                status: status.as_u16(),
                detail: e.to_string(),
            },
            crate::http::BodyError::Read(_) => AuthError::Transport {
                url: shown,
                detail: e.to_string(),
            },
        })?;
        if crate::http::is_retryable(status.as_u16()) {
            // The OAuth error's first line (AADSTS code and reason), else what came.
            let detail = body
                .json::<serde_json::Value>()
                .ok()
                .and_then(|v| {
                    let d = v.get("error_description").or_else(|| v.get("error"))?;
                    let d = crate::redact::scrub(d.as_str()?);
                    Some(d.lines().next()?.to_string())
                })
                .unwrap_or_else(|| body.excerpt());
            return Err(AuthError::Unavailable {
                status: status.as_u16(),
                detail,
                retry_after,
            });
        }
        let json: serde_json::Value = body.json().map_err(|detail| AuthError::Unexpected {
            status: status.as_u16(),
            detail,
        })?;
        if !status.is_success() {
            // The identity platform's errors may quote the request (secret, assertion).
            let text = |k: &str| {
                json.get(k)
                    .and_then(|v| v.as_str())
                    .map(crate::redact::scrub)
            };
            return match text("error") {
                Some(code) => Err(AuthError::Refused {
                    code,
                    // The first line carries the AADSTS code and reason; the rest is trace ids.
                    description: text("error_description")
                        .map(|d| d.lines().next().unwrap_or_default().to_string())
                        .unwrap_or_default(),
                }),
                None => Err(AuthError::Unexpected {
                    status: status.as_u16(),
                    detail: "no `error` in the body".into(),
                }),
            };
        }
        let token = json
            .get("access_token")
            .and_then(|v| v.as_str())
            .ok_or_else(|| AuthError::Unexpected {
                status: status.as_u16(),
                detail: "no access_token in the body".into(),
            })?;
        crate::redact::register_issued(token);
        let expires_in = json
            .get("expires_in")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .unwrap_or(3599);
        Ok((
            Secret::new(token.to_string()),
            Duration::from_secs(expires_in),
        ))
    }

    /// A client assertion: PS256 with `x5t#S256`, as the current Entra docs describe.
    fn assertion(&self, key: &EncodingKey, thumbprint: &str) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(thumbprint.to_string());
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({
            "aud": self.token_url.as_str(),
            "iss": self.client_id,
            "sub": self.client_id,
            "jti": uuid::Uuid::new_v4().to_string(),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let jwt = jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| AuthError::Credential(format!("cannot sign the client assertion: {e}")))?;
        crate::redact::register_jwt(&jwt);
        Ok(jwt)
    }
}

/// `{authority}/{tenant}/oauth2/v2.0/token`, keeping any path prefix of the authority.
pub fn token_url(authority: &reqwest::Url, tenant: &str) -> reqwest::Url {
    let mut url = authority.clone();
    if let Ok(mut segs) = url.path_segments_mut() {
        segs.pop_if_empty()
            .extend([tenant, "oauth2", "v2.0", "token"]);
    }
    url
}

/// `{graph root}/.default` of the national cloud. Tokens are for Graph itself, so a
/// `graph_url` override (a proxy, a test server) does not change the scope.
pub fn graph_scope(cloud: Cloud) -> String {
    let (_, graph) = cloud.endpoints();
    format!("{}/.default", graph.trim_end_matches("/v1.0"))
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM file.
pub(super) fn cert_der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_url_keeps_the_authority_path_prefix() {
        let a = reqwest::Url::parse("http://127.0.0.1:9/login/").unwrap();
        assert_eq!(
            token_url(&a, "t1").as_str(),
            "http://127.0.0.1:9/login/t1/oauth2/v2.0/token"
        );
        let a = reqwest::Url::parse("https://login.microsoftonline.us").unwrap();
        assert_eq!(
            token_url(&a, "t1").as_str(),
            "https://login.microsoftonline.us/t1/oauth2/v2.0/token"
        );
    }

    #[test]
    fn scope_is_the_clouds_graph_root_without_the_version() {
        assert_eq!(
            graph_scope(Cloud::Dod),
            "https://dod-graph.microsoft.us/.default"
        );
        assert_eq!(
            graph_scope(Cloud::China),
            "https://microsoftgraph.chinacloudapi.cn/.default"
        );
        assert_eq!(
            graph_scope(Cloud::Global),
            "https://graph.microsoft.com/.default"
        );
    }
}
