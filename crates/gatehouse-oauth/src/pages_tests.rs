use super::*;

const HOSTILE: &str = "<script>alert(1)</script>\"'&";
const ESCAPED: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;";

fn scopes() -> Vec<(String, String)> {
    vec![
        (
            "tools:read".to_string(),
            "List and call read-only tools".to_string(),
        ),
        (HOSTILE.to_string(), HOSTILE.to_string()),
    ]
}

fn assert_safe(page: &str) {
    assert!(!page.contains(HOSTILE), "raw payload in:\n{page}");
    // No script but the page's own guard (allowed by its hash).
    let without_guard = page.replace(&format!("<script>{DECISION_GUARD}</script>"), "");
    assert!(!without_guard.contains("<script"), "script tag in:\n{page}");
    assert!(
        page.contains(ESCAPED),
        "escaped payload missing in:\n{page}"
    );
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
}

fn hidden_field(page: &str, name: &str, value: &str) -> bool {
    page.contains(&format!(
        "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
        escape(value)
    ))
}

#[test]
fn escape_covers_html_specials() {
    assert_eq!(escape(HOSTILE), ESCAPED);
    assert_eq!(escape("plain text, é"), "plain text, é");
    // Already-escaped text is escaped again, never passed through.
    assert_eq!(escape("&amp;"), "&amp;amp;");
}

#[test]
fn login_page_escapes_and_has_its_fields() {
    let page = login_page(&LoginPage {
        csrf: HOSTILE,
        continue_to: HOSTILE,
        client_name: Some(HOSTILE),
        error: Some(HOSTILE),
        username: Some(HOSTILE),
        providers: &[(HOSTILE.to_string(), HOSTILE.to_string())],
        local_login: true,
    });
    assert_safe(&page);
    assert!(page.contains("Sign in to Gatehouse"));
    assert!(page.contains(&format!("to continue to <strong>{ESCAPED}</strong>")));
    assert!(page.contains("<form method=\"post\" action=\"/login\">"));
    assert!(hidden_field(&page, "csrf", HOSTILE));
    assert!(hidden_field(&page, "continue", HOSTILE));
    assert!(page.contains("name=\"username\" type=\"text\" autocomplete=\"username\""));
    assert!(page.contains(&format!("value=\"{ESCAPED}\">")));
    assert!(page.contains("name=\"password\" type=\"password\""));
    assert!(page.contains("autocomplete=\"current-password\""));
    assert!(page.contains("<button type=\"submit\">Sign in</button>"));
    assert!(page.contains("role=\"alert\""));
}

#[test]
fn login_page_without_client_or_error() {
    let page = login_page(&LoginPage {
        csrf: "c",
        continue_to: "/authorize?x=1&y=2",
        client_name: None,
        error: None,
        username: None,
        providers: &[],
        local_login: true,
    });
    assert!(!page.contains("to continue to"));
    assert!(!page.contains("class=\"error\""));
    assert!(hidden_field(&page, "continue", "/authorize?x=1&y=2"));
    assert!(page.contains("value=\"/authorize?x=1&amp;y=2\""));
    assert!(page.contains("value=\"\">"));
}

#[test]
fn consent_page_escapes_and_has_its_fields() {
    let scopes = scopes();
    let page = consent_page(&ConsentPage {
        csrf: "csrf-token",
        txn: HOSTILE,
        client_name: HOSTILE,
        client_id: HOSTILE,
        redirect_host: HOSTILE,
        scopes: &scopes,
        username: HOSTILE,
        sign_out_csrf: "sign-out-token",
    });
    assert_safe(&page);
    assert_sign_out(&page, &format!("Signed in as <strong>{ESCAPED}</strong>."));
    assert!(page.contains(&format!(
        "<strong>{ESCAPED}</strong> <code>{ESCAPED}</code>"
    )));
    assert!(page.contains(&format!("on behalf of <strong>{ESCAPED}</strong>")));
    assert!(page.contains(&format!("will redirect to <strong>{ESCAPED}</strong>")));
    assert!(page.contains("<code>tools:read</code><span>List and call read-only tools</span>"));
    assert!(page.contains("<form method=\"post\" action=\"/authorize/consent\">"));
    assert!(hidden_field(&page, "csrf", "csrf-token"));
    assert!(hidden_field(&page, "txn", HOSTILE));
    assert!(page.contains("name=\"decision\" value=\"approve\">Allow</button>"));
    assert!(page.contains("name=\"decision\" value=\"deny\" class=\"secondary\">Deny</button>"));
}

