//! One multi-tenant app registration consented in several tenants: a `[credential.NAME]`
//! table declared once and named by each Entra directory (`credential = "NAME"`, one
//! `tenant_id` each). The real binary against two mock tenants on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]
use crate::common::{code, stderr, stdout, Env};
use crate::support::graph_mock::{user, GraphMock};

const SECRET: &str = "shared-app-secret-never-printed";

/// Two tenants of one app: same client id and secret, each its own tenant id.
fn tenants() -> (GraphMock, GraphMock) {
    let contoso = GraphMock::start(SECRET);
    contoso.state().tenant = "tenant-contoso".into();
    contoso.add_user(user("c1", "ana@contoso.example", "Ana", "Contoso"));
    let fabrikam = GraphMock::start(SECRET);
    fabrikam.state().tenant = "tenant-fabrikam".into();
    fabrikam.add_user(user("f1", "bo@fabrikam.example", "Bo", "Fabrikam"));
    fabrikam.add_user(user("f2", "cy@fabrikam.example", "Cy", "Fabrikam"));
    (contoso, fabrikam)
}

fn directory(name: &str, tenant: &str, mock: &GraphMock, extra: &str) -> String {
    let base = mock.base();
    format!(
        "[[directory]]\nname = \"{name}\"\nkind = \"entra\"\ntenant_id = \"{tenant}\"\n{extra}authority_url = \"{base}\"\ngraph_url = \"{base}/v1.0\"\n\n"
    )
}

const HEAD: &str =
    "[sync]\nstate_db = \"state.db\"\n\n[store]\nkind = \"sqlite\"\npath = \"learners.db\"\n\n\
[credential.msp-app]\nclient_id = \"client-1\"\nclient_secret = { env = \"MSP_APP_SECRET\" }\n\n";

#[test]
fn one_shared_credential_serves_every_tenant_that_names_it() {
    let (contoso, fabrikam) = tenants();
    let env = Env::new();
    let shared = "credential = \"msp-app\"\n";
    env.write(
        "config.toml",
        &format!(
            "{HEAD}{}{}",
            directory("contoso", "tenant-contoso", &contoso, shared),
            directory("fabrikam", "tenant-fabrikam", &fabrikam, shared)
        ),
    );
    let out = env.run_with(&["sync"], &[("MSP_APP_SECRET", SECRET)]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let ids = |d: &str| -> Vec<String> {
        env.learners("learners.db", d)
            .into_iter()
            .map(|r| r.external_id)
            .collect()
    };
    assert_eq!(ids("contoso"), ["c1"]);
    assert_eq!(ids("fabrikam"), ["f1", "f2"]);
    // Each tenant issued a token to the shared app, at its own tenant's token endpoint.
    assert_eq!(contoso.state().tokens_issued, 1);
    assert_eq!(fabrikam.state().tokens_issued, 1);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains(SECRET), "{all}");

    // The shared secret is one secret of the config, under the credential's name.
    let config = learner_sync::config::Config::parse(
        &env.config(),
        &std::fs::read_to_string(env.config()).unwrap(),
    )
    .unwrap();
    let labels: Vec<String> = config.secrets().into_iter().map(|(l, _)| l).collect();
    assert_eq!(labels, ["credential.msp-app.client_secret"]);
}

#[test]
fn a_credential_that_is_not_declared_or_is_repeated_is_refused_with_line_and_key() {
    let (contoso, _fabrikam) = tenants();
    let env = Env::new();
    let no_secret = HEAD.replace("client_secret = { env = \"MSP_APP_SECRET\" }\n", "");
    // (head, the directory's credential lines, where, what)
    let cases = [
        // An unknown name: the error names the line, the key and the declared names.
        (
            HEAD,
            "credential = \"msp-ap\"\n",
            "config.toml:16: directory[0].credential:",
            "no [credential.msp-ap] table; declared: msp-app",
        ),
        // A directory that names a credential and repeats its client_id.
        (
            HEAD,
            "credential = \"msp-app\"\nclient_id = \"client-1\"\n",
            "config.toml:17: directory[0].client_id:",
            "its client_id is in [credential.msp-app], remove it here",
        ),
        // A credential table without a secret or certificate.
        (
            no_secret.as_str(),
            "credential = \"msp-app\"\n",
            "config.toml:8: credential.msp-app.client_secret:",
            "a credential needs client_secret or certificate",
        ),
    ];
    for (head, lines, at, what) in cases {
        let text = format!(
            "{head}{}",
            directory("contoso", "tenant-contoso", &contoso, lines)
        );
        env.write("config.toml", &text);
        let out = env.run_with(&["sync"], &[("MSP_APP_SECRET", SECRET)]);
        assert_eq!(code(&out), 2, "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains(at) && err.contains(what), "{text}\n{err}");
    }
    // Nothing was written by any of these runs.
    assert!(!env.path("learners.db").exists());
}
