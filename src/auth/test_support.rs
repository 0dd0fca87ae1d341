//! Test keys and a tiny JWKS server, for the unit tests beside it and the API
//! tests (`tests/api` includes this file by path). External crates only.
//!
//! Keys are made at run time from fixed seeds, so every run signs with the
//! same keys and nothing is read from disk or the network.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A signing key with its public JWK.
pub struct TestKey {
    pub alg: Algorithm,
    pub encoding: EncodingKey,
    /// The public JWK without `kid` or `alg`; [`TestKey::jwk`] adds them.
    pub public: Value,
    /// For RSA keys: the public key as PKCS#1 and SPKI PEM (what a confused
    /// verifier might use as an HMAC secret).
    pub pems: Vec<String>,
}

impl TestKey {
    /// The public JWK under `kid`, with `alg` when `with_alg`.
    pub fn jwk(&self, kid: &str, with_alg: bool) -> Value {
        let mut jwk = self.public.clone();
        jwk["kid"] = json!(kid);
        if with_alg {
            jwk["alg"] = json!(alg_name(self.alg));
        }
        jwk
    }

    /// A token over `claims` with a header of our algorithm and `kid`.
    pub fn sign(&self, kid: Option<&str>, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = kid.map(str::to_owned);
        self.sign_header(&header, claims)
    }

    pub fn sign_header(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &self.encoding).expect("sign")
    }
}

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::EdDSA => "EdDSA",
        _ => "other",
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA-2048 key from a seed. Slow-ish: use [`rsa_key`], which keeps them.
fn make_rsa(seed: u64) -> TestKey {
    use rand::SeedableRng;
    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let private = rsa::RsaPrivateKey::new(&mut rng, 2048).expect("rsa key");
    let public = private.to_public_key();
    TestKey {
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(private.to_pkcs1_der().expect("der").as_bytes()),
        public: json!({
            "kty": "RSA",
            "n": b64(&public.n().to_bytes_be()),
            "e": b64(&public.e().to_bytes_be()),
        }),
        pems: vec![
            public.to_pkcs1_pem(LineEnding::LF).expect("pem"),
            public.to_public_key_pem(LineEnding::LF).expect("pem"),
        ],
    }
}

/// A P-256 key from a seed.
pub fn ec_key(seed: u8) -> TestKey {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let mut bytes = [seed; 32];
    bytes[0] = 1; // keeps the scalar below the group order for any seed
    let secret = p256::SecretKey::from_slice(&bytes).expect("p256 key");
    let point = secret.public_key().to_encoded_point(false);
    TestKey {
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("der").as_bytes()),
        public: json!({
            "kty": "EC",
            "crv": "P-256",
            "x": b64(point.x().expect("x")),
            "y": b64(point.y().expect("y")),
        }),
        pems: Vec::new(),
    }
}

/// An Ed25519 key from a seed.
pub fn ed_key(seed: u8) -> TestKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let signing = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    TestKey {
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(signing.to_pkcs8_der().expect("der").as_bytes()),
        public: json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": b64(&signing.verifying_key().to_bytes()),
        }),
        pems: Vec::new(),
    }
}

/// RSA key number `n` (0 or 1), made once per test binary.
pub fn rsa_key(n: usize) -> &'static TestKey {
    static KEYS: OnceLock<[TestKey; 2]> = OnceLock::new();
    &KEYS.get_or_init(|| [make_rsa(1), make_rsa(2)])[n]
}

/// `{"keys": [...]}`.
pub fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// The canned answer of a [`JwksServer`].
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub delay: Duration,
    /// `Location` header, for redirects.
    pub location: Option<String>,
}

/// A minimal HTTP/1.1 server: answers every request with the current
/// [`Reply`] (404 for paths other than `/jwks.json`) and records each
/// request's path, so tests can count fetches and prove what was never asked.
pub struct JwksServer {
    pub addr: SocketAddr,
    reply: Arc<Mutex<Reply>>,
    hits: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(body: String) -> JwksServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reply = Arc::new(Mutex::new(Reply {
            status: 200,
            body,
            delay: Duration::ZERO,
            location: None,
        }));
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (r, h) = (reply.clone(), hits.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let (reply, hits) = (r.clone(), h.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16384 {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                    hits.lock().expect("hits").push(path.clone());
                    let reply = reply.lock().expect("reply").clone();
                    tokio::time::sleep(reply.delay).await;
                    let (status, body) = if path == "/jwks.json" {
                        (reply.status, reply.body)
                    } else {
                        (404, String::new())
                    };
                    let location = reply
                        .location
                        .map(|l| format!("Location: {l}\r\n"))
                        .unwrap_or_default();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n{location}Content-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        JwksServer {
            addr,
            reply,
            hits,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Requests received for `path`.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    /// Every path requested, in order.
    pub fn all_hits(&self) -> Vec<String> {
        self.hits.lock().expect("hits").clone()
    }

    pub fn set_body(&self, body: String) {
        self.reply.lock().expect("reply").body = body;
    }

    pub fn set_reply(&self, reply: Reply) {
        *self.reply.lock().expect("reply") = reply;
    }

    pub fn set_delay(&self, delay: Duration) {
        self.reply.lock().expect("reply").delay = delay;
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
