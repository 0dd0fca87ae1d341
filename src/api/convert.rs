//! Domain -> proto conversions, done once here.

use crate::domain::app_events::AppEvent;
use crate::domain::catalog::{AuthKind, FieldDef, IntegrationTypeDef, ServiceDef};
use crate::domain::model::{
    AppEventKind, AppState, AuditEvent, AuditOutcome, BrokenReason, Event, EventKind, InstalledApp,
    Integration, IntegrationState, VerificationState,
};
use crate::domain::oauth::{Authorization, AuthorizationState};
use crate::domain::tokens::TeamCursors;
use crate::pb;

/// Earliest and latest microseconds a Timestamp may carry: 0001-01-01T00:00:00Z and
/// 9999-12-31T23:59:59.999999Z (outside that range its JSON mapping fails, and with it every
/// answer that holds one).
const MIN_TIMESTAMP_MICROS: i64 = -62_135_596_800_000_000;
const MAX_TIMESTAMP_MICROS: i64 = 253_402_300_799_999_999;

/// A time as a Timestamp, clamped to 0001..9999 (stored times are checked where they are
/// made; this keeps one that is not from breaking a whole listing).
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    let micros = micros.clamp(MIN_TIMESTAMP_MICROS, MAX_TIMESTAMP_MICROS);
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn field(f: &FieldDef) -> pb::Field {
    pb::Field {
        name: f.name.clone(),
        display_name: f.display_name.clone(),
        required: f.required,
        secret: f.secret,
    }
}

fn integration_type(t: &IntegrationTypeDef) -> pb::IntegrationType {
    pb::IntegrationType {
        id: t.id.clone(),
        display_name: t.display_name.clone(),
        description: t.description.clone(),
        config_fields: t.config_fields.iter().map(field).collect(),
        required_scopes: t.required_scopes.clone(),
    }
}

pub fn service(s: &ServiceDef) -> pb::Service {
    let auth_kind = match s.auth_kind {
        AuthKind::Oauth2 => pb::AuthKind::Oauth2,
        AuthKind::ApiKey => pb::AuthKind::ApiKey,
        AuthKind::Token => pb::AuthKind::Token,
        AuthKind::ClientCredentials => pb::AuthKind::ClientCredentials,
        AuthKind::WebhookSecret => pb::AuthKind::WebhookSecret,
    };
    pb::Service {
        id: s.id.clone(),
        display_name: s.display_name.clone(),
        auth_kind: auth_kind as i32,
        credential_fields: s.credential_fields.iter().map(field).collect(),
        integration_types: s.integration_types.iter().map(integration_type).collect(),
    }
}

pub fn installed_app(app: &InstalledApp) -> pb::InstalledApp {
    let state = match app.state {
        AppState::Active => pb::installed_app::State::Active,
        AppState::NeedsReauth => pb::installed_app::State::NeedsReauth,
        AppState::Suspended => pb::installed_app::State::Suspended,
    };
    let health = app.health.as_ref();
    pb::InstalledApp {
        name: app.name.to_string(),
        service: app.service.clone(),
        display_name: app.display_name.clone(),
        connected_to: app.connected_to.clone(),
        creator: app.creator.clone(),
        state: state as i32,
        integration_count: count(app.integration_count),
        active_integration_count: count(app.active_integration_count),
        broken_integration_count: count(app.integration_count - app.active_integration_count),
        create_time: Some(timestamp(app.create_time)),
        update_time: Some(timestamp(app.update_time)),
        etag: app.etag(),
        suspension_reason: app.suspension_reason.clone().unwrap_or_default(),
        owner: app.owner.clone(),
        last_used_time: app.last_used_time.map(timestamp),
        authorization_kind: if app.oauth.is_some() {
            pb::installed_app::AuthorizationKind::Oauth
        } else {
            pb::installed_app::AuthorizationKind::Manual
        } as i32,
        credentials_expire_time: app
            .oauth
            .as_ref()
            .and_then(|o| o.expire_time)
            .map(timestamp),
        last_refresh_time: app
            .oauth
            .as_ref()
            .and_then(|o| o.last_refresh_time)
            .map(timestamp),
        last_refresh_error: app
            .oauth
            .as_ref()
            .and_then(|o| o.last_refresh_error.clone())
            .unwrap_or_default(),
        granted_scopes: health
            .and_then(|h| h.granted_scopes.clone())
            .unwrap_or_default(),
        last_verified_time: health.and_then(|h| h.last_verified_time).map(timestamp),
        last_verification_error: health
            .and_then(|h| h.last_error.clone())
            .unwrap_or_default(),
        verification_state: health.map_or(pb::installed_app::VerificationState::Unspecified, |h| {
            verification_state(h.state)
        }) as i32,
        last_verification_check_time: health.and_then(|h| h.last_check_time).map(timestamp),
        usable_by_subjects: (app.usable_by.iter())
            .flat_map(|u| u.subjects.iter().cloned())
            .collect(),
        reauthorization_recommended: app.reauthorization_recommended,
        usable_by_groups: (app.usable_by.iter())
            .flat_map(|u| u.groups.iter().cloned())
            .collect(),
    }
}

