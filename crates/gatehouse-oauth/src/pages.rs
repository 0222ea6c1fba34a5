//! Server-rendered pages of the authorization server: sign-in, consent and
//! the device flow.
//!
//! Plain functions returning whole documents. Every interpolated value goes
//! through [`escape`], including values we generated ourselves, so that the
//! rule has no exceptions to remember. The pages load nothing: no external
//! scripts, styles or images, which is what lets the CSP be
//! `default-src 'none'`. Their one inline script, the double-click guard
//! ([`DECISION_GUARD`]), runs under its hash.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::routes;

/// HTML-escapes text for element content and double- or single-quoted
/// attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "\
*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
font:16px/1.5 system-ui,-apple-system,\"Segoe UI\",Roboto,sans-serif;background:#f3f4f6;color:#111827}\
main{width:100%;max-width:26rem;margin:1rem;padding:2rem;background:#fff;border-radius:.75rem;\
box-shadow:0 1px 3px rgba(0,0,0,.1),0 8px 24px rgba(0,0,0,.06)}\
h1{font-size:1.35rem;margin:0 0 .25rem}\
h2{font-size:1rem;margin:1.25rem 0 .5rem}\
p{margin:.5rem 0}\
.sub{color:#4b5563;margin-top:0}\
.error{background:#fef2f2;color:#991b1b;border:1px solid #fecaca;border-radius:.5rem;padding:.5rem .75rem}\
.note{color:#4b5563;font-size:.875rem}\
label{display:block;font-weight:600;margin:1rem 0 .25rem}\
input[type=text],input[type=password]{width:100%;padding:.6rem .75rem;font:inherit;\
border:1px solid #d1d5db;border-radius:.5rem}\
input:focus,button:focus{outline:2px solid #2563eb;outline-offset:1px}\
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;\
background:#f3f4f6;padding:.05rem .3rem;border-radius:.25rem;word-break:break-all}\
.code{display:block;text-align:center;font-size:1.6rem;letter-spacing:.15em;padding:.5rem;margin:.75rem 0}\
ul{padding-left:1.1rem;margin:.25rem 0}\
li{margin:.35rem 0}\
li span{display:block;color:#4b5563;font-size:.9rem}\
.actions{display:flex;gap:.75rem;margin-top:1.5rem}\
button{flex:1;padding:.65rem 1rem;font:inherit;font-weight:600;border-radius:.5rem;cursor:pointer;\
border:1px solid #1d4ed8;background:#2563eb;color:#fff}\
button.secondary{background:#fff;color:#111827;border-color:#d1d5db}\
@media (prefers-color-scheme:dark){body{background:#111827;color:#f9fafb}\
main{background:#1f2937}.sub,.note,li span{color:#9ca3af}code{background:#374151}\
input[type=text],input[type=password]{background:#111827;color:#f9fafb;border-color:#4b5563}\
button.secondary{background:#1f2937;color:#f9fafb;border-color:#4b5563}}";

/// A whole document around `body`, which must already be escaped HTML.
fn document(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{title} · Gatehouse</title>\n<style>{STYLE}</style>\n</head>\n\
         <body>\n<main>\n{body}</main>\n<script>{DECISION_GUARD}</script>\n</body>\n</html>\n",
        title = escape(title),
    )
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">\n",
        escape(name),
        escape(value)
    )
}

fn error_block(error: Option<&str>) -> String {
    error.map_or_else(String::new, |e| {
        format!("<p class=\"error\" role=\"alert\">{}</p>\n", escape(e))
    })
}

fn scope_list(scopes: &[(String, String)]) -> String {
    if scopes.is_empty() {
        return "<p>No specific permissions: the access its role allows by default.</p>\n"
            .to_string();
    }
    let items: String = scopes
        .iter()
        .map(|(scope, description)| {
            format!(
                "<li><code>{}</code><span>{}</span></li>\n",
                escape(scope),
                escape(description)
            )
        })
        .collect();
    format!("<ul>\n{items}</ul>\n")
}

