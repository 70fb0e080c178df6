//! Access tokens for the Directory API: a service account's JWT bearer grant with
//! domain-wide delegation (the admin to impersonate is the JWT's `sub`).
//!
//! The grant itself (RS256 JWT, token cache, renewal before expiry) is yup-oauth2's
//! service-account flow; this module only loads the key, picks the token URL and
//! turns the token endpoint's errors into actionable ones.

use std::time::Duration;

use yup_oauth2::authenticator::DefaultAuthenticator;
use yup_oauth2::error::AuthErrorCode;
use yup_oauth2::ServiceAccountKey;

use super::GoogleError;
use crate::config::SecretRef;

pub const USER_SCOPE: &str = "https://www.googleapis.com/auth/admin.directory.user.readonly";
pub const GROUP_MEMBER_SCOPE: &str =
    "https://www.googleapis.com/auth/admin.directory.group.member.readonly";

/// A loaded service-account key. Deliberately not `Debug`: it holds the private key.
pub struct ServiceAccount {
    key: ServiceAccountKey,
}

impl ServiceAccount {
    /// Read the key JSON from its secret. Errors name where the key comes from and
    /// what is wrong with its shape, never its content.
    pub fn load(
        secret: &SecretRef,
        token_url: Option<&reqwest::Url>,
    ) -> Result<ServiceAccount, GoogleError> {
        let bad = |message: String| GoogleError::Key {
            from: secret.describe(),
            message,
        };
        let text = secret.resolve().map_err(|e| bad(e.to_string()))?;
        // serde_json's messages can quote the offending value (for example the PEM),
        // so only its category and position are kept.
        let mut key: ServiceAccountKey = serde_json::from_str(text.expose()).map_err(|e| {
            bad(format!(
                "not a service-account key JSON ({:?} error at line {} column {}; \
                 it needs client_email, private_key and token_uri)",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        if let Some(kind) = key.key_type.as_deref() {
            if kind != "service_account" {
                return Err(bad(format!(
                    "`type` is \"{kind}\", expected \"service_account\" (download a key of the service account, not an OAuth client)"
                )));
            }
        }
        if let Some(url) = token_url {
            key.token_uri = url.to_string();
        }
        check_token_uri(&key.token_uri).map_err(bad)?;
        Ok(ServiceAccount { key })
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

/// Tokens for one directory: built once per source, cached and renewed by yup-oauth2.
pub struct Tokens {
    auth: DefaultAuthenticator,
    scopes: Vec<&'static str>,
    client_id: String,
    admin_email: String,
}

impl Tokens {
    pub async fn new(
        account: &ServiceAccount,
        admin_email: &str,
        scopes: Vec<&'static str>,
        request_timeout: Duration,
    ) -> Result<Tokens, GoogleError> {
        let auth = yup_oauth2::ServiceAccountAuthenticator::builder(account.key.clone())
            .subject(admin_email)
            .with_timeout(request_timeout)
            .build()
            .await
            .map_err(|e| GoogleError::Key {
                from: "the service-account key".to_string(),
                // yup-oauth2's messages here are fixed texts ("Error reading key from PEM").
                message: e.to_string(),
            })?;
        Ok(Tokens {
            auth,
            scopes,
            client_id: account.client_id().to_string(),
            admin_email: admin_email.to_string(),
        })
    }

    /// The scopes asked for, space-separated, as the Admin console wants them (comma-separated).
    pub fn scopes_for_console(&self) -> String {
        self.scopes.join(",")
    }

    /// A valid access token (cached until shortly before it expires).
    pub async fn token(&self) -> Result<String, GoogleError> {
        let token = self
            .auth
            .token(&self.scopes)
            .await
            .map_err(|e| self.classify(e))?;
        token
            .token()
            .map(str::to_string)
            .ok_or_else(|| GoogleError::Token {
                message: "the token endpoint answered without an access_token".to_string(),
                transient: true,
            })
    }

    fn classify(&self, e: yup_oauth2::Error) -> GoogleError {
        match e {
            yup_oauth2::Error::AuthError(err) => {
                let description = err.error_description.clone().unwrap_or_default();
                match err.error {
                    AuthErrorCode::UnauthorizedClient => GoogleError::UnauthorizedClient {
                        client_id: self.client_id.clone(),
                        scopes: self.scopes_for_console(),
                        description,
                    },
                    AuthErrorCode::InvalidGrant => GoogleError::InvalidGrant {
                        admin_email: self.admin_email.clone(),
                        description,
                    },
                    other => GoogleError::Token {
                        message: format!(
                            "token endpoint refused: {} {description}",
                            other.as_str()
                        ),
                        transient: false,
                    },
                }
            }
            // Connection failures and unreadable answers (an HTML 5xx page) may pass.
            other => GoogleError::Token {
                message: format!("token endpoint: {other}"),
                transient: true,
            },
        }
    }
}
