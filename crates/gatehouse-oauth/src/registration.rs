//! RFC 7591 dynamic client registration: validating the request body.
//! Pure: storing the client and answering over HTTP happen elsewhere.
//!
//! Unknown fields are ignored, as RFC 7591 §2 requires. That includes the
//! URL-valued metadata `jwks_uri`, `logo_uri`, `client_uri`, `tos_uri`,
//! `policy_uri` and the `software_statement`: they are accepted and dropped,
//! never fetched and never echoed back. Fetching them would let anyone who
//! can register make the server issue requests to internal addresses
//! (169.254.169.254, loopback, private ranges: attack case A12), and showing
//! them on a consent page would let a client borrow another's logo or name.

use serde_json::{Map, Value};

use crate::redirect_uri::{self, RedirectUriError};

/// Registration bodies larger than this are refused before parsing.
pub const MAX_REGISTRATION_BODY_BYTES: usize = 16 * 1024;
pub const MAX_REDIRECT_URIS: usize = 10;
pub const MAX_CLIENT_NAME_CHARS: usize = 100;
pub const MAX_SCOPE_CHARS: usize = 1000;

const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
const ALLOWED_GRANT_TYPES: &[&str] = &[
    GRANT_AUTHORIZATION_CODE,
    "refresh_token",
    "urn:ietf:params:oauth:grant-type:device_code",
];
const RESPONSE_TYPE_CODE: &str = "code";

/// `token_endpoint_auth_method` values this server supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// A public client: PKCE is its only proof of possession.
    None,
    ClientSecretBasic,
    ClientSecretPost,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
        }
    }

    /// Exact, case-sensitive registered names only.
    pub fn parse(value: &str) -> Option<AuthMethod> {
        match value {
            "none" => Some(AuthMethod::None),
            "client_secret_basic" => Some(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Some(AuthMethod::ClientSecretPost),
            _ => None,
        }
    }
}

/// A validated registration request, defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub client_name: Option<String>,
    pub scope: Option<String>,
}

/// Why a registration was refused. `Display` (and [`description`]) is safe
/// to send to the client: fixed text, field names and indexes, never a
/// submitted value.
///
/// [`description`]: RegistrationError::description
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    #[error("the registration request is larger than {MAX_REGISTRATION_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("the registration request must be a JSON object")]
    NotJsonObject,
    #[error("redirect_uris: {0}")]
    RedirectUris(&'static str),
    #[error("redirect_uris[{index}]: {source}")]
    RedirectUri {
        index: usize,
        source: RedirectUriError,
    },
    #[error("{field}: {reason}")]
    Metadata {
        field: &'static str,
        reason: &'static str,
    },
}

impl RegistrationError {
    /// The RFC 7591 §3.2.2 `error` value.
    pub fn code(&self) -> &'static str {
        match self {
            RegistrationError::RedirectUris(_) | RegistrationError::RedirectUri { .. } => {
                "invalid_redirect_uri"
            }
            RegistrationError::BodyTooLarge
            | RegistrationError::NotJsonObject
            | RegistrationError::Metadata { .. } => "invalid_client_metadata",
        }
    }

    /// The `error_description` value.
    pub fn description(&self) -> String {
        self.to_string()
    }
}

fn metadata(field: &'static str, reason: &'static str) -> RegistrationError {
    RegistrationError::Metadata { field, reason }
}