/// Who is signed in, and the button that ends the browser session; on
/// every page a signed-in person lands on.
fn sign_out_form(username: &str, csrf: &str) -> String {
    format!(
        "<form method=\"post\" action=\"{action}\">\n{csrf}\
         <p class=\"note\">Signed in as <strong>{username}</strong>.</p>\n\
         <div class=\"actions\">\n<button type=\"submit\" class=\"secondary\">Sign out</button>\n\
         </div>\n</form>\n",
        action = escape(routes::LOGOUT),
        csrf = hidden("csrf", csrf),
        username = escape(username),
    )
}

/// GET /logout while signed in: the sign-out button on its own.
pub fn sign_out_page(username: &str, csrf: &str) -> String {
    let body = format!(
        "<h1>Sign out of Gatehouse</h1>\n\
         <p class=\"sub\">Applications you allowed keep their access; revoke it with the \
         application or ask an administrator.</p>\n{}",
        sign_out_form(username, csrf)
    );
    document("Sign out", &body)
}

const DECISION_BUTTONS: &str = "<div class=\"actions\">\n\
    <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\n\
    <button type=\"submit\" name=\"decision\" value=\"approve\">Allow</button>\n</div>\n";

/// The sign-in form.
pub struct LoginPage<'a> {
    pub csrf: &'a str,
    /// Where to go after signing in; echoed back in a hidden field.
    pub continue_to: &'a str,
    pub client_name: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Prefilled after a failed attempt so only the password is retyped.
    pub username: Option<&'a str>,
    /// Identity providers offered as "Sign in with …": (name, display name).
    pub providers: &'a [(String, String)],
    /// Whether the username and password form is shown at all.
    pub local_login: bool,
}

pub fn login_page(p: &LoginPage) -> String {
    let subtitle = p.client_name.map_or_else(String::new, |name| {
        format!(
            "<p class=\"sub\">to continue to <strong>{}</strong></p>\n",
            escape(name)
        )
    });
    // Focus the field the user has to type into next.
    let (user_focus, password_focus) = match p.username {
        Some(_) => ("", " autofocus"),
        None => (" autofocus", ""),
    };
    // One link per provider: the sign-in starts with a GET, so a page of
    // ours never posts a form that redirects off-site.
    let providers: String = p
        .providers
        .iter()
        .map(|(name, display)| {
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("provider", name)
                .append_pair("continue", p.continue_to)
                .finish();
            format!(
                "<p><a class=\"button\" href=\"{}?{}\">Sign in with {}</a></p>\n",
                escape(routes::FEDERATED_START),
                escape(&query),
                escape(display)
            )
        })
        .collect();
    if !p.local_login {
        let body = format!(
            "<h1>Sign in to Gatehouse</h1>\n{subtitle}{error}{providers}",
            error = error_block(p.error),
        );
        return document("Sign in", &body);
    }
    let body = format!(
        "<h1>Sign in to Gatehouse</h1>\n{subtitle}{error}{providers}\
         <form method=\"post\" action=\"{action}\">\n{csrf}{cont}\
         <label for=\"username\">Username</label>\n\
         <input id=\"username\" name=\"username\" type=\"text\" autocomplete=\"username\" \
         autocapitalize=\"none\" spellcheck=\"false\" required{user_focus} value=\"{username}\">\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" \
         autocomplete=\"current-password\" required{password_focus}>\n\
         <div class=\"actions\">\n<button type=\"submit\">Sign in</button>\n</div>\n</form>\n",
        error = error_block(p.error),
        action = escape(routes::LOGIN),
        csrf = hidden("csrf", p.csrf),
        cont = hidden("continue", p.continue_to),
        username = escape(p.username.unwrap_or("")),
    );
    document("Sign in", &body)
}

/// The authorization-code consent screen.
pub struct ConsentPage<'a> {
    pub csrf: &'a str,
    /// The pending authorization transaction the decision applies to.
    pub txn: &'a str,
    pub client_name: &'a str,
    pub client_id: &'a str,
    /// Host of the redirect URI, shown because a client name is self-chosen
    /// and proves nothing; where the code goes does.
    pub redirect_host: &'a str,
    /// (scope, human description)
    pub scopes: &'a [(String, String)],
    pub username: &'a str,
    /// The CSRF token of the sign-out form.
    pub sign_out_csrf: &'a str,
}

