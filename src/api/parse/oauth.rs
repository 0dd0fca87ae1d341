//! Requests of the OAuth 2.0 authorization methods of `InstalledAppService`.

use super::{checked, field};
use crate::domain::oauth::authorize::MAX_SCOPES;
use crate::domain::oauth::{Completion, MAX_RETURN_URL, StartAuthorization};
use crate::domain::types::{AppName, AuthorizationName, DisplayName, ParentRef};
use crate::domain::{Error, Violations};
use crate::pb;

/// Longest state accepted (the hub's are 43 characters).
const MAX_STATE: usize = 200;
/// Longest authorization code accepted.
const MAX_CODE: usize = 2000;
/// Longest provider error code accepted.
const MAX_ERROR: usize = 200;
/// Longest service id accepted before the catalog is asked.
const MAX_SERVICE: usize = 64;

/// StartInstalledAppAuthorization: where, and what to authorize.
pub struct StartAuthorizationRequest {
    pub parent: ParentRef,
    pub start: StartAuthorization,
}

fn scope(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 200 {
        return Err("each scope must be 1 to 200 characters".to_owned());
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a scope is visible ASCII without spaces".to_owned());
    }
    Ok(value.to_owned())
}

impl TryFrom<pb::StartInstalledAppAuthorizationRequest> for StartAuthorizationRequest {
    type Error = Error;

    fn try_from(req: pb::StartInstalledAppAuthorizationRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let installed_app = if req.installed_app.is_empty() {
            None
        } else {
            v.check("installed_app", AppName::parse(&req.installed_app))
        };
        if req.service.len() > MAX_SERVICE {
            v.check::<()>("service", Err("is not a service of the catalog".into()));
        } else if req.service.is_empty() && req.installed_app.is_empty() {
            v.check::<()>("service", Err("is required".into()));
        }
        let display_name = if req.display_name.is_empty() && !req.installed_app.is_empty() {
            None
        } else {
            v.check("display_name", DisplayName::parse(&req.display_name))
        };
        if req.scopes.len() > MAX_SCOPES {
            v.check::<()>("scopes", Err(format!("at most {MAX_SCOPES} scopes")));
        }
        let scopes: Vec<String> = req
            .scopes
            .iter()
            .take(MAX_SCOPES)
            .filter_map(|s| v.check("scopes", scope(s)))
            .collect();
        if req.return_url.len() > MAX_RETURN_URL {
            v.check::<()>(
                "return_url",
                Err(format!("must be at most {MAX_RETURN_URL} characters")),
            );
        }
        v.finish()?;
        Ok(StartAuthorizationRequest {
            parent: checked(parent)?,
            start: StartAuthorization {
                service: req.service,
                display_name,
                scopes,
                installed_app,
                return_url: (!req.return_url.is_empty()).then_some(req.return_url),
            },
        })
    }
}

/// CompleteInstalledAppAuthorization: the state, and the code or the provider's error.
pub struct CompleteAuthorization {
    pub state: String,
    pub completion: Completion,
}

/// A value of a redirect: at most `max` bytes, none of `crate::text::is_unsafe_char`.
fn bounded(value: &str, max: usize, required: bool) -> Result<(), String> {
    if required && value.is_empty() {
        return Err("is required".to_owned());
    }
    if value.len() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if crate::text::has_unsafe_char(value) {
        return Err(crate::text::UNSAFE_DESCRIPTION.to_owned());
    }
    Ok(())
}

/// The `state` of the hub's sign-in URL (`POST /oauth/start`), checked as a redirect's.
pub fn sign_in_state(state: &str) -> Result<String, Error> {
    let mut v = Violations::default();
    v.check("state", bounded(state, MAX_STATE, true));
    v.finish()?;
    Ok(state.to_owned())
}

/// Checks what a provider's redirect carries (also what the HTTP callback receives).
pub fn completion(
    state: &str,
    code: &str,
    error: &str,
    error_description: &str,
) -> Result<CompleteAuthorization, Error> {
    let mut v = Violations::default();
    v.check("state", bounded(state, MAX_STATE, true));
    v.check("error", bounded(error, MAX_ERROR, false));
    v.check("code", bounded(code, MAX_CODE, error.is_empty()));
    v.check("error_description", bounded(error_description, 1000, false));
    v.finish()?;
    let completion = if error.is_empty() {
        Completion::Code(code.to_owned())
    } else {
        Completion::Error(
            error.to_owned(),
            (!error_description.is_empty()).then(|| error_description.to_owned()),
        )
    };
    Ok(CompleteAuthorization {
        state: state.to_owned(),
        completion,
    })
}

impl TryFrom<pb::CompleteInstalledAppAuthorizationRequest> for CompleteAuthorization {
    type Error = Error;

    fn try_from(req: pb::CompleteInstalledAppAuthorizationRequest) -> Result<Self, Error> {
        completion(&req.state, &req.code, &req.error, "")
    }
}

impl TryFrom<pb::GetInstalledAppAuthorizationRequest> for AuthorizationName {
    type Error = Error;

    fn try_from(req: pb::GetInstalledAppAuthorizationRequest) -> Result<Self, Error> {
        field("name", AuthorizationName::parse(&req.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(err: Error) -> Vec<String> {
        match err {
            Error::Invalid(v) => v.into_iter().map(|v| v.field).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_start_names_every_bad_field() {
        let req = pb::StartInstalledAppAuthorizationRequest {
            parent: "nope".into(),
            service: String::new(),
            display_name: String::new(),
            scopes: vec!["ok".into(), "has space".into(), String::new()],
            installed_app: String::new(),
            return_url: "x".repeat(MAX_RETURN_URL + 1),
        };
        let err = StartAuthorizationRequest::try_from(req).err().unwrap();
        assert_eq!(
            fields(err),
            [
                "parent",
                "service",
                "display_name",
                "scopes",
                "scopes",
                "return_url"
            ]
        );
    }

    #[test]
    fn a_completion_needs_a_state_and_a_code_unless_the_provider_refused() {
        assert!(completion("s", "c", "", "").is_ok());
        assert!(matches!(
            completion("s", "", "access_denied", "no")
                .unwrap()
                .completion,
            Completion::Error(_, Some(_))
        ));
        assert_eq!(
            fields(completion("", "", "", "").err().unwrap()),
            ["state", "code"]
        );
        let long = "c".repeat(MAX_CODE + 1);
        assert_eq!(
            fields(completion("s", &long, "", "").err().unwrap()),
            ["code"]
        );
    }
}
