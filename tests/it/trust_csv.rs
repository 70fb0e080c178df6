//! Trust boundaries of the `csv` source through the real binary (issues 14 and 19):
//! a `path` at a file that is not a learner CSV is described, never echoed; a file
//! whose last row has no line break after it is refused as possibly cut short; and
//! files as Excel saves them (CRLF, header case, empty rows below the data) read
//! with the right line numbers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{code, stderr, stdout, Env};

fn setup() -> Env {
    let env = Env::new();
    env.write(
        "config.toml",
        r#"
[sync]
state_db = "state.db"
max_deactivations = 100
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#,
    );
    env
}

fn output(out: &std::process::Output) -> String {
    format!("{}{}", stdout(out), stderr(out))
}

fn rows(n: u32, eol: &str) -> String {
    let mut s = format!("external_id,user_name,department{eol}");
    for i in 1..=n {
        s.push_str(&format!("E{i},user{i}@x.io,Sales{eol}"));
    }
    s
}

fn active(env: &Env) -> Vec<(String, bool)> {
    env.learners("learners.db", "hr")
        .into_iter()
        .map(|r| (r.external_id, r.active))
        .collect()
}

fn all_active(n: u32) -> Vec<(String, bool)> {
    let mut v: Vec<(String, bool)> = (1..=n).map(|i| (format!("E{i}"), true)).collect();
    v.sort();
    v
}

/// A store of `n` active learners from a first, clean sync.
fn synced(n: u32) -> Env {
    let env = setup();
    env.write("hr.csv", &rows(n, "\n"));
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(active(&env), all_active(n));
    env
}

/// The run failed with `words` and the store is as the first sync left it.
fn refused(env: &Env, n: u32, words: &str) -> String {
    let before = std::fs::read(env.path("learners.db")).unwrap();
    let out = env.run(&["sync"]);
    let text = output(&out);
    assert_eq!(code(&out), 3, "{text}");
    assert!(text.contains(words), "`{words}` missing from:\n{text}");
    assert_eq!(active(env), all_active(n));
    assert_eq!(std::fs::read(env.path("learners.db")).unwrap(), before);
    text
}

#[test]
fn a_path_at_a_file_that_is_not_a_learner_csv_names_its_shape_not_its_content() {
    let files: &[(&str, &[u8], &str)] = &[
        (
            "a password file",
            b"root:$6$s4ltS4LT$hAsHhAsHhAsH:19000:0:99999:7:::\nbin:*:19000:0:99999:7:::\n",
            "line 1 has 1 column(s), none of them external_id or user_name",
        ),
        (
            "a key JSON",
            b"{\"type\":\"service_account\",\"private_key\":\"-----BEGIN s4ltS4LT\",\"client_email\":\"x\"}\n",
            "line 1 has 3 column(s), none of them external_id or user_name",
        ),
        (
            "a spreadsheet with other columns",
            b"Name,s4ltS4LT,Salary,Notes\nAnn,x,1,y\n",
            "line 1 has 4 column(s), none of them external_id or user_name",
        ),
        (
            "a binary file",
            b"\x89PNG\r\n\x1a\n\xff\xfe s4ltS4LT\x00\x00\n",
            "line 1 has 1 column(s), none of them external_id or user_name",
        ),
    ];
    for (what, bytes, words) in files {
        let env = synced(2);
        std::fs::write(env.path("hr.csv"), bytes).unwrap();
        let text = refused(&env, 2, words);
        assert!(
            !text.contains("s4ltS4LT"),
            "{what}: content echoed:\n{text}"
        );
        assert!(!text.contains("root:"), "{what}: content echoed:\n{text}");
    }
}

#[test]
fn an_unknown_column_of_a_real_header_is_named_but_cut_short() {
    let env = synced(2);
    let long = format!("departmnet{}", "x".repeat(500));
    env.write(
        "hr.csv",
        &format!("external_id,user_name,{long}\nE1,user1@x.io,a\n"),
    );
    let text = refused(&env, 2, "unknown column `departmnetxxx");
    assert!(!text.contains(&long), "{text}");
}

