//! What a sync prints on stdout: the plan (for `--dry-run`) and a summary per directory.

use std::fmt::Write;

use crate::plan::Operation;
use crate::run::RunReport;
use crate::state::Outcome;

fn show(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("(none)")
}

/// One line per operation, for `--dry-run`.
pub fn plan_lines(report: &RunReport) -> String {
    let mut out = String::new();
    let dir = &report.directory;
    for op in &report.applied {
        let user = &op.fields().user_name;
        let id = op.external_id();
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
        if let Operation::Deactivate { reason, .. } = op {
            let _ = writeln!(
                out,
                "{dir}: hold        {} ({}): {reason}",
                op.fields().user_name,
                op.external_id()
            );
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
            "{}{prefix}: FAILED after {:.2}s: {err}",
            report.directory,
            report.duration.as_secs_f64()
        ),
        _ => {
            let mut line = format!(
                "{}{prefix}: created {}, updated {}, deactivated {}, reactivated {}, held {}, unchanged {}",
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
            }
            line
        }
    }
}
