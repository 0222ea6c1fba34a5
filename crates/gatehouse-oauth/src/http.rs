//! HTTP adapters for the authorization server: form parsing, client
//! authentication headers and the mapping of `OAuthError` to responses.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use gatehouse_core::Clock;
use gatehouse_core::PeerAddr;
use serde_json::json;

use crate::client_assertion::CLIENT_ASSERTION_TYPE;
use crate::server::{AuthorizationServer, ClientAuth, TokenRequest};
use crate::token_exchange::{ExchangeParams, GRANT_TOKEN_EXCHANGE};
use crate::{OAuthError, routes};
use gatehouse_authn::external::unverified_issuer;

pub struct AsState {
    pub server: AuthorizationServer,
    pub clock: Arc<dyn Clock>,
}

/// Routes of the authorization server, to merge into the main router.
pub fn router(state: Arc<AsState>) -> Router {
    Router::new()
        .route(routes::METADATA, get(metadata))
        .route(routes::OPENID_CONFIGURATION, get(openid_configuration))
        .route(routes::JWKS, get(jwks))
        .route(routes::TOKEN, post(token))
        .route(routes::REVOKE, post(revoke))
        .route(routes::INTROSPECT, post(introspect))
        .route(routes::REGISTER, post(register))
        .route(routes::DEVICE_AUTHORIZATION, post(device_authorization))
        .merge(crate::browser::router())
        .with_state(state)
}

/// The address of the peer, for rate limits and the audit record.
pub(crate) fn source(peer: Option<Extension<PeerAddr>>) -> Option<String> {
    peer.map(|Extension(PeerAddr(addr))| addr.ip().to_string())
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// RFC 6749 §5.2 error response.
fn error_response(error: &OAuthError) -> Response {
    let status = match error {
        OAuthError::InvalidClient { .. } => StatusCode::UNAUTHORIZED,
        OAuthError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
        OAuthError::TemporarilyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        OAuthError::ServerError(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    let description = match error {
        // Detail of server-side failures goes to the log, not the client.
        OAuthError::ServerError(detail) | OAuthError::TemporarilyUnavailable(detail) => {
            tracing::error!(error = %detail, "token endpoint failure");
            error.to_string()
        }
        _ => error.to_string(),
    };
    let mut response = (
        status,
        Json(json!({"error": error.code(), "error_description": description})),
    )
        .into_response();
    if let OAuthError::TooManyRequests { retry_after_secs } = error
        && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if let OAuthError::InvalidClient { basic: true } = error {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"gatehouse\""),
        );
    }
    no_store(response)
}

async fn metadata(State(state): State<Arc<AsState>>) -> Response {
    Json(state.server.metadata()).into_response()
}

async fn openid_configuration(State(state): State<Arc<AsState>>) -> Response {
    Json(state.server.openid_configuration()).into_response()
}

async fn jwks(State(state): State<Arc<AsState>>) -> Response {
    match state.server.jwks(state.clock.now()).await {
        Ok(keys) => Json(keys).into_response(),
        Err(e) => error_response(&e),
    }
}

/// Form parameters; each may appear once (RFC 6749 §3.2), `resource` may repeat (RFC 8707).
pub(crate) fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (name, value) in url::form_urlencoded::parse(body) {
        if name != "resource" && !seen.insert(name.to_string()) {
            return Err(OAuthError::InvalidRequest(format!(
                "parameter {name} appears more than once"
            )));
        }
        out.push((name.into_owned(), value.into_owned()));
    }
    Ok(out)
}

pub(crate) fn param(form: &[(String, String)], name: &str) -> Option<String> {
    form.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, OAuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::InvalidRequest(
            "more than one Authorization header".into(),
        ));
    }
    let bad = || OAuthError::InvalidRequest("malformed Basic credentials".into());
    let text = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::InvalidRequest(
            "the token endpoint accepts Basic client authentication only".into(),
        ));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| -> Result<String, OAuthError> {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .ok_or_else(bad)
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

/// Whether the request's `Content-Type` is `media_type` (parameters such
/// as `charset` ignored).
fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media_type))
}

/// The form of a POST to any endpoint that authenticates clients.
fn form_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let form_content = has_media_type(headers, "application/x-www-form-urlencoded");
    if !form_content {
        return Err(OAuthError::InvalidRequest(
            "the request must be application/x-www-form-urlencoded".into(),
        ));
    }
    parse_form(body)
}