#[test]
fn a_file_whose_last_row_has_no_line_break_is_refused_and_changes_nothing() {
    for eol in ["\n", "\r\n"] {
        // Cut after row 3 of 5: without the check, E4 and E5 are deactivated.
        let env = synced(5);
        let full = rows(5, eol);
        let cut = rows(3, eol);
        env.write("hr.csv", cut.trim_end_matches(['\r', '\n']));
        refused(&env, 5, "hr.csv:4: the file does not end with a line break");
        // Only the header left, cut before its line break.
        env.write("hr.csv", "external_id,user_name,department");
        refused(&env, 5, "hr.csv:1: the file does not end with a line break");
        // With its line break the same file is complete and read.
        env.write("hr.csv", &full);
        let out = env.run(&["sync"]);
        assert_eq!(code(&out), 0, "{}", output(&out));
    }
}

#[test]
fn crlf_files_number_their_lines_like_lf_files() {
    for eol in ["\n", "\r\n"] {
        let env = synced(3);
        let mut text = rows(2, eol);
        text.push_str(&format!("E9,only-two{eol}"));
        env.write("hr.csv", &text);
        refused(&env, 3, "hr.csv:4: expected 3 fields, found 2");

        let mut text = rows(3, eol);
        text.push_str(&format!("E2,again@x.io,Sales{eol}"));
        env.write("hr.csv", &text);
        refused(
            &env,
            3,
            "hr.csv:5: external_id `E2` already appears on line 3",
        );

        // A quoted field spanning lines counts its line breaks too.
        let text = format!(
            "external_id,user_name,department{eol}E1,user1@x.io,\"Sales{eol}EMEA\"{eol}E1,dup@x.io,Sales{eol}"
        );
        env.write("hr.csv", &text);
        refused(
            &env,
            3,
            "hr.csv:4: external_id `E1` already appears on line 2",
        );
    }
}

#[test]
fn the_crlf_demo_file_reads_whole() {
    let demo = std::fs::read_to_string("examples/demo.csv").unwrap();
    assert!(
        demo.contains("\r\n"),
        "the demo is an Excel-style CRLF file"
    );
    // Rows that are inactive from the start are not created.
    let records = demo
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(",false"))
        .count();
    let env = setup();
    env.write("hr.csv", &demo);
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert_eq!(env.learners("learners.db", "hr").len(), records);
}

