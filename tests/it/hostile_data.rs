//! Odd and hostile directory data through the real binary (CSV source, SQLite store).
//! Each case has the outcome README.md documents under "Odd data".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, stderr, stdout, ConfigBuilder, Env};

fn setup() -> Env {
    let env = Env::new();
    ConfigBuilder::new()
        .guards(1000, 100)
        .csv("hr", "hr.csv")
        .write(&env);
    env
}

fn field(env: &Env, id: &str, column: &str) -> Option<String> {
    let conn = rusqlite::Connection::open(env.path("learners.db")).unwrap();
    conn.query_row(
        &format!("SELECT {column} FROM learners WHERE external_id = ?1"),
        [id],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn unicode_emoji_and_right_to_left_names_are_stored_verbatim() {
    let env = setup();
    env.write(
        "hr.csv",
        "external_id,user_name,display_name,department\n1,zoë@x.io,Zoë 👩‍💻 Ångström,Ingeniería\n2,rtl@x.io,\u{202e}محمد عبد الله,مالية\n",
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(
        field(&env, "1", "display_name").as_deref(),
        Some("Zoë 👩‍💻 Ångström")
    );
    assert_eq!(
        field(&env, "2", "display_name").as_deref(),
        Some("\u{202e}محمد عبد الله")
    );
    assert_eq!(field(&env, "2", "department").as_deref(), Some("مالية"));
    // A second run sees no change: nothing is re-encoded.
    assert!(stdout(&env.run(&["sync"])).contains("unchanged 2"));
}

#[test]
fn very_long_fields_are_kept_whole() {
    let env = setup();
    let long = "x".repeat(10_000);
    env.write(
        "hr.csv",
        &format!("external_id,user_name,job_title\n1,a@x.io,{long}\n"),
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(field(&env, "1", "job_title").map(|s| s.len()), Some(10_000));
}

#[test]
fn missing_and_blank_values_are_null_and_never_count_as_changes() {
    let env = setup();
    env.write(
        "hr.csv",
        "external_id,user_name,email,department\n1,a@x.io,,   \n",
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(field(&env, "1", "email"), None);
    assert_eq!(field(&env, "1", "department"), None);
    env.write("hr.csv", "external_id,user_name\n1,  a@x.io  \n");
    assert!(stdout(&env.run(&["sync"])).contains("updated 0"));
}

#[test]
fn two_users_with_the_same_email_are_two_learners() {
    let env = setup();
    env.write(
        "hr.csv",
        "external_id,user_name,email\n1,a@x.io,shared@x.io\n2,b@x.io,shared@x.io\n",
    );
    assert_eq!(code(&env.run(&["sync"])), 0);
    assert_eq!(env.learners("learners.db", "hr").len(), 2);
}

#[test]
fn a_change_of_email_case_alone_is_not_an_update() {
    let env = setup();
    env.write("hr.csv", "external_id,user_name,email\n1,a@x.io,Ada@X.io\n");
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", "external_id,user_name,email\n1,a@x.io,ada@x.io\n");
    assert!(stdout(&env.run(&["sync"]))
        .contains("updated 0, deactivated 0, reactivated 0, held 0, unchanged 1"));
    assert_eq!(field(&env, "1", "email").as_deref(), Some("Ada@X.io"));
}

#[test]
fn ids_that_look_like_sql_or_paths_are_just_ids() {
    let env = setup();
    env.write(
        "hr.csv",
        "external_id,user_name\n\"'; DROP TABLE learners; --\",sql@x.io\n../../etc/passwd,path@x.io\n\"a\"\"b\",quote@x.io\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let ids: Vec<String> = env
        .learners("learners.db", "hr")
        .into_iter()
        .map(|r| r.external_id)
        .collect();
    assert_eq!(
        ids,
        ["'; DROP TABLE learners; --", "../../etc/passwd", "a\"b"]
    );
    assert!(!env.path("etc").exists());
}

#[test]
fn a_user_flapping_in_and_out_is_deactivated_and_reactivated_in_the_same_row() {
    let env = setup();
    let with = "external_id,user_name\n1,a@x.io\n2,b@x.io\n";
    let without = "external_id,user_name\n1,a@x.io\n";
    for round in 0..3 {
        env.write("hr.csv", with);
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 0);
        if round > 0 {
            assert!(stdout(&out).contains("reactivated 1"), "{}", stdout(&out));
        }
        env.write("hr.csv", without);
        assert!(stdout(&env.run(&["sync"])).contains("deactivated 1"));
    }
    assert_eq!(env.learners("learners.db", "hr").len(), 2);
    let out = env.run(&["history", "--json", "--user", "b@x.io"]);
    let log: Vec<serde_json::Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let actions: Vec<&str> = log
        .iter()
        .rev()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "created",
            "deactivated",
            "reactivated",
            "deactivated",
            "reactivated",
            "deactivated"
        ]
    );
}

#[test]
fn the_same_user_twice_in_one_file_rejects_the_file() {
    let env = setup();
    env.write("hr.csv", "external_id,user_name\n1,a@x.io\n2,b@x.io\n");
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", "external_id,user_name\n1,a@x.io\n1,a2@x.io\n");
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3);
    assert!(
        stdout(&out).contains("hr.csv:3: external_id `1` already appears on line 2"),
        "{}",
        stdout(&out)
    );
    assert!(
        env.learners("learners.db", "hr").iter().all(|r| r.active),
        "nobody deactivated"
    );
}

#[test]
fn a_listing_that_silently_lost_half_its_users_is_held() {
    let env = Env::new();
    env.write(
        "config.toml",
        "[sync]\nstate_db = \"state.db\"\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n[[directory]]\nname = \"hr\"\nkind = \"csv\"\npath = \"hr.csv\"\n",
    );
    let rows = |n: u32| {
        let mut s = String::from("external_id,user_name\n");
        for i in 0..n {
            s.push_str(&format!("{i},u{i}@x.io\n"));
        }
        s
    };
    env.write("hr.csv", &rows(200));
    assert_eq!(code(&env.run(&["sync"])), 0);
    env.write("hr.csv", &rows(100));
    let out = env.run(&["sync"]);
    assert_eq!(
        code(&out),
        4,
        "defaults: 50 and 10% hold 100 of 200: {}",
        stdout(&out)
    );
    assert_eq!(
        env.learners("learners.db", "hr")
            .iter()
            .filter(|r| r.active)
            .count(),
        200
    );
}
