//! The SCIM store's request rate limit and its Test Connection probe, through the real
//! binary against the mock provider.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common;
use crate::support::scim_mock;

use common::{code, stderr, stdout, Env};
use scim_mock::ScimMock;
use serde_json::json;

const TOKEN: &str = "mock-scim-token-51aa-limits-never-printed";
const HEADER: &str = "external_id,user_name,email,given_name,family_name,department,active\n";

fn setup(base: &str, store: &str, users: u32) -> Env {
    let env = Env::new();
    env.write(
        "config.toml",
        &format!(
            r#"
[sync]
state_db = "state/state.db"

[store]
kind = "scim"
url = "{base}"
token = {{ env = "SCIM_TOKEN" }}
{store}

[[directory]]
name = "hr"
kind = "csv"
path = "hr.csv"
"#
        ),
    );
    let mut csv = HEADER.to_string();
    for i in 1..=users {
        csv.push_str(&format!("E{i},u{i}@x.io,u{i}@x.io,U,{i},Sales,true\n"));
    }
    env.write("hr.csv", &csv);
    env
}

fn run(env: &Env, args: &[&str]) -> std::process::Output {
    env.run_with(args, &[("SCIM_TOKEN", TOKEN)])
}

#[test]
fn concurrent_requests_share_the_stores_rate_limit() {
    let mock = ScimMock::start(TOKEN);
    // 8 creates, 4 at a time, at most 5 requests a second: 18 requests (2 discovery,
    // a lookup and a POST each) take their slots 200 ms apart, whatever the concurrency.
    let env = setup(
        &mock.base(),
        "concurrency = 4\nmax_requests_per_second = 5",
        8,
    );
    let out = run(&env, &["sync"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let mut at: Vec<_> = mock.state().log.iter().map(|l| l.at).collect();
    at.sort();
    assert_eq!(at.len(), 18);
    // A request arrives no sooner than its slot; only the first can be late (so the
    // bound is half the schedule). A slow machine only spreads them further.
    let span = *at.last().unwrap() - at[0];
    assert!(
        span >= Duration::from_millis(17 * 200 / 2),
        "18 requests within {span:?}"
    );
    assert_eq!(mock.state().users.len(), 8);
}

#[test]
fn a_rate_limit_out_of_range_is_a_config_error_with_file_line_and_key() {
    for bad in ["0.05", "-3", "\"fast\"", "5000"] {
        let env = setup(
            "http://127.0.0.1:9",
            &format!("max_requests_per_second = {bad}"),
            1,
        );
        let out = run(&env, &["check"]);
        assert_ne!(code(&out), 0, "{bad}");
        let said = format!("{}{}", stdout(&out), stderr(&out));
        assert!(
            said.contains("config.toml:")
                && said.contains("store.max_requests_per_second")
                && said.contains("between 0.1 and 1000"),
            "{bad}: {said}"
        );
    }
    // 0 is no limit: the config loads (check goes on to the unreachable provider).
    let env = setup("http://127.0.0.1:9", "max_requests_per_second = 0", 1);
    let out = run(&env, &["check"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!said.contains("store.max_requests_per_second"), "{said}");
    assert!(said.contains("127.0.0.1:9"), "{said}");
}

#[test]
fn check_probes_like_entras_test_connection_without_service_provider_config() {
    let mock = ScimMock::start(TOKEN);
    mock.state().no_discovery = true;
    mock.add_user(json!({"userName": "someone@x.io", "externalId": "X1"}));
    let env = setup(&mock.base(), "", 1);
    let out = run(&env, &["check"]);
    let said = stdout(&out);
    assert_eq!(code(&out), 0, "{said}{}", stderr(&out));
    assert!(said.contains("Test Connection passed"), "{said}");
    assert!(
        said.contains("dialect entra, lookups by userName"),
        "{said}"
    );
    assert!(
        said.contains("no /ServiceProviderConfig (404); fine for the Entra dialects"),
        "{said}"
    );
    // The probe: a filter on the matching attribute for a random GUID, nothing written.
    let gets = mock.requests("GET");
    let probe = gets
        .iter()
        .find(|g| g.path.starts_with("/Users?"))
        .expect("a probe");
    let guid = probe.path.rsplit("%22").nth(1).unwrap_or_default();
    assert!(
        probe.path.contains("filter=userName+eq+%22"),
        "{}",
        probe.path
    );
    assert!(uuid::Uuid::parse_str(guid).is_ok(), "{}", probe.path);
    assert!(mock.state().log.iter().all(|l| l.method == "GET"));

    // With discovery: what it announces.
    mock.state().no_discovery = false;
    let said = stdout(&run(&env, &["check"]));
    assert!(
        said.contains("ServiceProviderConfig: PATCH supported, filter supported"),
        "{said}"
    );

    // A provider that ignores filters would hand over the wrong users: the check fails.
    mock.state().ignore_filters = true;
    let out = run(&env, &["check"]);
    assert_eq!(code(&out), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("ignores or misreads filters"),
        "{}",
        stdout(&out)
    );
}
