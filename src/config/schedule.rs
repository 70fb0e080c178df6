//! Schedules (`every 40m` or a cron expression) and durations (`24h`).

use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<cron::Schedule>),
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Schedule::Every(a), Schedule::Every(b)) => a == b,
            (Schedule::Cron(a), Schedule::Cron(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

/// The longest duration any setting takes. Longer is surely a typo, and it keeps
/// every later `now + duration` (std, chrono and tokio clocks) far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 86400);

/// Parse `"<n>s|m|h|d"`, at most `MAX_DURATION`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 30s, 40m, 24h or 7d"))?;
    let unit_secs: u64 = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration like 30s, 40m, 24h or 7d"
            ))
        }
    };
    // Checked: a wrapped product would silently become a short interval.
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= MAX_DURATION.as_secs())
        .ok_or_else(|| format!("`{text}` is longer than 100 years (36500d)"))?;
    if secs == 0 {
        return Err(format!("`{text}` must be longer than zero"));
    }
    Ok(Duration::from_secs(secs))
}

/// Parse `"every <n>s|m|h"` or a cron expression (5-field crontab lines gain a
/// leading seconds field of 0).
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("every ") {
        return parse_duration(rest).map(Schedule::Every);
    }
    let fields = t.split_whitespace().count();
    let expr = if fields == 5 {
        format!("0 {t}")
    } else {
        t.to_string()
    };
    let cron = expr.parse::<cron::Schedule>().map_err(|e| {
        format!("`{text}` is neither \"every <n>s|m|h\" nor a cron expression ({e})")
    })?;
    // A valid expression can name a date that never comes (`0 0 30 2 *`, a past
    // year): the daemon would wait forever while the directory silently stops.
    if cron.after(&chrono::Utc::now()).next().is_none() {
        return Err(format!(
            "`{text}` never fires (no matching time from now until the year 2100; check day-of-month against the month)"
        ));
    }
    Ok(Schedule::Cron(Box::new(cron)))
}

impl Schedule {
    /// The first run time strictly after `t`.
    pub fn next_after(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Schedule::Every(d) => chrono::Duration::from_std(*d).ok().map(|d| t + d),
            Schedule::Cron(c) => c.after(&t).next(),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(d) => write!(f, "every {}s", d.as_secs()),
            Schedule::Cron(c) => write!(f, "cron {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_and_cron_forms_parse() {
        assert_eq!(
            parse_schedule("every 40m").unwrap(),
            Schedule::Every(Duration::from_secs(2400))
        );
        assert!(matches!(
            parse_schedule("*/15 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(matches!(
            parse_schedule("0 */15 * * * *"),
            Ok(Schedule::Cron(_))
        ));
        assert!(parse_schedule("every forty minutes").is_err());
        assert!(parse_schedule("every 0s").is_err());
    }

    #[test]
    fn overflowing_and_never_firing_schedules_are_refused() {
        assert!(parse_duration("307445734561825861m").is_err());
        assert!(parse_duration("18446744073709551615s").is_err());
        assert!(parse_duration("36501d").is_err());
        assert_eq!(parse_duration("36500d").unwrap(), MAX_DURATION);
        assert!(parse_schedule("0 0 30 2 *").is_err());
        assert!(parse_schedule("0 0 0 1 1 * 2020").is_err());
        assert!(parse_schedule("0 0 29 2 *").is_ok());
    }
}
