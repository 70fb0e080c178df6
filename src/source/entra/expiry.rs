//! When the app's credential stops working, for `check`: the certificate file's
//! `notAfter`, and a client secret's `endDateTime` where Graph shows it (the app's
//! `passwordCredentials`, readable with Application.Read.All). A warning 30 days before.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::graph::Graph;
use crate::check::CheckLine;

/// How long before expiry `check` starts warning.
pub const WARN_DAYS: i64 = 30;

/// The line for a credential that ends at `end` (`what`: "certificate app.crt").
pub fn line(what: &str, end: DateTime<Utc>, now: DateTime<Utc>, renew: &str) -> CheckLine {
    let days = (end - now).num_days();
    let date = end.format("%Y-%m-%d");
    if end <= now {
        CheckLine::failed(format!("{what} expired on {date}"), renew.to_string())
    } else if days < WARN_DAYS {
        CheckLine::warning(
            format!("{what} expires on {date}, in {days} days"),
            renew.to_string(),
        )
    } else {
        CheckLine::ok(format!("{what} valid until {date} ({days} days)"))
    }
}

/// `notAfter` of the first certificate in a PEM file.
pub fn certificate_end(cert_file: &Path) -> Result<DateTime<Utc>, String> {
    let pem = std::fs::read_to_string(cert_file)
        .map_err(|e| format!("cannot read {}: {e}", cert_file.display()))?;
    let der = super::auth::cert_der(&pem)
        .ok_or_else(|| format!("{} holds no PEM certificate", cert_file.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| {
        format!(
            "{} is not a readable X.509 certificate: {e}",
            cert_file.display()
        )
    })?;
    DateTime::from_timestamp(cert.validity().not_after.timestamp(), 0)
        .ok_or_else(|| format!("{}: notAfter out of range", cert_file.display()))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct App {
    #[serde(default)]
    password_credentials: Vec<PasswordCredential>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PasswordCredential {
    /// The secret's first three characters, as Entra shows them.
    hint: Option<String>,
    end_date_time: Option<DateTime<Utc>>,
}

/// The end of the client secret `secret` as the app registration records it: `Ok(None)`
/// when the app lists no secret with its hint, `Err` when Graph does not let us read
/// the app (Application.Read.All is not needed for syncing, so that is not a fault).
pub async fn secret_end(
    graph: &mut Graph,
    client_id: &str,
    secret: &str,
) -> Result<Option<DateTime<Utc>>, String> {
    let path = format!("applications(appId='{}')", client_id.replace('\'', "''"));
    let url = graph.url(&path, &[("$select", "passwordCredentials")]);
    let app: App = graph
        .get(url.as_str())
        .await
        .map_err(|e| match e.status() {
            Some(403) => "the app registration is not readable (Application.Read.All)".to_string(),
            _ => e.to_string(),
        })?;
    let hint: String = secret.chars().take(3).collect();
    Ok(app
        .password_credentials
        .into_iter()
        .filter(|c| c.hint.as_deref() == Some(hint.as_str()))
        .filter_map(|c| c.end_date_time)
        .max())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn ok_then_warning_30_days_before_then_failed() {
        let now = at("2026-12-02T00:00:00Z");
        let l = line("certificate c", at("2027-06-01T00:00:00Z"), now, "renew");
        assert!(l.ok && l.hint.is_none() && l.message.contains("valid until 2027-06-01"));
        let l = line("certificate c", at("2026-12-20T00:00:00Z"), now, "renew");
        assert!(
            l.ok && l.hint.is_some() && l.message.contains("in 18 days"),
            "{l:?}"
        );
        let l = line("certificate c", at("2026-12-01T00:00:00Z"), now, "renew");
        assert!(!l.ok && l.message.contains("expired on 2026-12-01"));
    }
}
