//! The config parser never panics, whatever it is given, and every refusal names the
//! file and a line. Random text, and random edits of the shipped example.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use learner_sync::config::{Config, ConfigError};
use proptest::prelude::*;

fn check(text: &str) {
    match Config::parse(Path::new("/etc/ls/c.toml"), text) {
        Ok(_) => {}
        Err(ConfigError::Invalid {
            path,
            line,
            key,
            message,
        }) => {
            assert_eq!(path, Path::new("/etc/ls/c.toml"));
            assert!(
                line >= 1 && line <= text.lines().count().max(1) + 1,
                "line {line} of {text:?}"
            );
            assert!(!key.is_empty() && !message.is_empty());
        }
        Err(other) => panic!("unexpected error kind: {other}"),
    }
}

const VALUES: &[&str] = &[
    "\"\"",
    "-1",
    "0",
    "1e309",
    "nan",
    "true",
    "[]",
    "{}",
    "{ env = \"\" }",
    "{ file = \"\" }",
    "\"every 0s\"",
    "\"http://10.0.0.1/x\"",
    "\"../../etc/shadow\"",
    "\"\\u0000\"",
    "{ groups = [] }",
    "\"*/5 * * * *\"",
    "9223372036854775808",
    "\"𝔘𝔫𝔦𝔠𝔬𝔡𝔢\"",
    "{ env = \"X\", file = \"Y\" }",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        check(&text);
    }

    #[test]
    fn random_edits_of_the_example_never_panic(
        edits in proptest::collection::vec((0usize..200, 0usize..4, 0usize..VALUES.len()), 1..6)
    ) {
        let example = std::fs::read_to_string("config.example.toml").unwrap();
        let mut lines: Vec<String> = example.lines().map(str::to_string).collect();
        for (at, op, value) in edits {
            let i = at % lines.len();
            match op {
                0 => { lines.remove(i); }
                1 => { let l = lines[i].clone(); lines.insert(i, l); }
                2 => {
                    if let Some((k, _)) = lines[i].split_once('=') {
                        lines[i] = format!("{k}= {}", VALUES[value]);
                    }
                }
                _ => lines[i] = lines[i].trim_start_matches("# ").to_string(),
            }
        }
        check(&lines.join("\n"));
    }
}