#[test]
fn headers_match_in_any_case_and_trailing_empty_rows_are_ignored() {
    let env = setup();
    env.write(
        "hr.csv",
        "External_ID,User_Name,DEPARTMENT, Email \r\nE1,user1@x.io,Sales,user1@x.io\r\nE2,user2@x.io,Sales,user2@x.io\r\n,,,\r\n , ,,\r\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    let learners = env.learners("learners.db", "hr");
    assert_eq!(learners.len(), 2);
    assert_eq!(learners[0].department.as_deref(), Some("Sales"));
    assert_eq!(learners[1].email.as_deref(), Some("user2@x.io"));

    // The same column twice in different case is still one column twice.
    env.write(
        "hr.csv",
        "external_id,user_name,Department,department\nE1,a@x.io,S,S\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 3, "{}", output(&out));
    assert!(output(&out).contains("column `department` appears twice"));
}

#[test]
fn an_empty_row_between_rows_is_refused_with_its_line() {
    let env = synced(3);
    env.write(
        "hr.csv",
        "external_id,user_name,department\r\nE1,user1@x.io,S\r\n,,\r\nE2,user2@x.io,S\r\nE3,user3@x.io,S\r\n",
    );
    refused(&env, 3, "hr.csv:3: empty row in the middle of the file");
}

#[test]
fn a_file_saved_in_another_encoding_says_how_to_save_it() {
    // Excel's "Unicode Text" is UTF-16 with a BOM; a file declared UTF-8 that is not.
    let utf16: Vec<u8> = "\u{feff}external_id,user_name\r\nE1,a@x.io\r\n"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let env = synced(2);
    std::fs::write(env.path("hr.csv"), utf16).unwrap();
    let text = refused(&env, 2, "UTF-16");
    assert!(text.contains("\"CSV UTF-8 (comma delimited)\""), "{text}");

    let env = synced(2);
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config.push_str("encoding = \"utf-8\"\n");
    env.write("config.toml", &config);
    std::fs::write(
        env.path("hr.csv"),
        b"external_id,user_name,given_name\nE1,a@x.io,Ren\xe9\n",
    )
    .unwrap();
    let text = refused(&env, 2, "hr.csv:2: not valid UTF-8");
    assert!(text.contains("\"CSV UTF-8 (comma delimited)\""), "{text}");
}

/// `setup()` with extra keys for the directory.
fn setup_with(keys: &str) -> Env {
    let env = setup();
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config.push_str(keys);
    env.write("config.toml", &config);
    env
}

#[test]
fn a_windows_1252_export_is_detected_read_and_warned_about() {
    let env = setup();
    // "CSV (comma delimited)" from a Western European Excel: é is 0xE9, € is 0x80.
    std::fs::write(
        env.path("hr.csv"),
        b"external_id,user_name,department\r\nE1,a@x.io,Ren\xe9 \x80\r\n",
    )
    .unwrap();
    let out = env.run(&["check"]);
    let text = output(&out);
    assert!(text.contains("windows-1252 (detected)"), "{text}");
    assert!(
        text.contains("not valid UTF-8, read as windows-1252"),
        "{text}"
    );
    let out = env.run(&["sync"]);
    let text = output(&out);
    assert_eq!(code(&out), 0, "{text}");
    assert!(text.contains("read as windows-1252"), "{text}");
    let learners = env.learners("learners.db", "hr");
    assert_eq!(
        learners[0].department.as_deref(),
        Some("Ren\u{e9} \u{20ac}")
    );

    // Said as latin-1, the same bytes are ISO-8859-1: 0x80 is a control, not €.
    let env = setup_with("encoding = \"latin-1\"\n");
    std::fs::write(
        env.path("hr.csv"),
        b"external_id,user_name,department\nE1,a@x.io,Ren\xe9 \x80\n",
    )
    .unwrap();
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    assert!(!output(&out).contains("windows-1252"), "{}", output(&out));
    let learners = env.learners("learners.db", "hr");
    assert_eq!(learners[0].department.as_deref(), Some("Ren\u{e9} \u{80}"));
}

#[test]
fn semicolon_and_tab_files_read_by_detection_or_by_the_delimiter_key() {
    // A German Excel's "CSV (Trennzeichen-getrennt)" uses `;`; the name holds a comma.
    let env = setup();
    env.write(
        "hr.csv",
        "external_id;user_name;department\r\nE1;a@x.io;\"Smith; Ann\"\r\nE2;b@x.io;Lee, Bo\r\n",
    );
    let out = env.run(&["check"]);
    assert!(
        output(&out).contains("delimiter `;` (detected)"),
        "{}",
        output(&out)
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    let learners = env.learners("learners.db", "hr");
    assert_eq!(learners[0].department.as_deref(), Some("Smith; Ann"));
    assert_eq!(learners[1].department.as_deref(), Some("Lee, Bo"));

    let env = setup_with("delimiter = \"\\t\"\n");
    env.write(
        "hr.csv",
        "external_id\tuser_name\tdepartment\nE1\ta@x.io\tSales, EMEA\n",
    );
    let out = env.run(&["sync"]);
    assert_eq!(code(&out), 0, "{}", output(&out));
    let learners = env.learners("learners.db", "hr");
    assert_eq!(learners[0].department.as_deref(), Some("Sales, EMEA"));
}

#[test]
fn a_file_with_another_delimiter_than_the_configured_one_says_how_to_save_it() {
    let env = synced(2);
    let mut config = std::fs::read_to_string(env.config()).unwrap();
    config.push_str("delimiter = \",\"\n");
    env.write("config.toml", &config);
    env.write("hr.csv", "external_id;user_name\nE1;user1@x.io\n");
    let text = refused(&env, 2, "line 1 has 1 column(s), none of them external_id");
    assert!(text.contains("separated by `;` or tab"), "{text}");
    assert!(text.contains("\"CSV UTF-8 (comma delimited)\""), "{text}");
}

#[test]
fn a_bad_delimiter_or_encoding_value_is_a_config_error_naming_the_key() {
    for (keys, words) in [
        ("delimiter = \"|\"\n", "directory[0].delimiter: must be"),
        ("encoding = \"utf-16\"\n", "directory[0].encoding: must be"),
    ] {
        let env = setup_with(keys);
        env.write("hr.csv", &rows(1, "\n"));
        let out = env.run(&["check"]);
        assert_eq!(code(&out), 2, "{}", output(&out));
        assert!(output(&out).contains(words), "{}", output(&out));
    }
}

#[test]
fn a_missing_csv_file_gets_a_file_not_found_hint_not_a_format_one() {
    let env = setup();
    let out = env.run(&["check"]);
    let text = output(&out);
    assert_ne!(code(&out), 0, "{text}");
    assert!(
        text.contains("(relative to the config file's directory)"),
        "{text}"
    );
    assert!(text.contains("file not found: "), "{text}");
    assert!(!text.contains("UTF-8"), "{text}");
}