pub fn consent_page(p: &ConsentPage) -> String {
    let body = format!(
        "<h1>Allow access?</h1>\n\
         <p><strong>{name}</strong> <code>{client_id}</code> asks for access to Gatehouse \
         on behalf of <strong>{username}</strong>.</p>\n\
         <h2>It will be able to</h2>\n{scopes}\
         <p class=\"note\">After you choose, your browser will redirect to \
         <strong>{host}</strong>. Allow only if you started this and trust that site.</p>\n\
         <form method=\"post\" action=\"{action}\">\n{csrf}{txn}{DECISION_BUTTONS}</form>\n\
         {sign_out}",
        name = escape(p.client_name),
        client_id = escape(p.client_id),
        username = escape(p.username),
        scopes = scope_list(p.scopes),
        host = escape(p.redirect_host),
        action = escape(routes::CONSENT),
        csrf = hidden("csrf", p.csrf),
        txn = hidden("txn", p.txn),
        sign_out = sign_out_form(p.username, p.sign_out_csrf),
    );
    document("Allow access", &body)
}

/// The device flow's code entry form (RFC 8628 §3.3).
pub struct DeviceEntryPage<'a> {
    pub csrf: &'a str,
    /// From `verification_uri_complete`, so the user only confirms.
    pub user_code: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Who is signed in, and the CSRF token of the sign-out form.
    pub username: &'a str,
    pub sign_out_csrf: &'a str,
}

pub fn device_entry_page(p: &DeviceEntryPage) -> String {
    let body = format!(
        "<h1>Connect a device</h1>\n\
         <p class=\"sub\">Enter the code shown on your device.</p>\n{error}\
         <form method=\"post\" action=\"{action}\">\n{csrf}\
         <label for=\"user_code\">Code</label>\n\
         <input id=\"user_code\" name=\"user_code\" type=\"text\" autocomplete=\"off\" \
         autocapitalize=\"characters\" spellcheck=\"false\" required autofocus value=\"{code}\">\n\
         <div class=\"actions\">\n<button type=\"submit\">Continue</button>\n</div>\n</form>\n\
         {sign_out}",
        error = error_block(p.error),
        action = escape(routes::DEVICE),
        csrf = hidden("csrf", p.csrf),
        code = escape(p.user_code.unwrap_or("")),
        sign_out = sign_out_form(p.username, p.sign_out_csrf),
    );
    document("Connect a device", &body)
}

/// The device flow's confirmation screen.
pub struct DeviceConfirmPage<'a> {
    pub csrf: &'a str,
    pub user_code: &'a str,
    pub client_name: &'a str,
    pub client_id: &'a str,
    /// (scope, human description)
    pub scopes: &'a [(String, String)],
    pub username: &'a str,
    /// The application registered itself (dynamic registration or a
    /// metadata document): its name is its own claim. A code pushed to a
    /// person with a reassuring name is how device-flow phishing works
    /// (RFC 8628 §5.4).
    pub self_registered: bool,
    /// The client has no secret: anyone can start a device sign-in under
    /// its name (an operator's public client included), so its name proves
    /// nothing about who asks either.
    pub public_client: bool,
    /// The CSRF token of the sign-out form.
    pub sign_out_csrf: &'a str,
}

pub fn device_confirm_page(p: &DeviceConfirmPage) -> String {
    let body = format!(
        "<h1>Connect a device?</h1>\n\
         <p>Check that this code matches the one shown on your device:</p>\n\
         <code class=\"code\">{code}</code>\n\
         <p class=\"note\">If it does not match, or you did not start this, choose Deny: \
         someone may be trying to get you to approve their device.</p>\n\
         <p><strong>{name}</strong> <code>{client_id}</code> asks for access to Gatehouse \
         on behalf of <strong>{username}</strong>.</p>\n{unverified}\
         <h2>It will be able to</h2>\n{scopes}\
         <form method=\"post\" action=\"{action}\">\n{csrf}{code_field}{DECISION_BUTTONS}</form>\n\
         {sign_out}",
        code = escape(p.user_code),
        name = escape(p.client_name),
        client_id = escape(p.client_id),
        username = escape(p.username),
        unverified = if p.self_registered {
            "<p class=\"error\" id=\"unverified\">This application registered itself: its name \
             is its own claim, not checked by your administrators. Allow it only if you started \
             this on a device of your own just now.</p>\n"
        } else if p.public_client {
            "<p class=\"error\" id=\"unverified\">Anyone can start a sign-in under this \
             application's name: it holds no secret. Allow it only if you started this on a \
             device of your own just now.</p>\n"
        } else {
            ""
        },
        scopes = scope_list(p.scopes),
        action = escape(routes::DEVICE_CONFIRM),
        csrf = hidden("csrf", p.csrf),
        code_field = hidden("user_code", p.user_code),
        sign_out = sign_out_form(p.username, p.sign_out_csrf),
    );
    document("Connect a device", &body)
}

