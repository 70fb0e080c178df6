//! Schedules the daemon could never keep are refused at config load, through the
//! real binary, with the file, the line and the key (issue 14 item 7): an `every`
//! whose minutes overflow a u64 of seconds, one beyond 100 years, and cron
//! expressions that name a time that never comes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, stderr, Env};

/// (schedule, what the error must say)
const REFUSED: &[(&str, &str)] = &[
    ("every 307445734561825861m", "longer than 100 years"),
    ("every 18446744073709551615s", "longer than 100 years"),
    ("every 99999999999999999999d", "not a duration"),
    ("every 36501d", "longer than 100 years"),
    ("0 0 30 2 *", "never fires"),
    ("0 0 31 4 *", "never fires"),
    ("0 0 0 1 1 * 2020", "never fires"),
];

fn refused_at(env: &Env, line: usize, key: &str, words: &str) {
    let out = env.run(&["sync"]);
    let err = stderr(&out);
    assert_eq!(code(&out), 2, "{err}");
    assert!(
        err.contains(&format!("config.toml:{line}: {key}:")),
        "{err}"
    );
    assert!(err.contains(words), "`{err}` lacks `{words}`");
    assert!(
        !env.path("s.db").exists(),
        "nothing is created on a bad config"
    );
}

#[test]
fn a_sync_schedule_that_overflows_or_never_fires_is_refused_with_its_line_and_key() {
    for (schedule, words) in REFUSED {
        let env = Env::new();
        env.write(
            "config.toml",
            &format!(
                "[sync]\nstate_db = \"s.db\"\nschedule = \"{schedule}\"\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n"
            ),
        );
        refused_at(&env, 3, "sync.schedule", words);
    }
}

#[test]
fn a_directory_schedule_that_overflows_or_never_fires_is_refused_with_its_line_and_key() {
    for (schedule, words) in REFUSED {
        let env = Env::new();
        env.write(
            "config.toml",
            &format!(
                "[sync]\nstate_db = \"s.db\"\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\nschedule = \"{schedule}\"\n"
            ),
        );
        refused_at(&env, 8, "directory[0].schedule", words);
    }
}

#[test]
fn the_longest_and_the_rarest_real_schedules_still_load() {
    for schedule in ["every 36500d", "0 0 29 2 *", "every 1s"] {
        let env = Env::new();
        env.write(
            "config.toml",
            &format!(
                "[sync]\nstate_db = \"s.db\"\nschedule = \"{schedule}\"\n\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n"
            ),
        );
        env.write("hr.csv", "external_id,user_name\n1,a@x.io\n");
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 0, "{schedule}: {}", stderr(&out));
    }
}