fn verification_state(state: VerificationState) -> pb::installed_app::VerificationState {
    use pb::installed_app::VerificationState as V;
    match state {
        VerificationState::Verified => V::Verified,
        VerificationState::Unverified => V::Unverified,
        VerificationState::Rejected => V::Rejected,
        VerificationState::NotVerifiable => V::NotVerifiable,
    }
}

pub fn broken_reason(reason: Option<BrokenReason>) -> pb::integration::BrokenReason {
    match reason {
        None => pb::integration::BrokenReason::Unspecified,
        Some(BrokenReason::InstalledAppDeleted) => {
            pb::integration::BrokenReason::InstalledAppDeleted
        }
        Some(BrokenReason::CredentialsRejected) => {
            pb::integration::BrokenReason::CredentialsRejected
        }
        Some(BrokenReason::InstalledAppSuspended) => {
            pb::integration::BrokenReason::InstalledAppSuspended
        }
    }
}

pub fn integration_state(state: IntegrationState) -> pb::integration::State {
    match state {
        IntegrationState::Active => pb::integration::State::Active,
        IntegrationState::Broken => pb::integration::State::Broken,
    }
}

pub fn integration(i: &Integration) -> pb::Integration {
    pb::Integration {
        name: i.name(),
        installed_app: i.installed_app_name().unwrap_or_default(),
        service: i.service.clone(),
        r#type: i.type_id.clone(),
        display_name: i.display_name.clone(),
        config: i.config.clone().into_iter().collect(),
        state: integration_state(i.state) as i32,
        broken_reason: broken_reason(i.broken_reason) as i32,
        broken_detail: i.broken_detail.clone().unwrap_or_default(),
        broken_time: i.broken_time.map(timestamp),
        creator: i.creator.clone(),
        create_time: Some(timestamp(i.create_time)),
        update_time: Some(timestamp(i.update_time)),
        etag: i.etag(),
        own_credentials: i.own_credentials,
        owner: i.owner.clone(),
        last_used_time: i.last_used_time.map(timestamp),
    }
}

pub fn event_kind(kind: EventKind) -> pb::IntegrationEventType {
    match kind {
        EventKind::Created => pb::IntegrationEventType::IntegrationCreated,
        EventKind::Updated => pb::IntegrationEventType::IntegrationUpdated,
        EventKind::Deleted => pb::IntegrationEventType::IntegrationDeleted,
        EventKind::Broken => pb::IntegrationEventType::IntegrationBroken,
        EventKind::Restored => pb::IntegrationEventType::IntegrationRestored,
    }
}

/// A count as the proto's int32 (saturating; no team has two billion integrations).
fn count(n: i64) -> i32 {
    i32::try_from(n.max(0)).unwrap_or(i32::MAX)
}

pub fn event(e: &Event, cursors: &TeamCursors) -> pb::IntegrationEvent {
    pb::IntegrationEvent {
        event_id: e.event_id.clone(),
        cursor: cursors.encode(e.seq),
        r#type: event_kind(e.kind) as i32,
        time: Some(timestamp(e.time)),
        integration_name: e.integration_name(),
        installed_app: e.installed_app_name().unwrap_or_default(),
        reason: broken_reason(e.reason) as i32,
        actor: e.actor.clone(),
        integration: Some(integration(&e.integration)),
    }
}

