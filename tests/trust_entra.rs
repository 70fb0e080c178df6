//! Trust boundaries of the `entra` source, through the real binary against the Graph
//! mock: links to other servers, links and pages that never end, malformed items and
//! token lifetimes. A hostile or broken Graph fails the directory's run, gets no token
//! it was not meant to get, and leaves the store and the cursor as they were.

#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
#[path = "support/graph_mock.rs"]
mod graph_mock;

use common::{code, stderr, stdout, Env};
use graph_mock::{user, GraphMock};

const SECRET: &str = "trust-entra-secret-value";

fn env_for(mock: &GraphMock, scope: &str) -> Env {
    let env = Env::new();
    write_config(&env, mock, scope);
    env
}

fn write_config(env: &Env, mock: &GraphMock, scope: &str) {
    let base = mock.base();
    env.write(
        "config.toml",
        &format!(
            r#"[sync]
state_db = "state.db"
max_deactivation_percent = 100

[store]
kind = "sqlite"
path = "learners.db"

[[directory]]
name = "contoso"
kind = "entra"
tenant_id = "tenant-1"
client_id = "client-1"
client_secret = {{ env = "CONTOSO_SECRET" }}
authority_url = "{base}"
graph_url = "{base}/v1.0"
{scope}
"#
        ),
    );
}

fn sync(env: &Env) -> std::process::Output {
    env.run_with(&["sync"], &[("CONTOSO_SECRET", SECRET)])
}

fn both(out: &std::process::Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", stdout(out), stderr(out))
}

fn assert_ok(out: &std::process::Output) {
    assert_eq!(code(out), 0, "{}", both(out));
}

/// The run failed as a directory failure (exit 3) and says `words`.
fn assert_failed_saying(out: &std::process::Output, words: &[&str]) {
    let text = both(out);
    assert_eq!(code(out), 3, "{text}");
    for w in words {
        assert!(text.contains(w), "missing {w:?} in\n{text}");
    }
}

