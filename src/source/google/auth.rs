//! Access tokens for the Directory API: a service account's JWT bearer grant with
//! domain-wide delegation (the admin to impersonate is the JWT's `sub`).
//!
//! The JWT is signed with jsonwebtoken (RS256, `kid` = the key's `private_key_id`) and
//! posted with the client every remote shares, so the token endpoint gets the same
//! request timeout, answer cap and error wording as the APIs. yup-oauth2 did this
//! before and was replaced: it cached a JSON 429/5xx answer as a token without an
//! access token, read answers of any size, and logged the token at debug level.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::GoogleError;
use crate::config::{Secret, SecretRef};
use crate::http::{error_chain, read_body};

pub const USER_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const GROUP_MEMBER_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";
/// `groups.list` and `groups.get`, for `groups = ...` (issue 16).
pub const GROUP_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.group.readonly";

/// Google allows at most an hour between `iat` and `exp`.
const ASSERTION_LIFETIME: i64 = 3600;
/// Renew a cached token this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// Google's access tokens last an hour; a longer `expires_in` is not believed past a
/// day (and a huge one must not overflow the clock).
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(86400);

/// Google's token endpoint: what every downloaded key names (the first), and the
/// older endpoints keys from before 2019 name.
pub const GOOGLE_TOKEN_URIS: &[&str] = &[
    "https://oauth2.googleapis.com/token",
    "https://accounts.google.com/o/oauth2/token",
    "https://www.googleapis.com/oauth2/v4/token",
];

/// The fields of a key JSON that the grant needs. Deliberately not `Debug`: it holds
/// the private key.
#[derive(Deserialize)]
struct KeyFile {
    #[serde(rename = "type")]
    key_type: Option<String>,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    client_id: Option<String>,
    token_uri: String,
}

/// A loaded service-account key. Deliberately not `Debug`: it holds the private key.
pub struct ServiceAccount {
    key: KeyFile,
    signing_key: EncodingKey,
}

