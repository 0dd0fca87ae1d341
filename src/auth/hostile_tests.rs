//! Hostile tokens against a verifier with public keys (a JWKS file or URL)
//! and an HS256 secret: each must be refused, with a fixed reason, and
//! without the JWKS server being asked for anything a token points at.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::test_support::{JwksServer, Reply, TestKey, ec_key, ed_key, jwks, now, rsa_key};
use super::{AuthError, JwksConfig, MAX_TOKEN_BYTES, Principal, Role, Verifier, VerifierConfig};

const SECRET: &[u8] = b"hostile-test-secret-0123456789-abcdef";
const OCT_SECRET: &[u8] = b"a-shared-secret-published-in-a-jwks!!";
const ISS: &str = "https://idp.example.test";
const AUD: &str = "integration-hub";
const RSA: &str = "rsa-1";
const EC: &str = "ec-1";
const ED: &str = "ed-1";
const OCT: &str = "oct-1";

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn rsa() -> &'static TestKey {
    rsa_key(0)
}

fn keys() -> Vec<Value> {
    vec![
        rsa().jwk(RSA, true),
        ec_key(1).jwk(EC, false),
        ed_key(2).jwk(ED, true),
        json!({"kty": "oct", "kid": OCT, "alg": "HS256", "k": b64(OCT_SECRET)}),
    ]
}

/// One token per public-key algorithm, each signed by the key its kid names.
fn tokens_for(claims: &Value) -> Vec<String> {
    vec![
        rsa().sign(Some(RSA), claims),
        ec_key(1).sign(Some(EC), claims),
        ed_key(2).sign(Some(ED), claims),
    ]
}

fn claims() -> Value {
    json!({
        "sub": "mallory@example.test",
        "iss": ISS,
        "aud": AUD,
        "iat": now(),
        "exp": now() + 600,
        "team_id": "team-1",
        "roles": ["developer"],
    })
}

fn edit(f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = claims();
    f(c.as_object_mut().expect("object"));
    c
}

struct Setup {
    verifier: Verifier,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn config(jwks: JwksConfig, hs256: bool) -> VerifierConfig {
    VerifierConfig {
        hs256_secret: hs256.then(|| SECRET.to_vec()),
        jwks,
        issuer: Some(ISS.to_owned()),
        audience: Some(AUD.to_owned()),
        ..VerifierConfig::default()
    }
}

async fn with_file(keys: &[Value], hs256: bool, min_refresh: Duration) -> Setup {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks(keys)).expect("write");
    let jwks = JwksConfig {
        file: Some(path.clone()),
        min_refresh_interval: min_refresh,
        ..JwksConfig::default()
    };
    let verifier = Verifier::new(config(jwks, hs256)).await.expect("verifier");
    Setup {
        verifier,
        path,
        _dir: dir,
    }
}

async fn setup() -> Setup {
    with_file(&keys(), true, Duration::from_secs(30)).await
}

async fn with_url(server: &JwksServer, tweak: impl FnOnce(&mut JwksConfig)) -> Verifier {
    let mut jwks = JwksConfig {
        url: Some(server.url("/jwks.json")),
        min_refresh_interval: Duration::from_secs(60),
        ..JwksConfig::default()
    };
    tweak(&mut jwks);
    Verifier::new(config(jwks, false)).await.expect("verifier")
}

async fn check(v: &Verifier, token: &str) -> Result<Principal, AuthError> {
    v.verify(Some(&format!("Bearer {token}"))).await
}

fn reason(result: Result<Principal, AuthError>) -> String {
    match result {
        Err(AuthError::Invalid(r)) | Err(AuthError::BadClaims(r)) => r,
        other => panic!("expected a refusal with a reason, got {other:?}"),
    }
}

fn raw(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(&serde_json::to_vec(header).expect("json")),
        b64(&serde_json::to_vec(claims).expect("json"))
    )
}

/// Polls `f` until it is true, for at most 10 s (no fixed sleeps).
async fn eventually(mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "condition not met within 10 s");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn each_algorithm_verifies_with_the_key_its_kid_names() {
    let s = setup().await;
    for token in tokens_for(&claims()) {
        let p = check(&s.verifier, &token).await.expect("verifies");
        assert_eq!(p.role, Role::Developer);
        assert_eq!(p.subject, "mallory@example.test");
    }
    // And HS256 with the shared secret, beside them.
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign");
    assert!(check(&s.verifier, &hs).await.is_ok());
}

