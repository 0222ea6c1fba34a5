//! The pages a person sees: the authorization endpoint with its login and
//! consent forms, and the device verification page (RFC 8628 §3.3).
//!
//! Every form carries a CSRF token bound to this browser's CSRF cookie, to
//! its session (every form but the sign-in form) and to what the form
//! decides (one pending request, or the device page).
//! Every answer to a POST is 303 (RFC 9700 §4.12), and every page is sent
//! with the anti-framing headers of `pages::html_response`.

use std::sync::Arc;

use axum::Extension;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use gatehouse_core::{PeerAddr, Timestamp};
use gatehouse_store::UserRecord;

use crate::authorize::{AuthorizationRequest, AuthorizeError};
use crate::device::{UserCodeError, display_user_code, normalize_user_code};
use crate::http::{AsState, param, parse_form, source};
use crate::login::{LoginError, SESSION_TTL_MS};
use crate::login_lockout::LoginLock;
use crate::pages::{
    ConsentPage, DeviceConfirmPage, DeviceEntryPage, LoginPage, consent_page, device_confirm_page,
    device_entry_page, html_response, login_page, message_page, see_other, sign_out_page,
};
use crate::server::{AuthorizationServer, random_token};
use crate::{OAuthError, read_cookie, routes};

pub(crate) fn router() -> Router<Arc<AsState>> {
    Router::new()
        .route(routes::AUTHORIZE, get(authorize))
        .route(routes::AUTHORIZE_CONTINUE, get(authorize_continue))
        .route(routes::LOGIN, axum::routing::post(login))
        .route(routes::FEDERATED_START, get(crate::federated_pages::start))
        .route(
            routes::FEDERATED_CALLBACK,
            get(crate::federated_pages::callback),
        )
        .route(routes::CONSENT, axum::routing::post(consent))
        .route(routes::LOGOUT, get(logout_page).post(logout))
        .route(routes::DEVICE, get(device_page).post(device_entry))
        .route(routes::DEVICE_CONFIRM, axum::routing::post(device_confirm))
        .route(
            routes::APPROVAL,
            get(crate::approval_pages::show).post(crate::approval_pages::decide),
        )
}

/// What a page needs to know about the browser asking for it.
pub(crate) struct Browser {
    /// The CSRF cookie; a new one is made (and set) when absent.
    pub(crate) csrf_secret: String,
    pub(crate) new_csrf_cookie: bool,
    pub(crate) session: Option<String>,
}

pub(crate) fn browser(state: &AsState, headers: &HeaderMap) -> Result<Browser, OAuthError> {
    let cookies = &state.server.config().cookies;
    let existing = read_cookie(headers, cookies.csrf_cookie_name()).filter(|c| c.len() >= 32);
    let (csrf_secret, new_csrf_cookie) = match existing {
        Some(secret) => (secret, false),
        None => (random_token(32)?, true),
    };
    Ok(Browser {
        csrf_secret,
        new_csrf_cookie,
        session: read_cookie(headers, cookies.session_cookie_name()),
    })
}

/// The CSRF cookie of a POST; without one the form cannot be genuine.
pub(crate) fn posted_csrf_secret(state: &AsState, headers: &HeaderMap) -> Option<String> {
    read_cookie(headers, state.server.config().cookies.csrf_cookie_name())
}

pub(crate) fn with_csrf_cookie(
    state: &AsState,
    browser: &Browser,
    mut response: Response,
) -> Response {
    if browser.new_csrf_cookie {
        match state.server.config().cookies.set_csrf(&browser.csrf_secret) {
            Ok(value) => {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Err(_) => return server_error_page(),
        }
    }
    response
}

pub(crate) fn server_error_page() -> Response {
    html_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        message_page(
            "Something went wrong",
            "The server could not complete the request. Please try again.",
        ),
    )
}

