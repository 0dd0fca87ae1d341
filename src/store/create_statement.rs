//! New integrations bound to installed apps, written on PostgreSQL in one statement.
//!
//! The general way ([`Store::begin_write`]) is a transaction of seven round trips for a
//! create: BEGIN, the app under a share lock, the integration, the outbox lock, the event,
//! the audit record, COMMIT. Here the same writes, for one create or for several queued
//! together, are one autocommitted statement, with the same locks in the same order: the
//! apps' rows are read `FOR SHARE` (a delete or suspension waits for it, or it sees theirs),
//! and the outbox's shared advisory lock is taken before the events get their sequence
//! numbers (the event insert reads its rows through the lock), held until the statement
//! commits.

use std::collections::HashSet;
use std::fmt::Write as _;

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement, Value};

use super::audit::{AUDIT_COLUMNS, audit_values};
use super::outbox::{EVENT_COLUMNS, OUTBOX_LOCK_KEY, event_values};
use super::{
    AuditRow, EventRow, IntegrationRow, Result, Store, announce_appended, database_state,
    statement_size,
};

/// The integration columns, in the order of [`integration_values`].
const INTEGRATION_COLUMNS: [&str; 21] = [
    "id",
    "team",
    "installed_app_id",
    "service",
    "type_id",
    "display_name",
    "config",
    "state",
    "broken_reason",
    "broken_detail",
    "broken_time",
    "own_credentials",
    "key_version",
    "creator",
    "owner",
    "last_used_time",
    "request_id",
    "request_fingerprint",
    "version",
    "create_time",
    "update_time",
];

fn integration_values(row: IntegrationRow) -> [Value; 21] {
    [
        row.id.into(),
        row.team.into(),
        row.installed_app_id.into(),
        row.service.into(),
        row.type_id.into(),
        row.display_name.into(),
        row.config.into(),
        row.state.into(),
        row.broken_reason.into(),
        row.broken_detail.into(),
        row.broken_time.into(),
        row.own_credentials.into(),
        row.key_version.into(),
        row.creator.into(),
        row.owner.into(),
        row.last_used_time.into(),
        row.request_id.into(),
        row.request_fingerprint.into(),
        row.version.into(),
        row.create_time.into(),
        row.update_time.into(),
    ]
}

/// One create for [`Store::create_integrations_in_one_statement`]: the new integration (bound to an
/// installed app), its event, and its success record.
pub struct NewCreate {
    pub row: IntegrationRow,
    pub event: EventRow,
    pub record: AuditRow,
}

/// The sizes of the statements creates are written in, largest first: each is prepared once
/// per connection and reused, however many creates a batch has.
const CREATE_CHUNKS: [usize; 4] = [32, 8, 2, 1];

impl Store {
    /// How many of `left` creates the next statement of a batch writes (a size of
    /// [`CREATE_CHUNKS`]).
    pub fn create_statement_size(left: usize) -> usize {
        statement_size(&CREATE_CHUNKS, left)
    }

    /// PostgreSQL: writes each create (its integration, event and success record) in one
    /// autocommitted statement, if its app is still the team's, `ACTIVE`, and of the row's
    /// service, and no integration of the team has its idempotency key; answers, in order,
    /// which were written. A create not written left nothing behind, and the general way (a
    /// transaction of its own) finds out why. On SQLite nothing is done (all `false`): there
    /// a transaction is on one connection in one process, and round trips cost little.
    pub async fn create_integrations_in_one_statement(
        &self,
        creates: Vec<NewCreate>,
    ) -> Result<Vec<bool>> {
        if !self.is_postgres() || creates.is_empty() {
            return Ok(vec![false; creates.len()]);
        }
        let ids: Vec<String> = creates.iter().map(|c| c.row.id.clone()).collect();
        let rows = self
            .conn()
            .query_all_raw(creates_statement(creates))
            .await?;
        database_state::note_write_committed();
        let created = rows
            .iter()
            .map(|row| row.try_get::<String>("", "id"))
            .collect::<std::result::Result<HashSet<String>, _>>()?;
        if !created.is_empty() {
            announce_appended(&self.appended, self.notifier.as_ref());
        }
        Ok(ids.iter().map(|id| created.contains(id)).collect())
    }
}

/// The statement that writes `creates`: their values in one `VALUES` list (`input`), the
/// apps they bind locked `FOR SHARE` and checked, the integrations inserted unless their
/// idempotency key is taken, then the outbox lock, their events (in input order) and their
/// records, for the integrations inserted only.
fn creates_statement(creates: Vec<NewCreate>) -> Statement {
    let columns: Vec<String> = INTEGRATION_COLUMNS
        .iter()
        .map(|c| format!("i_{c}"))
        .chain(EVENT_COLUMNS.iter().map(|c| format!("e_{c}")))
        .chain(AUDIT_COLUMNS.iter().map(|c| format!("a_{c}")))
        .collect();
    let mut values: Vec<Value> = Vec::new();
    let mut input = String::new();
    for (n, create) in creates.into_iter().enumerate() {
        input.push_str(if n == 0 { "(" } else { ", (" });
        values.push(Value::BigInt(Some(n as i64)));
        let _ = write!(input, "${}", values.len());
        for value in integration_values(create.row)
            .into_iter()
            .chain(event_values(create.event))
            .chain(audit_values(create.record))
        {
            values.push(value);
            let _ = write!(input, ", ${}", values.len());
        }
        input.push(')');
    }
    values.push(OUTBOX_LOCK_KEY.into());
    let lock_key = values.len();
    let prefixed = |prefix: &str, of: &[&str]| -> String {
        of.iter()
            .map(|c| format!("input.{prefix}{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let sql = format!(
        "WITH input (n, {columns}) AS (VALUES {input}), \
         app AS (SELECT a.team, a.id, a.service FROM installed_apps a \
           WHERE a.state = 'ACTIVE' AND (a.team, a.id) IN (SELECT i_team, i_installed_app_id FROM input) \
           FOR SHARE OF a), \
         created AS (INSERT INTO integrations ({integration_columns}) \
           SELECT {integration_values} FROM input JOIN app ON app.team = input.i_team \
             AND app.id = input.i_installed_app_id AND app.service = input.i_service \
           ORDER BY input.n \
           ON CONFLICT (team, request_id) DO NOTHING RETURNING id), \
         outbox AS (SELECT pg_advisory_xact_lock_shared(${lock_key}) AS locked \
           WHERE EXISTS (SELECT 1 FROM created)), \
         appended AS (INSERT INTO events ({event_columns}) \
           SELECT {event_values} FROM outbox, input JOIN created ON created.id = input.i_id \
           ORDER BY input.n RETURNING seq), \
         audited AS (INSERT INTO audit_events ({audit_columns}) \
           SELECT {audit_values} FROM input JOIN created ON created.id = input.i_id \
           ORDER BY input.n) \
         SELECT id FROM created",
        columns = columns.join(", "),
        integration_columns = INTEGRATION_COLUMNS.join(", "),
        integration_values = prefixed("i_", &INTEGRATION_COLUMNS),
        event_columns = EVENT_COLUMNS.join(", "),
        event_values = prefixed("e_", &EVENT_COLUMNS),
        audit_columns = AUDIT_COLUMNS.join(", "),
        audit_values = prefixed("a_", &AUDIT_COLUMNS),
    );
    Statement::from_sql_and_values(DatabaseBackend::Postgres, sql, values)
}
