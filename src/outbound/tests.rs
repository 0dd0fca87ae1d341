//! The policy: URLs, addresses (when checked and when connecting), redirects, timeouts, body
//! limits and the user agent, against a server on loopback.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A resolver that answers what the test says, for names no DNS server knows.
struct Fixed(Vec<(&'static str, Vec<IpAddr>)>);

impl Lookup for Fixed {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let found = self
            .0
            .iter()
            .find(|(name, _)| *name == host)
            .map(|(_, addrs)| addrs.clone());
        Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such name")) })
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Names for the tests: a public one, the metadata service, one with a private address
/// among public ones, and loopback ones.
pub(super) fn fixed() -> Arc<dyn Lookup> {
    Arc::new(Fixed(vec![
        ("metadata.example", vec![ip("169.254.169.254")]),
        ("hooks.example", vec![ip("93.184.216.34")]),
        ("mixed.example", vec![ip("93.184.216.34"), ip("10.1.2.3")]),
        ("loop.example", vec![ip("127.0.0.1")]),
        ("localhost", vec![ip("127.0.0.1")]),
    ]))
}

fn outbound(change: impl FnOnce(&mut Policy)) -> Outbound {
    let mut policy = Policy::new(Duration::from_secs(5));
    change(&mut policy);
    Outbound::new(policy).unwrap()
}

/// A policy like webhooks': public addresses only (and loopback, over http too, with the
/// dev setting), names resolved by [`fixed`].
fn public(loopback: bool) -> Outbound {
    outbound(|p| {
        p.addresses = Addresses::Public { loopback };
        p.loopback_http = loopback;
        p.lookup = fixed();
    })
}

#[test]
fn https_is_required_and_http_goes_only_to_loopback_when_allowed() {
    let strict = outbound(|_| {});
    assert!(strict.check("https://slack.com/api/x").is_ok());
    for url in [
        "http://127.0.0.1:9/token",
        "http://localhost/x",
        "file:///etc/passwd",
        "ftp://example.com/",
        "not a url",
        "https:///",
    ] {
        assert!(strict.check(url).is_err(), "{url}");
    }
    let dev = outbound(|p| p.loopback_http = true);
    for url in [
        "http://127.0.0.1:9/token",
        "http://127.1.2.3/",
        "http://[::1]:9/token",
        "http://LOCALHOST:8080/",
        "https://example.com/",
    ] {
        assert!(dev.check(url).is_ok(), "{url}");
    }
    for url in [
        "http://example.com/token",
        "http://a.localhost/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
    ] {
        assert!(dev.check(url).is_err(), "{url}");
    }
    // The host and the rule; never the path or the query.
    let refused = strict
        .check("http://idp.example.test/jwks.json?code=s3cret")
        .unwrap_err();
    assert_eq!(refused.0, "idp.example.test: https is required");
    let refused = dev
        .check("http://idp.example.test/?code=s3cret")
        .unwrap_err();
    assert_eq!(
        refused.0,
        "idp.example.test: https is required (http only to a loopback address)"
    );
}

#[test]
fn credentials_in_the_url_are_refused_without_being_repeated() {
    let dev = outbound(|p| p.loopback_http = true);
    for url in [
        "https://user:pw-s3cret@example.com/",
        "https://user-s3cret@example.com/",
        "http://u:s3cret@127.0.0.1/",
    ] {
        let refused = dev.check(url).unwrap_err();
        assert_eq!(
            refused.0, "the URL must not carry a user name or password",
            "{url}"
        );
    }
}

#[test]
fn only_the_allow_lists_hosts_are_called() {
    let listed = outbound(|p| p.allowed_hosts = Some(vec!["slack.com".to_owned()]));
    assert!(listed.check("https://SLACK.com/api").is_ok());
    for url in ["https://evil.test/api", "https://api.slack.com/"] {
        assert!(listed.check(url).is_err(), "{url}");
    }
    assert_eq!(
        listed.check("https://evil.test/api").unwrap_err().0,
        "evil.test is not among the allowed hosts"
    );
}

#[tokio::test]
async fn names_are_checked_by_every_address_they_resolve_to() {
    let p = public(false);
    assert!(p.check_now("https://hooks.example/in").await.is_ok());
    for url in [
        "https://metadata.example/latest/meta-data",
        "https://mixed.example/",
        "https://loop.example/",
        "https://localhost:8443/",
        "https://LOCALHOST./",
        "https://a.localhost/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://169.254.169.254/",
        "https://[::ffff:169.254.169.254]/",
        "https://[::ffff:0:7f00:1]/",
        "https://[100::1]/",
        "https://unknown.example/",
        "http://hooks.example/",
    ] {
        assert!(p.check_now(url).await.is_err(), "{url} should be refused");
    }
    let refused = p.check_now("https://metadata.example/").await.unwrap_err();
    assert_eq!(
        refused.0,
        "metadata.example resolves to the cloud metadata address"
    );
    // Where any address may be reached (operator-configured endpoints), none is refused.
    let any = outbound(|p| p.lookup = fixed());
    for url in ["https://10.0.0.1/", "https://metadata.example/"] {
        assert!(any.check_now(url).await.is_ok(), "{url}");
    }
}

#[tokio::test]
async fn the_dev_setting_allows_loopback_and_http_only_to_loopback() {
    let p = public(true);
    assert!(p.check_now("http://localhost:8080/").await.is_ok());
    assert!(p.check_now("http://127.0.0.1:8080/").await.is_ok());
    assert!(p.check_now("https://loop.example/").await.is_ok());
    assert!(p.check_now("http://hooks.example/").await.is_err());
    assert!(p.check_now("https://metadata.example/").await.is_err());
    assert!(p.check_now("https://10.0.0.1/").await.is_err());
}

/// What the test server does after its answer.
#[derive(Clone, Copy)]
enum Then {
    Close,
    Hang,
}

/// An HTTP server on loopback that gives every request the same bytes, keeping each
/// request's head and counting connections.
struct Server {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    connections: Arc<AtomicUsize>,
}

impl Server {
    async fn start(answer: &'static [u8], then: Then) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (kept, counted) = (heads.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let kept = kept.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                    let _ = socket.write_all(answer).await;
                    if let Then::Hang = then {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                });
            }
        });
        Server {
            port,
            heads,
            connections,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

const HUNDRED: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const HUNDRED_UNTIL_CLOSE: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

fn dev() -> Outbound {
    outbound(|p| p.loopback_http = true)
}

#[tokio::test]
async fn the_body_is_read_up_to_the_limit_each_call_gives() {
    for answer in [HUNDRED, HUNDRED_UNTIL_CLOSE] {
        let server = Server::start(answer, Then::Close).await;
        let url = server.url("/keys");
        let out = dev();
        let whole = out.get(&url, &[], BodyLimit::Whole(100)).await.unwrap();
        assert_eq!(whole.body.len(), 100);
        assert_eq!(
            out.get(&url, &[], BodyLimit::Whole(99)).await.unwrap_err(),
            Error::TooLarge(99)
        );
        let prefix = out.get(&url, &[], BodyLimit::Prefix(10)).await.unwrap();
        assert_eq!((prefix.status.as_u16(), prefix.body.len()), (200, 10));
        assert_eq!(prefix.body_if_ok().unwrap(), b"xxxxxxxxxx");
    }
}

#[tokio::test]
async fn a_redirect_is_an_answer_and_is_not_followed() {
    let server = Server::start(
        b"HTTP/1.1 302 Found\r\nlocation: /elsewhere\r\ncontent-length: 0\r\n\r\n",
        Then::Close,
    )
    .await;
    let answer = dev()
        .get(&server.url("/start"), &[], BodyLimit::Whole(10))
        .await
        .unwrap();
    assert_eq!(answer.status.as_u16(), 302);
    assert_eq!(
        answer.body_if_ok().unwrap_err(),
        Error::Status(reqwest::StatusCode::FOUND)
    );
    let heads = server.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /start "), "{heads:?}");
}

#[tokio::test]
async fn every_call_carries_the_one_user_agent_and_its_headers() {
    let server = Server::start(HUNDRED, Then::Close).await;
    dev()
        .post(
            &server.url("/token"),
            &[
                ("accept", "application/json"),
                ("authorization", "Basic czNjcmV0"),
            ],
            b"a=b".to_vec(),
            BodyLimit::Whole(100),
        )
        .await
        .unwrap();
    let head = server.heads()[0].to_ascii_lowercase();
    assert!(head.starts_with("post /token "), "{head}");
    assert!(
        head.contains(&format!(
            "\r\nuser-agent: {}\r\n",
            USER_AGENT.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
    assert!(
        head.contains("\r\nauthorization: basic cznjcmv0\r\n"),
        "{head}"
    );
    let refused = dev()
        .get(&server.url("/"), &[("accept", "a\nb")], BodyLimit::Whole(1))
        .await
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the request failed: the accept header is not valid"
    );
}

#[tokio::test]
async fn a_call_ends_at_the_timeout_and_says_nothing_of_its_url() {
    let silent = Server::start(b"", Then::Hang).await;
    let quick = outbound(|p| {
        p.loopback_http = true;
        p.timeout = Duration::from_millis(300);
    });
    let started = Instant::now();
    let err = quick
        .get(&silent.url("/?code=s3cret"), &[], BodyLimit::Whole(10))
        .await
        .unwrap_err();
    assert_eq!(err, Error::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(!err.to_string().contains("s3cret"));

    // A body trickled past the timeout: kept as far as it came when the status is what
    // counts, a failure when the whole body is needed.
    let trickling = Server::start(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nx",
        Then::Hang,
    )
    .await;
    let url = trickling.url("/");
    let cut = quick.get(&url, &[], BodyLimit::Prefix(4096)).await.unwrap();
    assert_eq!((cut.status.as_u16(), cut.body), (200, b"x".to_vec()));
    assert_eq!(
        quick
            .get(&url, &[], BodyLimit::Whole(4096))
            .await
            .unwrap_err(),
        Error::Timeout
    );

    // Nothing listening: a connection failure.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let err = quick
        .get(
            &format!("http://127.0.0.1:{port}/?code=s3cret"),
            &[],
            BodyLimit::Whole(10),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::Connect);
}

/// A name that answers a public address first and loopback afterwards (DNS rebinding).
struct Rebinding(AtomicUsize);

impl Lookup for Rebinding {
    fn lookup(
        &self,
        _host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        let first = self.0.fetch_add(1, Ordering::SeqCst) == 0;
        let addr = if first { "93.184.216.34" } else { "127.0.0.1" };
        Box::pin(async move { Ok(vec![ip(addr)]) })
    }
}

#[tokio::test]
async fn addresses_are_checked_again_when_a_call_connects() {
    let server = Server::start(HUNDRED, Then::Close).await;
    let rebinding = outbound(|p| {
        p.addresses = Addresses::Public { loopback: false };
        p.lookup = Arc::new(Rebinding(AtomicUsize::new(0)));
    });
    let url = format!("https://rebind.example:{}/hooks", server.port);
    rebinding
        .check_now(&url)
        .await
        .expect("public when checked");
    let err = rebinding
        .get(&url, &[], BodyLimit::Prefix(10))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Refused(Refused(
            "rebind.example resolves to a loopback address".to_owned()
        ))
    );
    // A literal address is refused before any connection.
    let err = public(false)
        .get(
            &format!("https://127.0.0.1:{}/", server.port),
            &[],
            BodyLimit::Prefix(10),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused(_)), "{err:?}");
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);

    // With the dev setting, loopback is reached, by address or by name.
    let dev = public(true);
    for url in [
        server.url("/"),
        format!("http://localhost:{}/", server.port),
    ] {
        let answer = dev.get(&url, &[], BodyLimit::Prefix(10)).await.unwrap();
        assert_eq!(answer.status.as_u16(), 200, "{url}");
    }
}