#[tokio::test]
async fn alg_none_is_refused_whatever_the_kid() {
    let s = setup().await;
    let sig = rsa().sign(Some(RSA), &claims());
    let sig = sig.rsplit('.').next().expect("sig");
    for alg in ["none", "None", "NONE", ""] {
        for kid in [RSA, EC, OCT] {
            let header = json!({"alg": alg, "kid": kid, "typ": "JWT"});
            for signature in ["", sig] {
                let result = check(&s.verifier, &raw(&header, &claims(), signature)).await;
                assert!(result.is_err(), "{alg} {kid} {signature:?}");
            }
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion: the verifier's RS256 public key, as PEM (or its
    // JWK bytes), used as an HMAC secret by the attacker.
    let mut secrets: Vec<Vec<u8>> = rsa().pems.iter().map(|p| p.as_bytes().to_vec()).collect();
    secrets.push(rsa().jwk(RSA, true).to_string().into_bytes());
    let with_hs256 = setup().await;
    let without_hs256 = with_file(&keys(), false, Duration::from_secs(30)).await;
    for secret in &secrets {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(RSA.to_owned());
        let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(secret))
            .expect("sign");
        assert_eq!(
            reason(check(&with_hs256.verifier, &token).await),
            "bad signature"
        );
        assert_eq!(
            reason(check(&without_hs256.verifier, &token).await),
            "algorithm not allowed"
        );
    }
}

#[tokio::test]
async fn a_symmetric_key_in_the_jwks_is_never_used() {
    let s = with_file(&keys(), false, Duration::from_secs(30)).await;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(OCT.to_owned());
    let token = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(OCT_SECRET))
        .expect("sign");
    assert_eq!(
        reason(check(&s.verifier, &token).await),
        "algorithm not allowed"
    );
    // Nor is it a key for the asymmetric algorithms.
    let token = ed_key(2).sign(Some(OCT), &claims());
    assert!(reason(check(&s.verifier, &token).await).starts_with("unknown key id"));
}

