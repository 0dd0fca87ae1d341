//! Unary calls: the bearer token sent and refreshed, and retries for idempotent calls only.

use super::*;

/// A refreshing token whose subject changes at each fetch (`dana-0`, `dana-1`, ...), so the
/// server's `creator` shows which token a call carried. `ttls[n]` is the n-th token's life.
fn counting_tokens(fetches: Arc<AtomicUsize>, ttls: Vec<Duration>) -> BearerAuth {
    BearerAuth::refreshing(move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst);
        let ttl = ttls.get(n).copied().unwrap_or(Duration::from_secs(3600));
        Ok(Token::valid_for(
            token(TEAM, "developer", &format!("dana-{n}")),
            ttl,
        ))
    })
}

async fn the_bearer_token_is_sent_and_refreshed_when_it_expires_or_is_refused(app: TestApp) {
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let p = people(&app);

    // Static: every call carries it, through the wrapper and the generated clients alike.
    let fixed = Client::new(
        channel.clone(),
        BearerAuth::from_static(&p.dana).expect("token"),
    );
    assert_eq!(add_app(&fixed, "Static", "xoxb-1").await.creator, "dana");
    let listed = fixed
        .installed_apps()
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("the generated client carries the token")
        .into_inner();
    assert_eq!(listed.installed_apps.len(), 1);
    let anonymous = Client::new(channel.clone(), BearerAuth::none());
    let refused = anonymous
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Refreshing: the first token expires at once, the second lasts an hour.
    let fetches = Arc::new(AtomicUsize::new(0));
    let refreshing = Client::new(
        channel.clone(),
        counting_tokens(fetches.clone(), vec![Duration::ZERO]),
    );
    let creators: Vec<String> = {
        let mut creators = Vec::new();
        for i in 0..3 {
            creators.push(
                add_app(&refreshing, &format!("Refreshed {i}"), "xoxb-1")
                    .await
                    .creator,
            );
        }
        creators
    };
    assert_eq!(creators, ["dana-0", "dana-1", "dana-1"]);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "fetched when expired, not per call"
    );

    // A token the server refuses (signed with another secret, though not expired) is
    // replaced and the call (a create without a request id) is sent once more.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let refused_first = Client::new(
        channel.clone(),
        BearerAuth::refreshing(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let value = if n == 0 {
                token_of_another_secret()
            } else {
                token(TEAM, "developer", "dana-again")
            };
            Ok(Token::valid_for(value, Duration::from_secs(3600)))
        }),
    );
    let before = fixed
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("list")
        .installed_apps
        .len();
    assert_eq!(
        add_app(&refused_first, "After refusal", "xoxb-1")
            .await
            .creator,
        "dana-again"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let after = fixed
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("list")
        .installed_apps
        .len();
    assert_eq!(after, before + 1, "the refused call did not run");

    // Per request: the callback runs for each call.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let dana = p.dana.clone();
    let per_request = Client::new(
        channel.clone(),
        BearerAuth::per_request(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            dana.clone()
        }),
    );
    for _ in 0..3 {
        per_request
            .list_services(hub::pb::ListServicesRequest {})
            .await
            .expect("list services");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Async: fetched once, before the first call.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let asynchronous = Client::new(
        channel,
        BearerAuth::refreshing_async(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok(Token::valid_for(
                    token(TEAM, "developer", &format!("async-{n}")),
                    Duration::from_secs(3600),
                ))
            }
        }),
    );
    assert_eq!(
        add_app(&asynchronous, "Async 1", "xoxb-1").await.creator,
        "async-0"
    );
    assert_eq!(
        add_app(&asynchronous, "Async 2", "xoxb-1").await.creator,
        "async-0"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}
storage_test!(the_bearer_token_is_sent_and_refreshed_when_it_expires_or_is_refused);

/// A client whose token callback counts the attempts (the interceptor runs for each).
fn counting_client(channel: Channel, dana: &str, attempts: Arc<AtomicUsize>) -> Client {
    let dana = dana.to_owned();
    Client::new(
        channel,
        BearerAuth::per_request(move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            dana.clone()
        }),
    )
    .with_retry(RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    })
}