/// Client authentication: HTTP Basic or `client_id` + `client_secret` in
/// the form, never both; a public client sends `client_id` alone.
fn client_auth(headers: &HeaderMap, form: &[(String, String)]) -> Result<ClientAuth, OAuthError> {
    let basic = basic_credentials(headers)?;
    let assertion_type = param(form, "client_assertion_type");
    let assertion = param(form, "client_assertion");
    if assertion_type.is_some() || assertion.is_some() {
        return assertion_auth(basic.is_some(), form, assertion_type, assertion);
    }
    let posted = (param(form, "client_id"), param(form, "client_secret"));
    match (basic, posted) {
        (Some(_), (_, Some(_))) => Err(OAuthError::InvalidRequest(
            "use one client authentication method, not two".into(),
        )),
        (Some((id, secret)), (posted_id, None)) => {
            if posted_id.is_some_and(|p| p != id) {
                return Err(OAuthError::InvalidRequest(
                    "client_id does not match".into(),
                ));
            }
            Ok(ClientAuth {
                id,
                secret: Some(secret),
                basic: true,
                assertion: None,
            })
        }
        (None, (Some(id), secret)) if !id.is_empty() => Ok(ClientAuth {
            id,
            secret,
            basic: false,
            assertion: None,
        }),
        (None, _) => Err(OAuthError::InvalidClient { basic: false }),
    }
}

/// `private_key_jwt` (RFC 7523 §2.2): the assertion alone authenticates;
/// the client is the one it names (`client_id`, when also sent, must agree).
fn assertion_auth(
    with_basic: bool,
    form: &[(String, String)],
    assertion_type: Option<String>,
    assertion: Option<String>,
) -> Result<ClientAuth, OAuthError> {
    if with_basic || param(form, "client_secret").is_some() {
        return Err(OAuthError::InvalidRequest(
            "use one client authentication method, not two".into(),
        ));
    }
    if assertion_type.as_deref() != Some(CLIENT_ASSERTION_TYPE) {
        return Err(OAuthError::InvalidClient { basic: false });
    }
    let assertion = assertion.filter(|a| !a.is_empty()).ok_or_else(|| {
        OAuthError::InvalidRequest("client_assertion is required with client_assertion_type".into())
    })?;
    let named = unverified_issuer(&assertion).ok_or(OAuthError::InvalidClient { basic: false })?;
    if param(form, "client_id").is_some_and(|id| id != named) {
        return Err(OAuthError::InvalidClient { basic: false });
    }
    Ok(ClientAuth {
        id: named,
        secret: None,
        basic: false,
        assertion: Some(assertion),
    })
}

fn token_request(headers: &HeaderMap, body: &[u8]) -> Result<TokenRequest, OAuthError> {
    let form = form_body(headers, body)?;
    let grant_type = param(&form, "grant_type")
        .ok_or_else(|| OAuthError::InvalidRequest("grant_type is required".into()))?;
    // In token exchange the subject token proves who asks; a client may
    // still authenticate (and must then be the subject's own).
    let client = match client_auth(headers, &form) {
        Err(OAuthError::InvalidClient { basic: false }) if grant_type == GRANT_TOKEN_EXCHANGE => {
            None
        }
        other => Some(other?),
    };
    let resource = form
        .iter()
        .filter(|(n, _)| n == "resource")
        .map(|(_, v)| v.clone())
        .collect();
    let exchange = ExchangeParams {
        subject_token: param(&form, "subject_token"),
        subject_token_type: param(&form, "subject_token_type"),
        requested_token_type: param(&form, "requested_token_type"),
        task: param(&form, "task"),
        authorization_details: param(&form, "authorization_details"),
    };
    Ok(TokenRequest {
        grant_type,
        client,
        scope: param(&form, "scope"),
        resource,
        code: param(&form, "code"),
        redirect_uri: param(&form, "redirect_uri"),
        code_verifier: param(&form, "code_verifier"),
        refresh_token: param(&form, "refresh_token"),
        device_code: param(&form, "device_code"),
        assertion: param(&form, "assertion"),
        exchange,
    })
}

