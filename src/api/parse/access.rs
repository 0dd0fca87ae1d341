//! Requests of `AccessService` (issue 25).

use std::collections::BTreeSet;

use super::{checked, optional_etag};
use crate::domain::policy::ServicePolicy;
use crate::domain::types::{AppName, Owner, ParentRef};
use crate::domain::usable_by::{MAX_USABLE_BY, MAX_USABLE_BY_CHARS, UsableBy};
use crate::domain::{Error, Violations};
use crate::pb;

/// SetInstalledAppUsableBy.
pub struct SetUsableBy {
    pub name: AppName,
    /// `None`: every developer of the team may use the app again.
    pub usable: Option<UsableBy>,
    pub etag: Option<String>,
    pub validate_only: bool,
}

/// Names of subjects or groups: 1-256 characters, none a control, bidirectional or line
/// separator character (they are shown and logged).
fn names(v: &mut Violations, field: &str, values: Vec<String>) -> BTreeSet<String> {
    for (i, value) in values.iter().enumerate() {
        let len = value.chars().count();
        if len == 0 || len > MAX_USABLE_BY_CHARS || crate::text::has_unsafe_char(value) {
            v.check::<()>(
                &format!("{field}[{i}]"),
                Err("must be 1-256 characters, none of them control or bidirectional".into()),
            );
        }
    }
    values.into_iter().collect()
}

impl TryFrom<pb::SetInstalledAppUsableByRequest> for SetUsableBy {
    type Error = Error;

    fn try_from(req: pb::SetInstalledAppUsableByRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", AppName::parse(&req.name));
        if req.subjects.len() + req.groups.len() > MAX_USABLE_BY {
            v.check::<()>(
                "subjects",
                Err("at most 100 subjects and groups together".into()),
            );
        }
        let subjects = names(&mut v, "subjects", req.subjects);
        let groups = names(&mut v, "groups", req.groups);
        v.finish()?;
        let usable =
            (!subjects.is_empty() || !groups.is_empty()).then_some(UsableBy { subjects, groups });
        Ok(SetUsableBy {
            name: checked(name)?,
            usable,
            etag: optional_etag(&req.etag),
            validate_only: req.validate_only,
        })
    }
}

/// TransferOwnership and DeprovisionPerson: the person handing over and the one taking over.
pub struct Handover {
    pub parent: ParentRef,
    pub from: Owner,
    pub to: Owner,
    pub validate_only: bool,
}

fn handover(
    parent: &str,
    (from_field, from): (&str, &str),
    (to_field, to): (&str, &str),
    validate_only: bool,
) -> Result<Handover, Error> {
    let mut v = Violations::default();
    let parent = v.check("parent", ParentRef::parse(parent));
    let from = v.check(from_field, Owner::parse(from));
    let to = v.check(to_field, Owner::parse(to));
    v.finish()?;
    Ok(Handover {
        parent: checked(parent)?,
        from: checked(from)?,
        to: checked(to)?,
        validate_only,
    })
}

impl TryFrom<pb::TransferOwnershipRequest> for Handover {
    type Error = Error;

    fn try_from(req: pb::TransferOwnershipRequest) -> Result<Self, Error> {
        let from = ("from_owner", req.from_owner.as_str());
        handover(
            &req.parent,
            from,
            ("to_owner", &req.to_owner),
            req.validate_only,
        )
    }
}

impl TryFrom<pb::DeprovisionPersonRequest> for Handover {
    type Error = Error;

    fn try_from(req: pb::DeprovisionPersonRequest) -> Result<Self, Error> {
        let from = ("subject", req.subject.as_str());
        handover(
            &req.parent,
            from,
            ("successor", &req.successor),
            req.validate_only,
        )
    }
}

/// SetServicePolicy.
pub struct SetPolicy {
    pub parent: ParentRef,
    pub service: String,
    pub policy: ServicePolicy,
    pub validate_only: bool,
}

fn policy(value: i32) -> Result<ServicePolicy, String> {
    match pb::ServicePolicy::try_from(value) {
        Ok(pb::ServicePolicy::Allowed) => Ok(ServicePolicy::Allowed),
        Ok(pb::ServicePolicy::ApprovalRequired) => Ok(ServicePolicy::ApprovalRequired),
        Ok(pb::ServicePolicy::Blocked) => Ok(ServicePolicy::Blocked),
        Ok(pb::ServicePolicy::Unspecified) => Err("is required".into()),
        Err(_) => Err("is not a known policy".into()),
    }
}

impl TryFrom<pb::SetServicePolicyRequest> for SetPolicy {
    type Error = Error;

    fn try_from(req: pb::SetServicePolicyRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        if req.service.is_empty() {
            v.check::<()>("service", Err("is required".into()));
        }
        let policy = v.check("policy", policy(req.policy));
        v.finish()?;
        Ok(SetPolicy {
            parent: checked(parent)?,
            service: req.service,
            policy: checked(policy)?,
            validate_only: req.validate_only,
        })
    }
}
