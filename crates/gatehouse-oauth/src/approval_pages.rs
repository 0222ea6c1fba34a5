//! The approval page: where the human a call is made for (or an admin of
//! its tenant) sees who asks, which tool, the exact arguments and the
//! task, and approves or denies. Behind the same login, CSRF and
//! anti-framing rules as the consent page.

use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use gatehouse_authz::{ApprovalError, Approvals, Decider, SharedPolicy, decision_event};
use gatehouse_core::{PeerAddr, Timestamp};
use gatehouse_store::{AccountSeen, ApprovalRecord, UserRecord};

use crate::browser::{
    Browser, browser, current_user, failure_page, forged_form_page, form, login_form,
    sign_out_csrf, with_csrf_cookie,
};
use crate::http::{AsState, param, source};
use crate::pages::{ApprovalPage, approval_page, approved_page, html_response, message_page};
use crate::routes;

/// What the approval pages need beyond the authorization server.
pub struct ApprovalPages {
    pub approvals: Arc<Approvals>,
    /// To tell which of a user's roles make them an admin of their tenant.
    pub policy: Arc<SharedPolicy>,
    /// How long an operation token lives, to say so on the page.
    pub token_minutes: i64,
}

/// `/approvals/apr_…` with nothing else: the only approval path the login
/// form may return to.
pub(crate) fn is_approval_path(path: &str) -> bool {
    path.strip_prefix(routes::APPROVALS_PREFIX)
        .is_some_and(valid_id)
}

