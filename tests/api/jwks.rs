//! Public-key tokens end to end: JWKS file and URL, rotation, hostile tokens through the real
//! server (every one UNAUTHENTICATED with the same message), and the start-up checks.

use integration_hub::pb;
use integration_hub::startup::Application;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{
    Backend, TEST_AUDIENCE, TEST_ISSUER, TestApp, TestDb, authed, spawn_with, test_args,
};
use crate::test_support::{JwksServer, ec_key, ed_key, jwks, now, rsa_key};

const GENERIC: &str = "missing or invalid credentials";

fn claims(role: &str) -> Value {
    json!({
        "sub": "erin@example.test",
        "iss": TEST_ISSUER,
        "aud": TEST_AUDIENCE,
        "iat": now(),
        "exp": now() + 600,
        "team_id": "acme",
        "roles": [role],
    })
}

fn edit(role: &str, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims(role);
    f(c.as_object_mut().expect("object"));
    c
}

/// A server whose keys come from a JWKS file (and the usual HS256 secret).
async fn spawn_with_jwks_file(keys: &[Value]) -> (TestApp, std::path::PathBuf) {
    let db = TestDb::new(Backend::Sqlite).await;
    let path = db.dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).expect("write jwks");
    let mut args = test_args(&db.url);
    args.auth.jwt_jwks_file = Some(path.clone());
    (spawn_with(Backend::Sqlite, db, args).await, path)
}

/// Calls ListInstalledApps with this `authorization` value (or none).
async fn call(app: &mut TestApp, authorization: Option<String>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::ListInstalledAppsRequest::default());
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().expect("metadata value"));
    }
    app.apps.list_installed_apps(request).await.map(|_| ())
}

