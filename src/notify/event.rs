//! Which notifications a finished run makes: pure, from the directory's latest sync
//! outcomes in the state DB (newest first), so a restarted daemon and the one-shot
//! timer runs agree on where a failure streak stands.

use serde::Serialize;

use crate::config::EventKind;
use crate::state::Outcome;

/// How a run ended, as the notifications need it.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub directory: String,
    pub outcome: Outcome,
    /// The run's error, scrubbed of secrets.
    pub error: Option<String>,
    /// Deactivations held.
    pub held: usize,
    pub hold_reason: Option<String>,
    /// Other holds (field changes, creates), each with the command that settles it.
    pub other_holds: Vec<String>,
}

impl RunEnd {
    pub fn from_report(r: &crate::run::RunReport) -> RunEnd {
        RunEnd {
            directory: r.directory.clone(),
            outcome: r.outcome,
            error: r
                .error
                .as_ref()
                .map(|e| crate::redact::scrub(&e.to_string())),
            held: r.counts.held,
            hold_reason: r.hold_reason.as_ref().map(|h| h.to_string()),
            other_holds: r
                .other_holds
                .iter()
                .map(|h| crate::redact::scrub(h))
                .collect(),
        }
    }

    /// A run that ended outside the engine (a timeout).
    pub fn failed(directory: &str, error: &str) -> RunEnd {
        RunEnd {
            directory: directory.to_string(),
            outcome: Outcome::Failed,
            error: Some(crate::redact::scrub(error)),
            held: 0,
            hold_reason: None,
            other_holds: vec![],
        }
    }
}

/// One notification, as every target's body is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub directory: String,
    /// When the run ended (RFC 3339).
    pub time: String,
    /// One line: what happened.
    pub title: String,
    /// What to do about it.
    pub text: String,
    /// Failed runs in a row (`failing`), or the streak that ended (`recovered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Deactivations held (`held`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<usize>,
    /// The commands that settle it (`held`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<String>,
}

/// The events of a run for a target that notifies after `after_failures` failures.
/// `outcomes` are the directory's sync runs, newest (this run) first.
pub fn decide(
    end: &RunEnd,
    outcomes: &[String],
    after_failures: u32,
    approve: &str,
    time: &str,
) -> Vec<(EventKind, Event)> {
    let n = after_failures as usize;
    let failed = |o: &String| o == "failed";
    let base = |kind: EventKind, title: String, text: String| Event {
        event: kind.as_str(),
        directory: end.directory.clone(),
        time: time.to_string(),
        title,
        text,
        consecutive_failures: None,
        error: None,
        held: None,
        commands: vec![],
    };
    let d = &end.directory;
    let mut out = vec![];
    // The run must be the latest recorded one: a failure no run recorded (the state
    // DB could not be opened) moves no streak.
    let Some(latest) = outcomes.first().filter(|o| *o == end.outcome.as_str()) else {
        return out;
    };
    if failed(latest) {
        // Exactly the n-th failure in a row: once per streak.
        let streak = outcomes.iter().take_while(|o| failed(o)).count();
        if streak == n {
            let error = end.error.clone().unwrap_or_else(|| "unknown error".into());
            let mut e = base(
                EventKind::Failing,
                format!("learner-sync: {d} failed {n} runs in a row"),
                format!(
                    "Directory {d} has failed its last {n} runs; the last error: {error}. \
                     See `learner-sync status` and the service's log."
                ),
            );
            e.consecutive_failures = Some(n as u32);
            e.error = Some(error);
            out.push((EventKind::Failing, e));
        }
        return out;
    }
    let before = outcomes[1..].iter().take_while(|o| failed(o)).count();
    if before >= n {
        let mut e = base(
            EventKind::Recovered,
            format!("learner-sync: {d} recovered"),
            format!("Directory {d} ran successfully again after {before} failed runs."),
        );
        e.consecutive_failures = Some(before as u32);
        out.push((EventKind::Recovered, e));
    }
    // Held: when a run starts holding, not again at every run while the hold stands.
    let previous_held = outcomes.get(1).is_some_and(|o| o == "held");
    if latest == "held" && !previous_held {
        let mut lines = vec![];
        let mut commands = vec![];
        if end.held > 0 {
            let reason = end.hold_reason.as_deref().unwrap_or("a guard");
            lines.push(format!(
                "{} deactivations held in {d}: {reason}. Review them with `learner-sync status`; \
                 if they are expected, release them with `{approve}`.",
                end.held
            ));
            commands.push(approve.to_string());
        }
        for h in &end.other_holds {
            lines.push(format!("{d}: {h}"));
            if !commands.iter().any(|c| c == approve) {
                commands.push(approve.to_string());
            }
        }
        if lines.is_empty() {
            lines.push(format!(
                "Changes held in {d}. Review them with `learner-sync status`; release them with `{approve}`."
            ));
            commands.push(approve.to_string());
        }
        let mut e = base(
            EventKind::Held,
            format!("learner-sync: changes held in {d}"),
            lines.join("\n"),
        );
        e.held = Some(end.held);
        e.commands = commands;
        out.push((EventKind::Held, e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end() -> RunEnd {
        RunEnd::failed("hr", "source unreachable")
    }

    fn ended(o: &str) -> RunEnd {
        let mut e = end();
        e.outcome = match o {
            "ok" => Outcome::Ok,
            "held" => Outcome::Held,
            _ => Outcome::Failed,
        };
        e
    }

    fn outcomes(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn kinds(o: &[&str], n: u32) -> Vec<EventKind> {
        decide(
            &ended(o[0]),
            &outcomes(o),
            n,
            "learner-sync approve hr",
            "t",
        )
        .into_iter()
        .map(|(k, _)| k)
        .collect()
    }

    #[test]
    fn a_streak_notifies_once_at_the_nth_failure_and_once_when_it_ends() {
        assert!(kinds(&["failed", "failed", "ok"], 3).is_empty());
        assert_eq!(
            kinds(&["failed", "failed", "failed", "ok"], 3),
            [EventKind::Failing]
        );
        assert_eq!(
            kinds(&["failed", "failed", "failed"], 3),
            [EventKind::Failing]
        );
        assert!(kinds(&["failed", "failed", "failed", "failed"], 3).is_empty());
        assert_eq!(
            kinds(&["ok", "failed", "failed", "failed", "failed"], 3),
            [EventKind::Recovered]
        );
        assert!(kinds(&["ok", "failed", "failed"], 3).is_empty());
        assert!(kinds(&["ok", "ok"], 3).is_empty());
    }

    #[test]
    fn held_notifies_when_the_hold_starts_with_the_approve_command() {
        let mut e = ended("held");
        e.held = 7;
        e.hold_reason = Some("7 deactivations exceed max_deactivations = 5".into());
        let got = decide(
            &e,
            &outcomes(&["held", "ok"]),
            3,
            "learner-sync approve hr",
            "t",
        );
        assert_eq!(got.len(), 1);
        assert!(
            got[0].1.text.contains("`learner-sync approve hr`"),
            "{}",
            got[0].1.text
        );
        assert_eq!(got[0].1.commands, ["learner-sync approve hr"]);
        assert!(decide(&e, &outcomes(&["held", "held"]), 3, "x", "t").is_empty());
    }
}
