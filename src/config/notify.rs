//! The `[[notify]]` tables and `deactivate_after`: parsed strictly like the rest of the
//! config; the URLs and passwords they name are secrets, resolved only at delivery.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use super::raw::S;
use super::{schedule, ConfigError, SecretRef, Validator};

/// What the notifications are about; the names of `events = [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A directory failed `after_failures` runs in a row (once per streak).
    Failing,
    /// A run held deactivations or other changes for `approve`.
    Held,
    /// A run succeeded after a streak that was notified as failing.
    Recovered,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [EventKind::Failing, EventKind::Held, EventKind::Recovered];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Failing => "failing",
            EventKind::Held => "held",
            EventKind::Recovered => "recovered",
        }
    }
}

/// One `[[notify]]` table.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub target: NotifyTarget,
    pub events: BTreeSet<EventKind>,
    /// `None`: every directory.
    pub directories: Option<BTreeSet<String>>,
    /// Failed runs in a row that make a `failing` notification.
    pub after_failures: u32,
}

impl NotifyConfig {
    /// Its secret, by key: the webhook URL or the SMTP password.
    pub fn secret(&self) -> Option<(&'static str, &SecretRef)> {
        match &self.target {
            NotifyTarget::Webhook { url, .. } => Some(("url", url)),
            NotifyTarget::Email(m) => m.password.as_ref().map(|p| ("password", p)),
        }
    }

    /// Whether this target wants `event` of `directory`.
    pub fn wants(&self, event: EventKind, directory: &str) -> bool {
        self.events.contains(&event)
            && self
                .directories
                .as_ref()
                .is_none_or(|d| d.contains(directory))
    }
}

#[derive(Debug, Clone)]
pub enum NotifyTarget {
    /// An HTTP POST of a JSON body to a URL that is itself a secret (Slack's and
    /// Teams' URLs carry their token).
    Webhook {
        url: SecretRef,
        format: WebhookFormat,
    },
    Email(EmailConfig),
}

/// The body a webhook gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    /// learner-sync's own JSON (see `notify::message`).
    Json,
    /// Slack incoming webhook: `{"text": ...}`.
    Slack,
    /// Teams Workflows ("post to a channel when a webhook request is received"): a
    /// message with one Adaptive Card attachment.
    Teams,
}

#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub server: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connect, then STARTTLS (required); port 587 by default.
    Starttls,
    /// TLS from the first byte (SMTPS); port 465 by default.
    Tls,
    /// No TLS at all: accepted only for a loopback server (a local relay, tests).
    None,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub kind: S<String>,
    pub events: Option<S<Vec<String>>>,
    pub directories: Option<S<Vec<String>>>,
    pub after_failures: Option<S<i64>>,
    // webhook, slack, teams
    pub url: Option<S<toml::Value>>,
    // email
    pub server: Option<S<String>>,
    pub port: Option<S<i64>>,
    pub tls: Option<S<String>>,
    pub from: Option<S<String>>,
    pub to: Option<S<Vec<String>>>,
    pub username: Option<S<String>>,
    pub password: Option<S<toml::Value>>,
}

/// `deactivate_after`: `"0"` (deactivate at once) or a duration like `"72h"`.
pub fn parse_grace(text: &str) -> Result<Duration, String> {
    if text.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    schedule::parse_duration(text)
}

