//! What a delivery carries: the JSON body (an event in the proto's JSON mapping, built by
//! hand: the crate has no pbjson) and the Standard Webhooks signature.
//!
//! The body is `{"type": ..., "timestamp": ..., "data": {...}}`, the envelope the Standard
//! Webhooks specification recommends; `data` is the `IntegrationEvent` or `InstalledAppEvent`
//! (for the webhook-only types, their own fields: an `installationRequest` for those of
//! installation requests) as protobuf's JSON mapping writes it: lowerCamelCase names, enums
//! by value name, timestamps in RFC 3339 (UTC, `Z`), empty optional fields left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use serde_json::{Map, Value, json};

use crate::domain::app_events::{AppEvent, is_app_event};
use crate::domain::model::{Event, InstalledApp, Integration};
use crate::domain::requests::{RequestSnapshot, is_request_event};
use crate::domain::tokens::TeamCursors;
use crate::domain::webhooks::{AUDIT_KIND, DISABLED_KIND};
use crate::domain::{Error, Result};
use crate::store::EventRow;

/// The type of the event SendTestWebhook sends.
pub const TEST_KIND: &str = "WEBHOOK_TEST";

/// `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` for each key,
/// space-separated (the current secret first, then one a rotation keeps for its grace).
pub fn signature<K: AsRef<[u8]>>(keys: &[K], id: &str, timestamp: i64, body: &[u8]) -> String {
    keys.iter()
        .map(|key| {
            let key = hmac::Key::new(hmac::HMAC_SHA256, key.as_ref());
            let mut context = hmac::Context::with_key(&key);
            context.update(id.as_bytes());
            context.update(b".");
            context.update(timestamp.to_string().as_bytes());
            context.update(b".");
            context.update(body);
            format!("v1,{}", STANDARD.encode(context.sign().as_ref()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `webhook-id`: the same for every attempt of one event to one subscription (receivers
/// deduplicate on it), different across subscriptions.
pub fn webhook_id(event_id: &str, subscription_id: &str) -> String {
    format!("msg_{event_id}_{subscription_id}")
}

/// RFC 3339 in UTC with microseconds, from microseconds since the epoch.
pub fn rfc3339(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Inserts `value` unless it is the field's default (proto3 JSON leaves those out).
fn put(map: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_i64() == Some(0),
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
    };
    if !empty {
        map.insert(key.to_owned(), value);
    }
}

fn time(micros: Option<i64>) -> Value {
    micros.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn integration(i: &Integration) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", i.name().into());
    put(
        &mut m,
        "installedApp",
        i.installed_app_name().unwrap_or_default().into(),
    );
    put(&mut m, "service", i.service.clone().into());
    put(&mut m, "type", i.type_id.clone().into());
    put(&mut m, "displayName", i.display_name.clone().into());
    put(&mut m, "config", json!(i.config));
    put(&mut m, "state", i.state.as_str().into());
    put(
        &mut m,
        "brokenReason",
        i.broken_reason.map(|r| r.as_str()).into(),
    );
    put(&mut m, "brokenDetail", i.broken_detail.clone().into());
    put(&mut m, "brokenTime", time(i.broken_time));
    put(&mut m, "creator", i.creator.clone().into());
    put(&mut m, "createTime", time(Some(i.create_time)));
    put(&mut m, "updateTime", time(Some(i.update_time)));
    put(&mut m, "etag", i.etag().into());
    put(&mut m, "ownCredentials", i.own_credentials.into());
    put(&mut m, "owner", i.owner.clone().into());
    put(&mut m, "lastUsedTime", time(i.last_used_time));
    Value::Object(m)
}

fn installed_app(a: &InstalledApp) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", a.name.to_string().into());
    put(&mut m, "service", a.service.clone().into());
    put(&mut m, "displayName", a.display_name.clone().into());
    put(&mut m, "connectedTo", a.connected_to.clone().into());
    put(&mut m, "creator", a.creator.clone().into());
    put(&mut m, "state", a.state.as_str().into());
    put(&mut m, "integrationCount", a.integration_count.into());
    put(&mut m, "createTime", time(Some(a.create_time)));
    put(&mut m, "updateTime", time(Some(a.update_time)));
    put(&mut m, "etag", a.etag().into());
    put(
        &mut m,
        "suspensionReason",
        a.suspension_reason.clone().into(),
    );
    put(&mut m, "owner", a.owner.clone().into());
    put(&mut m, "lastUsedTime", time(a.last_used_time));
    Value::Object(m)
}

/// An installation request as the proto's JSON mapping writes `InstallationRequest`.
fn installation_request(r: &RequestSnapshot) -> Value {
    let mut m = Map::new();
    put(&mut m, "name", r.name.clone().into());
    put(&mut m, "service", r.service.clone().into());
    put(&mut m, "requester", r.requester.clone().into());
    put(&mut m, "state", r.state.clone().into());
    put(&mut m, "reason", r.reason.clone().into());
    put(&mut m, "decidedBy", r.decided_by.clone().into());
    put(&mut m, "decision", r.decision.clone().into());
    put(&mut m, "createTime", time(Some(r.create_time)));
    put(&mut m, "updateTime", time(Some(r.update_time)));
    Value::Object(m)
}

/// The event of `row` as the proto's JSON mapping writes it.
fn data(row: &EventRow, cursors: &TeamCursors) -> Result<Value> {
    let mut m = Map::new();
    put(&mut m, "eventId", row.event_id.clone().into());
    put(&mut m, "cursor", cursors.encode(row.seq).into());
    put(&mut m, "type", row.kind.clone().into());
    put(&mut m, "time", time(Some(row.time)));
    if row.kind == DISABLED_KIND {
        let snapshot: Value = serde_json::from_str(&row.snapshot)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("webhook snapshot")))?;
        put(&mut m, "reason", row.reason.clone().into());
        put(&mut m, "actor", row.actor.clone().into());
        put(&mut m, "webhookSubscription", snapshot);
    } else if row.kind == AUDIT_KIND {
        // The record as `integration-hub audit export` writes it.
        let record: Value = serde_json::from_str(&row.snapshot)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("audit snapshot")))?;
        put(&mut m, "actor", row.actor.clone().into());
        put(&mut m, "auditEvent", record);
    } else if is_request_event(&row.kind) {
        let request: RequestSnapshot = serde_json::from_str(&row.snapshot)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("request snapshot")))?;
        put(&mut m, "actor", row.actor.clone().into());
        put(
            &mut m,
            "installationRequest",
            installation_request(&request),
        );
    } else if is_app_event(&row.kind) {
        let event = AppEvent::from_row(row)?;
        put(
            &mut m,
            "installedAppName",
            event.installed_app_name().into(),
        );
        put(&mut m, "reason", event.reason.into());
        put(&mut m, "actor", event.actor.into());
        put(&mut m, "installedApp", installed_app(&event.app));
        let scopes = event.scopes;
        put(&mut m, "addedScopes", scopes.added.into());
        put(&mut m, "removedScopes", scopes.removed.into());
        put(&mut m, "usableIntegrations", scopes.usable.into());
        put(&mut m, "unusableIntegrations", scopes.unusable.into());
    } else {
        let event = Event::from_row(row)?;
        put(&mut m, "integrationName", event.integration_name().into());
        put(
            &mut m,
            "installedApp",
            event.installed_app_name().unwrap_or_default().into(),
        );
        put(&mut m, "reason", event.reason.map(|r| r.as_str()).into());
        put(&mut m, "actor", event.actor.into());
        put(&mut m, "integration", integration(&event.integration));
    }
    Ok(Value::Object(m))
}