/// A page with a title and one paragraph: errors, and outcomes such as
/// "You may close this window".
pub fn message_page(title: &str, message: &str) -> String {
    let body = format!("<h1>{}</h1>\n<p>{}</p>\n", escape(title), escape(message));
    document(title, &body)
}

/// The Content-Security-Policy of every page. No `form-action`: browsers
/// apply it to the redirect that follows the consent POST, which goes to the
/// client's redirect URI, an origin we cannot list in advance.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                       script-src 'sha256-eqfJWXR8nJ1hQ+TQSaADErYJ7gzhVyoY47ito00OfUE='; \
                       frame-ancestors 'none'; base-uri 'none'";

/// The one script a page runs (allowed by its hash in [`CSP`]): it keeps
/// the decision buttons (Allow, Approve, Deny) disabled until the page has
/// been in view for 700 ms, and again from the moment its window loses
/// focus until 700 ms after it regains it. Against
/// double-clickjacking: a page of the attacker's asks for a double click
/// and, between the two clicks, swaps itself for this one by a top-level
/// navigation (which `frame-ancestors` cannot stop), so that the second
/// click lands on Allow. A person reading the page takes longer than that
/// anyway; a browser without scripts gets the buttons at once.
pub const DECISION_GUARD: &str = "(function(){var b=document.querySelectorAll('button[name=decision]');var t;function off(){clearTimeout(t);b.forEach(function(x){x.disabled=true;});}function arm(){off();if(document.visibilityState==='visible'){t=setTimeout(function(){b.forEach(function(x){x.disabled=false;});},700);}}document.addEventListener('visibilitychange',arm);window.addEventListener('focus',arm);window.addEventListener('blur',off);arm();})();";

fn no_store(headers: &mut axum::http::HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

/// An HTML page with the headers every page of the login flow needs: no
/// framing (clickjacking of the consent buttons), no caching (pages carry
/// CSRF tokens and user names), no referrer (URLs carry codes and state).
pub fn html_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    no_store(headers);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A 303 redirect. After a POST that carried credentials it must be 303,
/// never 307/308, which would make the browser re-send the form body,
/// password included, to the target (RFC 9700 §4.12).
pub fn see_other(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        // Locations are serialised URLs, so this is a bug; fail closed
        // rather than redirect somewhere half-parsed.
        tracing::error!("redirect location is not a valid header value");
        return html_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            message_page("Something went wrong", "The redirect could not be built."),
        );
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    no_store(headers);
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
#[path = "pages_tests.rs"]
mod tests;

/// The approval page for one call of a tool that needs an operation token.
pub struct ApprovalPage<'a> {
    pub csrf: &'a str,
    pub action: &'a str,
    pub id: &'a str,
    pub agent: &'a str,
    pub human: Option<&'a str>,
    /// The external issuer that named `human`, if any.
    pub human_issuer: Option<&'a str>,
    pub tenant: &'a str,
    pub tool: &'a str,
    pub task: Option<&'a str>,
    /// Pretty-printed JSON of the arguments exactly as the token will run
    /// them, except the fields the policy marks `redact`.
    pub arguments: &'a str,
    pub arguments_hash: &'a str,
    /// The masked fields and each one's keyed fingerprint.
    pub masked_fields: &'a std::collections::BTreeMap<String, String>,
    /// `pending`, `approved`, `denied`, `redeemed` or `expired`.
    pub status: &'a str,
    pub expires: &'a str,
    /// The signed-in person looking at the page, and the CSRF token of the
    /// sign-out form.
    pub viewer: &'a str,
    pub sign_out_csrf: &'a str,
}

