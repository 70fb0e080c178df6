//! What the package ships besides the binary: the not-yet-configured config, the man
//! page and shell completions, all checked against the real program.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::process::Command;

use clap::CommandFactory;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(common::bin())
        .args(args)
        .env_remove("LEARNER_SYNC_CONFIG")
        .output()
        .unwrap()
}

/// Subcommands an admin types (not the generated `help`).
fn subcommands() -> Vec<String> {
    learner_sync::cli::Cli::command()
        .get_subcommands()
        // Hidden ones are the program's own plumbing (`check --as-service`'s probe).
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .filter(|n| n != "help")
        .collect()
}

#[test]
fn the_packaged_config_is_the_example_with_every_directory_commented_out() {
    let example = std::fs::read_to_string("config.example.toml").unwrap();
    let packaged = std::fs::read_to_string("packaging/config.toml").unwrap();
    let mut in_directories = false;
    for line in example
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        in_directories |= line.starts_with("[[directory]]");
        let expected = if in_directories {
            format!("# {line}")
        } else {
            line.to_string()
        };
        assert!(
            packaged.lines().any(|l| l == expected),
            "packaging/config.toml lacks `{expected}`: regenerate it from config.example.toml"
        );
    }
    let c =
        learner_sync::config::Config::load(std::path::Path::new("packaging/config.toml")).unwrap();
    assert!(c.directories.is_empty());
}

#[test]
fn check_on_the_packaged_config_says_not_configured_yet_and_exits_2() {
    let out = run(&["check", "--config", "packaging/config.toml"]);
    assert_eq!(common::code(&out), 2);
    assert!(
        common::stderr(&out).contains("not configured yet"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn the_man_page_documents_every_subcommand_and_exit_code() {
    let out = run(&["manpage"]);
    assert_eq!(common::code(&out), 0);
    let page = common::stdout(&out);
    assert!(page.contains("\n.TH learner-sync 1 "), "not a man page");
    for sub in subcommands()
        .iter()
        .filter(|s| *s != "completions" && *s != "manpage")
    {
        assert!(
            page.contains(&format!("\\fB{sub}\\fR")),
            "man page lacks `{sub}`"
        );
    }
    for code in ["0", "2", "3", "4"] {
        assert!(
            page.contains(&format!(".TP\n\\fB{code}\\fR")),
            "exit status {code}"
        );
    }
}

#[test]
fn completions_cover_every_subcommand_in_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert_eq!(common::code(&out), 0, "{shell}");
        let text = common::stdout(&out);
        for sub in subcommands() {
            assert!(text.contains(&sub), "{shell} completions lack `{sub}`");
        }
    }
}