/// Attempts `call` made (with the server down, each fails UNAVAILABLE).
async fn attempts_of<T: std::fmt::Debug>(
    attempts: &AtomicUsize,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> usize {
    attempts.store(0, Ordering::SeqCst);
    let status = call.await.expect_err("the server is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    attempts.load(Ordering::SeqCst)
}

async fn only_idempotent_calls_are_retried_while_the_server_is_unavailable(mut app: TestApp) {
    let p = people(&app);
    let port = app.port;
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = counting_client(channel, &p.dana, attempts.clone());
    let slack = add_app(&client, "Team Slack", "xoxb-1").await;
    let job = client
        .create_integration(integration_request(&slack.name, "Job", ""))
        .await
        .expect("create");
    app.stop().await;

    // Nothing listens now: each call fails UNAVAILABLE, after 4 attempts or after one.
    let get = hub::pb::GetIntegrationRequest {
        name: job.name.clone(),
    };
    let resolve = hub::pb::ResolveIntegrationCredentialsRequest {
        name: job.name.clone(),
    };
    let preview = hub::pb::DeleteInstalledAppRequest {
        name: slack.name.clone(),
        validate_only: true,
        ..Default::default()
    };
    let delete_app = hub::pb::DeleteInstalledAppRequest {
        name: slack.name.clone(),
        ..Default::default()
    };
    let delete = hub::pb::DeleteIntegrationRequest {
        name: job.name.clone(),
        ..Default::default()
    };
    let rename = hub::pb::UpdateIntegrationRequest {
        integration: Some(hub::pb::Integration {
            name: job.name.clone(),
            display_name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    };
    let report = hub::pb::ReportCredentialsRejectedRequest {
        name: slack.name.clone(),
        detail: String::new(),
    };
    let a = &attempts;
    let counted = [
        (
            "GetIntegration",
            attempts_of(a, client.get_integration(get.clone())).await,
        ),
        (
            "ListIntegrations",
            attempts_of(a, client.list_integrations(Default::default())).await,
        ),
        (
            "ListServices",
            attempts_of(a, client.list_services(Default::default())).await,
        ),
        (
            "ResolveIntegrationCredentials",
            attempts_of(a, client.resolve_integration_credentials(resolve)).await,
        ),
        (
            "DeleteInstalledApp validate_only",
            attempts_of(a, client.delete_installed_app(preview)).await,
        ),
        (
            "CreateIntegration with a request id",
            attempts_of(
                a,
                client.create_integration(integration_request(&slack.name, "Retried", "req-1")),
            )
            .await,
        ),
        (
            "CreateIntegration without one",
            attempts_of(
                a,
                client.create_integration(integration_request(&slack.name, "Once", "")),
            )
            .await,
        ),
        (
            "CreateInstalledApp without one",
            attempts_of(
                a,
                client.create_installed_app(app_request("Once", "xoxb-2")),
            )
            .await,
        ),
        (
            "DeleteInstalledApp",
            attempts_of(a, client.delete_installed_app(delete_app)).await,
        ),
        (
            "DeleteIntegration",
            attempts_of(a, client.delete_integration(delete)).await,
        ),
        (
            "UpdateIntegration",
            attempts_of(a, client.update_integration(rename)).await,
        ),
        (
            "ReportCredentialsRejected",
            attempts_of(a, client.report_credentials_rejected(report)).await,
        ),
    ];
    let expected = [4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1];
    assert_eq!(
        counted.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        expected,
        "attempts per call: {counted:?}"
    );

    // A read started while the server is down completes once it is back on its port.
    attempts.store(0, Ordering::SeqCst);
    let patient = {
        let client = client.clone().with_retry(test_policy());
        tokio::spawn(async move { client.get_integration(get).await })
    };
    let deadline = Instant::now() + WAIT;
    while attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no retry within {WAIT:?}");
        tokio::task::yield_now().await;
    }
    let mut args = app.restart_args();
    args.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    let app = app.restart_with(args).await;
    let got = patient
        .await
        .expect("task")
        .expect("retried until the server came back");
    assert_eq!(got.name, job.name);
    drop(app);
}
storage_test!(only_idempotent_calls_are_retried_while_the_server_is_unavailable);

/// `ListServices` -> `list_services`, as prost names a method.
fn snake_case(name: &str) -> String {
    let mut snake = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.push(c.to_ascii_lowercase());
    }
    snake
}

/// Adding an RPC (CONTRIBUTING.md): the Rust client's `Client` has a method for each one the
/// server describes, with its retry rule.
#[test]
fn the_rust_client_has_a_method_for_every_rpc_the_server_describes() {
    let client = include_str!("../../../client/src/client.rs");
    let methods: Vec<String> = crate::hostile_input::methods()
        .into_iter()
        .map(|(path, _, _)| snake_case(path.rsplit('/').next().expect("a method name")))
        .collect();
    assert!(methods.len() >= 17, "{methods:?}");
    let missing: Vec<&String> = methods
        .iter()
        .filter(|m| {
            !client.contains(&format!("        {m}(")) && !client.contains(&format!("pub fn {m}("))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "add these to `Client` in client/src/client.rs (in `unary!`, with their retry rule): {missing:?}"
    );
}
