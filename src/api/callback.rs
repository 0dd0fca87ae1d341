//! The OAuth sign-in's HTTP side on `INTEGRATION_HUB_HTTP_LISTEN`:
//!
//! - `POST /oauth/start?state=...` (StartInstalledAppAuthorization's `sign_in_uri`), opened
//!   by the application in the person's browser: binds the sign-in to that browser (a
//!   short-lived HttpOnly, SameSite=Lax cookie scoped to the callback's path), once, and
//!   redirects to the provider. A page of another origin is refused (its `Origin`, else its
//!   `Referer`), and so is a plain link (a GET).
//! - `GET /oauth/callback`: the browser arrives from the provider with `state` and `code` (or
//!   `error`). The authorization is completed as CompleteInstalledAppAuthorization would,
//!   but only in the browser the sign-in was opened in (see `domain::oauth::browser`), and
//!   the browser is sent to the return URL given at start (checked then against the allowed
//!   origins: never one taken from this request) or shown a small page.
//!
//! The pages and redirects never carry the code or the state; responses are not cached and
//! send no referrer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::domain::oauth::{
    Authorization, AuthorizationState, BrowserCookies, COOKIE_PREFIX, Completer, MAX_COOKIES,
    OpenedSignIn,
};
use crate::domain::{Error, Hub};

/// Serves the callback on `listener` until `stop` flips.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let router = axum::Router::new()
        .route("/oauth/callback", axum::routing::get(callback))
        .route(
            "/oauth/start",
            axum::routing::post(open_sign_in).get(sign_in_by_link),
        )
        .with_state(hub);
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    if let Err(err) = axum::serve(listener, router)
        .with_graceful_shutdown(stopped)
        .await
    {
        tracing::error!(error = %err, "the OAuth callback listener failed");
    }
}

/// Headers of every answer: no caching, no referrer (the URL held a code), no framing, no
/// scripts.
fn guarded(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><h1>{title}</h1><p>{text}</p>\
         <p>You can close this window.</p></body></html>",
        title = escape(title),
        text = escape(text),
    );
    guarded(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

/// Sends the browser to the checked return URL with the outcome in its query.
fn redirect(return_url: &str, authorization: &Authorization) -> Option<Response> {
    let mut url = reqwest::Url::parse(return_url).ok()?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("authorization", &authorization.name.to_string());
        match (&authorization.state, &authorization.installed_app) {
            (AuthorizationState::Succeeded, Some(app)) => {
                query.append_pair("installed_app", &app.to_string());
            }
            _ => {
                query.append_pair(
                    "error",
                    authorization
                        .error
                        .as_deref()
                        .unwrap_or("the authorization failed"),
                );
            }
        }
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::LOCATION, HeaderValue::from_str(url.as_str()).ok()?);
    Some(guarded((StatusCode::SEE_OTHER, headers).into_response()))
}

/// The origin of the page a browser came from: its `Origin`, else its `Referer`'s; `None`
/// when it said neither (not a browser: a browser always sends `Origin` with a POST).
fn origin_of(headers: &HeaderMap) -> Option<String> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        return Some(origin.to_str().unwrap_or("null").to_owned());
    }
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    Some(
        reqwest::Url::parse(referer)
            .map(|url| url.origin().ascii_serialization())
            .unwrap_or_else(|_| "null".to_owned()),
    )
}

/// The sign-in cookies a browser sent (`ih_oauth_{authorization}`), at most
/// [`MAX_COOKIES`], by authorization id.
fn sign_in_cookies(headers: &HeaderMap) -> BrowserCookies {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            let id = name.strip_prefix(COOKIE_PREFIX)?;
            (id.len() <= 64 && value.len() <= 64).then(|| (id.to_owned(), value.to_owned()))
        })
        .take(MAX_COOKIES)
        .collect()
}

fn set_cookie(opened: &OpenedSignIn) -> Option<HeaderValue> {
    let secure = if opened.secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={}; Path={}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        opened.cookie_name, opened.cookie_value, opened.cookie_path, opened.max_age_secs
    ))
    .ok()
}

/// `POST /oauth/start`: binds the sign-in to this browser and sends it to the provider.
async fn open_sign_in(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let state = query.get("state").map(String::as_str).unwrap_or("");
    let Ok(state) = crate::api::parse::sign_in_state(state) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Sign-in failed",
            "This sign-in link is malformed; start again.",
        );
    };
    let origin = origin_of(&headers);
    match hub
        .authorizations()
        .open_sign_in(&state, origin.as_deref())
        .await
    {
        Ok(opened) => {
            let (Ok(location), Some(cookie)) = (
                HeaderValue::from_str(&opened.provider_uri),
                set_cookie(&opened),
            ) else {
                tracing::error!("the provider's URL or the cookie is not a header value");
                return page(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Sign-in failed",
                    "The service could not start the sign-in; start again.",
                );
            };
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, location);
            headers.insert(header::SET_COOKIE, cookie);
            guarded((StatusCode::SEE_OTHER, headers).into_response())
        }
        Err(err) => refused(err),
    }
}

/// `GET /oauth/start`: a link, which anyone could have sent; refused.
async fn sign_in_by_link() -> Response {
    page(
        StatusCode::METHOD_NOT_ALLOWED,
        "Sign-in not started",
        "A sign-in is opened by the application that started it, not by a link: start it again there.",
    )
}

/// The page of a sign-in or callback the domain refused.
fn refused(err: Error) -> Response {
    match err {
        Error::NotFound { .. } => page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "This sign-in is unknown or expired; start again.",
        ),
        Error::FailedPrecondition { message, .. } => {
            page(StatusCode::BAD_REQUEST, "Authorization failed", &message)
        }
        Error::PermissionDenied(message) => {
            page(StatusCode::FORBIDDEN, "Authorization refused", &message)
        }
        err => {
            tracing::error!(error = %err, "the OAuth callback failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Authorization failed",
                "The service could not finish the sign-in; start again.",
            )
        }
    }
}

async fn callback(
    State(hub): State<Arc<Hub>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let get = |name: &str| query.get(name).map(String::as_str).unwrap_or("");
    let parsed = crate::api::parse::oauth_completion(
        get("state"),
        get("code"),
        get("error"),
        get("error_description"),
    );
    let request = match parsed {
        Ok(request) => request,
        Err(_) => {
            return page(
                StatusCode::BAD_REQUEST,
                "Authorization failed",
                "The provider's answer is missing or malformed; start again.",
            );
        }
    };
    let cookies = sign_in_cookies(&headers);
    match hub
        .authorizations()
        .complete_authorization(
            Completer::Browser(&cookies),
            &request.state,
            request.completion,
        )
        .await
    {
        Ok(authorization) => {
            if let Some(response) = authorization
                .return_url
                .as_deref()
                .and_then(|url| redirect(url, &authorization))
            {
                return response;
            }
            match authorization.state {
                AuthorizationState::Succeeded => page(
                    StatusCode::OK,
                    "Connected",
                    &format!(
                        "\"{}\" is connected: the installed app is {}.",
                        authorization.display_name,
                        authorization
                            .installed_app
                            .map(|a| a.to_string())
                            .unwrap_or_default()
                    ),
                ),
                _ => page(
                    StatusCode::BAD_REQUEST,
                    "Authorization failed",
                    authorization.error.as_deref().unwrap_or("unknown reason"),
                ),
            }
        }
        Err(err) => refused(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_provider_text() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }
}