pub fn app_event_kind(kind: AppEventKind) -> pb::InstalledAppEventType {
    use pb::InstalledAppEventType as T;
    match kind {
        AppEventKind::Created => T::InstalledAppCreated,
        AppEventKind::CredentialsReplaced => T::InstalledAppCredentialsReplaced,
        AppEventKind::NeedsReauth => T::InstalledAppNeedsReauth,
        AppEventKind::RefreshFailed => T::InstalledAppRefreshFailed,
        AppEventKind::Restored => T::InstalledAppRestored,
        AppEventKind::Deleted => T::InstalledAppDeleted,
        AppEventKind::ReauthorizationRecommended => T::InstalledAppReauthorizationRecommended,
        AppEventKind::ScopesChanged => T::InstalledAppScopesChanged,
    }
}

pub fn app_event(e: &AppEvent, cursors: &TeamCursors) -> pb::InstalledAppEvent {
    pb::InstalledAppEvent {
        event_id: e.event_id.clone(),
        cursor: cursors.encode(e.seq),
        r#type: app_event_kind(e.kind) as i32,
        time: Some(timestamp(e.time)),
        installed_app_name: e.installed_app_name(),
        reason: e.reason.clone(),
        actor: e.actor.clone(),
        installed_app: Some(installed_app(&e.app)),
        added_scopes: e.scopes.added.clone(),
        removed_scopes: e.scopes.removed.clone(),
        usable_integrations: e.scopes.usable.clone(),
        unusable_integrations: e.scopes.unusable.clone(),
    }
}

/// Microseconds since the epoch of a timestamp from a request.
pub fn micros(ts: &prost_types::Timestamp) -> Result<i64, String> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return Err("has nanos outside 0 to 999,999,999".to_owned());
    }
    ts.seconds
        .checked_mul(1_000_000)
        .and_then(|us| us.checked_add(i64::from(ts.nanos / 1000)))
        .ok_or_else(|| "is out of range".to_owned())
}

pub fn audit_event(e: &AuditEvent) -> pb::AuditEvent {
    let outcome = match e.outcome {
        AuditOutcome::Success => pb::audit_event::Outcome::Success,
        AuditOutcome::Denied => pb::audit_event::Outcome::Denied,
        AuditOutcome::Failed => pb::audit_event::Outcome::Failed,
    };
    pb::AuditEvent {
        name: e.name(),
        time: Some(timestamp(e.time)),
        actor: e.actor.clone(),
        actor_team: e.actor_team.clone(),
        role: e.role.clone(),
        action: e.action.as_str().to_owned(),
        resource: e.resource.clone(),
        outcome: outcome as i32,
        reason: e.reason.clone().unwrap_or_default(),
        request_id: e.request_id.clone(),
    }
}

/// An OAuth authorization: never its state, verifier or a token.
pub fn authorization(a: &Authorization) -> pb::InstalledAppAuthorization {
    use pb::installed_app_authorization::State;
    let state = match a.state {
        AuthorizationState::Pending => State::Pending,
        AuthorizationState::Succeeded => State::Succeeded,
        AuthorizationState::Failed => State::Failed,
        AuthorizationState::Expired => State::Expired,
    };
    pb::InstalledAppAuthorization {
        name: a.name.to_string(),
        service: a.service.clone(),
        display_name: a.display_name.clone(),
        scopes: a.scopes.clone(),
        installed_app: a
            .installed_app
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
        state: state as i32,
        error: a.error.clone().unwrap_or_default(),
        creator: a.creator.clone(),
        create_time: Some(timestamp(a.create_time)),
        expire_time: Some(timestamp(a.expire_time)),
        complete_time: a.complete_time.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_and_micros_round_trip() {
        for us in [0, 1, 1_764_000_000_123_456, -1] {
            assert_eq!(micros(&timestamp(us)), Ok(us));
        }
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        };
        assert!(micros(&bad).is_err());
        let huge = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(micros(&huge).is_err());
    }

    #[test]
    fn a_timestamp_never_leaves_the_years_1_to_9999() {
        let latest = timestamp(i64::MAX);
        assert_eq!(
            (latest.seconds, latest.nanos),
            (253_402_300_799, 999_999_000)
        );
        let earliest = timestamp(i64::MIN);
        assert_eq!((earliest.seconds, earliest.nanos), (-62_135_596_800, 0));
        // The year 294247 (an `expires_in` of 10^13 seconds, saturated) is cut to 9999.
        let far = timestamp(
            1_764_000_000_000_000_i64
                .saturating_add(10_000_000_000_000_i64.saturating_mul(1_000_000)),
        );
        assert_eq!(far.seconds, 253_402_300_799);
    }
}