#[test]
fn consent_page_without_scopes_says_so() {
    let page = consent_page(&ConsentPage {
        csrf: "c",
        txn: "t",
        client_name: "Claude",
        client_id: "ghc_x",
        redirect_host: "claude.ai",
        scopes: &[],
        username: "alice",
        sign_out_csrf: "s",
    });
    assert!(page.contains("No specific permissions"));
    assert!(!page.contains("<ul>"));
}

#[test]
fn device_entry_page_escapes_and_has_its_fields() {
    let page = device_entry_page(&DeviceEntryPage {
        csrf: HOSTILE,
        user_code: Some(HOSTILE),
        error: Some(HOSTILE),
        username: HOSTILE,
        sign_out_csrf: "sign-out-token",
    });
    assert_safe(&page);
    assert_sign_out(&page, &format!("Signed in as <strong>{ESCAPED}</strong>."));
    assert!(page.contains("<form method=\"post\" action=\"/device\">"));
    assert!(hidden_field(&page, "csrf", HOSTILE));
    assert!(page.contains("name=\"user_code\" type=\"text\" autocomplete=\"off\""));
    assert!(page.contains("spellcheck=\"false\""));
    assert!(page.contains(&format!("value=\"{ESCAPED}\">")));
    assert!(page.contains("<button type=\"submit\">Continue</button>"));

    let empty = device_entry_page(&DeviceEntryPage {
        csrf: "c",
        user_code: None,
        error: None,
        username: "alice",
        sign_out_csrf: "s",
    });
    assert!(empty.contains("autofocus value=\"\">"));
    assert!(!empty.contains("class=\"error\""));
}

#[test]
fn device_confirm_page_escapes_and_has_its_fields() {
    let scopes = scopes();
    let fields = DeviceConfirmPage {
        csrf: "csrf-token",
        user_code: HOSTILE,
        client_name: HOSTILE,
        client_id: HOSTILE,
        scopes: &scopes,
        username: HOSTILE,
        self_registered: false,
        public_client: false,
        sign_out_csrf: "sign-out-token",
    };
    let page = device_confirm_page(&fields);
    assert_safe(&page);
    assert!(!page.contains("id=\"unverified\""));
    let self_registered = device_confirm_page(&DeviceConfirmPage {
        self_registered: true,
        ..fields
    });
    assert!(self_registered.contains("id=\"unverified\""));
    let public = device_confirm_page(&DeviceConfirmPage {
        public_client: true,
        ..fields
    });
    assert!(public.contains("Anyone can start a sign-in"), "{public}");
    assert_sign_out(&page, &format!("Signed in as <strong>{ESCAPED}</strong>."));
    assert!(page.contains("matches the one shown on your device"));
    assert!(page.contains(&format!("<code class=\"code\">{ESCAPED}</code>")));
    assert!(page.contains("<form method=\"post\" action=\"/device/confirm\">"));
    assert!(hidden_field(&page, "csrf", "csrf-token"));
    assert!(hidden_field(&page, "user_code", HOSTILE));
    assert!(page.contains("name=\"decision\" value=\"approve\">Allow</button>"));
    assert!(page.contains("value=\"deny\""));
}