pub(crate) fn failure_page(error: &OAuthError) -> Response {
    match error {
        OAuthError::TemporarilyUnavailable(detail) => {
            tracing::error!(error = %detail, "authorization page failure");
            html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                message_page(
                    "Temporarily unavailable",
                    "The authorization server cannot reach its storage right now. Nothing was decided; please try again shortly.",
                ),
            )
        }
        OAuthError::ServerError(detail) => {
            tracing::error!(error = %detail, "authorization page failure");
            server_error_page()
        }
        other => html_response(
            StatusCode::BAD_REQUEST,
            message_page("Request refused", &other.to_string()),
        ),
    }
}

pub(crate) fn forged_form_page() -> Response {
    html_response(
        StatusCode::FORBIDDEN,
        message_page(
            "Form expired",
            "This form was not issued to this browser, or it has expired. Go back to the application and start again.",
        ),
    )
}

fn continue_path(txn: &str) -> String {
    format!("{}?txn={txn}", routes::AUTHORIZE_CONTINUE)
}

/// Where the login form may send the browser afterwards: only our own
/// pages, never an absolute or protocol-relative URL (no open redirect).
pub(crate) fn safe_continue(path: &str) -> bool {
    let own = path.starts_with(&format!("{}?txn=", routes::AUTHORIZE_CONTINUE))
        || path == routes::DEVICE
        || path.starts_with(&format!("{}?", routes::DEVICE))
        || crate::approval_pages::is_approval_path(path);
    own && !path.contains("//") && !path.contains('\\') && path.len() <= 512
}

fn login_purpose(continue_to: &str) -> String {
    format!("login:{continue_to}")
}

fn consent_purpose(txn: &str) -> String {
    format!("consent:{txn}")
}

const DEVICE_PURPOSE: &str = "device";

/// One sign-out token per browser: the sign-out form is the same on every
/// page, and logging out is all it can do.
const LOGOUT_PURPOSE: &str = "logout";

pub(crate) fn sign_out_csrf(state: &AsState, browser: &Browser) -> String {
    state.server.csrf_token(
        &browser.csrf_secret,
        browser.session.as_deref(),
        LOGOUT_PURPOSE,
    )
}

fn device_confirm_purpose(user_code: &str) -> String {
    format!("device:{user_code}")
}

pub(crate) fn login_form(
    state: &AsState,
    browser: &Browser,
    continue_to: &str,
    client_name: Option<&str>,
    error: Option<&str>,
    username: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = state
        .server
        .csrf_token(&browser.csrf_secret, None, &login_purpose(continue_to));
    let providers = state.server.identity_providers.sign_in_providers();
    let page = login_page(&LoginPage {
        csrf: &csrf,
        continue_to,
        client_name,
        error,
        username,
        providers: &providers,
        local_login: state.server.config().local_login,
    });
    with_csrf_cookie(state, browser, html_response(status, page))
}

fn scope_descriptions(scopes: &[String]) -> Vec<(String, String)> {
    scopes
        .iter()
        .map(|s| {
            let description = match s.as_str() {
                "tools:read" => "Use read-only tools (read files, search data)".to_string(),
                "tools:web" => "Fetch web pages from allowed hosts".to_string(),
                "tools:write" => {
                    "Use tools that change things (write files, send email, run code)".to_string()
                }
                "tools:admin" => "Use administrative tools (secrets, server settings)".to_string(),
                other => match other.strip_prefix("tool:") {
                    Some(tool) => format!("Use the {tool} tool"),
                    None => other.to_string(),
                },
            };
            (s.clone(), description)
        })
        .collect()
}

/// Whether a browser sent to `url` sends it the cookies Gatehouse set:
/// cookies are kept apart by host, not by port or scheme (RFC 6265 §8.5),
/// so every URL on Gatehouse's own host gets them.
fn shares_our_cookies(issuer: &str, url: &str) -> bool {
    match (url::Url::parse(issuer), url::Url::parse(url)) {
        (Ok(ours), Ok(theirs)) => ours
            .host_str()
            .zip(theirs.host_str())
            .is_some_and(|(a, b)| a.eq_ignore_ascii_case(b)),
        _ => false,
    }
}

