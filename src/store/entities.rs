//! SeaORM entities: one module per table, rows exactly as stored.

use sea_orm::{
    ActiveModelTrait, EntityTrait, IdenStatic, IntoActiveModel, Iterable, PrimaryKeyToColumn,
    PrimaryKeyTrait, Value,
};

pub mod installed_app {
    use sea_orm::entity::prelude::*;

    use crate::store::AppState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "installed_apps")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team: String,
        pub service: String,
        pub display_name: String,
        pub connected_to: String,
        pub creator: String,
        /// Who is responsible for it: the creator, until an admin hands it over.
        pub owner: String,
        /// When its credentials were last resolved (written at most once a minute).
        pub last_used_time: Option<i64>,
        pub state: AppState,
        /// Why an admin suspended it; set exactly while `state` is SUSPENDED.
        pub suspension_reason: Option<String>,
        /// The state a suspended app returns to when resumed.
        pub resume_state: Option<AppState>,
        /// Sealed credentials (see `crate::crypto`), never plaintext.
        pub credentials: Vec<u8>,
        pub key_version: i32,
        pub request_id: Option<String>,
        /// SHA-256 (hex) of the non-secret content of the create that used `request_id`.
        pub request_fingerprint: Option<String>,
        pub version: i64,
        pub create_time: i64,
        pub update_time: i64,
        /// Who besides admins may build on it (JSON subjects and groups); `None`: every
        /// developer of its team.
        pub usable_by: Option<String>,
        /// Its OAuth grant lives in the provider account of a person whose apps were handed
        /// over; cleared when its credentials are replaced.
        pub reauthorization_recommended: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod integration {
    use sea_orm::entity::prelude::*;

    use crate::store::{BrokenReason, IntegrationState};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "integrations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team: String,
        /// The app it uses; a broken integration keeps the id of the app it used.
        pub installed_app_id: Option<String>,
        pub service: String,
        pub type_id: String,
        pub display_name: String,
        /// Non-secret config as a JSON object.
        pub config: String,
        pub state: IntegrationState,
        pub broken_reason: Option<BrokenReason>,
        pub broken_detail: Option<String>,
        pub broken_time: Option<i64>,
        /// Sealed credentials of its own, if it has them.
        pub own_credentials: Option<Vec<u8>>,
        pub key_version: Option<i32>,
        pub creator: String,
        /// Who is responsible for it: the creator, until an admin hands it over.
        pub owner: String,
        /// When its credentials were last resolved (written at most once a minute).
        pub last_used_time: Option<i64>,
        pub request_id: Option<String>,
        /// SHA-256 (hex) of the non-secret content of the create that used `request_id`.
        pub request_fingerprint: Option<String>,
        pub version: i64,
        pub create_time: i64,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod event {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "events")]
    pub struct Model {
        /// The database's: an append ignores what the row holds here (0 by convention).
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub event_id: String,
        pub team: String,
        pub kind: String,
        pub integration_id: String,
        pub installed_app_id: Option<String>,
        pub reason: Option<String>,
        pub actor: String,
        pub time: i64,
        /// The integration after the change, as JSON.
        pub snapshot: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_event {
    use sea_orm::entity::prelude::*;

    use crate::store::{AuditAction, AuditOutcome};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// The database's: an append ignores what the row holds here (0 by convention).
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub id: String,
        /// The team whose audit log holds the record.
        pub team: String,
        pub actor: String,
        /// The actor's own team, or `*` for a service acting on every team.
        pub actor_team: String,
        pub role: String,
        pub action: AuditAction,
        /// Resource name; empty when the call was refused before its request was read.
        pub resource: String,
        pub outcome: AuditOutcome,
        pub reason: Option<String>,
        pub request_id: String,
        pub time: i64,
        /// The key ring version whose audit key made `mac` (and `chain_mac`).
        pub key_id: Option<i32>,
        /// The keyed MAC of the record's content (`domain::audit_chain`); none on records
        /// written before the chain existed.
        pub mac: Option<Vec<u8>>,
        /// Its place in its team's chain, given by the sealer (none until sealed; 0 when its
        /// MAC did not hold then): not a column of the log but kept in its run of
        /// `audit_chain_runs`, filled in by the reads that need it.
        #[sea_orm(ignore)]
        pub chain_pos: Option<i64>,
        /// The MAC over this record and its predecessor in the chain (from the same row).
        #[sea_orm(ignore)]
        pub chain_mac: Option<Vec<u8>>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_pending {
    use sea_orm::entity::prelude::*;

    /// Records one commit appended for one team, not chained yet: written in that commit,
    /// deleted by the sealer that chains them (`store::audit_chain`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_pending")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub team: String,
        /// The smallest sequence number among its records.
        pub first_seq: i64,
        /// `seq:key-version:mac-in-hex`, comma-separated.
        pub entries: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_chain_run {
    use sea_orm::entity::prelude::*;

    /// The places the sealer gave one team's records in one sealing batch, written once
    /// (`store::audit_chain` reads and writes `places`).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_chain_runs")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team: String,
        /// The smallest and largest sequence numbers of its records.
        #[sea_orm(primary_key, auto_increment = false)]
        pub first_seq: i64,
        pub last_seq: i64,
        /// The first and last of its places (0 and 0 when all its records are at place 0).
        pub first_pos: i64,
        pub last_pos: i64,
        /// `seq:pos:chain-mac-in-hex`, comma-separated, in chain order (a record at place 0,
        /// refused when it was sealed, has an empty MAC).
        pub places: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod audit_chain {
    use sea_orm::entity::prelude::*;

    /// One team's audit chain: its head (the last sealed position and its chained MAC) and its
    /// checkpoint (the last pruned position and its chained MAC), under `mac`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_chains")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team: String,
        pub pos: i64,
        pub chain_mac: Vec<u8>,
        pub checkpoint_pos: i64,
        pub checkpoint_mac: Vec<u8>,
        pub key_id: i32,
        pub mac: Vec<u8>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `row` as an insert writes it: every value, but an auto-increment key is left to the
/// database (whatever `row` holds there).
pub(super) fn new_row<A: ActiveModelTrait>(row: impl IntoActiveModel<A>) -> A {
    let mut row = row.into_active_model();
    for column in generated_key::<A::Entity>() {
        row.not_set(column);
    }
    row
}

/// The columns of `E` an insert writes (every one but an auto-increment key), by name, for a
/// statement written as text (`Tx::append_change`).
pub(super) fn inserted_columns<E: EntityTrait>() -> Vec<&'static str> {
    let generated: Vec<&str> = generated_key::<E>().map(|c| c.as_str()).collect();
    E::Column::iter()
        .map(|c| c.as_str())
        .filter(|c| !generated.contains(c))
        .collect()
}

/// A row's values for [`inserted_columns`], in their order.
pub(super) fn inserted_values<A: ActiveModelTrait>(row: A) -> Vec<Value> {
    let generated: Vec<&str> = generated_key::<A::Entity>().map(|c| c.as_str()).collect();
    <A::Entity as EntityTrait>::Column::iter()
        .filter(|c| !generated.contains(&c.as_str()))
        .filter_map(|c| row.get(c).into_value())
        .collect()
}

/// `rows` as one JSON array of objects, each column an `inserted_columns` name (binary values
/// in PostgreSQL's hex form, `\x..`): what `json_populate_recordset` reads into the table's
/// own row type, so a statement of one text takes any number of rows (PostgreSQL).
pub(super) fn rows_as_json<A: ActiveModelTrait>(rows: Vec<A>) -> Result<String, sea_orm::DbErr> {
    use sea_orm::sea_query::Value as V;
    let columns = inserted_columns::<A::Entity>();
    let mut array = Vec::with_capacity(rows.len());
    for row in rows {
        let mut object = serde_json::Map::with_capacity(columns.len());
        for (column, value) in columns.iter().zip(inserted_values(row)) {
            let value = match value {
                V::String(Some(text)) => serde_json::Value::String(text),
                V::BigInt(Some(n)) => n.into(),
                V::Int(Some(n)) => n.into(),
                V::Bytes(Some(bytes)) => {
                    serde_json::Value::String(format!("\\x{}", crate::text::hex(&bytes)))
                }
                V::String(None) | V::BigInt(None) | V::Int(None) | V::Bytes(None) => {
                    serde_json::Value::Null
                }
                other => {
                    return Err(sea_orm::DbErr::Custom(format!(
                        "column {column}: {other:?} has no JSON form here"
                    )));
                }
            };
            object.insert((*column).to_owned(), value);
        }
        array.push(serde_json::Value::Object(object));
    }
    Ok(serde_json::Value::Array(array).to_string())
}

/// The key columns of `E` the database assigns (none unless its key is auto-increment).
fn generated_key<E: EntityTrait>() -> impl Iterator<Item = E::Column> {
    E::PrimaryKey::iter()
        .filter(|_| E::PrimaryKey::auto_increment())
        .map(|key| key.into_column())
}

/// A team's policy for one service; no row: ALLOWED.
pub mod service_policy {
    use sea_orm::entity::prelude::*;

    use crate::store::ServicePolicy;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "service_policies")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub team: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub service: String,
        pub policy: ServicePolicy,
        pub updated_by: String,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A developer's request to install a service that requires approval.
pub mod installation_request {
    use sea_orm::entity::prelude::*;

    use crate::store::RequestState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "installation_requests")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team: String,
        pub service: String,
        pub requester: String,
        pub state: RequestState,
        /// Why the requester asks.
        pub reason: String,
        pub decided_by: Option<String>,
        /// Why an admin denied it, or what ended it.
        pub decision: Option<String>,
        pub create_time: i64,
        pub update_time: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_as_json_names_every_inserted_column_and_writes_bytes_in_hex() {
        let row = super::audit_event::Model {
            key_id: Some(3),
            mac: Some(vec![0x0a, 0xff]),
            reason: None,
            ..crate::domain::test_support::audit_row()
        };
        let json = rows_as_json(vec![new_row::<audit_event::ActiveModel>(row)]).expect("json");
        let rows: serde_json::Value = serde_json::from_str(&json).expect("parses");
        let row = &rows[0];
        let mut names: Vec<&str> = row
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        let mut columns = inserted_columns::<audit_event::Entity>();
        columns.sort_unstable();
        assert_eq!(
            names, columns,
            "every inserted column, not the generated seq"
        );
        assert_eq!(row["mac"], "\\x0aff");
        assert_eq!(row["key_id"], 3);
        assert_eq!(row["time"], 1);
        assert_eq!(row["reason"], serde_json::Value::Null);
        assert_eq!(row["action"], "installed_app.create");
    }
}
