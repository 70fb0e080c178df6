//! Sending one notification to one target, retried: HTTP through `http::retrying`
//! (throttling, server errors and transport errors), SMTP a bounded few times unless
//! the server refuses for good. Errors never carry the URL or the password.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::event::Event;
use super::message;
use crate::config::{EmailConfig, Secret, SmtpTls, WebhookFormat};
use crate::http::{self, Attempt, Retries};

/// A target with its secrets read (and registered with `redact`).
pub enum Resolved {
    Webhook {
        url: Secret,
        format: WebhookFormat,
    },
    Email {
        config: EmailConfig,
        password: Option<Secret>,
    },
}

/// Tries per notification; the waits between them grow from half a second.
const ATTEMPTS: usize = 4;

fn retries() -> Retries {
    Retries::new(
        Duration::from_millis(500),
        Duration::from_secs(30),
        ATTEMPTS,
    )
}

pub async fn deliver(target: &Resolved, event: &Event, timeout: Duration) -> Result<(), String> {
    match target {
        Resolved::Webhook { url, format } => webhook(url, *format, event, timeout).await,
        Resolved::Email { config, password } => {
            email(config, password.as_ref(), event, timeout).await
        }
    }
}

async fn webhook(
    url: &Secret,
    format: WebhookFormat,
    event: &Event,
    timeout: Duration,
) -> Result<(), String> {
    let url = checked_url(url)?;
    let client = http::client(timeout)?;
    let body = message::webhook_body(format, event);
    http::retrying("notify", retries(), || {
        let request = client.post(url.clone()).json(&body);
        async move {
            match request.send().await {
                // Without the URL: it carries the webhook's token.
                Err(e) => Attempt::Again {
                    status: 0,
                    retry_after: None,
                    error: http::error_chain(&e.without_url()),
                },
                Ok(resp) if resp.status().is_success() => Attempt::Done(Ok(())),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let error = format!("the receiver answered HTTP {status}");
                    if http::is_retryable(status) {
                        Attempt::Again {
                            status,
                            retry_after: http::retry_after(&resp),
                            error,
                        }
                    } else {
                        Attempt::Done(Err(error))
                    }
                }
            }
        }
    })
    .await
}

/// The webhook URL, if usable: https, or plain http to a loopback host. The message
/// never repeats the URL (it carries the token).
pub fn checked_url(url: &Secret) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(url.expose())
        .map_err(|_| "the URL does not parse as a URL".to_string())?;
    let loopback = matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
        || url
            .host_str()
            .is_some_and(|h| h.eq_ignore_ascii_case("localhost"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err("the URL must be https:// (plain http only for loopback)".to_string());
    }
    Ok(url)
}

async fn email(
    config: &EmailConfig,
    password: Option<&Secret>,
    event: &Event,
    timeout: Duration,
) -> Result<(), String> {
    let (subject, body) = message::email(event);
    let mut builder = Message::builder()
        .from(config.from.parse().map_err(|e| format!("from: {e}"))?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &config.to {
        builder = builder.to(to.parse().map_err(|e| format!("to: {e}"))?);
    }
    let mail = builder
        .body(body)
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let transport = match config.tls {
        SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&config.server),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&config.server),
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            &config.server,
        )),
    }
    .map_err(|e| format!("SMTP server {}: {e}", config.server))?
    .port(config.port)
    .timeout(Some(timeout));
    let transport = match (&config.username, password) {
        (Some(u), Some(p)) => {
            transport.credentials(Credentials::new(u.clone(), p.expose().to_string()))
        }
        _ => transport,
    }
    .build();
    let mut retries = retries();
    loop {
        match transport.send(mail.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let error = format!("SMTP server {}:{}: {e}", config.server, config.port);
                // A 5xx answer (bad address, refused login) fails the same way again.
                let wait = if e.is_permanent() {
                    None
                } else {
                    retries.next_wait(None)
                };
                let Some(wait) = wait else {
                    return Err(error);
                };
                tracing::info!(remote = "notify", wait_ms = wait.as_millis() as u64, error = %error, "retrying the email");
                tokio::time::sleep(wait).await;
            }
        }
    }
}
