//! The OAuth callback, `GET /oauth/callback` on `INTEGRATION_HUB_HTTP_LISTEN`: the browser
//! arrives from the provider with `state` and `code` (or `error`). The authorization is
//! completed as CompleteInstalledAppAuthorization would, and the browser is sent to the
//! return URL given at start (checked then against the allowed origins: never one taken from
//! this request) or shown a small page. The page and the redirect never carry the code or the
//! state; responses are not cached and send no referrer.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::domain::oauth::{Authorization, AuthorizationState};
use crate::domain::{Error, Hub};

/// Serves the callback on `listener` until `stop` flips.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let router = axum::Router::new()
        .route("/oauth/callback", axum::routing::get(callback))
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

async fn callback(
    State(hub): State<Arc<Hub>>,
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
    match hub
        .complete_authorization(None, &request.state, request.completion)
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
        Err(Error::NotFound { .. }) => page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "This sign-in is unknown or expired; start again.",
        ),
        Err(Error::FailedPrecondition { message, .. }) => {
            page(StatusCode::BAD_REQUEST, "Authorization failed", &message)
        }
        Err(err) => {
            tracing::error!(error = %err, "the OAuth callback failed");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Authorization failed",
                "The service could not finish the sign-in; start again.",
            )
        }
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