/// Sends the browser to a client's redirect URI. A native client listening
/// on `http://127.0.0.1:<port>/callback` next to Gatehouse at
/// `http://127.0.0.1:8787` would receive the person's browser session with
/// that request (cookies ignore ports) and could then, as them, approve its
/// own operation tokens or consent to more scopes. So a redirect to
/// Gatehouse's own host ends the browser session on the server first and
/// clears both cookies in the same answer (the browser drops them before it
/// follows the redirect). The person signs in again next time; serving
/// Gatehouse on the other loopback name (`localhost` where clients use
/// `127.0.0.1`, or the other way round) keeps the sign-in.
async fn send_to_client(
    state: &AsState,
    session: Option<&str>,
    url: &str,
    source: Option<String>,
    now: Timestamp,
) -> Response {
    let mut response = see_other(url);
    if !shares_our_cookies(&state.server.config().issuer, url) {
        return response;
    }
    if let Err(e) = state.server.end_browser_session(session, source, now).await {
        return failure_page(&e);
    }
    let cookies = &state.server.config().cookies;
    let headers = response.headers_mut();
    headers.append(header::SET_COOKIE, cookies.clear_session());
    headers.append(header::SET_COOKIE, cookies.clear_csrf());
    response
}

/// After the user is known: answer at once when they already consented
/// to this client for these scopes, otherwise show the consent page.
async fn consent_or_code(
    state: &AsState,
    browser: &Browser,
    txn: &str,
    request: &AuthorizationRequest,
    user: &UserRecord,
    now: Timestamp,
) -> Response {
    match state.server.has_consent(user, request).await {
        Ok(true) => {
            return match state.server.complete_with_consent(txn, user, now).await {
                Ok(Some(url)) => {
                    send_to_client(state, browser.session.as_deref(), &url, None, now).await
                }
                Ok(None) => expired_request_page(),
                Err(e) => failure_page(&e),
            };
        }
        Ok(false) => {}
        Err(e) => return failure_page(&e),
    }
    let csrf = state.server.csrf_token(
        &browser.csrf_secret,
        browser.session.as_deref(),
        &consent_purpose(txn),
    );
    let scopes = scope_descriptions(&state.server.consent_scopes(request, user));
    let page = consent_page(&ConsentPage {
        csrf: &csrf,
        txn,
        client_name: &request.client_name,
        client_id: &request.client_id,
        redirect_host: &request.redirect_host(),
        scopes: &scopes,
        username: &user.username,
        sign_out_csrf: &sign_out_csrf(state, browser),
    });
    with_csrf_cookie(state, browser, html_response(StatusCode::OK, page))
}

fn expired_request_page() -> Response {
    html_response(
        StatusCode::BAD_REQUEST,
        message_page(
            "Request expired",
            "This authorization request has expired or was already answered. Go back to the application and start again.",
        ),
    )
}

pub(crate) async fn current_user(
    server: &AuthorizationServer,
    browser: &Browser,
    now: Timestamp,
) -> Result<Option<UserRecord>, OAuthError> {
    server.browser_user(browser.session.as_deref(), now).await
}

/// The next step for a pending request: login, consent, or the answer.
async fn proceed(state: &AsState, browser: &Browser, txn: &str, now: Timestamp) -> Response {
    let request = match state.server.pending_authorization(txn, now).await {
        Ok(Some(request)) => request,
        Ok(None) => return expired_request_page(),
        Err(e) => return failure_page(&e),
    };
    match current_user(&state.server, browser, now).await {
        Ok(Some(user)) => consent_or_code(state, browser, txn, &request, &user, now).await,
        Ok(None) => login_form(
            state,
            browser,
            &continue_path(txn),
            Some(&request.client_name),
            None,
            None,
            StatusCode::OK,
        ),
        Err(e) => failure_page(&e),
    }
}

