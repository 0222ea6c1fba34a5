//! The browser side of sign-in through an identity provider: the link on
//! the login page (`GET /oauth/federated/start`) and the provider's
//! redirect back (`GET /oauth/federated/{name}/callback`). The work is in
//! `federated_sign_in.rs`.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_core::PeerAddr;
use serde::Deserialize;

use crate::browser::{safe_continue, signed_in};
use crate::federated_sign_in::{Callback, SignInError};
use crate::http::{AsState, source};
use crate::pages::{html_response, message_page, see_other};
use crate::read_cookie;
use crate::server::random_token;

#[derive(Deserialize)]
pub(crate) struct Start {
    provider: Option<String>,
    #[serde(rename = "continue")]
    continue_to: Option<String>,
}

fn refused_page(error: &SignInError) -> Response {
    let status = match error {
        SignInError::Unavailable => StatusCode::BAD_GATEWAY,
        SignInError::Server(_) => StatusCode::INTERNAL_SERVER_ERROR,
        SignInError::Refused(_) | SignInError::Superseded => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    html_response(status, message_page("Sign-in failed", &error.to_string()))
}

/// Sends the browser to the provider, remembering the sign-in.
pub(crate) async fn start(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    Query(query): Query<Start>,
) -> Response {
    let now = state.clock.now();
    // Each start stores a pending sign-in: limited per source before
    // anything is stored, as `/authorize` is.
    let source = source(peer);
    if let Err(wait_ms) = state
        .server
        .federated_starts
        .attempt(source.as_deref().unwrap_or("unknown"), now)
    {
        let retry_after_secs = gatehouse_core::retry_after_secs(wait_ms);
        let mut response = html_response(
            StatusCode::TOO_MANY_REQUESTS,
            message_page(
                "Too many requests",
                &format!(
                    "Too many sign-ins were started from your network just now. Try again in \
                     {retry_after_secs} seconds."
                ),
            ),
        );
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(retry_after_secs),
        );
        return response;
    }
    let continue_to = query.continue_to.unwrap_or_default();
    if !safe_continue(&continue_to) {
        return html_response(
            StatusCode::BAD_REQUEST,
            message_page("Request refused", "The sign-in link was altered."),
        );
    }
    // A fresh binding each time: adopting one the browser presents would
    // let a program that can set this host's cookies (plain-http loopback)
    // fix it in advance. (A second sign-in started in another tab takes
    // the binding over: the first one's callback then fails.)
    let Ok(binding) = random_token(32) else {
        return refused_page(&SignInError::Unavailable);
    };
    let Ok(cookie) = state.server.config().cookies.set_federated(&binding) else {
        return refused_page(&SignInError::Unavailable);
    };
    let provider = query.provider.unwrap_or_default();
    match state
        .server
        .begin_federated_sign_in(&provider, &continue_to, &binding, now)
        .await
    {
        // The callback is bound to this browser by a cookie of its own,
        // set with the redirect to the provider.
        Ok(url) => {
            let mut response = see_other(&url);
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, cookie);
            response
        }
        Err(error) => refused_page(&error),
    }
}

/// The provider's answer: the person signed in, or told why not.
pub(crate) async fn callback(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(callback): Query<Callback>,
) -> Response {
    let now = state.clock.now();
    let cookies = &state.server.config().cookies;
    let secret = read_cookie(&headers, cookies.federated_cookie_name());
    let source = source(peer);
    match state
        .server
        .finish_federated_sign_in(&name, &callback, secret.as_deref(), now)
        .await
    {
        Ok((user, continue_to)) => {
            if let Err(e) = state
                .server
                .audit_login(
                    &user.username,
                    &format!("identity_provider:{name}"),
                    true,
                    source.clone(),
                    now,
                )
                .await
            {
                return crate::browser::failure_page(&e);
            }
            let previous = read_cookie(&headers, cookies.session_cookie_name());
            let earlier = crate::browser::Earlier {
                session: previous.as_deref(),
                source,
            };
            let mut response = signed_in(&state, &user, &continue_to, earlier, now).await;
            // Its sign-in done, the binding goes. Only then: a callback
            // without a pending sign-in (anyone can send a browser to one)
            // must not end a sign-in in progress.
            response
                .headers_mut()
                .append(axum::http::header::SET_COOKIE, cookies.clear_federated());
            response
        }
        Err(error) => {
            // The name as Debug and cut: anyone can put 64 KiB in the path.
            let shown: String = name.chars().take(64).collect();
            tracing::info!(provider = ?shown, reason = error.code(), "sign-in through an identity provider refused");
            if let Err(e) = state
                .server
                .audit_federated_failure(&name, error.code(), source, now)
                .await
            {
                return crate::browser::failure_page(&e);
            }
            refused_page(&error)
        }
    }
}
