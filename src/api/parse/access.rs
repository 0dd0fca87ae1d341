//! Requests of `AccessService`.

use std::collections::BTreeSet;

use super::{checked, optional_etag};
use crate::domain::policy::ServicePolicy;
use crate::domain::requests::RequestState;
use crate::domain::types::{AppName, Owner, ParentRef, RequestName};
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

/// Longest reason or decision, in characters.
const MAX_REASON_CHARS: usize = 1_000;

fn reason(value: String) -> Result<String, String> {
    if value.chars().count() > MAX_REASON_CHARS || crate::text::has_unsafe_char(&value) {
        return Err(
            "must be at most 1,000 characters, none of them control or bidirectional".into(),
        );
    }
    Ok(value)
}

/// RequestInstallation.
pub struct NewRequest {
    pub parent: ParentRef,
    pub service: String,
    pub reason: String,
}

impl TryFrom<pb::RequestInstallationRequest> for NewRequest {
    type Error = Error;

    fn try_from(req: pb::RequestInstallationRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        if req.service.is_empty() {
            v.check::<()>("service", Err("is required".into()));
        }
        let why = v.check("reason", reason(req.reason));
        v.finish()?;
        Ok(NewRequest {
            parent: checked(parent)?,
            service: req.service,
            reason: checked(why)?,
        })
    }
}

/// ListInstallationRequests.
pub struct ListRequests {
    pub parent: ParentRef,
    pub state: Option<RequestState>,
}

impl TryFrom<pb::ListInstallationRequestsRequest> for ListRequests {
    type Error = Error;

    fn try_from(req: pb::ListInstallationRequestsRequest) -> Result<Self, Error> {
        use pb::installation_request::State as S;
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let state = v.check(
            "state",
            match S::try_from(req.state) {
                Ok(S::Unspecified) => Ok(None),
                Ok(S::Pending) => Ok(Some(RequestState::Pending)),
                Ok(S::Approved) => Ok(Some(RequestState::Approved)),
                Ok(S::Denied) => Ok(Some(RequestState::Denied)),
                Ok(S::Used) => Ok(Some(RequestState::Used)),
                Ok(S::Cancelled) => Ok(Some(RequestState::Cancelled)),
                Err(_) => Err("is not a known state".to_owned()),
            },
        );
        v.finish()?;
        Ok(ListRequests {
            parent: checked(parent)?,
            state: checked(state)?,
        })
    }
}

/// ApproveInstallationRequest and DenyInstallationRequest.
pub struct Decide {
    pub name: RequestName,
    pub decision: String,
}

impl TryFrom<pb::ApproveInstallationRequestRequest> for Decide {
    type Error = Error;

    fn try_from(req: pb::ApproveInstallationRequestRequest) -> Result<Self, Error> {
        let name = RequestName::parse(&req.name).map_err(|d| Error::invalid("name", d))?;
        Ok(Decide {
            name,
            decision: String::new(),
        })
    }
}

impl TryFrom<pb::DenyInstallationRequestRequest> for Decide {
    type Error = Error;

    fn try_from(req: pb::DenyInstallationRequestRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", RequestName::parse(&req.name));
        let why = v.check("reason", reason(req.reason));
        v.finish()?;
        Ok(Decide {
            name: checked(name)?,
            decision: checked(why)?,
        })
    }
}