/// GET /authorize (RFC 6749 §4.1.1).
async fn authorize(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let query: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let source = source(peer);
    let validated = state
        .server
        .validate_authorization(&query, source.as_deref(), now)
        .await;
    let request = match validated {
        Ok(request) => request,
        Err(AuthorizeError::Page(message)) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                message_page("Authorization request refused", &message),
            );
        }
        Err(AuthorizeError::RateLimited { retry_after_secs }) => {
            let mut response = html_response(
                StatusCode::TOO_MANY_REQUESTS,
                message_page(
                    "Too many requests",
                    &format!(
                        "Too many authorization requests came from your network, or for new \
                         applications, just now. Try again in {retry_after_secs} seconds."
                    ),
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            return response;
        }
        Err(AuthorizeError::Unavailable(message)) => {
            return html_response(
                StatusCode::SERVICE_UNAVAILABLE,
                message_page("Application not accepted", &message),
            );
        }
        Err(AuthorizeError::Redirect(url)) => {
            let session = read_cookie(
                &headers,
                state.server.config().cookies.session_cookie_name(),
            );
            return send_to_client(&state, session.as_deref(), &url, source, now).await;
        }
        Err(AuthorizeError::Server(e)) => return failure_page(&e),
    };
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    let txn = match state.server.begin_authorization(&request, now).await {
        Ok(txn) => txn,
        Err(e) => return failure_page(&e),
    };
    proceed(&state, &browser, &txn, now).await
}

/// GET /authorize/continue?txn=…: back from the login form.
async fn authorize_continue(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = query.unwrap_or_default();
    let txn = url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == "txn")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    proceed(&state, &browser, &txn, state.clock.now()).await
}

pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    parse_form(body).unwrap_or_default()
}

/// POST /login.
async fn login(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    if !state.server.config().local_login {
        return html_response(
            StatusCode::FORBIDDEN,
            message_page(
                "Password sign-in is off",
                "Sign in through your organisation's identity provider instead.",
            ),
        );
    }
    let form = form(&body);
    let continue_to = param(&form, "continue").unwrap_or_default();
    if !safe_continue(&continue_to) {
        return html_response(
            StatusCode::BAD_REQUEST,
            message_page("Request refused", "The login form was altered."),
        );
    }
    let csrf = param(&form, "csrf").unwrap_or_default();
    let secret = posted_csrf_secret(&state, &headers);
    if !state
        .server
        .check_csrf(secret.as_deref(), None, &login_purpose(&continue_to), &csrf)
    {
        return forged_form_page();
    }
    let username = param(&form, "username").unwrap_or_default();
    let password = param(&form, "password").unwrap_or_default();
    let browser = Browser {
        csrf_secret: secret.unwrap_or_default(),
        new_csrf_cookie: false,
        session: None,
    };
    match state
        .server
        .login(&username, &password, source(peer), now)
        .await
    {
        Ok(user) => {
            let previous = read_cookie(
                &headers,
                state.server.config().cookies.session_cookie_name(),
            );
            let earlier = Earlier {
                session: previous.as_deref(),
                source: source(peer),
            };
            signed_in(&state, &user, &continue_to, earlier, now).await
        }
        Err(LoginError::Invalid) => login_form(
            &state,
            &browser,
            &continue_to,
            None,
            Some("Incorrect username or password."),
            Some(&username),
            StatusCode::UNAUTHORIZED,
        ),
        Err(LoginError::Locked(lock)) => {
            let mut response = login_form(
                &state,
                &browser,
                &continue_to,
                None,
                Some(&locked_message(lock)),
                Some(&username),
                StatusCode::TOO_MANY_REQUESTS,
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(lock.retry_after_secs()),
            );
            response
        }
        Err(LoginError::RateLimited) => {
            let mut response = login_form(
                &state,
                &browser,
                &continue_to,
                None,
                Some("Too many sign-in attempts from your network. Try again in a few minutes."),
                Some(&username),
                StatusCode::TOO_MANY_REQUESTS,
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            response
        }
        Err(LoginError::Server(e)) => failure_page(&e),
    }
}

/// The session a browser held before it signed in (as anyone), and where
/// it signs in from.
pub(crate) struct Earlier<'a> {
    pub(crate) session: Option<&'a str>,
    pub(crate) source: Option<String>,
}

