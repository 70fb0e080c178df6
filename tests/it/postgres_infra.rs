//! The test PostgreSQL itself (support::postgres): fresh databases, psql.

use crate::support::postgres::{database, psql, server_url};

#[test]
fn two_databases_are_different_empty_and_take_tables() {
    let a = database();
    let b = database();
    assert_ne!(a, b);
    assert_ne!(a, server_url());

    let tables = "select count(*) from pg_tables where schemaname not in ('pg_catalog', 'information_schema')";
    for url in [&a, &b] {
        assert_eq!(psql(url, tables), "0", "{url} is not empty");
    }
    // Each URL names its own database.
    let name_a = psql(&a, "select current_database()");
    let name_b = psql(&b, "select current_database()");
    assert!(name_a.starts_with("ls_test_"), "{name_a}");
    assert_ne!(name_a, name_b);
    assert!(a.ends_with(&format!("/{name_a}")), "{a}");

    psql(
        &a,
        "create table learners (id text primary key, email text not null)",
    );
    psql(&a, "insert into learners values ('1', 'ada@example.com')");
    psql(&b, "create table learners (id text primary key)");
    assert_eq!(psql(&a, tables), "1");
    assert_eq!(psql(&a, "select count(*) from learners"), "1");
    assert_eq!(psql(&b, "select count(*) from learners"), "0");
}

#[test]
fn psql_returns_the_rows() {
    let db = database();
    assert_eq!(psql(&db, "select 1, 'two'"), "1|two");
    assert_eq!(
        psql(&db, "select g from generate_series(1, 3) g"),
        "1\n2\n3"
    );
    // Statements without rows print nothing (-q: no command tags); the last one's rows.
    assert_eq!(
        psql(
            &db,
            "create table t (n int); insert into t values (7), (8); update t set n = n + 1; select sum(n) from t"
        ),
        "17"
    );
    // The superuser role, so the tests can tamper with anything.
    assert_eq!(
        psql(
            &db,
            "select rolsuper from pg_roles where rolname = current_user"
        ),
        "t"
    );
}

#[test]
#[should_panic(expected = "psql on")]
fn psql_panics_on_an_error() {
    let db = database();
    psql(&db, "select * from no_such_table");
}

#[test]
fn databases_from_many_threads_at_once() {
    let urls: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(database)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = urls.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), urls.len(), "{urls:?}");
    for url in &urls {
        assert_eq!(psql(url, "select 1"), "1");
    }
}