/// Parses and validates an RFC 7591 registration request body.
pub fn parse_registration(body: &[u8]) -> Result<RegistrationRequest, RegistrationError> {
    if body.len() > MAX_REGISTRATION_BODY_BYTES {
        return Err(RegistrationError::BodyTooLarge);
    }
    let object: Map<String, Value> =
        serde_json::from_slice(body).map_err(|_| RegistrationError::NotJsonObject)?;

    let token_endpoint_auth_method = match field(&object, "token_endpoint_auth_method") {
        // RFC 7591 §2: the default when omitted.
        None => AuthMethod::ClientSecretBasic,
        Some(Value::String(s)) => AuthMethod::parse(s).ok_or(metadata(
            "token_endpoint_auth_method",
            "must be none, client_secret_basic or client_secret_post",
        ))?,
        Some(_) => return Err(metadata("token_endpoint_auth_method", "must be a string")),
    };

    let grant_types = string_list(field(&object, "grant_types"), "grant_types")?
        .unwrap_or_else(|| vec![GRANT_AUTHORIZATION_CODE.to_string()]);
    if grant_types
        .iter()
        .any(|g| !ALLOWED_GRANT_TYPES.contains(&g.as_str()))
    {
        return Err(metadata(
            "grant_types",
            "only authorization_code, refresh_token and device_code are supported",
        ));
    }

    // RFC 7591 §2: redirect URIs and the `code` response type serve the
    // authorization code grant. A client using only the device grant (and
    // refresh tokens) has no redirect, so it may send neither; any it
    // sends are still validated, and /authorize refuses it regardless.
    let uses_code = grant_types.iter().any(|g| g == GRANT_AUTHORIZATION_CODE);
    let redirect_uris = match field(&object, "redirect_uris") {
        None if !uses_code => Vec::new(),
        Some(Value::Array(items)) if items.is_empty() && !uses_code => Vec::new(),
        value => parse_redirect_uris(value)?,
    };

    let response_types = match field(&object, "response_types") {
        None if uses_code => vec![RESPONSE_TYPE_CODE.to_string()],
        None => Vec::new(),
        Some(Value::Array(items)) if items.is_empty() => Vec::new(),
        value => string_list(value, "response_types")?.unwrap_or_default(),
    };
    if response_types.iter().any(|r| r != RESPONSE_TYPE_CODE) {
        return Err(metadata("response_types", "only code is supported"));
    }
    // RFC 7591 §2.1: the two lists must be consistent.
    if uses_code && !response_types.iter().any(|r| r == RESPONSE_TYPE_CODE) {
        return Err(metadata(
            "response_types",
            "must include code when grant_types includes authorization_code",
        ));
    }

    let client_name = match field(&object, "client_name") {
        None => None,
        Some(Value::String(s)) => validate_client_name(s)?,
        Some(_) => return Err(metadata("client_name", "must be a string")),
    };

    let scope = match field(&object, "scope") {
        None => None,
        Some(Value::String(s)) => validate_scope(s)?,
        Some(_) => return Err(metadata("scope", "must be a string")),
    };

    Ok(RegistrationRequest {
        redirect_uris,
        token_endpoint_auth_method,
        grant_types,
        response_types,
        client_name,
        scope,
    })
}

/// A member, with JSON `null` read as absent: several client libraries
/// serialise unset optional metadata that way.
fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).filter(|v| !v.is_null())
}

fn parse_redirect_uris(value: Option<&Value>) -> Result<Vec<String>, RegistrationError> {
    let Some(value) = value else {
        return Err(RegistrationError::RedirectUris("required"));
    };
    let Value::Array(items) = value else {
        return Err(RegistrationError::RedirectUris(
            "must be an array of strings",
        ));
    };
    if items.is_empty() {
        return Err(RegistrationError::RedirectUris("must not be empty"));
    }
    if items.len() > MAX_REDIRECT_URIS {
        return Err(RegistrationError::RedirectUris("at most 10 are allowed"));
    }
    let mut uris: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let Value::String(uri) = item else {
            return Err(RegistrationError::RedirectUris(
                "must be an array of strings",
            ));
        };
        redirect_uri::validate_registered(uri)
            .map_err(|source| RegistrationError::RedirectUri { index, source })?;
        if !uris.contains(uri) {
            uris.push(uri.clone());
        }
    }
    Ok(uris)
}