/// A browser session for `user` as the sign-in found it (its cookie set),
/// and on to `continue_to`: the end of every successful sign-in. The
/// browser's earlier session ends on the server, not only in the browser:
/// a copy of its cookie taken before must not stay good for its hours.
pub(crate) async fn signed_in(
    state: &AsState,
    user: &gatehouse_store::UserRecord,
    continue_to: &str,
    earlier: Earlier<'_>,
    now: Timestamp,
) -> Response {
    if let Err(e) = state
        .server
        .end_browser_session(earlier.session, earlier.source, now)
        .await
    {
        return failure_page(&e);
    }
    let session = match state.server.create_browser_session(user, now).await {
        Ok(session) => session,
        Err(e) => return failure_page(&e),
    };
    let cookie = match state
        .server
        .config()
        .cookies
        .set_session(&session, u64::try_from(SESSION_TTL_MS / 1000).unwrap_or(0))
    {
        Ok(cookie) => cookie,
        Err(_) => return server_error_page(),
    };
    let mut response = see_other(continue_to);
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// "30 seconds", "2 minutes": rounded up, so the user never retries early.
fn wait_text(secs: u64) -> String {
    if secs < 120 {
        format!("{secs} seconds")
    } else {
        format!("{} minutes", secs.div_ceil(60))
    }
}

/// What a locked-out person is told. The same for known and unknown names
/// (both are counted and locked alike), so it reveals nothing about who
/// exists; it says whether only this network or everyone is locked out.
fn locked_message(lock: LoginLock) -> String {
    let wait = wait_text(lock.retry_after_secs());
    match lock {
        LoginLock::Source { .. } => format!(
            "Sign-in with this name is temporarily locked for your network after too many \
             failed attempts. Try again in {wait}."
        ),
        LoginLock::Name { .. } => format!(
            "Sign-in with this name is temporarily locked for everyone after too many failed \
             attempts from many places. Try again in {wait}, or ask an administrator to lift \
             the lock (gatehouse users unlock)."
        ),
    }
}

/// POST /authorize/consent.
async fn consent(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = form(&body);
    let txn = param(&form, "txn").unwrap_or_default();
    let csrf = param(&form, "csrf").unwrap_or_default();
    let secret = posted_csrf_secret(&state, &headers);
    let session = read_cookie(
        &headers,
        state.server.config().cookies.session_cookie_name(),
    );
    if !state.server.check_csrf(
        secret.as_deref(),
        session.as_deref(),
        &consent_purpose(&txn),
        &csrf,
    ) {
        return forged_form_page();
    }
    let user = match state.server.browser_user(session.as_deref(), now).await {
        Ok(Some(user)) => user,
        // The session ended meanwhile: log in again, then decide.
        Ok(None) => return see_other(&continue_path(&txn)),
        Err(e) => return failure_page(&e),
    };
    let approve = match param(&form, "decision").as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return html_response(
                StatusCode::BAD_REQUEST,
                message_page("Request refused", "No decision was made."),
            );
        }
    };
    match state
        .server
        .decide_authorization(&txn, &user, approve, source(peer), now)
        .await
    {
        Ok(Some(url)) => send_to_client(&state, session.as_deref(), &url, source(peer), now).await,
        Ok(None) => expired_request_page(),
        Err(e) => failure_page(&e),
    }
}

/// GET /logout: who is signed in and the sign-out button, or that the
/// browser is signed out. Changes nothing.
async fn logout_page(State(state): State<Arc<AsState>>, headers: HeaderMap) -> Response {
    let now = state.clock.now();
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    match current_user(&state.server, &browser, now).await {
        Ok(Some(user)) => with_csrf_cookie(
            &state,
            &browser,
            html_response(
                StatusCode::OK,
                sign_out_page(&user.username, &sign_out_csrf(&state, &browser)),
            ),
        ),
        Ok(None) => html_response(
            StatusCode::OK,
            message_page(
                "Signed out",
                "You are signed out of Gatehouse. You can close this window.",
            ),
        ),
        Err(e) => failure_page(&e),
    }
}

