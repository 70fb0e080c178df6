//! What a sync prints on stdout: the plan (for `--dry-run`) and a summary per directory.

use std::borrow::Cow;
use std::fmt::Write;

use crate::plan::Operation;
use crate::run::RunReport;
use crate::state::Outcome;

fn show(v: &Option<String>) -> Cow<'_, str> {
    match v {
        Some(v) => printable(v),
        None => Cow::Borrowed("(none)"),
    }
}

/// Text from a directory or a remote, made safe for a terminal: control characters
/// (ESC of ANSI and OSC sequences, BEL, CR, C1 controls) and bidi overrides are
/// written as `\x1b` / `\u{202e}` escapes, so a user name cannot rewrite the screen.
pub fn printable(text: &str) -> Cow<'_, str> {
    let unsafe_char =
        |c: char| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !unsafe_char(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// One line per operation, for `--dry-run`.
pub fn plan_lines(report: &RunReport) -> String {
    let mut out = String::new();
    let dir = &report.directory;
    for op in &report.applied {
        let user = printable(&op.fields().user_name);
        let id = printable(op.external_id());
        let _ = match op {
            Operation::Create { .. } => writeln!(out, "{dir}: create      {user} ({id})"),
            Operation::Update { .. } => writeln!(out, "{dir}: update      {user} ({id})"),
            Operation::Deactivate { reason, .. } => {
                writeln!(out, "{dir}: deactivate  {user} ({id}): {reason}")
            }
            Operation::Reactivate { .. } => writeln!(out, "{dir}: reactivate  {user} ({id})"),
        };
        for c in op.changes() {
            let _ = writeln!(
                out,
                "{dir}:     {}: {} -> {}",
                c.field,
                show(&c.before),
                show(&c.after)
            );
        }
    }
    for op in &report.held {
        let (user, id) = (
            printable(&op.fields().user_name),
            printable(op.external_id()),
        );
        let _ = match op {
            Operation::Deactivate { reason, .. } => {
                writeln!(out, "{dir}: hold        {user} ({id}): {reason}")
            }
            Operation::Create { .. } => writeln!(out, "{dir}: hold create {user} ({id})"),
            _ => writeln!(out, "{dir}: hold update {user} ({id})"),
        };
        if let Operation::Update { changes, .. } = op {
            for c in changes {
                let _ = writeln!(
                    out,
                    "{dir}:     {}: {} -> {}",
                    c.field,
                    show(&c.before),
                    show(&c.after)
                );
            }
        }
    }
    out
}

/// The one-line summary of a directory's run.
pub fn summary_line(report: &RunReport, dry_run: bool) -> String {
    let c = &report.counts;
    let prefix = if dry_run { " (dry run)" } else { "" };
    match (&report.outcome, &report.error) {
        (Outcome::Failed, Some(err)) if c == &Default::default() => format!(
            "{}{prefix}: FAILED after {:.2}s: {}",
            report.directory,
            report.duration.as_secs_f64(),
            printable(&err.to_string())
        ),
        _ => {
            let adopted = if c.adopted > 0 {
                format!(" (of them {} adopted: already on the provider)", c.adopted)
            } else {
                String::new()
            };
            let mut line = format!(
                "{}{prefix}: created {}{adopted}, updated {}, deactivated {}, reactivated {}, held {}, unchanged {}",
                report.directory, c.created, c.updated, c.deactivated, c.reactivated, c.held, c.unchanged
            );
            if c.failed > 0 {
                let _ = write!(line, ", failed {}", c.failed);
            }
            let _ = write!(line, " ({:.2}s)", report.duration.as_secs_f64());
            if let Some(reason) = &report.hold_reason {
                let _ = write!(
                    line,
                    "\n{}: deactivations held: {reason}; review with `learner-sync status`, release with `learner-sync approve {}`",
                    report.directory, report.directory
                );
            } else if c.held > 0 {
                // Holds an earlier run made, which this (delta) run did not revisit.
                let _ = write!(
                    line,
                    "\n{}: {} deactivations still held; review with `learner-sync status`, release with `learner-sync approve {}`",
                    report.directory, c.held, report.directory
                );
            }
            for hold in &report.other_holds {
                let _ = write!(line, "\n{}: {hold}", report.directory);
            }
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable;

    #[test]
    fn control_characters_and_bidi_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(printable("Zoë Ørsted"), "Zoë Ørsted");
        assert_eq!(
            printable("a\u{1b}]0;pwned\u{7}b\u{1b}[31m"),
            "a\\x1b]0;pwned\\x07b\\x1b[31m"
        );
        assert_eq!(printable("x\ry\u{9b}"), "x\\x0dy\\x9b");
        assert_eq!(printable("\u{202e}gpj.exe"), "\\u{202e}gpj.exe");
    }
}
