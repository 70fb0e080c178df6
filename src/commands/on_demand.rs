//! `learner-sync sync --directory NAME --user ID|UPN|EMAIL`: provision one user now
//! and print each step the way Entra's "Provision on demand" does.

use std::fmt::Write;

use super::{CommandError, Exit};
use crate::config::{Config, DirectoryConfig};
use crate::plan::Operation;
use crate::report::printable;
use crate::run::on_demand::{provision, OnDemand};
use crate::source::Source;

pub async fn run(
    config: &Config,
    dir: &DirectoryConfig,
    who: &str,
    dry_run: bool,
) -> Result<Exit, CommandError> {
    let mut source = Source::for_directory(dir, config.sync.request_timeout)?;
    let report = match provision(config, dir, &mut source, who, dry_run).await {
        Ok(r) => r,
        Err(e) => {
            println!(
                "{}: provisioning `{}` FAILED: {e}",
                dir.name,
                printable(who)
            );
            return Ok(Exit::Failed);
        }
    };
    print!("{}", steps(&report));
    Ok(exit(&report))
}

fn exit(r: &OnDemand) -> Exit {
    match (&r.found, &r.held, &r.result) {
        (None, _, _) => Exit::Failed,
        (_, _, Some(Err(_))) => Exit::Failed,
        (_, Some(_), _) => Exit::Held,
        _ => Exit::Ok,
    }
}

/// The report, one numbered step a line (user text escaped for the terminal).
pub fn steps(r: &OnDemand) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Provision on demand: directory `{}`, user `{}`{}",
        r.directory,
        printable(&r.who),
        if r.dry_run {
            " (dry run: nothing is written)"
        } else {
            ""
        }
    );
    let Some(f) = &r.found else {
        let _ = writeln!(
            out,
            "1. Import user: not found: no user has that id, user name or email; nothing was changed"
        );
        return out;
    };
    let _ = writeln!(
        out,
        "1. Import user: matched by {}: {} (external id {})",
        f.matched_by,
        printable(&f.user_name),
        printable(&f.external_id)
    );
    let _ = writeln!(
        out,
        "2. Determine if user is in scope: {}: {}{}",
        if f.in_scope {
            "in scope"
        } else {
            "out of scope"
        },
        f.scope,
        match &f.inactive {
            Some(why) => format!("; the learner is to be inactive ({why})"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "3. Match user between source and target: {}",
        match &r.learner {
            Some(l) => format!(
                "learner {} ({})",
                printable(&l.external_id),
                if l.active { "active" } else { "inactive" }
            ),
            None => "no learner with this external id yet".to_string(),
        }
    );
    let action = match &r.operation {
        None => "no change: the learner already matches".to_string(),
        Some(op) => verb(op).to_string(),
    };
    let _ = writeln!(out, "4. Perform action: {action}");
    if let Some(op) = &r.operation {
        let changes: Vec<(String, Option<String>, Option<String>)> = match op {
            Operation::Create { fields, .. } => crate::model::Field::ALL
                .iter()
                .filter_map(|f| {
                    fields
                        .get(*f)
                        .map(|v| (f.name().to_string(), None, Some(v.to_string())))
                })
                .chain(
                    fields
                        .scim
                        .iter()
                        .map(|(k, v)| (k.clone(), None, Some(v.clone()))),
                )
                .collect(),
            _ => op
                .changes()
                .iter()
                .map(|c| (c.field.clone(), c.before.clone(), c.after.clone()))
                .collect(),
        };
        for (field, before, after) in changes {
            let show = |v: &Option<String>| match v {
                Some(v) => format!("\"{}\"", printable(v)),
                None => "(none)".to_string(),
            };
            let _ = writeln!(out, "   {field}: {} -> {}", show(&before), show(&after));
        }
    }
    let result = match (&r.held, &r.result, &r.operation) {
        (Some(why), _, _) => format!("held, nothing written: {why}"),
        (_, _, None) => "nothing to write".to_string(),
        (_, None, Some(op)) => format!("would {} (dry run)", verb(op)),
        (_, Some(Ok(())), Some(op)) => format!("{} by the store", done(op)),
        (_, Some(Err(why)), _) => format!("FAILED: the store refused it: {}", printable(why)),
    };
    let _ = writeln!(out, "   result: {result}");
    out
}

fn verb(op: &Operation) -> &'static str {
    match op {
        Operation::Create { .. } => "create",
        Operation::Update { .. } => "update",
        Operation::Deactivate { .. } => "deactivate",
        Operation::Reactivate { .. } => "reactivate",
    }
}

fn done(op: &Operation) -> &'static str {
    match op {
        Operation::Create { .. } => "created",
        Operation::Update { .. } => "updated",
        Operation::Deactivate { .. } => "deactivated",
        Operation::Reactivate { .. } => "reactivated",
    }
}