fn sql(env: &Env, query: &str) -> Vec<Vec<Option<String>>> {
    let path = env.path("state.db");
    if !path.exists() {
        return Vec::new();
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open db");
    let mut stmt = conn.prepare(query).expect("prepare");
    let n = stmt.column_count();
    stmt.query_map([], |r| {
        (0..n)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i).map(|v| match v {
                    rusqlite::types::Value::Null => None,
                    rusqlite::types::Value::Integer(i) => Some(i.to_string()),
                    rusqlite::types::Value::Text(t) => Some(t),
                    other => Some(format!("{other:?}")),
                })
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .expect("query")
    .collect::<Result<Vec<_>, _>>()
    .expect("rows")
}

fn cursor(env: &Env) -> Option<String> {
    sql(
        env,
        "SELECT cursor FROM cursors WHERE directory = 'contoso'",
    )
    .into_iter()
    .next()
    .and_then(|r| r.into_iter().next().flatten())
}

fn learners(env: &Env) -> Vec<(String, String, bool)> {
    if !env.path("learners.db").exists() {
        return Vec::new();
    }
    env.learners("learners.db", "contoso")
        .into_iter()
        .map(|r| (r.external_id, r.user_name, r.active))
        .collect()
}

/// Three users, two pages of two.
fn tenant(mock: &GraphMock) {
    mock.add_user(user("u1", "ada@contoso.test", "Ada", "Lovelace"));
    mock.add_user(user("u2", "bob@contoso.test", "Bob", "Builder"));
    mock.add_user(user("u3", "cy@contoso.test", "Cy", "Young"));
}

// ---- issue 14 item 1: links to another scheme, host or port ----

/// Where a hostile link can be.
#[derive(Debug, Clone, Copy)]
enum Place {
    DeltaNext,
    DeltaLink,
    GroupMembersNext,
    AppAssignmentsNext,
}

/// Another origin than the mock's `http://127.0.0.1:PORT`.
#[derive(Debug, Clone, Copy)]
enum Foreign {
    /// Another server (a second mock, which logs what reaches it).
    Port,
    /// The same server under another name (`localhost`).
    Host,
    /// The same host and port over https.
    Scheme,
}

fn foreign_origin(mock: &GraphMock, attacker: &GraphMock, f: Foreign) -> String {
    match f {
        Foreign::Port => attacker.base(),
        Foreign::Host => format!("http://localhost:{}", mock.addr.port()),
        Foreign::Scheme => format!("https://127.0.0.1:{}", mock.addr.port()),
    }
}

fn hostile_case(place: Place, f: Foreign) {
    let mock = GraphMock::start(SECRET);
    let attacker = GraphMock::start(SECRET);
    tenant(&mock);
    let origin = foreign_origin(&mock, &attacker, f);
    let scope = match place {
        Place::DeltaNext | Place::DeltaLink => "",
        Place::GroupMembersNext => "scope = { groups = [\"g1\"] }",
        Place::AppAssignmentsNext => "scope = { app = \"sp1\" }",
    };
    {
        let mut s = mock.state();
        s.groups
            .insert("g1".into(), vec!["u1".into(), "u2".into(), "u3".into()]);
        s.app_assignments.insert(
            "sp1".into(),
            vec![
                ("u1".into(), "User".into()),
                ("u2".into(), "User".into()),
                ("u3".into(), "User".into()),
            ],
        );
        match place {
            Place::DeltaNext => s.delta_next_base = Some(origin.clone()),
            Place::DeltaLink => s.delta_link_base = Some(origin.clone()),
            Place::GroupMembersNext | Place::AppAssignmentsNext => {
                s.paged_next_base = Some(origin.clone())
            }
        }
    }
    let env = env_for(&mock, scope);
    let what = format!("{place:?} to another {f:?}");
    // Twice: a deltaLink stored by the first run would be called by the second.
    for run in 1..=2 {
        let out = sync(&env);
        let shown = origin.trim_end_matches('/');
        assert_failed_saying(&out, &["another server", shown]);
        assert!(
            !both(&out).contains("$deltatoken") && !both(&out).contains("skiptoken"),
            "{what}: the error shows the link's origin, not its token: {}",
            both(&out)
        );
        assert_eq!(cursor(&env), None, "{what}, run {run}: nothing stored");
        assert_eq!(learners(&env), vec![], "{what}, run {run}: nobody created");
        assert!(
            attacker.log().is_empty(),
            "{what}: the other server got {:?}",
            attacker.log()
        );
        // Nothing reached the mock under its other name either.
        let hosts = mock.state().hosts.clone();
        assert!(
            hosts.iter().all(|h| h.starts_with("127.0.0.1:")),
            "{what}: requests under another name: {hosts:?}"
        );
    }
    // The same tenant without the hostile link syncs.
    {
        let mut s = mock.state();
        s.delta_next_base = None;
        s.delta_link_base = None;
        s.paged_next_base = None;
    }
    assert_ok(&sync(&env));
    assert_eq!(learners(&env).len(), 3, "{what}");
    assert!(cursor(&env).is_some_and(|c| c.starts_with(&mock.base())));
}

#[test]
fn a_delta_next_link_to_another_origin_is_not_followed_and_fails_the_run() {
    for f in [Foreign::Port, Foreign::Host, Foreign::Scheme] {
        hostile_case(Place::DeltaNext, f);
    }
}

#[test]
fn a_delta_link_to_another_origin_is_neither_stored_nor_called() {
    for f in [Foreign::Port, Foreign::Host, Foreign::Scheme] {
        hostile_case(Place::DeltaLink, f);
    }
}

#[test]
fn a_scope_listing_next_link_to_another_origin_is_not_followed_and_fails_the_run() {
    for place in [Place::GroupMembersNext, Place::AppAssignmentsNext] {
        for f in [Foreign::Port, Foreign::Host, Foreign::Scheme] {
            hostile_case(place, f);
        }
    }
}

#[test]
fn a_stored_cursor_from_another_graph_url_is_not_called_and_a_full_round_replaces_it() {
    let old = GraphMock::start(SECRET);
    let new = GraphMock::start(SECRET);
    tenant(&old);
    tenant(&new);
    new.add_user(user("u4", "di@contoso.test", "Di", "Prince"));
    let env = env_for(&old, "");
    assert_ok(&sync(&env));
    assert!(cursor(&env).is_some_and(|c| c.starts_with(&old.base())));

    // The admin points the directory at another Graph (a proxy, a national cloud).
    write_config(&env, &new, "");
    old.clear_log();
    let out = sync(&env);
    assert_ok(&out);
    assert!(
        old.log().is_empty(),
        "the old server got the new token: {:?}",
        old.log()
    );
    let calls: Vec<String> = new
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET /v1.0/users/delta"))
        .collect();
    assert!(
        calls.first().is_some_and(|c| c.contains("$select=")),
        "a fresh round: {calls:?}"
    );
    assert_eq!(learners(&env).len(), 4);
    assert!(cursor(&env).is_some_and(|c| c.starts_with(&new.base())));
}