#[test]
fn message_page_escapes() {
    let page = message_page(HOSTILE, HOSTILE);
    assert_safe(&page);
    assert!(page.contains(&format!("<title>{ESCAPED} · Gatehouse</title>")));
    let done = message_page("Done", "You may close this window.");
    assert!(done.contains("<h1>Done</h1>\n<p>You may close this window.</p>"));
}

#[test]
fn pages_load_nothing_external() {
    let page = login_page(&LoginPage {
        csrf: "c",
        continue_to: "/",
        client_name: None,
        error: None,
        username: None,
        providers: &[],
        local_login: true,
    });
    // Password sign-in off: only the providers are offered.
    let only_providers = login_page(&LoginPage {
        csrf: "c",
        continue_to: "/authorize/continue?txn=t",
        client_name: None,
        error: None,
        username: None,
        providers: &[("acme".to_string(), "Acme SSO".to_string())],
        local_login: false,
    });
    assert!(!only_providers.contains("type=\"password\""));
    assert!(only_providers.contains("Sign in with Acme SSO"));
    assert!(only_providers.contains(
        "/oauth/federated/start?provider=acme&amp;continue=%2Fauthorize%2Fcontinue%3Ftxn%3Dt"
    ));
    // Nothing loaded: the one script is inline (the decision guard).
    let page = page.replace(&format!("<script>{DECISION_GUARD}</script>"), "");
    for needle in ["<script", "<link", "<img", "<iframe", "src=", "href="] {
        assert!(!page.contains(needle), "{needle}");
    }
}

#[test]
fn html_response_headers() {
    let response = html_response(StatusCode::BAD_REQUEST, message_page("t", "m"));
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let h = response.headers();
    let get = |name: header::HeaderName| h.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(get(header::CONTENT_TYPE), "text/html; charset=utf-8");
    assert_eq!(get(header::X_FRAME_OPTIONS), "DENY");
    assert_eq!(get(header::CONTENT_SECURITY_POLICY), CSP);
    assert!(CSP.contains("frame-ancestors 'none'"));
    assert!(!get(header::CONTENT_SECURITY_POLICY).contains("form-action"));
    assert_eq!(get(header::CACHE_CONTROL), "no-store");
    assert_eq!(get(header::PRAGMA), "no-cache");
    assert_eq!(get(header::REFERRER_POLICY), "no-referrer");
    assert_eq!(get(header::X_CONTENT_TYPE_OPTIONS), "nosniff");
}