/// `text` with every invisible or reordering character written as an escape.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    gatehouse_core::escape_for_display(text)
}

pub fn approval_page(p: &ApprovalPage) -> String {
    let decision = if p.status == "pending" {
        format!(
            "<p class=\"note\">Approve only if you expect this exact call. The agent gets a \
             single-use token for these arguments alone, valid for a few minutes.</p>\n\
             <form method=\"post\" action=\"{action}\">\n{csrf}\
             <div class=\"actions\">\n\
             <button type=\"submit\" name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>\n\
             <button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n</div>\n</form>\n",
            action = escape(p.action),
            csrf = hidden("csrf", p.csrf),
        )
    } else {
        format!(
            "<p>This request is <strong id=\"status\">{}</strong>; nothing more can be decided.</p>\n",
            escape(p.status)
        )
    };
    let body = format!(
        "<h1>Approve a tool call?</h1>\n\
         <p><code>{agent}</code> asks to run <strong id=\"tool\">{tool}</strong>{human}.</p>\n\
         <ul>\n<li><span>Request</span><code id=\"approval-id\">{id}</code></li>\n\
         <li><span>Tenant</span><code>{tenant}</code></li>\n\
         <li><span>Task</span><code>{task}</code></li>\n\
         <li><span>Decide before</span><code>{expires}</code></li>\n</ul>\n\
         <h2>With exactly these arguments</h2>\n<pre id=\"arguments\">{arguments}</pre>\n{masked}\
         <p class=\"note\">Keyed SHA-256 of the canonical arguments (the audit records' \
         <code>args_sha256</code>): <code>{hash}</code></p>\n{decision}",
        // Names a caller chose (an external issuer's subject, a client id,
        // a tool name) with invisible and reordering characters escaped, as
        // the arguments are: "x\u{202e}y" must not reorder the sentence.
        agent = escape(&shown(p.agent)),
        tool = escape(&shown(p.tool)),
        human = p.human.map_or_else(String::new, |h| format!(
            " on behalf of <strong>{}</strong>{}",
            escape(&shown(h)),
            p.human_issuer.map_or_else(String::new, |issuer| format!(
                " (signed in at <code id=\"human-issuer\">{}</code>, not an account here)",
                escape(&shown(issuer))
            ))
        )),
        id = escape(p.id),
        tenant = escape(p.tenant),
        task = escape(&shown(p.task.unwrap_or("none declared"))),
        expires = escape(p.expires),
        arguments = escape(p.arguments),
        masked = masked_fields(p.masked_fields),
        hash = escape(p.arguments_hash),
    );
    let sign_out = sign_out_form(p.viewer, p.sign_out_csrf);
    document("Approve a tool call", &format!("{body}{sign_out}"))
}

/// The fields the policy masks, named, with each value's keyed fingerprint,
/// so the approver knows what is hidden (and an operator can check a value
/// with `gatehouse approvals hash`).
fn masked_fields(fields: &std::collections::BTreeMap<String, String>) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let items: String = fields
        .iter()
        .map(|(name, hash)| {
            format!(
                "<li><code class=\"masked-field\">{}</code> fingerprint <code class=\"masked-sha256\">{}</code></li>\n",
                escape(name),
                escape(hash)
            )
        })
        .collect();
    format!(
        "<p>The policy masks these fields (shown as <code>\"[REDACTED]\"</code> above); the token \
         runs with their real values, whose fingerprints (keyed: <code>gatehouse approvals hash \
         --approval ID --field NAME</code> checks a value) are:</p>\n\
         <ul id=\"masked-fields\">\n{items}</ul>\n"
    )
}

/// After approval: the operation token, shown once.
pub fn approved_page(id: &str, tool: &str, token: &str, minutes: i64) -> String {
    let body = format!(
        "<h1>Approved</h1>\n\
         <p>The call of <strong>{tool}</strong> ({id}) may run once. The agent can retry now; \
         if it asks for the operation token, give it this one (valid for {minutes} minutes, \
         single use, for exactly the arguments shown before):</p>\n\
         <pre id=\"operation-token\">{token}</pre>\n\
         <p class=\"note\">It is shown only here. You may close this window.</p>\n",
        tool = escape(tool),
        id = escape(id),
        token = escape(token),
    );
    document("Approved", &body)
}