#[tokio::test]
async fn an_algorithm_other_than_the_keys_pinned_one_is_refused() {
    let s = setup().await;
    // Another algorithm than the key's, whatever signed it.
    for (token, why) in [
        (rsa().sign(Some(EC), &claims()), "RS256 on an ES256 key"),
        (rsa().sign(Some(ED), &claims()), "RS256 on an EdDSA key"),
        (
            ec_key(1).sign(Some(RSA), &claims()),
            "ES256 on an RS256 key",
        ),
        (ed_key(2).sign(Some(EC), &claims()), "EdDSA on an ES256 key"),
    ] {
        assert_eq!(
            reason(check(&s.verifier, &token).await),
            "the token's algorithm is not the one pinned to its key",
            "{why}"
        );
    }
    // Algorithms no key is pinned to, signed by the right RSA key.
    for alg in [
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS512,
    ] {
        let mut header = Header::new(alg);
        header.kid = Some(RSA.to_owned());
        let token = rsa().sign_header(&header, &claims());
        assert_eq!(
            reason(check(&s.verifier, &token).await),
            "algorithm not allowed",
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn a_jwks_key_with_a_contradicting_alg_is_not_loaded() {
    let mut wrong = ec_key(1).jwk(EC, false);
    wrong["alg"] = json!("RS256");
    let s = with_file(&[wrong], false, Duration::from_secs(30)).await;
    let token = ec_key(1).sign(Some(EC), &claims());
    assert!(reason(check(&s.verifier, &token).await).starts_with("unknown key id"));
}

#[tokio::test]
async fn a_tampered_payload_fails_for_every_algorithm() {
    let s = setup().await;
    for token in tokens_for(&claims()) {
        let mut parts = token.split('.');
        let (header, _, sig) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
        let admin = edit(|c| {
            c.insert("roles".into(), json!(["admin"]));
        });
        let forged = format!(
            "{header}.{}.{sig}",
            b64(&serde_json::to_vec(&admin).unwrap())
        );
        assert_eq!(reason(check(&s.verifier, &forged).await), "bad signature");
    }
}

#[tokio::test]
async fn missing_truncated_and_wrong_signatures_are_refused() {
    let s = setup().await;
    for token in tokens_for(&claims()) {
        let (body, sig) = token.rsplit_once('.').unwrap();
        // Missing: `header.payload.` and `header.payload`.
        assert!(matches!(
            check(&s.verifier, &format!("{body}.")).await,
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            check(&s.verifier, body).await,
            Err(AuthError::Malformed)
        ));
        // Truncated.
        for cut in [1, 2, 3, 10, sig.len() - 1] {
            let result = check(&s.verifier, &token[..token.len() - cut]).await;
            assert!(result.is_err(), "cut {cut}");
        }
        // Wrong: right length, wrong bytes; and another token's signature.
        let zeros = b64(&vec![0u8; URL_SAFE_NO_PAD.decode(sig).unwrap().len()]);
        assert_eq!(
            reason(check(&s.verifier, &format!("{body}.{zeros}")).await),
            "bad signature"
        );
    }
    let a = rsa().sign(Some(RSA), &claims());
    let b = rsa().sign(
        Some(RSA),
        &edit(|c| {
            c.insert("sub".into(), json!("someone-else"));
        }),
    );
    let spliced = format!(
        "{}.{}",
        a.rsplit_once('.').unwrap().0,
        b.rsplit_once('.').unwrap().1
    );
    assert_eq!(reason(check(&s.verifier, &spliced).await), "bad signature");
}

#[tokio::test]
async fn a_token_signed_by_another_issuers_key_is_refused() {
    let s = setup().await;
    // Same kid, same algorithm, someone else's private key.
    for token in [
        rsa_key(1).sign(Some(RSA), &claims()),
        ec_key(99).sign(Some(EC), &claims()),
        ed_key(99).sign(Some(ED), &claims()),
    ] {
        assert_eq!(reason(check(&s.verifier, &token).await), "bad signature");
    }
}

#[tokio::test]
async fn an_unknown_or_missing_kid_is_refused() {
    let s = setup().await;
    let token = ed_key(2).sign(Some("not-a-key"), &claims());
    assert!(reason(check(&s.verifier, &token).await).starts_with("unknown key id"));
    let token = ed_key(2).sign(None, &claims());
    assert_eq!(
        reason(check(&s.verifier, &token).await),
        "the token names no key id"
    );
}

#[tokio::test]
async fn hostile_kids_are_refused_and_only_ever_used_as_map_keys() {
    let s = setup().await;
    for kid in [
        "../../etc/passwd",
        "/etc/passwd",
        "file:///etc/passwd",
        "jwks.json",
        "' OR '1'='1' --",
        "rsa-1'; DROP TABLE keys; --",
        "rsa-1\0",
        "\0rsa-1",
        "rsa\0-1",
        " rsa-1",
        "RSA-1",
        "rsa-1\n",
        "%2e%2e%2fetc%2fpasswd",
    ] {
        let token = rsa().sign(Some(kid), &claims());
        assert!(
            reason(check(&s.verifier, &token).await).starts_with("unknown key id"),
            "{kid:?}"
        );
    }
    let token = rsa().sign(Some(""), &claims());
    assert_eq!(
        reason(check(&s.verifier, &token).await),
        "the key id is empty or too long"
    );
    let token = rsa().sign(Some(&"k".repeat(300)), &claims());
    assert_eq!(
        reason(check(&s.verifier, &token).await),
        "the key id is empty or too long"
    );
    // 10 KB: refused on size before the header is even decoded.
    let token = rsa().sign(Some(&"k".repeat(10 * 1024)), &claims());
    assert!(matches!(
        check(&s.verifier, &token).await,
        Err(AuthError::Malformed)
    ));
    // A kid that is not a string makes the header unreadable.
    let header = json!({"alg": "RS256", "kid": 7});
    assert!(
        check(&s.verifier, &raw(&header, &claims(), "c2ln"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn key_location_headers_are_never_fetched() {
    let attacker = ed_key(66);
    let server = JwksServer::start(jwks(&[ed_key(2).jwk(ED, true)])).await;
    // The attacker also serves their own key set, should anyone ask.
    let v = with_url(&server, |_| {}).await;
    assert_eq!(server.hits("/jwks.json"), 1);
    let attacker_jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(attacker.jwk("attacker", true)).expect("jwk");
    for kid in ["attacker", ED] {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        header.jku = Some(server.url("/attacker/jwks.json"));
        header.x5u = Some(server.url("/attacker/cert.pem"));
        header.jwk = Some(attacker_jwk.clone());
        let token = attacker.sign_header(&header, &claims());
        assert!(check(&v, &token).await.is_err(), "{kid}");
        // Our own key with the same headers: accepted, and still no fetch.
        let mut our_header = header.clone();
        our_header.kid = Some(ED.to_owned());
        let ours = ed_key(2).sign_header(&our_header, &claims());
        assert!(check(&v, &ours).await.is_ok());
    }
    assert_eq!(server.hits("/attacker/jwks.json"), 0);
    assert_eq!(server.hits("/attacker/cert.pem"), 0);
    // Only our own URL was ever asked: once at start, once for the unknown kid.
    assert!(
        server.all_hits().iter().all(|p| p == "/jwks.json"),
        "{:?}",
        server.all_hits()
    );
    assert_eq!(server.hits("/jwks.json"), 2);
}

#[tokio::test]
async fn expiry_is_checked_on_both_sides_of_the_leeway() {
    let s = setup().await;
    let expired = edit(|c| {
        c.insert("exp".into(), json!(now() - 120));
    });
    for token in tokens_for(&expired) {
        assert_eq!(reason(check(&s.verifier, &token).await), "token expired");
    }
    let within = edit(|c| {
        c.insert("exp".into(), json!(now() - 10));
    });
    for token in tokens_for(&within) {
        assert!(check(&s.verifier, &token).await.is_ok());
    }
}

#[tokio::test]
async fn exp_is_required_and_must_be_a_number() {
    let s = setup().await;
    let key = ed_key(2);
    let none = key.sign(
        Some(ED),
        &edit(|c| {
            c.remove("exp");
        }),
    );
    assert_eq!(reason(check(&s.verifier, &none).await), "missing exp claim");
    for bad in [
        json!((now() + 600).to_string()),
        json!(null),
        json!([now() + 600]),
    ] {
        let token = key.sign(
            Some(ED),
            &edit(|c| {
                c.insert("exp".into(), bad.clone());
            }),
        );
        assert!(check(&s.verifier, &token).await.is_err(), "{bad}");
    }
}

#[tokio::test]
async fn nbf_and_iat_in_the_future_are_refused() {
    let s = setup().await;
    let key = ec_key(1);
    let sign = |claim: &str, value: Value| {
        key.sign(
            Some(EC),
            &edit(|c| {
                c.insert(claim.into(), value);
            }),
        )
    };
    assert_eq!(
        reason(check(&s.verifier, &sign("nbf", json!(now() + 3600))).await),
        "token not yet valid (nbf)"
    );
    assert!(
        check(&s.verifier, &sign("nbf", json!(now() + 10)))
            .await
            .is_ok()
    );
    assert_eq!(
        reason(check(&s.verifier, &sign("iat", json!(now() + 3600))).await),
        "token issued in the future (iat)"
    );
    assert!(
        check(&s.verifier, &sign("iat", json!(now() + 10)))
            .await
            .is_ok()
    );
    assert_eq!(
        reason(check(&s.verifier, &sign("iat", json!("yesterday"))).await),
        "iat claim is not a number"
    );
    assert!(
        check(&s.verifier, &sign("nbf", json!("soon")))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn issuer_and_audience_are_required_and_must_match() {
    let s = setup().await;
    let key = ed_key(2);
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("iss", Some(json!("https://evil.test"))),
        ("iss", None),
        ("iss", Some(json!([ISS]))),
        ("aud", Some(json!("another-service"))),
        ("aud", None),
        ("aud", Some(json!(["a", "b"]))),
        ("aud", Some(json!([]))),
        ("aud", Some(json!(7))),
    ];
    for (claim, value) in cases {
        let token = key.sign(
            Some(ED),
            &edit(|c| match &value {
                Some(v) => {
                    c.insert(claim.into(), v.clone());
                }
                None => {
                    c.remove(claim);
                }
            }),
        );
        assert!(
            matches!(check(&s.verifier, &token).await, Err(AuthError::Invalid(_))),
            "{claim} {value:?}"
        );
    }
    let listed = key.sign(
        Some(ED),
        &edit(|c| {
            c.insert("aud".into(), json!(["another-service", AUD]));
        }),
    );
    assert!(check(&s.verifier, &listed).await.is_ok());
}

#[tokio::test]
async fn an_oversized_token_is_refused_before_parsing() {
    let s = setup().await;
    let token = rsa().sign(
        Some(RSA),
        &edit(|c| {
            c.insert("padding".into(), json!("x".repeat(MAX_TOKEN_BYTES)));
        }),
    );
    assert!(matches!(
        check(&s.verifier, &token).await,
        Err(AuthError::Malformed)
    ));
}

#[tokio::test]
async fn only_the_bearer_scheme_is_accepted() {
    let s = setup().await;
    let token = ed_key(2).sign(Some(ED), &claims());
    for header in [
        format!("Basic {token}"),
        format!("Token {token}"),
        format!("DPoP {token}"),
        token.clone(),
        format!("Bearer {token}, Bearer {token}"),
    ] {
        assert!(
            matches!(
                s.verifier.verify(Some(&header)).await,
                Err(AuthError::Malformed)
            ),
            "{header:.20}"
        );
    }
}

#[tokio::test]
async fn a_crit_header_is_refused_for_public_key_tokens_too() {
    let s = setup().await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(ED.to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    let token = ed_key(2).sign_header(&header, &claims());
    assert!(matches!(
        check(&s.verifier, &token).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn claims_that_verify_but_grant_nothing() {
    let s = setup().await;
    let key = ec_key(1);
    let sign = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        key.sign(Some(EC), &c)
    };
    for roles in [json!(["root"]), json!(["Admin"]), json!("ADMIN"), json!([])] {
        let token = sign(&|c| {
            c.insert("roles".into(), roles.clone());
        });
        assert!(
            matches!(check(&s.verifier, &token).await, Err(AuthError::NoRole)),
            "{roles}"
        );
    }
    for roles in [json!(5), json!([1]), json!({"admin": true}), json!(true)] {
        let token = sign(&|c| {
            c.insert("roles".into(), roles.clone());
        });
        assert!(
            matches!(
                check(&s.verifier, &token).await,
                Err(AuthError::BadClaims(_))
            ),
            "{roles}"
        );
    }
    let no_team = sign(&|c| {
        c.remove("team_id");
    });
    assert!(matches!(
        check(&s.verifier, &no_team).await,
        Err(AuthError::BadClaims(_))
    ));
    for role in ["developer", "admin", "viewer"] {
        let everywhere = sign(&|c| {
            c.insert("team_id".into(), json!("*"));
            c.insert("roles".into(), json!([role]));
        });
        assert!(
            matches!(
                check(&s.verifier, &everywhere).await,
                Err(AuthError::BadClaims(_))
            ),
            "{role}"
        );
    }
    let service = sign(&|c| {
        c.insert("team_id".into(), json!("*"));
        c.insert("roles".into(), json!(["service"]));
    });
    // Nor a service whose subject configuration does not name (none is named here).
    assert!(matches!(
        check(&s.verifier, &service).await,
        Err(AuthError::BadClaims(_))
    ));
}

#[tokio::test]
async fn a_key_removed_from_the_jwks_file_stops_working() {
    let s = with_file(&[rsa().jwk("old", true)], false, Duration::from_millis(1)).await;
    let old = rsa().sign(Some("old"), &claims());
    assert!(check(&s.verifier, &old).await.is_ok());
    // Rotation: the file now holds only the new key.
    std::fs::write(&s.path, jwks(&[ed_key(2).jwk("new", true)])).expect("write");
    let new = ed_key(2).sign(Some("new"), &claims());
    assert!(
        check(&s.verifier, &new).await.is_ok(),
        "re-read on unknown kid"
    );
    assert!(reason(check(&s.verifier, &old).await).starts_with("unknown key id"));
}

#[tokio::test]
async fn a_broken_rewrite_of_the_file_keeps_the_previous_keys() {
    let s = with_file(&[rsa().jwk(RSA, true)], false, Duration::from_millis(1)).await;
    std::fs::write(&s.path, "{\"keys\": [").expect("write");
    // An unknown kid forces a re-read, which fails.
    let unknown = ed_key(2).sign(Some("unknown"), &claims());
    assert!(check(&s.verifier, &unknown).await.is_err());
    assert!(
        check(&s.verifier, &rsa().sign(Some(RSA), &claims()))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn an_unreadable_jwks_file_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = JwksConfig {
        file: Some(dir.path().join("missing.json")),
        ..JwksConfig::default()
    };
    assert!(Verifier::new(config(missing, false)).await.is_err());
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "not json").unwrap();
    let bad = JwksConfig {
        file: Some(path),
        ..JwksConfig::default()
    };
    assert!(Verifier::new(config(bad, false)).await.is_err());
}

#[tokio::test]
async fn unknown_kids_refresh_the_url_at_most_once_per_interval() {
    let server = JwksServer::start(jwks(&[ed_key(2).jwk("a", true)])).await;
    let v = with_url(&server, |_| {}).await;
    assert_eq!(server.hits("/jwks.json"), 1, "fetched once at start");
    assert!(
        check(&v, &ed_key(2).sign(Some("a"), &claims()))
            .await
            .is_ok()
    );
    // A new key appears at the URL; its first token triggers one refresh.
    server.set_body(jwks(&[ed_key(2).jwk("a", true), ec_key(1).jwk("b", true)]));
    assert!(
        check(&v, &ec_key(1).sign(Some("b"), &claims()))
            .await
            .is_ok()
    );
    assert_eq!(server.hits("/jwks.json"), 2);
    // Within the interval, unknown kids (hostile or not) fetch nothing.
    for kid in ["c", "../../etc/passwd", "' OR 1=1 --", "x\0y", "d"] {
        let token = ec_key(1).sign(Some(kid), &claims());
        assert_eq!(
            reason(check(&v, &token).await),
            "unknown key id (key refresh rate-limited)",
            "{kid:?}"
        );
    }
    assert_eq!(server.hits("/jwks.json"), 2);
}

#[tokio::test]
async fn a_key_removed_from_the_url_fails_after_a_background_refresh() {
    let server =
        JwksServer::start(jwks(&[rsa().jwk("old", true), ed_key(2).jwk("new", true)])).await;
    let v = with_url(&server, |j| j.refresh_interval = Duration::from_millis(100)).await;
    let old = rsa().sign(Some("old"), &claims());
    assert!(check(&v, &old).await.is_ok());
    server.set_body(jwks(&[ed_key(2).jwk("new", true)]));
    // No unknown kid is involved: the timer alone picks the removal up.
    eventually(async || check(&v, &old).await.is_err()).await;
    assert!(
        check(&v, &ed_key(2).sign(Some("new"), &claims()))
            .await
            .is_ok()
    );
    assert!(server.hits("/jwks.json") >= 2);
}

#[tokio::test]
async fn a_slow_url_never_holds_a_request_past_the_bound() {
    let server = JwksServer::start(jwks(&[])).await;
    let v = with_url(&server, |j| j.request_wait = Duration::from_millis(200)).await;
    server.set_body(jwks(&[ed_key(2).jwk("late", true)]));
    server.set_delay(Duration::from_millis(1500));
    let token = ed_key(2).sign(Some("late"), &claims());
    let started = Instant::now();
    let result = check(&v, &token).await;
    let waited = started.elapsed();
    assert_eq!(
        reason(result),
        "unknown key id (key refresh did not finish in time)"
    );
    assert!(waited < Duration::from_millis(1200), "waited {waited:?}");
    // The fetch carried on off the request path; once it lands the key works
    // (and later requests do not trigger another fetch: rate-limited).
    eventually(async || check(&v, &token).await.is_ok()).await;
    assert_eq!(server.hits("/jwks.json"), 2);
}

#[tokio::test]
async fn a_failing_url_keeps_the_last_good_keys() {
    let server = JwksServer::start(jwks(&[ed_key(2).jwk(ED, true)])).await;
    let v = with_url(&server, |j| {
        j.min_refresh_interval = Duration::from_millis(1)
    })
    .await;
    for reply in [
        Reply {
            status: 500,
            body: String::new(),
            delay: Duration::ZERO,
            location: None,
        },
        Reply {
            status: 200,
            body: "<html>maintenance</html>".into(),
            delay: Duration::ZERO,
            location: None,
        },
        Reply {
            status: 200,
            body: format!(
                "{{\"keys\": [], \"pad\": \"{}\"}}",
                "x".repeat(super::MAX_JWKS_BYTES)
            ),
            delay: Duration::ZERO,
            location: None,
        },
    ] {
        server.set_reply(reply);
        // Let the 1 ms rate-limit window of the previous round pass.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let before = server.hits("/jwks.json");
        // The unknown kid forces a fetch, which fails. (After a failure the
        // background task also retries every `min_refresh_interval`, here
        // 1 ms, so only "at least one more" is exact.)
        assert!(
            check(&v, &ed_key(2).sign(Some("x"), &claims()))
                .await
                .is_err()
        );
        assert!(server.hits("/jwks.json") > before);
        assert!(
            check(&v, &ed_key(2).sign(Some(ED), &claims()))
                .await
                .is_ok()
        );
    }
}

#[tokio::test]
async fn redirects_from_the_url_are_not_followed() {
    let server = JwksServer::start(jwks(&[ed_key(2).jwk(ED, true)])).await;
    server.set_reply(Reply {
        status: 302,
        body: String::new(),
        delay: Duration::ZERO,
        location: Some(server.url("/elsewhere.json")),
    });
    // The URL failing at start is not fatal; its keys are simply absent.
    let v = with_url(&server, |_| {}).await;
    assert!(
        check(&v, &ed_key(2).sign(Some(ED), &claims()))
            .await
            .is_err()
    );
    assert_eq!(server.hits("/elsewhere.json"), 0);
}

#[tokio::test]
async fn the_jwks_url_must_be_https_or_loopback() {
    for url in [
        "http://idp.example.test/jwks.json",
        "http://10.0.0.1/jwks.json",
        "ftp://127.0.0.1/jwks.json",
        "https://user:pass@idp.example.test/jwks.json",
        "not a url",
        "",
    ] {
        let jwks = JwksConfig {
            url: Some(url.to_owned()),
            ..JwksConfig::default()
        };
        assert!(Verifier::new(config(jwks, false)).await.is_err(), "{url}");
    }
    for url in [
        "http://127.0.0.1:9/jwks.json",
        "http://[::1]:9/jwks.json",
        "http://localhost:9/x",
    ] {
        let jwks = JwksConfig {
            url: Some(url.to_owned()),
            fetch_timeout: Duration::from_millis(300),
            ..JwksConfig::default()
        };
        assert!(Verifier::new(config(jwks, false)).await.is_ok(), "{url}");
    }
}

#[tokio::test]
async fn refusal_reasons_never_contain_the_token_or_the_kid() {
    let s = setup().await;
    let canary = "CANARY0kid0CANARY";
    let tokens = [
        ed_key(99).sign(Some(ED), &claims()),
        ed_key(2).sign(Some(canary), &claims()),
        rsa().sign(Some(EC), &claims()),
        ed_key(2).sign(
            Some(ED),
            &edit(|c| {
                c.insert("aud".into(), json!(canary));
            }),
        ),
    ];
    for token in tokens {
        let err = check(&s.verifier, &token).await.unwrap_err();
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains(canary), "{text}");
            assert!(!text.contains(&token), "{text}");
        }
    }
}

/// Fuzzing the token check: any text after `Bearer ` (random bytes as text, near-JWTs with
/// hostile segments, oversized ones) is refused without a panic and without a hang.
/// `PROPTEST_CASES` sets how many (256 by default).
#[tokio::test]
async fn any_bearer_text_is_refused_without_a_panic_or_a_hang() {
    use proptest::prelude::any;
    use proptest::strategy::{Strategy, ValueTree};
    let s = setup().await;
    let segment = proptest::collection::vec(any::<u8>(), 0..600).prop_map(|b: Vec<u8>| b64(&b));
    let strategy = proptest::prop_oneof![
        any::<String>(),
        (segment.clone(), segment.clone(), segment.clone())
            .prop_map(|(h, c, sig)| format!("{h}.{c}.{sig}")),
        "[A-Za-z0-9_.=-]{0,20000}",
        "[\\x00-\\x1f. ]{0,64}",
    ];
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    let mut runner = proptest::test_runner::TestRunner::default();
    for _ in 0..cases {
        let token = strategy.new_tree(&mut runner).expect("a case").current();
        let started = std::time::Instant::now();
        let result = check(&s.verifier, &token).await;
        assert!(result.is_err(), "a random token was accepted");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "checking one token took {:?}",
            started.elapsed()
        );
    }
}