/// A list of strings, duplicates removed; `None` when absent. An explicit
/// empty list is refused rather than silently replaced by the default.
fn string_list(
    value: Option<&Value>,
    name: &'static str,
) -> Result<Option<Vec<String>>, RegistrationError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(metadata(name, "must be an array of strings"));
    };
    if items.is_empty() {
        return Err(metadata(name, "must not be empty"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err(metadata(name, "must be an array of strings"));
        };
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    Ok(Some(out))
}

/// The name is shown on the consent page, so beyond the length bound it must
/// not be able to disguise itself: no control characters, and none of the
/// invisible or bidirectional formatting characters that can make
/// `evil<U+202E>moc.elgoog` display as `evilgoogle.com`.
fn validate_client_name(name: &str) -> Result<Option<String>, RegistrationError> {
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > MAX_CLIENT_NAME_CHARS {
        return Err(metadata("client_name", "must be at most 100 characters"));
    }
    if has_deceptive_characters(name) {
        return Err(metadata(
            "client_name",
            "must not contain control or formatting characters",
        ));
    }
    Ok(Some(name.to_string()))
}

/// Control characters, and the invisible or bidirectional formatting
/// characters that can make a name display as another. Client names from
/// registration and from metadata documents are checked alike.
pub(crate) fn has_deceptive_characters(name: &str) -> bool {
    name.chars().any(gatehouse_core::is_unsafe_to_show)
}

/// RFC 6749 §3.3: scope tokens are `%x21 / %x23-5B / %x5D-7E`, separated by
/// single spaces.
fn validate_scope(scope: &str) -> Result<Option<String>, RegistrationError> {
    if scope.is_empty() {
        return Ok(None);
    }
    if scope.len() > MAX_SCOPE_CHARS {
        return Err(metadata("scope", "must be at most 1000 characters"));
    }
    let token_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    };
    if !scope.split(' ').all(token_ok) {
        return Err(metadata(
            "scope",
            "must be space-separated tokens of printable ASCII",
        ));
    }
    Ok(Some(scope.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(value: Value) -> Result<RegistrationRequest, RegistrationError> {
        parse_registration(value.to_string().as_bytes())
    }

    fn refused(value: Value) -> RegistrationError {
        match parse(value) {
            Ok(req) => panic!("accepted: {req:?}"),
            Err(e) => e,
        }
    }

    /// Every character the project will not show raw (bidi controls,
    /// separators, invisible fillers, tag characters) is refused in a
    /// client's name.
    #[test]
    fn names_with_characters_that_hide_or_reorder_text_are_refused() {
        for c in [
            '\u{202E}',
            '\u{061C}',
            '\u{2028}',
            '\u{00AD}',
            '\u{3164}',
            '\u{E0041}',
            '\u{206A}',
        ] {
            assert!(
                has_deceptive_characters(&format!("Claude{c}")),
                "{:x}",
                c as u32
            );
        }
        assert!(!has_deceptive_characters("Claude Desktop (Beta) – Ünïcode"));
    }

    #[test]
    fn defaults() {
        let req = parse(json!({"redirect_uris": ["https://app.example.com/cb"]})).unwrap();
        assert_eq!(
            req,
            RegistrationRequest {
                redirect_uris: vec!["https://app.example.com/cb".into()],
                token_endpoint_auth_method: AuthMethod::ClientSecretBasic,
                grant_types: vec!["authorization_code".into()],
                response_types: vec!["code".into()],
                client_name: None,
                scope: None,
            }
        );
    }

    #[test]
    fn typical_mcp_clients() {
        let claude = parse(json!({
            "client_name": "Claude",
            "redirect_uris": ["https://claude.ai/api/mcp/auth_callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
        }))
        .unwrap();
        assert_eq!(
            claude.token_endpoint_auth_method,
            AuthMethod::ClientSecretPost
        );
        assert_eq!(claude.client_name.as_deref(), Some("Claude"));

        let vscode = parse(json!({
            "client_name": "Visual Studio Code",
            "redirect_uris": ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
        .unwrap();
        assert_eq!(vscode.redirect_uris.len(), 2);
        assert_eq!(vscode.token_endpoint_auth_method, AuthMethod::None);

        // The Python SDK sends its full metadata model, unset fields as null.
        let python = parse(json!({
            "redirect_uris": ["http://localhost:3030/callback"],
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "scope": "user mcp:tools",
            "client_name": "Example MCP Client",
            "client_uri": null,
            "logo_uri": null,
            "contacts": null,
            "tos_uri": null,
            "policy_uri": null,
            "jwks_uri": null,
            "jwks": null,
            "software_id": null,
            "software_version": null,
        }))
        .unwrap();
        assert_eq!(python.token_endpoint_auth_method, AuthMethod::None);
        assert_eq!(python.scope.as_deref(), Some("user mcp:tools"));
    }

    #[test]
    fn url_metadata_is_dropped_not_rejected() {
        let req = parse(json!({
            "redirect_uris": ["https://app.example.com/cb"],
            "jwks_uri": "http://169.254.169.254/latest/meta-data/",
            "logo_uri": "http://127.0.0.1:6379/",
            "client_uri": "file:///etc/passwd",
            "tos_uri": "javascript:alert(1)",
            "policy_uri": "http://10.0.0.1/",
            "software_statement": "eyJhbGciOiJub25lIn0.e30.",
            "some_extension": {"nested": [1, 2, 3]},
        }))
        .unwrap();
        let shown = format!("{req:?}");
        for needle in ["169.254", "6379", "passwd", "javascript", "10.0.0.1", "eyJ"] {
            assert!(!shown.contains(needle), "{needle} in {shown}");
        }
    }

    #[test]
    fn a12_redirect_uri_payloads() {
        for uri in [
            "javascript:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "file:///etc/passwd",
            "vbscript:msgbox(1)",
            "http://evil.example/cb",
            "https://*.example.com/cb",
            "https://app.example.com/cb#frag",
            "https://app.example.com/cb#",
            "https://good@evil.example/cb",
        ] {
            let err = refused(json!({"redirect_uris": ["https://ok.example/cb", uri]}));
            assert_eq!(err.code(), "invalid_redirect_uri", "{uri}");
            assert!(matches!(
                err,
                RegistrationError::RedirectUri { index: 1, .. }
            ));
            let description = err.description();
            for part in ["alert", "passwd", "msgbox", "evil", "#frag", "<script>"] {
                assert!(!description.contains(part), "{description}");
            }
        }
    }

    #[test]
    fn redirect_uris_shape() {
        let eleven: Vec<String> = (0..11)
            .map(|i| format!("https://app.example.com/cb{i}"))
            .collect();
        let ten = &eleven[..10];
        assert_eq!(
            parse(json!({ "redirect_uris": ten }))
                .unwrap()
                .redirect_uris
                .len(),
            10
        );
        for body in [
            json!({ "redirect_uris": eleven }),
            json!({}),
            json!({"redirect_uris": null}),
            json!({"redirect_uris": []}),
            json!({"redirect_uris": "https://app.example.com/cb"}),
            json!({"redirect_uris": [42]}),
        ] {
            assert_eq!(
                refused(body.clone()).code(),
                "invalid_redirect_uri",
                "{body}"
            );
        }
        let dup = parse(json!({
            "redirect_uris": ["https://app.example.com/cb", "https://app.example.com/cb"]
        }))
        .unwrap();
        assert_eq!(dup.redirect_uris.len(), 1);
    }

    #[test]
    fn body_limits_and_shape() {
        let huge = format!(
            r#"{{"redirect_uris":["https://app.example.com/cb"],"client_uri":"{}"}}"#,
            "a".repeat(100 * 1024)
        );
        let err = parse_registration(huge.as_bytes()).unwrap_err();
        assert_eq!(err, RegistrationError::BodyTooLarge);
        assert_eq!(err.code(), "invalid_client_metadata");
        for body in [
            &b""[..],
            b"[]",
            b"null",
            b"\"x\"",
            b"{",
            b"{\"redirect_uris\":[]",
        ] {
            let err = parse_registration(body).unwrap_err();
            assert_eq!(err, RegistrationError::NotJsonObject, "{body:?}");
        }
    }

    #[test]
    fn auth_methods() {
        for m in [
            AuthMethod::None,
            AuthMethod::ClientSecretBasic,
            AuthMethod::ClientSecretPost,
        ] {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
        }
        for bad in [
            json!("private_key_jwt"),
            json!("client_secret_jwt"),
            json!("tls_client_auth"),
            json!("NONE"),
            json!(""),
            json!(1),
        ] {
            let err = refused(json!({
                "redirect_uris": ["https://app.example.com/cb"],
                "token_endpoint_auth_method": bad,
            }));
            assert_eq!(err.code(), "invalid_client_metadata");
        }
    }

    #[test]
    fn grant_and_response_types() {
        let base = |extra: Value| {
            let mut body = json!({"redirect_uris": ["https://app.example.com/cb"]});
            if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
                b.extend(e.clone());
            }
            body
        };
        let device = parse(base(json!({
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
        })))
        .unwrap();
        assert_eq!(device.grant_types.len(), 2);
        for bad in [
            json!({"grant_types": ["implicit"]}),
            json!({"grant_types": ["password"]}),
            json!({"grant_types": ["client_credentials"]}),
            json!({"grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"]}),
            json!({"grant_types": []}),
            json!({"grant_types": "authorization_code"}),
            json!({"response_types": ["token"]}),
            json!({"response_types": ["code", "id_token"]}),
            json!({"response_types": ["code token"]}),
            json!({"response_types": []}),
        ] {
            let err = refused(base(bad.clone()));
            assert_eq!(err.code(), "invalid_client_metadata", "{bad}");
        }
    }

    /// Issue 9 item 15 (RFC 7591 §2): redirect URIs and the `code`
    /// response type belong to the authorization code grant only.
    #[test]
    fn device_only_clients_need_no_redirect_uris_or_response_types() {
        const DEVICE: &str = "urn:ietf:params:oauth:grant-type:device_code";
        for body in [
            json!({"grant_types": [DEVICE], "response_types": [], "token_endpoint_auth_method": "none"}),
            json!({"grant_types": [DEVICE, "refresh_token"], "token_endpoint_auth_method": "none"}),
            json!({"grant_types": [DEVICE], "redirect_uris": [], "response_types": []}),
            json!({"grant_types": [DEVICE], "redirect_uris": null, "response_types": null}),
        ] {
            let req = parse(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert!(req.redirect_uris.is_empty(), "{body}");
            assert!(req.response_types.is_empty(), "{body}");
        }
        // Redirect URIs a device client sends anyway are still checked.
        let err =
            refused(json!({"grant_types": [DEVICE], "redirect_uris": ["javascript:alert(1)"]}));
        assert_eq!(err.code(), "invalid_redirect_uri");
        // Asking for the authorization code grant, explicitly or by default,
        // still needs redirect URIs and the code response type.
        for body in [
            json!({"grant_types": ["authorization_code"]}),
            json!({"grant_types": [DEVICE, "authorization_code"], "response_types": []}),
            json!({"token_endpoint_auth_method": "none"}),
            json!({"redirect_uris": [], "grant_types": ["authorization_code"]}),
        ] {
            assert!(parse(body.clone()).is_err(), "{body}");
        }
    }

    #[test]
    fn client_name_and_scope() {
        let with = |name: Value, scope: Value| {
            json!({
                "redirect_uris": ["https://app.example.com/cb"],
                "client_name": name,
                "scope": scope,
            })
        };
        let ok = parse(with(
            json!("Café <b>Client</b>"),
            json!("read write tool:search"),
        ))
        .unwrap();
        assert_eq!(ok.client_name.as_deref(), Some("Café <b>Client</b>"));
        let empty = parse(with(json!(""), json!(""))).unwrap();
        assert_eq!((empty.client_name, empty.scope), (None, None));
        assert!(parse(with(json!("é".repeat(100)), Value::Null)).is_ok());

        for (name, scope) in [
            (json!("é".repeat(101)), Value::Null),
            (json!("bad\nname"), Value::Null),
            (json!("bad\u{7}name"), Value::Null),
            (json!("evil\u{202E}moc.elgoog"), Value::Null),
            (json!("zero\u{200B}width"), Value::Null),
            (json!(42), Value::Null),
            (Value::Null, json!("a".repeat(1001))),
            (Value::Null, json!("read  write")),
            (Value::Null, json!(" read")),
            (Value::Null, json!("read ")),
            (Value::Null, json!("read\twrite")),
            (Value::Null, json!("quote\"d")),
            (Value::Null, json!("back\\slash")),
            (Value::Null, json!("caf\u{e9}")),
            (Value::Null, json!(["read"])),
        ] {
            let err = refused(with(name.clone(), scope.clone()));
            assert_eq!(err.code(), "invalid_client_metadata", "{name} {scope}");
        }
    }
}