/// The client and the `token` parameter of a revocation or introspection request.
fn token_management(headers: &HeaderMap, body: &[u8]) -> Result<(ClientAuth, String), OAuthError> {
    let form = form_body(headers, body)?;
    let client = client_auth(headers, &form)?;
    let token = param(&form, "token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    Ok((client, token))
}

async fn revoke(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (client, token) = match token_management(&headers, &body) {
        Ok(parts) => parts,
        Err(e) => return error_response(&e),
    };
    match state
        .server
        .revoke(&client, &token, source(peer).as_deref(), state.clock.now())
        .await
    {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => error_response(&e),
    }
}

async fn introspect(
    State(state): State<Arc<AsState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (client, token) = match token_management(&headers, &body) {
        Ok(parts) => parts,
        Err(e) => return error_response(&e),
    };
    match state
        .server
        .introspect(&client, &token, state.clock.now())
        .await
    {
        Ok(answer) => no_store(Json(answer).into_response()),
        Err(e) => error_response(&e),
    }
}

async fn token(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match token_request(&headers, &body) {
        Ok(request) => request,
        Err(e) => return error_response(&e),
    };
    match state
        .server
        .token(request, source(peer), state.clock.now())
        .await
    {
        Ok(response) => no_store(Json(response).into_response()),
        Err(e) => error_response(&e),
    }
}

/// RFC 8628 §3.1: the client authenticates as at the token endpoint.
async fn device_authorization(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = form_body(&headers, &body).and_then(|form| {
        let client = client_auth(&headers, &form)?;
        let resource: Vec<String> = form
            .iter()
            .filter(|(n, _)| n == "resource")
            .map(|(_, v)| v.clone())
            .collect();
        Ok((client, param(&form, "scope"), resource))
    });
    let (client, scope, resource) = match parsed {
        Ok(parts) => parts,
        Err(e) => return error_response(&e),
    };
    match state
        .server
        .device_authorization(
            &client,
            scope.as_deref(),
            &resource,
            source(peer).as_deref(),
            state.clock.now(),
        )
        .await
    {
        Ok(response) => no_store(Json(response).into_response()),
        Err(e) => error_response(&e),
    }
}

/// RFC 7591 §3. An initial access token, when configured, comes as a
/// Bearer token (§3 and RFC 6750).
async fn register(
    State(state): State<Arc<AsState>>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !state.server.registration_allowed(bearer) {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({
                "error": "invalid_token",
                "error_description": "registration needs a valid initial access token",
            })),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"gatehouse\", error=\"invalid_token\""),
        );
        return no_store(response);
    }
    let json_content = has_media_type(&headers, "application/json");
    if !json_content {
        return error_response(&OAuthError::InvalidClientMetadata(
            "the request must be application/json".into(),
        ));
    }
    match state
        .server
        .register(&body, source(peer), state.clock.now())
        .await
    {
        Ok(response) => no_store((StatusCode::CREATED, Json(response)).into_response()),
        Err(e) => error_response(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

    type Case<'a> = (&'a [(&'static str, &'a str)], &'a [u8]);

    #[test]
    fn basic_and_post_client_authentication() {
        let basic = base64::engine::general_purpose::STANDARD.encode("ghc_a%3Ab:s%2Bcret");
        let h = headers(&[FORM, ("authorization", &format!("Basic {basic}"))]);
        let r = token_request(&h, b"grant_type=client_credentials").unwrap();
        let client = r.client.unwrap();
        assert_eq!(
            (client.id.as_str(), client.secret.as_deref()),
            ("ghc_a:b", Some("s+cret"))
        );
        assert!(client.basic);
        let h = headers(&[FORM]);
        let r = token_request(
            &h,
            b"grant_type=client_credentials&client_id=c&client_secret=s&resource=r1",
        )
        .unwrap();
        assert!(!r.client.unwrap().basic);
        assert_eq!(r.resource, vec!["r1"]);
        // A public client names itself only.
        let r = token_request(&h, b"grant_type=authorization_code&client_id=pub&code=c").unwrap();
        let client = r.client.unwrap();
        assert_eq!((client.id.as_str(), client.secret), ("pub", None));
    }

    #[test]
    fn malformed_requests_are_invalid_request() {
        let cases: [Case; 5] = [
            (
                &[],
                b"grant_type=client_credentials&client_id=c&client_secret=s",
            ),
            (
                &[FORM],
                b"grant_type=client_credentials&grant_type=x&client_id=c&client_secret=s",
            ),
            (
                &[FORM, ("authorization", "Basic !!!")],
                b"grant_type=client_credentials",
            ),
            (
                &[FORM, ("authorization", "Bearer x")],
                b"grant_type=client_credentials",
            ),
            (&[FORM], b"client_id=c&client_secret=s"),
        ];
        for (h, body) in cases {
            let err = token_request(&headers(h), body).unwrap_err();
            assert_eq!(err.code(), "invalid_request", "{h:?} {body:?}");
        }
        // Two methods at once.
        let basic = base64::engine::general_purpose::STANDARD.encode("c:s");
        let h = headers(&[FORM, ("authorization", &format!("Basic {basic}"))]);
        let err = token_request(&h, b"grant_type=client_credentials&client_secret=s").unwrap_err();
        assert_eq!(err.code(), "invalid_request");
        // No client authentication at all.
        let err = token_request(&headers(&[FORM]), b"grant_type=client_credentials").unwrap_err();
        assert_eq!(err.code(), "invalid_client");
    }
}