async fn assert_refused(app: &mut TestApp, authorization: Option<String>, case: &str) {
    let status = call(app, authorization)
        .await
        .expect_err(&format!("{case}: accepted"));
    assert_eq!(status.code(), Code::Unauthenticated, "{case}");
    assert_eq!(status.message(), GENERIC, "{case}");
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_signed_with_jwks_keys_are_accepted_by_kid() {
    let (mut app, _) = spawn_with_jwks_file(&[
        rsa_key(0).jwk("rsa", true),
        ec_key(1).jwk("ec", false),
        ed_key(2).jwk("ed", true),
    ])
    .await;
    for token in [
        rsa_key(0).sign(Some("rsa"), &claims("developer")),
        ec_key(1).sign(Some("ec"), &claims("viewer")),
        ed_key(2).sign(Some("ed"), &claims("admin")),
        app.token("acme", "developer", "dana"),
    ] {
        call(&mut app, bearer(&token)).await.expect("accepted");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_unauthenticated_with_one_generic_message() {
    let server = JwksServer::start(jwks(&[])).await;
    let (mut app, _) =
        spawn_with_jwks_file(&[rsa_key(0).jwk("rsa", true), ed_key(2).jwk("ed", true)]).await;
    let rsa = rsa_key(0);
    let ed = ed_key(2);
    let good = ed.sign(Some("ed"), &claims("developer"));
    let b64 = |v: &Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let (good_body, good_sig) = good.rsplit_once('.').unwrap();

    let mut hs256_with_pem = Header::new(Algorithm::HS256);
    hs256_with_pem.kid = Some("rsa".into());
    let mut pointing = Header::new(Algorithm::EdDSA);
    pointing.kid = Some("ed".into());
    pointing.jku = Some(server.url("/attacker/jwks.json"));
    pointing.x5u = Some(server.url("/attacker/cert.pem"));

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        (
            "alg none",
            bearer(&format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "ed"})),
                b64(&claims("admin"))
            )),
        ),
        (
            "alg none with a signature",
            bearer(&format!(
                "{}.{}.{good_sig}",
                b64(&json!({"alg": "none", "kid": "ed"})),
                b64(&claims("admin"))
            )),
        ),
        (
            "HS256 with the RSA public key PEM as secret",
            bearer(
                &jsonwebtoken::encode(
                    &hs256_with_pem,
                    &claims("admin"),
                    &EncodingKey::from_secret(rsa.pems[0].as_bytes()),
                )
                .unwrap(),
            ),
        ),
        (
            "algorithm not pinned to the key",
            bearer(&rsa.sign(Some("ed"), &claims("admin"))),
        ),
        (
            "tampered payload",
            bearer(&format!(
                "{}.{}.{good_sig}",
                good_body.split('.').next().unwrap(),
                b64(&claims("admin"))
            )),
        ),
        ("missing signature", bearer(&format!("{good_body}."))),
        ("truncated signature", bearer(&good[..good.len() - 3])),
        (
            "another issuer's key",
            bearer(&ed_key(99).sign(Some("ed"), &claims("admin"))),
        ),
        (
            "unknown kid",
            bearer(&ed.sign(Some("unknown"), &claims("admin"))),
        ),
        (
            "path traversal kid",
            bearer(&ed.sign(Some("../../etc/passwd"), &claims("admin"))),
        ),
        (
            "10 KB kid",
            bearer(&ed.sign(Some(&"k".repeat(10 * 1024)), &claims("admin"))),
        ),
        (
            "key location headers",
            bearer(&ed_key(66).sign_header(&pointing, &claims("admin"))),
        ),
        (
            "expired",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.insert("exp".into(), json!(now() - 120));
                }),
            )),
        ),
        (
            "no exp",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.remove("exp");
                }),
            )),
        ),
        (
            "future nbf",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.insert("nbf".into(), json!(now() + 3600));
                }),
            )),
        ),
        (
            "wrong issuer",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.insert("iss".into(), json!("https://evil.test"));
                }),
            )),
        ),
        (
            "audience list without ours",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.insert("aud".into(), json!(["billing", "crm"]));
                }),
            )),
        ),
        (
            "oversized",
            bearer(&ed.sign(
                Some("ed"),
                &edit("admin", |c| {
                    c.insert("pad".into(), json!("x".repeat(9000)));
                }),
            )),
        ),
        ("non-Bearer scheme", Some(format!("Basic {good}"))),
        (
            "an unknown role value",
            bearer(&ed.sign(Some("ed"), &claims("Admin"))),
        ),
        (
            "all teams for a developer",
            bearer(&ed.sign(
                Some("ed"),
                &edit("developer", |c| {
                    c.insert("team_id".into(), json!("*"));
                }),
            )),
        ),
    ];
    for (case, authorization) in cases {
        assert_refused(&mut app, authorization, case).await;
    }
    assert_eq!(server.hits("/attacker/jwks.json"), 0);
    assert_eq!(server.hits("/attacker/cert.pem"), 0);
    // The good token itself passes: the refusals above were about the tokens.
    call(&mut app, bearer(&good)).await.expect("good token");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let (mut app, _) = spawn_with_jwks_file(&[ed_key(2).jwk("ed", true)]).await;
    let good = ed_key(2).sign(Some("ed"), &claims("developer"));
    let hs = app.token("acme", "developer", "dana");
    for (first, second) in [(&good, &good), (&good, &hs)] {
        let mut request = authed(first, pb::ListInstalledAppsRequest::default());
        request.metadata_mut().append(
            "authorization",
            format!("Bearer {second}").parse().expect("metadata value"),
        );
        let status = app
            .apps
            .list_installed_apps(request)
            .await
            .expect_err("two credentials");
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), GENERIC);
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_out_of_the_jwks_file_is_refused() {
    let (mut app, path) = spawn_with_jwks_file(&[rsa_key(0).jwk("2024", true)]).await;
    let old = rsa_key(0).sign(Some("2024"), &claims("developer"));
    call(&mut app, bearer(&old))
        .await
        .expect("old key before rotation");
    std::fs::write(&path, jwks(&[ec_key(1).jwk("2025", true)])).expect("rotate");
    // The first token with the new kid makes the server re-read the file.
    let new = ec_key(1).sign(Some("2025"), &claims("developer"));
    call(&mut app, bearer(&new))
        .await
        .expect("new key after rotation");
    assert_refused(&mut app, bearer(&old), "rotated-out key").await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_url_is_fetched_on_unknown_kids_at_most_once_per_interval() {
    let server = JwksServer::start(jwks(&[ed_key(2).jwk("k1", true)])).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.auth.jwt_hs256_secret = None;
    args.auth.jwt_jwks_url = Some(server.url("/jwks.json"));
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    assert_eq!(server.hits("/jwks.json"), 1, "fetched once at start");

    let k1 = ed_key(2).sign(Some("k1"), &claims("developer"));
    call(&mut app, bearer(&k1)).await.expect("k1");
    // Without a configured secret, HS256 is refused outright.
    let hs256 = app.token("acme", "developer", "dana");
    assert_refused(&mut app, bearer(&hs256), "HS256 without a secret").await;

    // Rotation at the identity provider: k2 added, k1 removed.
    server.set_body(jwks(&[rsa_key(0).jwk("k2", true)]));
    let k2 = rsa_key(0).sign(Some("k2"), &claims("developer"));
    call(&mut app, bearer(&k2))
        .await
        .expect("k2 fetched on demand");
    assert_eq!(server.hits("/jwks.json"), 2);
    assert_refused(&mut app, bearer(&k1), "k1 after rotation").await;

    // More unknown kids within 30 s fetch nothing; nor do key location headers.
    for kid in ["k3", "../../etc/passwd", "k4"] {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        header.jku = Some(server.url("/attacker/jwks.json"));
        let token = rsa_key(0).sign_header(&header, &claims("developer"));
        assert_refused(&mut app, bearer(&token), kid).await;
    }
    assert_eq!(server.hits("/jwks.json"), 2);
    assert_eq!(server.hits("/attacker/jwks.json"), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_without_issuer_and_audience() {
    const ISS: &str = "INTEGRATION_HUB_JWT_ISSUER";
    const AUD: &str = "INTEGRATION_HUB_JWT_AUDIENCE";
    for (issuer, audience, named, not_named) in [
        (None, None, vec![ISS, AUD], None),
        (Some(TEST_ISSUER), None, vec![AUD], Some(ISS)),
        (None, Some(TEST_AUDIENCE), vec![ISS], Some(AUD)),
    ] {
        let db = TestDb::new(Backend::Sqlite).await;
        let mut args = test_args(&db.url);
        args.auth.jwt_issuer = issuer.map(str::to_owned);
        args.auth.jwt_audience = audience.map(str::to_owned);
        let err = match Application::build(args).await {
            Ok(_) => panic!("started without issuer {issuer:?} / audience {audience:?}"),
            Err(err) => format!("{err:#}"),
        };
        for name in named {
            assert!(err.contains(name), "{err}");
        }
        if let Some(name) = not_named {
            assert!(!err.contains(name), "{err}");
        }
    }
    // --dev may leave them unset.
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.dev = true;
    args.auth.jwt_issuer = None;
    args.auth.jwt_audience = None;
    args.database.data_dir = db.dir.path().to_owned();
    Application::build(args).await.expect("--dev starts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_to_start_without_any_token_key_or_with_a_bad_jwks() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.auth.jwt_hs256_secret = None;
    let err = format!(
        "{:#}",
        Application::build(args).await.err().expect("no key")
    );
    assert!(err.contains("INTEGRATION_HUB_JWT_JWKS_FILE"), "{err}");

    let mut args = test_args(&db.url);
    args.auth.jwt_jwks_file = Some(db.dir.path().join("missing.json"));
    assert!(Application::build(args).await.is_err());

    let mut args = test_args(&db.url);
    args.auth.jwt_jwks_url = Some("http://idp.example.test/jwks.json".into());
    let err = format!("{:#}", Application::build(args).await.err().expect("http"));
    assert!(err.contains("https"), "{err}");
}