impl ServiceAccount {
    /// Read the key JSON from its secret. Errors name where the key comes from and
    /// what is wrong with its shape, never its content.
    ///
    /// The signed assertion goes to the token endpoint, so a key's `token_uri` is
    /// believed only where the credentials go anyway: Google's own endpoint, or the
    /// origin of `directory_url` (an emulator serving both, which gets the bearer
    /// token already). Any other endpoint must be named in the config as `token_url`:
    /// a key file passed around or pasted into an env var does not get to redirect it.
    pub fn load(
        secret: &SecretRef,
        token_url: Option<&reqwest::Url>,
        directory_url: &reqwest::Url,
    ) -> Result<ServiceAccount, GoogleError> {
        let bad = |message: String| GoogleError::Key {
            from: secret.describe(),
            message,
        };
        let text = secret.resolve().map_err(|e| bad(e.to_string()))?;
        // serde_json's messages can quote the offending value (for example the PEM),
        // so only its category and position are kept.
        let mut key: KeyFile = serde_json::from_str(text.expose()).map_err(|e| {
            bad(format!(
                "not a service-account key JSON ({:?} error at line {} column {}; \
                 it needs client_email, private_key and token_uri)",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        // Before anything can fail and quote it: a remote that echoes part of the key
        // (or a line of it) gets it masked.
        crate::redact::register_pem(&key.private_key);
        if let Some(kind) = key.key_type.as_deref() {
            if kind != "service_account" {
                return Err(bad(format!(
                    "`type` is \"{kind}\", expected \"service_account\" (download a key of the service account, not an OAuth client)"
                )));
            }
        }
        match token_url {
            Some(url) => key.token_uri = url.to_string(),
            None => trusted_key_token_uri(&key.token_uri, directory_url).map_err(&bad)?,
        }
        check_token_uri(&key.token_uri).map_err(bad)?;
        // jsonwebtoken's message names the PEM problem, never the key's bytes.
        let signing_key = EncodingKey::from_rsa_pem(key.private_key.as_bytes())
            .map_err(|e| bad(format!("private_key is not an RSA private key in PEM: {e}")))?;
        Ok(ServiceAccount { key, signing_key })
    }

    pub fn client_email(&self) -> &str {
        &self.key.client_email
    }

    /// The numeric client id the Admin console's delegation screen asks for.
    pub fn client_id(&self) -> &str {
        self.key
            .client_id
            .as_deref()
            .unwrap_or("(the key has no client_id)")
    }

    pub fn token_uri(&self) -> &str {
        &self.key.token_uri
    }
}

/// Whether the key file's own `token_uri` may be used (see `ServiceAccount::load`).
fn trusted_key_token_uri(uri: &str, directory_url: &reqwest::Url) -> Result<(), String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("token_uri is not a URL: {e}"))?;
    let google = GOOGLE_TOKEN_URIS
        .iter()
        .filter_map(|g| reqwest::Url::parse(g).ok())
        .any(|g| g.origin() == url.origin() && g.path() == url.path());
    if google || url.origin() == directory_url.origin() {
        return Ok(());
    }
    Err(format!(
        "token_uri {} is neither Google's token endpoint ({}) nor on directory_url's origin; \
         refusing to send the signed assertion there (if this endpoint is really meant, set token_url in the config)",
        url.origin().ascii_serialization(),
        GOOGLE_TOKEN_URIS[0]
    ))
}

/// `http://` only for loopback hosts, like every other URL of the config.
fn check_token_uri(uri: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(uri).map_err(|e| format!("token_uri is not a URL: {e}"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if loopback {
                Ok(())
            } else {
                Err(format!(
                    "token_uri {uri} must be https (http only for loopback hosts)"
                ))
            }
        }
        other => Err(format!("token_uri has scheme {other}, expected https")),
    }
}

/// Tokens for one directory: built once per source, cached and renewed before expiry.
pub struct Tokens {
    http: reqwest::Client,
    token_url: reqwest::Url,
    signing_key: EncodingKey,
    key_id: Option<String>,
    client_email: String,
    scopes: Vec<&'static str>,
    client_id: String,
    admin_email: String,
    cached: Mutex<Option<(Secret, Instant)>>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    scope: String,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

impl Tokens {
    pub async fn new(
        account: &ServiceAccount,
        admin_email: &str,
        scopes: Vec<&'static str>,
        request_timeout: Duration,
    ) -> Result<Tokens, GoogleError> {
        let token_url = reqwest::Url::parse(account.token_uri()).map_err(|e| GoogleError::Key {
            from: "the service-account key".to_string(),
            message: format!("token_uri is not a URL: {e}"),
        })?;
        Ok(Tokens {
            http: crate::http::client(request_timeout).map_err(GoogleError::Transport)?,
            token_url,
            signing_key: account.signing_key.clone(),
            key_id: account.key.private_key_id.clone(),
            client_email: account.client_email().to_string(),
            scopes,
            client_id: account.client_id().to_string(),
            admin_email: admin_email.to_string(),
            cached: Mutex::new(None),
        })
    }

    /// The scopes asked for, as the Admin console wants them (comma-separated).
    pub fn scopes_for_console(&self) -> String {
        self.scopes.join(",")
    }

    /// A valid access token (cached until shortly before it expires). A throttled or
    /// failing token endpoint is a transient error: the Directory API's retry loop
    /// backs off and asks again; nothing but a real token is ever cached.
    pub async fn token(&self) -> Result<String, GoogleError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = cached.as_ref() {
            if Instant::now() < *renew_at {
                return Ok(token.expose().to_string());
            }
        }
        let (token, lifetime) = self.request().await?;
        let value = token.expose().to_string();
        let now = Instant::now();
        let lifetime = lifetime
            .min(MAX_TOKEN_LIFETIME)
            .saturating_sub(RENEW_BEFORE);
        *cached = Some((token, now.checked_add(lifetime).unwrap_or(now)));
        Ok(value)
    }

    fn assertion(&self) -> Result<String, GoogleError> {
        let iat = chrono::Utc::now().timestamp();
        let mut header = Header::new(Algorithm::RS256);
        header.kid = self.key_id.clone();
        let claims = Claims {
            iss: &self.client_email,
            sub: &self.admin_email,
            scope: self.scopes.join(" "),
            aud: self.token_url.as_str(),
            iat,
            exp: iat + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&header, &claims, &self.signing_key).map_err(|e| GoogleError::Key {
            from: "the service-account key".to_string(),
            message: format!("cannot sign the token request: {e}"),
        })
    }

    async fn request(&self) -> Result<(Secret, Duration), GoogleError> {
        let assertion = self.assertion()?;
        crate::redact::register_jwt(&assertion);
        let failed = |message: String, transient: bool| GoogleError::Token {
            message: format!("token endpoint {}: {message}", self.token_url),
            transient,
        };
        let resp = self
            .http
            .post(self.token_url.clone())
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| failed(error_chain(&e.without_url()), true))?;
        let status = resp.status().as_u16();
        let body = read_body(resp).await.map_err(|e| {
            let transient = matches!(e, crate::http::BodyError::Read(_));
            failed(e.to_string(), transient)
        })?;
        if matches!(status, 429 | 500 | 502 | 503 | 504) {
            let detail = body
                .json::<OAuthError>()
                .map(|e| e.describe())
                .unwrap_or_else(|_| body.excerpt());
            return Err(failed(format!("answered {status}: {detail}"), true));
        }
        if !(200..300).contains(&status) {
            let err: OAuthError = body
                .json()
                .map_err(|m| failed(format!("answered {status}: {m}"), false))?;
            let description =
                crate::redact::scrub(&err.error_description.clone().unwrap_or_default());
            return Err(match crate::redact::scrub(&err.error).as_str() {
                "unauthorized_client" => GoogleError::UnauthorizedClient {
                    client_id: self.client_id.clone(),
                    scopes: self.scopes_for_console(),
                    description,
                },
                "invalid_grant" => GoogleError::InvalidGrant {
                    admin_email: self.admin_email.clone(),
                    description,
                },
                _ => failed(format!("refused ({status}): {}", err.describe()), false),
            });
        }
        #[derive(Deserialize)]
        struct Granted {
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        // An unreadable 200 (a proxy's page) may be gone on the next try.
        let granted: Granted = body.json().map_err(|m| failed(m, true))?;
        let token = granted
            .access_token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| failed("answered without an access_token".into(), true))?;
        crate::redact::register_issued(&token);
        Ok((
            Secret::new(token),
            Duration::from_secs(granted.expires_in.unwrap_or(3600)),
        ))
    }
}

/// An OAuth 2.0 error answer (RFC 6749 5.2).
#[derive(Deserialize)]
struct OAuthError {
    error: String,
    error_description: Option<String>,
}

impl OAuthError {
    /// The remote's own words, secrets masked (a token endpoint may echo the assertion).
    fn describe(&self) -> String {
        let text = match &self.error_description {
            Some(d) => format!("{}: {d}", self.error),
            None => self.error.clone(),
        };
        crate::redact::scrub(&text)
    }
}