/// POST /logout: ends the browser session on the server and clears its
/// cookie. CSRF-protected like every form, so another site cannot sign a
/// person out (or in again as someone else) behind their back.
async fn logout(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = form(&body);
    let csrf = param(&form, "csrf").unwrap_or_default();
    let secret = posted_csrf_secret(&state, &headers);
    let cookies = &state.server.config().cookies;
    let session = read_cookie(&headers, cookies.session_cookie_name());
    if !state
        .server
        .check_csrf(secret.as_deref(), session.as_deref(), LOGOUT_PURPOSE, &csrf)
    {
        return forged_form_page();
    }
    match state
        .server
        .end_browser_session(session.as_deref(), source(peer), now)
        .await
    {
        Ok(_) => {
            let mut response = see_other(routes::LOGOUT);
            let headers = response.headers_mut();
            headers.append(header::SET_COOKIE, cookies.clear_session());
            headers.append(header::SET_COOKIE, cookies.clear_csrf());
            response
        }
        Err(e) => failure_page(&e),
    }
}

fn device_continue(user_code: Option<&str>) -> String {
    match user_code.and_then(normalize_user_code) {
        Some(code) => format!("{}?user_code={}", routes::DEVICE, display_user_code(&code)),
        None => routes::DEVICE.to_string(),
    }
}

fn device_entry_form(
    state: &AsState,
    browser: &Browser,
    user: &UserRecord,
    user_code: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let csrf = state.server.csrf_token(
        &browser.csrf_secret,
        browser.session.as_deref(),
        DEVICE_PURPOSE,
    );
    let page = device_entry_page(&DeviceEntryPage {
        csrf: &csrf,
        user_code,
        error,
        username: &user.username,
        sign_out_csrf: &sign_out_csrf(state, browser),
    });
    with_csrf_cookie(state, browser, html_response(status, page))
}

/// GET /device[?user_code=…]: log in first, then enter or confirm the code.
async fn device_page(
    State(state): State<Arc<AsState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let query = query.unwrap_or_default();
    let user_code = url::form_urlencoded::parse(query.as_bytes())
        .find(|(n, _)| n == "user_code")
        .map(|(_, v)| v.into_owned());
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    let shown = user_code
        .as_deref()
        .and_then(normalize_user_code)
        .map(|c| display_user_code(&c));
    match current_user(&state.server, &browser, now).await {
        Ok(Some(user)) => device_entry_form(
            &state,
            &browser,
            &user,
            shown.as_deref(),
            None,
            StatusCode::OK,
        ),
        Ok(None) => login_form(
            &state,
            &browser,
            &device_continue(user_code.as_deref()),
            None,
            None,
            None,
            StatusCode::OK,
        ),
        Err(e) => failure_page(&e),
    }
}