/// The body delivering the event of `row`.
pub fn event_body(row: &EventRow, cursors: &TeamCursors) -> Result<Vec<u8>> {
    let body = json!({
        "type": row.kind,
        "timestamp": rfc3339(row.time),
        "data": data(row, cursors)?,
    });
    serde_json::to_vec(&body).map_err(|e| Error::Internal(e.into()))
}

/// The body of SendTestWebhook's event.
pub fn test_body(subscription: &str, now: i64) -> Vec<u8> {
    let body = json!({
        "type": TEST_KIND,
        "timestamp": rfc3339(now),
        "data": {
            "webhookSubscription": subscription,
            "message": "a test event from integration-hub: the signature verifies with your secret",
        },
    });
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_764_000_000_123_456),
            "2025-11-24T16:00:00.123456Z"
        );
        assert_eq!(rfc3339(951_782_400_000_000), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999Z");
    }

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn the_signature_matches_the_specifications_test_vector() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let sig = signature(
            std::slice::from_ref(&key),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let two = signature(&[key.clone(), key], "id", 1, b"{}");
        assert_eq!(two.split(' ').count(), 2);
    }

    /// Subscribers get what an INSTALLED_APP_SCOPES_CHANGED event carries; empty lists are
    /// left out, as the proto's JSON mapping does.
    #[test]
    fn a_change_of_scopes_carries_its_scopes_and_integrations() {
        use crate::domain::app_events::{AppSnapshot, ScopeChange};
        let keys = std::sync::Arc::new(crate::crypto::KeyRing::generate(1).expect("key").0);
        let snapshot = AppSnapshot {
            scopes: ScopeChange {
                added: vec!["chat:write".into()],
                usable: vec!["teams/acme/integrations/i1".into()],
                ..ScopeChange::default()
            },
            ..AppSnapshot::of(&crate::domain::test_support::app_row("a1")).expect("snapshot")
        };
        let row = EventRow {
            seq: 1,
            event_id: "e1".into(),
            team: "acme".into(),
            kind: "INSTALLED_APP_SCOPES_CHANGED".into(),
            integration_id: String::new(),
            installed_app_id: Some("a1".into()),
            reason: None,
            actor: "dana".into(),
            time: 0,
            snapshot: serde_json::to_string(&snapshot).expect("json"),
        };
        let body = event_body(&row, &TeamCursors::new(keys, None)).expect("body");
        let body: Value = serde_json::from_slice(&body).expect("json");
        let data = &body["data"];
        assert_eq!(body["type"], "INSTALLED_APP_SCOPES_CHANGED");
        assert_eq!(data["installedAppName"], "teams/acme/installedApps/a1");
        assert_eq!(data["addedScopes"], json!(["chat:write"]));
        assert_eq!(
            data["usableIntegrations"],
            json!(["teams/acme/integrations/i1"])
        );
        assert!(data.get("removedScopes").is_none(), "{data}");
        assert!(data.get("unusableIntegrations").is_none(), "{data}");
    }

    #[test]
    fn webhook_ids_are_stable_per_event_and_subscription() {
        assert_eq!(webhook_id("e1", "s1"), webhook_id("e1", "s1"));
        assert_ne!(webhook_id("e1", "s1"), webhook_id("e1", "s2"));
    }
}
