//! Offboarding: one person's apps and integrations handed over in one call, with a
//! preview; OAuth apps they authorized flagged with an event; deprovisioning (an admin or a
//! configured service) also ends their pending sign-ins. Both databases, with the provider.

use integration_hub::pb;
use pb::InstalledAppEventType as Kind;
use tonic::Code;

use crate::fixtures::{
    TEAM, WAIT, create_app, create_integration, error_reason, expect_code, get_app,
};
use crate::helpers::{authed, token};
use crate::oauth::{OAuthApp, dana, new_slack, oauth_app, oauth_test, start};

fn access(
    o: &OAuthApp,
) -> pb::access_service_client::AccessServiceClient<tonic::transport::Channel> {
    pb::access_service_client::AccessServiceClient::new(o.app.channel.clone())
}

/// A TransferOwnership request handing `from`'s apps and integrations to `to`.
pub fn transfer(from: &str, to: &str, validate_only: bool) -> pb::TransferOwnershipRequest {
    pb::TransferOwnershipRequest {
        from_owner: from.into(),
        to_owner: to.into(),
        validate_only,
        ..Default::default()
    }
}

fn deprovision(
    subject: &str,
    successor: &str,
    validate_only: bool,
) -> pb::DeprovisionPersonRequest {
    pb::DeprovisionPersonRequest {
        subject: subject.into(),
        successor: successor.into(),
        validate_only,
        ..Default::default()
    }
}

async fn a_person_is_offboarded_in_one_call(o: OAuthApp) {
    let app = &o.app;
    let admin = token(TEAM, "admin", "ada");
    let dora = token(TEAM, "developer", "dora");
    let signed_in = oauth_app(app, "Dana's Slack (OAuth)").await;
    let manual = create_app(app, &dana(), "slack", "Dana's Slack").await;
    let job = create_integration(app, &dana(), &manual, "Dana's job").await;
    let doras = create_app(app, &dora, "slack", "Dora's Slack").await;
    let pending = start(app, &dana(), new_slack("Never finished")).await;

    // A developer may not; the preview counts and changes nothing.
    let refused = access(&o)
        .transfer_ownership(authed(&dora, transfer("dana", "erin", true)))
        .await;
    expect_code(refused, Code::PermissionDenied);
    let preview = access(&o)
        .transfer_ownership(authed(&admin, transfer("dana", "erin", true)))
        .await
        .expect("preview")
        .into_inner();
    assert_eq!(
        (preview.installed_app_count, preview.integration_count),
        (2, 1)
    );
    assert_eq!(
        preview.reauthorization_recommended,
        std::slice::from_ref(&signed_in.name)
    );
    assert_eq!(
        get_app(app, &admin, &manual.name).await.expect("app").owner,
        "dana"
    );
    let same = access(&o)
        .transfer_ownership(authed(&admin, transfer("dana", "dana", true)))
        .await;
    expect_code(same, Code::InvalidArgument);

    // Deprovisioning: a service configuration does not name is refused, and audited.
    let stranger = token(TEAM, "service", "other-svc");
    let refused = access(&o)
        .deprovision_person(authed(&stranger, deprovision("dana", "erin", false)))
        .await;
    assert_eq!(
        error_reason(&expect_code(refused, Code::PermissionDenied)),
        "PERMISSION_DENIED"
    );

    let mut watch = app
        .apps
        .clone()
        .watch_installed_app_events(authed(
            &admin,
            pb::WatchInstalledAppEventsRequest {
                types: vec![Kind::InstalledAppReauthorizationRecommended as i32],
                ..Default::default()
            },
        ))
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("checkpoint")
        .expect("ok");

    // The configured service deprovisions dana in one call.
    let idp = token(TEAM, "service", "svc");
    let done = access(&o)
        .deprovision_person(authed(&idp, deprovision("dana", "erin", false)))
        .await
        .expect("deprovision")
        .into_inner();
    let transfer_done = done.transfer.expect("transfer");
    assert_eq!(
        (
            transfer_done.installed_app_count,
            transfer_done.integration_count
        ),
        (2, 1)
    );
    assert_eq!(done.cancelled_authorization_count, 1);
    for name in [&manual.name, &signed_in.name] {
        assert_eq!(get_app(app, &admin, name).await.expect("app").owner, "erin");
    }
    assert_eq!(
        get_app(app, &admin, &doras.name).await.expect("app").owner,
        "dora"
    );
    let flagged = get_app(app, &admin, &signed_in.name).await.expect("app");
    assert!(flagged.reauthorization_recommended);
    assert!(
        !get_app(app, &admin, &manual.name)
            .await
            .expect("app")
            .reauthorization_recommended
    );
    let moved = crate::fixtures::get_integration(app, &admin, &job.name)
        .await
        .expect("job");
    assert_eq!(
        (moved.owner.as_str(), moved.creator.as_str()),
        ("erin", "dana")
    );
    // The flag's event.
    let message = tokio::time::timeout(WAIT, watch.message())
        .await
        .expect("event")
        .expect("ok");
    let event = message
        .expect("a message")
        .events
        .into_iter()
        .next()
        .expect("an event");
    assert_eq!(
        event.r#type,
        Kind::InstalledAppReauthorizationRecommended as i32
    );
    assert_eq!(event.installed_app.expect("snapshot").name, signed_in.name);
    // Dana's pending sign-in was ended.
    let authorization = crate::oauth::get_authorization(
        app,
        &dana(),
        &pending.authorization.expect("authorization").name,
    )
    .await;
    assert_eq!(
        authorization.state(),
        pb::installed_app_authorization::State::Failed
    );

    // Nothing is left to hand over; the audit log has the call and the refusal.
    let again = access(&o)
        .transfer_ownership(authed(&admin, transfer("dana", "erin", true)))
        .await
        .expect("again")
        .into_inner();
    assert_eq!((again.installed_app_count, again.integration_count), (0, 0));
    assert!(again.reauthorization_recommended.is_empty(), "flagged once");
    let records = crate::privilege::audit_events(app, &admin, "people.deprovision").await;
    let outcomes: Vec<(String, i32)> = records
        .iter()
        .map(|e| (e.actor.clone(), e.outcome))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("svc".to_owned(), pb::audit_event::Outcome::Success as i32),
            (
                "other-svc".to_owned(),
                pb::audit_event::Outcome::Denied as i32
            ),
        ]
    );
    assert!(
        records
            .iter()
            .all(|e| e.resource == format!("teams/{TEAM}/people/dana"))
    );

    // A service that requires approval: a developer's sign-in does not start; an admin's does.
    let policy = pb::SetServicePolicyRequest {
        service: "slack".into(),
        policy: pb::ServicePolicy::ApprovalRequired as i32,
        ..Default::default()
    };
    access(&o)
        .set_service_policy(authed(&admin, policy))
        .await
        .expect("policy");
    let refused = app
        .apps
        .clone()
        .start_installed_app_authorization(authed(&dana(), new_slack("Not approved")))
        .await;
    let status = expect_code(refused, Code::FailedPrecondition);
    assert_eq!(error_reason(&status), "APPROVAL_REQUIRED");
    start(app, &admin, new_slack("Approved by installing")).await;
}
oauth_test!(a_person_is_offboarded_in_one_call);
