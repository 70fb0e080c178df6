//! `learner-sync check`: like Entra's "Test Connection", one line per directory and store.

use super::CommandError;
use super::Exit;
use crate::check::CheckLine;
use crate::config::Config;
use crate::source::Source;
use crate::store::Store;

fn print(subject: &str, lines: &[CheckLine]) -> bool {
    let mut ok = true;
    for line in lines {
        let mark = if line.ok { "ok  " } else { "FAIL" };
        println!("{mark} {subject}: {}", line.message);
        if let Some(hint) = &line.hint {
            println!("     hint: {hint}");
        }
        ok &= line.ok;
    }
    ok
}

pub async fn run(config: &Config) -> Result<Exit, CommandError> {
    super::configured(config)?;
    println!(
        "ok   config {}: {} directories",
        config.path.display(),
        config.directories.len()
    );
    let mut all_ok = true;
    for dir in &config.directories {
        let subject = format!("directory {} ({})", dir.name, dir.kind.name());
        let lines = match Source::for_directory(dir, config.sync.request_timeout) {
            Ok(mut source) => source.check().await,
            Err(e) => vec![CheckLine::failed(
                e.to_string(),
                "fix the directory's settings",
            )],
        };
        all_ok &= print(&subject, &lines);
    }
    let lines = match Store::open(&config.store, &config.sync, true).await {
        Ok(mut store) => store.check().await,
        Err(e) => vec![CheckLine::failed(e.to_string(), "fix the [store] settings")],
    };
    all_ok &= print("store", &lines);
    Ok(if all_ok { Exit::Ok } else { Exit::Failed })
}