impl Validator<'_> {
    pub(super) fn grace(&self, v: &S<String>, key: &str) -> Result<Duration, ConfigError> {
        parse_grace(v.get_ref()).map_err(|m| self.err(v, key, format!("{m}, or \"0\"")))
    }

    pub(super) fn notify_tables(
        &self,
        raw: Vec<S<RawNotify>>,
        directories: &BTreeSet<String>,
    ) -> Result<Vec<NotifyConfig>, ConfigError> {
        raw.into_iter()
            .enumerate()
            .map(|(i, n)| self.notify(i, &n, directories))
            .collect()
    }

    fn notify(
        &self,
        index: usize,
        raw: &S<RawNotify>,
        directories: &BTreeSet<String>,
    ) -> Result<NotifyConfig, ConfigError> {
        let n = raw.get_ref();
        let key = |k: &str| format!("notify[{index}].{k}");
        let kind = n.kind.get_ref().as_str();
        let webhook_keys = ["url"];
        let email_keys = [
            "server", "port", "tls", "from", "to", "username", "password",
        ];
        let present: [(&str, Option<std::ops::Range<usize>>); 8] = [
            ("url", n.url.as_ref().map(|v| v.span())),
            ("server", n.server.as_ref().map(|v| v.span())),
            ("port", n.port.as_ref().map(|v| v.span())),
            ("tls", n.tls.as_ref().map(|v| v.span())),
            ("from", n.from.as_ref().map(|v| v.span())),
            ("to", n.to.as_ref().map(|v| v.span())),
            ("username", n.username.as_ref().map(|v| v.span())),
            ("password", n.password.as_ref().map(|v| v.span())),
        ];
        let allowed: &[&str] = match kind {
            "webhook" | "slack" | "teams" => &webhook_keys,
            "email" => &email_keys,
            _ => {
                return Err(self.err(
                    &n.kind,
                    &key("kind"),
                    "must be \"webhook\", \"slack\", \"teams\" or \"email\"",
                ))
            }
        };
        for (k, at) in present {
            if let (Some(at), false) = (at, allowed.contains(&k)) {
                return Err(self.loc.error_at(
                    Some(at),
                    key(k),
                    format!("not a key of a `{kind}` notification"),
                ));
            }
        }
        let target = match kind {
            "email" => NotifyTarget::Email(self.email(index, raw)?),
            _ => {
                let url = n.url.as_ref().ok_or_else(|| {
                    self.err(
                        raw,
                        &key("url"),
                        format!("a `{kind}` notification needs `url`"),
                    )
                })?;
                let url = self.secret(url, &key("url")).map_err(|_| {
                    self.err(
                        url,
                        &key("url"),
                        "a webhook URL carries its token, so it is a secret: use { env = \"NAME\" }, \
                         { file = \"PATH\" } or { credential = \"NAME\" }",
                    )
                })?;
                let format = match kind {
                    "slack" => WebhookFormat::Slack,
                    "teams" => WebhookFormat::Teams,
                    _ => WebhookFormat::Json,
                };
                NotifyTarget::Webhook { url, format }
            }
        };
        let events = match &n.events {
            None => EventKind::ALL.into_iter().collect(),
            Some(v) => {
                let mut out = BTreeSet::new();
                for e in v.get_ref() {
                    let e = S::new(0..0, e.clone());
                    let kind: EventKind = self
                        .closed(&e, &key("events"), "")
                        .map_err(|_| {
                            self.err(
                                v,
                                &key("events"),
                                format!(
                                    "`{}` is not an event; the events are \"failing\", \"held\" and \"recovered\"",
                                    e.get_ref()
                                ),
                            )
                        })?;
                    out.insert(kind);
                }
                if out.is_empty() {
                    return Err(self.err(v, &key("events"), "must name at least one event"));
                }
                out
            }
        };
        let dirs = match &n.directories {
            None => None,
            Some(v) => {
                if let Some(unknown) = v.get_ref().iter().find(|d| !directories.contains(*d)) {
                    return Err(self.err(
                        v,
                        &key("directories"),
                        format!("`{unknown}` is not a configured directory"),
                    ));
                }
                if v.get_ref().is_empty() {
                    return Err(self.err(
                        v,
                        &key("directories"),
                        "must name at least one directory",
                    ));
                }
                Some(v.get_ref().iter().cloned().collect())
            }
        };
        let after_failures = match &n.after_failures {
            None => 3,
            Some(v) => u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| self.err(v, &key("after_failures"), "must be between 1 and 1000"))?,
        };
        Ok(NotifyConfig {
            target,
            events,
            directories: dirs,
            after_failures,
        })
    }

    fn email(&self, index: usize, raw: &S<RawNotify>) -> Result<EmailConfig, ConfigError> {
        let n = raw.get_ref();
        let key = |k: &str| format!("notify[{index}].{k}");
        let needs =
            |k: &str| self.err(raw, &key(k), format!("an `email` notification needs `{k}`"));
        let server = n.server.as_ref().ok_or_else(|| needs("server"))?;
        let host = server.get_ref().trim().to_string();
        if host.is_empty() || host.contains(['/', ' ', ':']) && !host.starts_with('[') {
            return Err(self.err(server, &key("server"), "must be a host name or address"));
        }
        let tls = match &n.tls {
            None => SmtpTls::Starttls,
            Some(v) => self.closed(v, &key("tls"), "must be \"starttls\", \"tls\" or \"none\"")?,
        };
        if tls == SmtpTls::None && !is_loopback_host(&host) {
            let at = n.tls.as_ref().map(|v| v.span());
            return Err(self.loc.error_at(
                at,
                key("tls"),
                "tls = \"none\" is accepted only for a loopback server; use \"starttls\" or \"tls\"",
            ));
        }
        let port = match &n.port {
            None => match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Tls => 465,
                SmtpTls::None => 25,
            },
            Some(v) => u16::try_from(*v.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| self.err(v, &key("port"), "must be a port between 1 and 65535"))?,
        };
        let address = |v: &S<String>, k: &str| -> Result<String, ConfigError> {
            let a = v.get_ref().trim();
            a.parse::<lettre::message::Mailbox>()
                .map(|_| a.to_string())
                .map_err(|_| self.err(v, &key(k), format!("`{a}` is not an email address")))
        };
        let from = address(n.from.as_ref().ok_or_else(|| needs("from"))?, "from")?;
        let to_raw = n.to.as_ref().ok_or_else(|| needs("to"))?;
        if to_raw.get_ref().is_empty() {
            return Err(self.err(to_raw, &key("to"), "must list at least one address"));
        }
        let to = to_raw
            .get_ref()
            .iter()
            .map(|a| address(&S::new(to_raw.span(), a.clone()), "to"))
            .collect::<Result<Vec<_>, _>>()?;
        let username = n
            .username
            .as_ref()
            .map(|v| v.get_ref().trim().to_string())
            .filter(|u| !u.is_empty());
        let password = match &n.password {
            None => None,
            Some(v) => Some(self.secret(v, &key("password"))?),
        };
        match (&username, &password) {
            (Some(_), None) => return Err(needs("password")),
            (None, Some(_)) => return Err(needs("username")),
            _ => {}
        }
        Ok(EmailConfig {
            server: host,
            port,
            tls,
            from,
            to,
            username,
            password,
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn parse(notify: &str) -> Result<Config, ConfigError> {
        let text = format!(
            "[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n\n[[notify]]\n{notify}"
        );
        Config::parse(std::path::Path::new("/etc/ls/config.toml"), &text)
    }

    #[test]
    fn a_webhook_url_written_inline_is_refused_as_a_secret() {
        let e = parse("kind = \"slack\"\nurl = \"https://hooks.example/T/B/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("notify[0].url"), "{e}");
        assert!(e.contains("secret"), "{e}");
        assert!(!e.contains("hooks.example/T"), "{e}");
    }

    #[test]
    fn defaults_every_event_three_failures_and_every_directory() {
        let c = parse("kind = \"teams\"\nurl = { env = \"TEAMS_URL\" }\n").unwrap();
        let n = &c.notify[0];
        assert_eq!(n.after_failures, 3);
        assert_eq!(n.events.len(), 3);
        assert!(n.wants(EventKind::Held, "hr"));
        assert!(matches!(
            n.target,
            NotifyTarget::Webhook {
                format: WebhookFormat::Teams,
                ..
            }
        ));
    }

    #[test]
    fn filters_name_known_events_and_directories_only() {
        let e = parse("kind = \"webhook\"\nurl = { env = \"U\" }\nevents = [\"exploded\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`exploded` is not an event"), "{e}");
        let e = parse("kind = \"webhook\"\nurl = { env = \"U\" }\ndirectories = [\"sales\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sales` is not a configured directory"), "{e}");
        let c =
            parse("kind = \"webhook\"\nurl = { env = \"U\" }\nevents = [\"failing\"]\n").unwrap();
        assert!(c.notify[0].wants(EventKind::Failing, "hr"));
        assert!(!c.notify[0].wants(EventKind::Recovered, "hr"));
    }

    #[test]
    fn email_without_tls_only_to_loopback_and_the_password_is_a_secret() {
        let e = parse(
            "kind = \"email\"\nserver = \"smtp.example.org\"\ntls = \"none\"\nfrom = \"a@x.io\"\nto = [\"b@x.io\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("loopback"), "{e}");
        let e = parse(
            "kind = \"email\"\nserver = \"smtp.example.org\"\nfrom = \"a@x.io\"\nto = [\"b@x.io\"]\nusername = \"a\"\npassword = \"hunter2\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("notify[0].password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let c = parse(
            "kind = \"email\"\nserver = \"smtp.example.org\"\nfrom = \"a@x.io\"\nto = [\"b@x.io\"]\n",
        )
        .unwrap();
        let NotifyTarget::Email(m) = &c.notify[0].target else {
            panic!("email")
        };
        assert_eq!((m.port, m.tls), (587, SmtpTls::Starttls));
    }

    #[test]
    fn grace_accepts_zero_and_durations() {
        assert_eq!(parse_grace("0"), Ok(Duration::ZERO));
        assert_eq!(parse_grace("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert!(parse_grace("soon").is_err());
    }
}
