//! `check`'s reminder before an Entra certificate expires: the `notAfter` of each
//! configured certificate file, read from its DER (only the fields up to the validity).

use base64::Engine as _;

use crate::config::{Config, DirectoryKind, EntraCredential};

/// Warn this long before a certificate expires.
pub const WARN_DAYS: i64 = 30;

/// One `check` line per configured certificate that expires within [`WARN_DAYS`]
/// (or has expired): (failed, text, hint).
pub fn lines(config: &Config, now: chrono::DateTime<chrono::Utc>) -> Vec<(bool, String, String)> {
    let mut out = Vec::new();
    for d in &config.directories {
        let DirectoryKind::Entra(e) = &d.kind else {
            continue;
        };
        let EntraCredential::Certificate { cert_file, .. } = &e.credential else {
            continue;
        };
        let Some(not_after) = std::fs::read_to_string(cert_file)
            .ok()
            .and_then(|pem| der(&pem))
            .and_then(|der| not_after(&der))
        else {
            continue; // an unreadable certificate fails the directory's own probe
        };
        let days = (not_after - now).num_days();
        let when = not_after.format("%Y-%m-%d");
        let hint = format!(
            "create a new certificate, upload it under Certificates & secrets, and point {}.certificate at it before then",
            d.name
        );
        if not_after <= now {
            out.push((
                true,
                format!(
                    "directory {}: certificate {} expired on {when}",
                    d.name,
                    cert_file.display()
                ),
                hint,
            ));
        } else if days < WARN_DAYS {
            out.push((
                false,
                format!(
                    "directory {}: certificate {} expires on {when} (in {days} days)",
                    d.name,
                    cert_file.display()
                ),
                hint,
            ));
        }
    }
    out
}

fn der(pem: &str) -> Option<Vec<u8>> {
    let start = pem.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let end = start + pem[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = pem[start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

/// One DER element at `at`: (tag, content start, content end).
fn element(der: &[u8], at: usize) -> Option<(u8, usize, usize)> {
    let tag = *der.get(at)?;
    let first = *der.get(at + 1)? as usize;
    let (len, start) = if first < 0x80 {
        (first, at + 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *der.get(at + 2 + i)? as usize;
        }
        (len, at + 2 + n)
    };
    let end = start.checked_add(len)?;
    (end <= der.len()).then_some((tag, start, end))
}

/// Certificate > tbsCertificate > [version] serial signature issuer validity.notAfter.
fn not_after(der: &[u8]) -> Option<chrono::DateTime<chrono::Utc>> {
    let (_, cert, _) = element(der, 0)?;
    let (_, tbs, _) = element(der, cert)?;
    let mut at = tbs;
    let (tag, _, end) = element(der, at)?;
    if tag == 0xa0 {
        at = end; // explicit version
    }
    for _ in 0..3 {
        at = element(der, at)?.2; // serialNumber, signature, issuer
    }
    let (_, validity, _) = element(der, at)?;
    let not_before_end = element(der, validity)?.2;
    let (tag, start, end) = element(der, not_before_end)?;
    let text = std::str::from_utf8(&der[start..end]).ok()?;
    let text = match tag {
        // UTCTime: YY 50-99 is 19YY, 00-49 is 20YY (RFC 5280 4.1.2.5.1).
        0x17 => {
            let yy: u32 = text.get(0..2)?.parse().ok()?;
            format!("{}{text}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => text.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc())
}