#[test]
fn see_other_is_303_and_not_cached() {
    let response = see_other("https://client.example/cb?code=abc&state=xyz");
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let h = response.headers();
    assert_eq!(
        h.get(header::LOCATION).unwrap(),
        "https://client.example/cb?code=abc&state=xyz"
    );
    assert_eq!(h.get(header::CACHE_CONTROL).unwrap(), "no-store");

    let broken = see_other("https://x/\r\nSet-Cookie: a=b");
    assert_eq!(broken.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(broken.headers().get(header::LOCATION).is_none());
}

#[test]
fn approval_page_shows_reordering_characters_in_names_escaped() {
    let page = approval_page(&ApprovalPage {
        csrf: "c",
        action: "/approvals/apr_x",
        id: "apr_x",
        agent: "bot\u{202e}gnp.exe",
        human: Some("alice\u{200b}"),
        human_issuer: None,
        tenant: "default",
        tool: "send\u{2066}_email",
        task: Some("t\u{202d}"),
        arguments: "{}",
        arguments_hash: "cd",
        masked_fields: &Default::default(),
        status: "pending",
        expires: "2026-01-01T00:00:00Z",
        viewer: "alice",
        sign_out_csrf: "s",
    });
    for raw in ['\u{202e}', '\u{200b}', '\u{2066}', '\u{202d}'] {
        assert!(!page.contains(raw), "{raw:?} shown raw");
    }
    assert!(page.contains("bot\\u{202e}gnp.exe"), "{page}");
}

#[test]
fn approval_page_escapes_everything_and_labels_masked_fields() {
    let masked = [(HOSTILE.to_string(), "ab".repeat(32))].into();
    let page = approval_page(&ApprovalPage {
        csrf: "c",
        action: "/approvals/apr_x",
        id: "apr_x",
        agent: HOSTILE,
        human: Some(HOSTILE),
        human_issuer: Some("https://idp.example/<x>"),
        tenant: "default",
        tool: "send_email",
        task: None,
        arguments: HOSTILE,
        arguments_hash: "cd",
        masked_fields: &masked,
        status: "pending",
        expires: "2026-01-01T00:00:00Z",
        viewer: "alice",
        sign_out_csrf: "s",
    });
    assert_safe(&page);
    // A human named by an external issuer is shown with that issuer.
    assert!(page.contains(
        "(signed in at <code id=\"human-issuer\">https://idp.example/&lt;x&gt;</code>, not an account here)"
    ));
    assert!(page.contains("id=\"masked-fields\""));
    assert!(page.contains(&format!(
        "<code class=\"masked-field\">{ESCAPED}</code> fingerprint <code class=\"masked-sha256\">{}</code>",
        "ab".repeat(32)
    )));
    let nothing_masked = approval_page(&ApprovalPage {
        masked_fields: &Default::default(),
        ..ApprovalPage {
            csrf: "c",
            action: "/approvals/apr_x",
            id: "apr_x",
            agent: "a",
            human: None,
            human_issuer: None,
            tenant: "default",
            tool: "send_email",
            task: None,
            arguments: "{}",
            arguments_hash: "cd",
            masked_fields: &masked,
            status: "pending",
            expires: "",
            viewer: "alice",
            sign_out_csrf: "s",
        }
    });
    assert!(!nothing_masked.contains("masked-fields"));
}

/// The sign-out form comes after the page's own form (whose CSRF token is
/// the first on the page), posts to /logout with its own token, and names
/// who is signed in.
fn assert_sign_out(page: &str, signed_in_as: &str) {
    let form = page
        .find("<form method=\"post\" action=\"/logout\">")
        .expect("a sign-out form");
    assert!(
        page.find("<form").unwrap() < form,
        "the page's own form comes first"
    );
    let rest = &page[form..];
    assert!(hidden_field(rest, "csrf", "sign-out-token"));
    assert!(rest.contains(signed_in_as));
    assert!(rest.contains("<button type=\"submit\" class=\"secondary\">Sign out</button>"));
}

#[test]
fn the_sign_out_page_escapes_and_has_its_form() {
    let page = crate::pages::sign_out_page(HOSTILE, "sign-out-token");
    assert_safe(&page);
    let form = page
        .find("<form method=\"post\" action=\"/logout\">")
        .expect("a sign-out form");
    assert!(hidden_field(&page[form..], "csrf", "sign-out-token"));
    assert!(page.contains(&format!("Signed in as <strong>{ESCAPED}</strong>.")));
}

/// The page's one script runs only under its hash in the CSP: an edit of
/// the script that leaves the hash behind would silently switch the
/// double-click guard off.
#[test]
fn the_decision_guard_runs_under_its_hash_and_nothing_else_does() {
    use base64::Engine;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, DECISION_GUARD.as_bytes());
    let hash = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    assert!(
        CSP.contains(&format!("script-src 'sha256-{hash}';")),
        "{CSP} lacks {hash}"
    );
    assert!(!CSP.contains("unsafe-inline'; frame") && !CSP.contains("script-src 'unsafe"));
    let page = message_page("t", "m");
    assert_eq!(page.matches("<script>").count(), 1);
    assert!(page.contains(&format!("<script>{DECISION_GUARD}</script>")));
    // It names the buttons every decision form uses.
    assert!(DECISION_GUARD.contains("button[name=decision]"));
    assert!(DECISION_BUTTONS.contains("name=\"decision\" value=\"approve\""));
}