/// POST /device: the user entered a code; show what it would approve.
async fn device_entry(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = form(&body);
    let csrf = param(&form, "csrf").unwrap_or_default();
    let secret = posted_csrf_secret(&state, &headers);
    let session = read_cookie(
        &headers,
        state.server.config().cookies.session_cookie_name(),
    );
    if !state
        .server
        .check_csrf(secret.as_deref(), session.as_deref(), DEVICE_PURPOSE, &csrf)
    {
        return forged_form_page();
    }
    let browser = Browser {
        csrf_secret: secret.unwrap_or_default(),
        new_csrf_cookie: false,
        session,
    };
    let user = match current_user(&state.server, &browser, now).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other(routes::DEVICE),
        Err(e) => return failure_page(&e),
    };
    let input = param(&form, "user_code").unwrap_or_default();
    let source = source(peer);
    let (device, client) = match state
        .server
        .device_for_user_code(&input, source.as_deref(), now)
        .await
    {
        Ok(found) => found,
        Err(UserCodeError::Unknown) => {
            return device_entry_form(
                &state,
                &browser,
                &user,
                None,
                Some("That code is not valid. Check it and try again."),
                StatusCode::BAD_REQUEST,
            );
        }
        Err(UserCodeError::RateLimited) => {
            return html_response(
                StatusCode::TOO_MANY_REQUESTS,
                message_page(
                    "Too many attempts",
                    "Too many codes were entered. Wait a few minutes and try again.",
                ),
            );
        }
        Err(UserCodeError::Server(e)) => return failure_page(&e),
    };
    let csrf = state.server.csrf_token(
        &browser.csrf_secret,
        browser.session.as_deref(),
        &device_confirm_purpose(&device.user_code),
    );
    let scopes: Vec<String> = device.scope.split(' ').map(str::to_string).collect();
    let scopes = scope_descriptions(&state.server.scopes_for_user(&scopes, &user.roles));
    let shown = display_user_code(&device.user_code);
    html_response(
        StatusCode::OK,
        device_confirm_page(&DeviceConfirmPage {
            csrf: &csrf,
            user_code: &shown,
            client_name: &client.name,
            client_id: &client.id,
            scopes: &scopes,
            username: &user.username,
            self_registered: client.registered_by != crate::REGISTERED_BY_OPERATOR,
            public_client: client.is_public(),
            sign_out_csrf: &sign_out_csrf(&state, &browser),
        }),
    )
}

/// POST /device/confirm: the user's decision.
async fn device_confirm(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let form = form(&body);
    let Some(code) = param(&form, "user_code")
        .as_deref()
        .and_then(normalize_user_code)
    else {
        return forged_form_page();
    };
    let csrf = param(&form, "csrf").unwrap_or_default();
    let secret = posted_csrf_secret(&state, &headers);
    let session = read_cookie(
        &headers,
        state.server.config().cookies.session_cookie_name(),
    );
    if !state.server.check_csrf(
        secret.as_deref(),
        session.as_deref(),
        &device_confirm_purpose(&code),
        &csrf,
    ) {
        return forged_form_page();
    }
    let user = match state.server.browser_user(session.as_deref(), now).await {
        Ok(Some(user)) => user,
        Ok(None) => return see_other(routes::DEVICE),
        Err(e) => return failure_page(&e),
    };
    let approve = param(&form, "decision").as_deref() == Some("approve");
    let source = source(peer);
    let device = match state
        .server
        .device_for_user_code(&code, source.as_deref(), now)
        .await
    {
        Ok((device, _)) => device,
        Err(UserCodeError::Server(e)) => return failure_page(&e),
        Err(_) => return expired_request_page(),
    };
    match state
        .server
        .decide_device(&device, &user, approve, source, now)
        .await
    {
        Ok(true) if approve => html_response(
            StatusCode::OK,
            message_page(
                "Device approved",
                "The device is now signed in. You can close this window and return to it.",
            ),
        ),
        Ok(true) => html_response(
            StatusCode::OK,
            message_page(
                "Request denied",
                "The device was not given access. You can close this window.",
            ),
        ),
        Ok(false) => expired_request_page(),
        Err(e) => failure_page(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_rounded_up_to_what_a_person_reads() {
        assert_eq!(wait_text(30), "30 seconds");
        assert_eq!(wait_text(119), "119 seconds");
        assert_eq!(wait_text(120), "2 minutes");
        assert_eq!(wait_text(121), "3 minutes");
        assert_eq!(wait_text(900), "15 minutes");
    }

    #[test]
    fn the_login_form_continues_only_to_our_own_pages() {
        assert!(safe_continue("/authorize/continue?txn=abc"));
        assert!(safe_continue("/device"));
        assert!(safe_continue("/device?user_code=BCDF-GHJK"));
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "/device//evil",
            "/authorize?client_id=x",
            "/devicex",
            "",
        ] {
            assert!(!safe_continue(bad), "{bad}");
        }
    }
}