fn valid_id(id: &str) -> bool {
    id.starts_with(gatehouse_authz::APPROVAL_PREFIX)
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn purpose(id: &str) -> String {
    format!("approval:{id}")
}

fn decider(pages: &ApprovalPages, user: &UserRecord) -> Decider {
    Decider::User {
        username: user.username.clone(),
        tenant: user.tenant.clone(),
        admin: pages.policy.current().is_tenant_admin(&user.roles),
        account: AccountSeen {
            password_hash: user.password_hash.clone(),
            roles: user.roles.clone(),
        },
    }
}

fn not_found() -> Response {
    html_response(
        StatusCode::NOT_FOUND,
        message_page(
            "No such request",
            "There is no approval request with this id that you may see.",
        ),
    )
}

fn approval_error_page(error: &ApprovalError) -> Response {
    match error {
        ApprovalError::NotFound => not_found(),
        ApprovalError::Forbidden => html_response(
            StatusCode::FORBIDDEN,
            message_page(
                "Not yours to decide",
                "Only the person this call is made for, or an admin of the tenant, may decide it.",
            ),
        ),
        ApprovalError::NotPending => html_response(
            StatusCode::CONFLICT,
            message_page(
                "Already decided",
                "This request was already decided, or it expired. Nothing was changed.",
            ),
        ),
        ApprovalError::AccountChanged => html_response(
            StatusCode::CONFLICT,
            message_page(
                "Sign in again",
                "Your account changed (its password, roles or access) while you decided. Nothing was decided.",
            ),
        ),
        // Filed by callers, never by deciding on a page.
        ApprovalError::TooManyPending { .. } => not_found(),
        ApprovalError::Store(e) => failure_page(&crate::server::unavailable(e)),
        ApprovalError::Random(e) => failure_page(&crate::OAuthError::ServerError(e.clone())),
    }
}

/// The arguments as the approver reads them: pretty JSON in which every
/// character that is invisible or reorders the text around it (bidi
/// overrides and isolates, zero-width characters, line separators) is
/// written as its JSON escape (`\u202e`). The text still reads as the same
/// JSON value, but a string can no longer show the human one thing while
/// the call runs another ("Trojan Source").
fn pretty(arguments: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(arguments)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
    {
        Some(json) => gatehouse_core::escape_json_for_display(&json).into_owned(),
        None => gatehouse_core::escape_for_display(arguments).into_owned(),
    }
}

fn page(
    state: &AsState,
    browser: &Browser,
    viewer: &UserRecord,
    approval: &ApprovalRecord,
    now: Timestamp,
) -> Response {
    let action = format!("{}{}", routes::APPROVALS_PREFIX, approval.id);
    let csrf = state.server.csrf_token(
        &browser.csrf_secret,
        browser.session.as_deref(),
        &purpose(&approval.id),
    );
    let expires = time::OffsetDateTime::from_unix_timestamp(approval.expires_at.as_secs())
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let html = approval_page(&ApprovalPage {
        csrf: &csrf,
        action: &action,
        id: &approval.id,
        agent: &approval.agent,
        human: approval.human.as_deref(),
        human_issuer: approval.human_issuer.as_deref(),
        tenant: &approval.tenant,
        tool: &approval.tool,
        task: approval.task.as_deref(),
        arguments: &pretty(&approval.arguments),
        arguments_hash: &approval.arguments_hash,
        masked_fields: &approval.masked_fields,
        status: approval.state(now),
        expires: &expires,
        viewer: &viewer.username,
        sign_out_csrf: &sign_out_csrf(state, browser),
    });
    with_csrf_cookie(state, browser, html_response(StatusCode::OK, html))
}

/// GET /approvals/{id}: log in first, then the request and its buttons.
pub(crate) async fn show(
    State(state): State<Arc<AsState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let now = state.clock.now();
    let Some(pages) = state.server.approvals.as_ref() else {
        return not_found();
    };
    if !valid_id(&id) {
        return not_found();
    }
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    let user = match current_user(&state.server, &browser, now).await {
        Ok(Some(user)) => user,
        Ok(None) => {
            let back = format!("{}{id}", routes::APPROVALS_PREFIX);
            return login_form(&state, &browser, &back, None, None, None, StatusCode::OK);
        }
        Err(e) => return failure_page(&e),
    };
    match pages.approvals.get(&id, &decider(pages, &user)).await {
        Ok(approval) => page(&state, &browser, &user, &approval, now),
        Err(e) => approval_error_page(&e),
    }
}

/// POST /approvals/{id}: the decision. Approving shows the operation
/// token once; both outcomes are audited.
pub(crate) async fn decide(
    State(state): State<Arc<AsState>>,
    Path(id): Path<String>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = state.clock.now();
    let Some(pages) = state.server.approvals.as_ref() else {
        return not_found();
    };
    if !valid_id(&id) {
        return not_found();
    }
    let form = form(&body);
    let csrf = param(&form, "csrf").unwrap_or_default();
    let browser = match browser(&state, &headers) {
        Ok(browser) => browser,
        Err(e) => return failure_page(&e),
    };
    // A new CSRF cookie means the browser sent none: the form is forged.
    if browser.new_csrf_cookie
        || !state.server.check_csrf(
            Some(&browser.csrf_secret),
            browser.session.as_deref(),
            &purpose(&id),
            &csrf,
        )
    {
        return forged_form_page();
    }
    let user = match current_user(&state.server, &browser, now).await {
        Ok(Some(user)) => user,
        Ok(None) => return forged_form_page(),
        Err(e) => return failure_page(&e),
    };
    let approve = match param(&form, "decision").as_deref() {
        Some("approve") => true,
        Some("deny") => false,
        _ => {
            return html_response(
                StatusCode::BAD_REQUEST,
                message_page("Request refused", "The form was altered."),
            );
        }
    };
    let decided = match pages
        .approvals
        .decide(&id, approve, &decider(pages, &user), now)
        .await
    {
        Ok(decided) => decided,
        Err(e) => return approval_error_page(&e),
    };
    let approval = &decided.approval;
    let event = decision_event(approval, &user.username, approve, source(peer), now);
    if let Err(e) = state.server.record(event).await {
        return failure_page(&e);
    }
    match decided.token {
        Some(token) => html_response(
            StatusCode::OK,
            approved_page(&approval.id, &approval.tool, &token, pages.token_minutes),
        ),
        None => html_response(
            StatusCode::OK,
            message_page(
                "Denied",
                "The call was denied; the agent's retry will be refused. You may close this window.",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    #[test]
    fn arguments_show_reordering_and_invisible_characters_as_escapes() {
        let arguments = json!({
            "sql": "SELECT 1 /* \u{202e} ; DROP TABLE users \u{2066}*/",
            "n\u{200b}ame": "a\u{2028}b\u{e0041}",
            "plain": "é 日本 😀",
        })
        .to_string();
        let shown = super::pretty(&arguments);
        assert!(
            !shown
                .chars()
                .any(|c| c != '\n' && gatehouse_core::is_unsafe_to_show(c)),
            "{shown}"
        );
        for escape in ["\\u202e", "\\u2066", "\\u200b", "\\u2028", "\\udb40\\udc41"] {
            assert!(shown.contains(escape), "{escape}: {shown}");
        }
        assert!(shown.contains("é 日本 😀"), "{shown}");
        // What the human reads is still the value that runs.
        let read: Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(read, serde_json::from_str::<Value>(&arguments).unwrap());
        // Arguments that are not JSON are escaped as the CLI escapes them.
        assert_eq!(super::pretty("x \u{202e} y"), "x \\u{202e} y");
    }
}
