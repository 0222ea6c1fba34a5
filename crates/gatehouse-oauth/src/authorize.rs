//! The authorization endpoint's logic (RFC 6749 §4.1, OAuth 2.1): check
//! the request, keep it while the user logs in and consents, then answer
//! the client with a code or an error. No HTTP here.
//!
//! Until the client and its redirect URI are verified, errors are shown
//! to the user and never sent to the redirect URI (RFC 9700 §4.11: no open
//! redirector). After that, errors go back to the client with `state` and
//! `iss` (RFC 9207).

use gatehouse_audit::EventBuilder;
use gatehouse_core::{AuditKind, Outcome, Timestamp};
use gatehouse_store::{AuthCodeRecord, ClientRecord, GrantRecord, NewGrant, UserRecord};
use serde::{Deserialize, Serialize};

use crate::server::{
    AuthorizationServer, GRANT_AUTHORIZATION_CODE, MetadataClientError, random_token, unavailable,
};
use crate::{OAuthError, pkce, redirect_uri};

/// Marks an authorization code as Gatehouse's, like every other secret it
/// issues (`gh?_`): a code presented as a bearer token by mistake is never
/// sent to an external identity provider's introspection endpoint.
pub const AUTHORIZATION_CODE_PREFIX: &str = "gha_";

/// Codes live at most this long (RFC 6749 §4.1.2 recommends ≤ 10 min; the
/// issue asks for ≤ 60 s).
pub const CODE_TTL_MS: i64 = 60_000;
/// How long a user may take to log in and consent.
pub const PENDING_REQUEST_TTL_MS: i64 = 10 * 60_000;
/// `state` is opaque to us, but it is stored and echoed, so it is bounded.
const MAX_STATE_BYTES: usize = 2048;

/// A verified authorization request, kept while the user logs in and consents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: Vec<String>,
    pub resource: String,
    pub code_challenge: String,
    /// A public client has no secret, so anyone can claim its id.
    #[serde(default)]
    pub public_client: bool,
}

impl AuthorizationRequest {
    /// Under which key a consent is remembered. A public client's id can be
    /// claimed by any program on the user's machine (a loopback redirect
    /// may change its port), so its consent is remembered only for the
    /// exact redirect URI it was given for (RFC 6749 §10.2: the server
    /// cannot be sure of a public client's identity); a confidential client's for the client.
    pub fn consent_key(&self) -> String {
        if self.public_client {
            format!("{}\u{1f}{}", self.client_id, self.redirect_uri)
        } else {
            self.client_id.clone()
        }
    }

    /// Where the user is sent back to, shown on the consent page: the
    /// host of a web address; for a native app's own scheme
    /// (`com.example.app:/cb`), whichever app handles that scheme, never
    /// the host part such a URI may carry (`com.evil.app://gatehouse.corp`
    /// does not go to gatehouse.corp).
    pub fn redirect_host(&self) -> String {
        let Ok(url) = url::Url::parse(&self.redirect_uri) else {
            return String::new();
        };
        match (url.scheme(), url.host_str()) {
            ("http" | "https", Some(host)) => host.to_string(),
            (scheme, _) => format!("the app that opens {scheme}: links"),
        }
    }
}

#[derive(Debug)]
pub enum AuthorizeError {
    /// The client or its redirect URI is not trusted: tell the user only.
    Page(String),
    /// Tell the client: a URL at its verified redirect URI.
    Redirect(String),
    /// Too many requests from this source (or new metadata-document
    /// clients, or fetches from their host): tell the user when to retry.
    RateLimited { retry_after_secs: u64 },
    /// The server cannot take this client now, for a reason the user (or
    /// the operator) can act on: tell the user only.
    Unavailable(String),
    /// Storage or audit failed: nothing was decided.
    Server(OAuthError),
}

impl From<OAuthError> for AuthorizeError {
    fn from(e: OAuthError) -> Self {
        AuthorizeError::Server(e)
    }
}

fn parse_request(json: &str) -> Result<AuthorizationRequest, OAuthError> {
    serde_json::from_str(json).map_err(|e| OAuthError::ServerError(e.to_string()))
}

fn single<'a>(query: &'a [(String, String)], name: &str) -> Result<Option<&'a str>, String> {
    let mut values = query.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(format!(
            "the parameter {} appears more than once",
            quoted_name(name)
        ));
    }
    Ok(first.map(String::as_str))
}

/// A parameter's name as an error page shows it: quoted and short, so a
/// link cannot make Gatehouse's own page say a sentence of its choosing
/// ("Your account is locked. Call …").
fn quoted_name(name: &str) -> String {
    const SHOWN_CHARS: usize = 32;
    let mut shown: String = name.chars().take(SHOWN_CHARS).collect();
    if shown.len() < name.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

/// Refuses a query that names a parameter twice (`resource` may repeat).
/// One pass: a query holds up to ~16,000 names, and a check per name that
/// scanned them all took most of a second of a runtime worker.
fn repeated_parameter(query: &[(String, String)]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::with_capacity(query.len());
    for (name, _) in query {
        if name != "resource" && !seen.insert(name.as_str()) {
            return Err(format!(
                "the parameter {} appears more than once",
                quoted_name(name)
            ));
        }
    }
    Ok(())
}

/// `redirect_uri` with the response parameters added, plus `iss`.
pub(crate) fn response_url(
    redirect_uri: &str,
    issuer: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Result<String, OAuthError> {
    let mut url = url::Url::parse(redirect_uri)
        .map_err(|_| OAuthError::ServerError("stored redirect URI does not parse".into()))?;
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in params {
            query.append_pair(name, value);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    Ok(url.to_string())
}

impl AuthorizationServer {
    fn error_url(
        &self,
        redirect: &str,
        state: Option<&str>,
        error: &OAuthError,
    ) -> Result<AuthorizeError, OAuthError> {
        let description = error.to_string();
        Ok(AuthorizeError::Redirect(response_url(
            redirect,
            &self.config.issuer,
            state,
            &[("error", error.code()), ("error_description", &description)],
        )?))
    }

    /// Checks an authorization request. The order matters: client and
    /// redirect URI first, and only then may errors be redirected.
    ///
    /// Each request stores a pending authorization, and a new metadata
    /// document URL costs a fetch and a client row, so both are limited per
    /// `source` (the request's address).
    pub async fn validate_authorization(
        &self,
        query: &[(String, String)],
        source: Option<&str>,
        now: Timestamp,
    ) -> Result<AuthorizationRequest, AuthorizeError> {
        if let Err(wait_ms) = self
            .authorize_attempts
            .attempt(source.unwrap_or("unknown"), now)
        {
            return Err(AuthorizeError::RateLimited {
                retry_after_secs: gatehouse_core::retry_after_secs(wait_ms),
            });
        }
        repeated_parameter(query).map_err(AuthorizeError::Page)?;
        let client_id = single(query, "client_id")
            .map_err(AuthorizeError::Page)?
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                AuthorizeError::Page("The request names no client (client_id).".into())
            })?;
        let found = if crate::cimd::is_client_id_url(client_id) {
            self.metadata_document_client(client_id, Some(source), now)
                .await
        } else {
            self.find_client(client_id, now)
                .await
                .map_err(MetadataClientError::Server)
        };
        let client = match found {
            Ok(Some(client)) => client,
            Ok(None) => {
                return Err(AuthorizeError::Page(
                    "The application is not registered with this server.".into(),
                ));
            }
            Err(MetadataClientError::Refused(why)) => {
                return Err(AuthorizeError::Page(format!(
                    "The application's metadata document was refused: {why}"
                )));
            }
            Err(MetadataClientError::RateLimited { retry_after_secs }) => {
                return Err(AuthorizeError::RateLimited { retry_after_secs });
            }
            Err(MetadataClientError::Full { limit }) => {
                return Err(AuthorizeError::Unavailable(format!(
                    "This server already keeps {limit} applications identified by a metadata \
                     document, the most it may (oauth.client_metadata_max_clients), and cannot \
                     take a new one now. Unused ones expire; the operator can remove some with \
                     `gatehouse clients revoke` or raise the limit."
                )));
            }
            Err(MetadataClientError::Server(e)) => return Err(AuthorizeError::Server(e)),
        };
        let redirect = self.verified_redirect_uri(&client, single(query, "redirect_uri"))?;
        let state = single(query, "state").map_err(AuthorizeError::Page)?;
        // Anyone can register a client (or publish a metadata document)
        // whose redirect URI is theirs. Redirecting its malformed requests
        // there at once, before anyone signed in, would make Gatehouse an
        // open redirector: a link under Gatehouse's name that lands on the
        // attacker's page (RFC 9700 §4.11.2). Such a client's request
        // errors are shown here; an operator's clients get them as RFC
        // 6749 says, at their redirect URI.
        let operator_client = client.registered_by == crate::REGISTERED_BY_OPERATOR;
        let fail = |error: OAuthError| -> AuthorizeError {
            if !operator_client {
                return AuthorizeError::Page(format!(
                    "The application's sign-in request is invalid ({}: {error}). Nothing was \
                     sent to the application; it needs to be fixed.",
                    error.code()
                ));
            }
            match self.error_url(&redirect, state, &error) {
                Ok(redirect) => redirect,
                Err(e) => AuthorizeError::Server(e),
            }
        };
        if state.is_some_and(|s| s.len() > MAX_STATE_BYTES) {
            return Err(fail(OAuthError::InvalidRequest("state is too long".into())));
        }
        match single(query, "response_type") {
            Ok(Some("code")) => {}
            Ok(Some(other)) => {
                return Err(fail(OAuthError::UnsupportedResponseType(format!(
                    "response_type {other:?} is not supported; use code"
                ))));
            }
            _ => {
                return Err(fail(OAuthError::InvalidRequest(
                    "response_type is required".into(),
                )));
            }
        }
        if let Ok(Some(mode)) = single(query, "response_mode")
            && mode != "query"
        {
            return Err(fail(OAuthError::InvalidRequest(
                "only response_mode=query is supported".into(),
            )));
        }
        if !client.allows_grant(GRANT_AUTHORIZATION_CODE) {
            return Err(fail(OAuthError::UnauthorizedClient(
                "this client may not use the authorization code grant".into(),
            )));
        }
        let challenge = single(query, "code_challenge")
            .ok()
            .flatten()
            .unwrap_or_default();
        let method = single(query, "code_challenge_method").ok().flatten();
        if let Err(e) = pkce::validate_challenge(method, challenge) {
            return Err(fail(OAuthError::InvalidRequest(format!(
                "PKCE with S256 is required: {e}"
            ))));
        }
        let requested = single(query, "scope").ok().flatten().unwrap_or("");
        let scope = match self.check_scope(requested, &client.scopes) {
            Ok(scope) if scope.is_empty() => self.default_scope(&client),
            Ok(scope) => scope,
            Err(e) => return Err(fail(e)),
        };
        let resources: Vec<String> = query
            .iter()
            .filter(|(n, _)| n == "resource")
            .map(|(_, v)| v.clone())
            .collect();
        if let Err(e) = self.check_resource(&resources) {
            return Err(fail(e));
        }
        Ok(AuthorizationRequest {
            client_id: client.id.clone(),
            client_name: client.name.clone(),
            redirect_uri: redirect,
            state: state.map(str::to_string),
            scope,
            resource: self.config.resource.clone(),
            code_challenge: challenge.to_string(),
            public_client: client.is_public(),
        })
    }

    /// Without a requested scope, a client gets what it is limited to, or
    /// every scope (the user's roles still decide what it can do).
    fn default_scope(&self, client: &ClientRecord) -> Vec<String> {
        client.scopes.clone().unwrap_or_else(|| self.known_scopes())
    }

    /// RFC 9700 §4.1.3: exact match against the registered URIs, except
    /// the port of a loopback URI (RFC 8252 §7.3). A client with exactly
    /// one registered URI may leave it out.
    fn verified_redirect_uri(
        &self,
        client: &ClientRecord,
        presented: Result<Option<&str>, String>,
    ) -> Result<String, AuthorizeError> {
        let presented = presented.map_err(AuthorizeError::Page)?;
        match presented {
            None => match client.redirect_uris.as_slice() {
                [only] => Ok(only.clone()),
                _ => Err(AuthorizeError::Page(
                    "The request has no redirect_uri, and the application has more than one."
                        .into(),
                )),
            },
            Some(uri) => {
                if client
                    .redirect_uris
                    .iter()
                    .any(|registered| redirect_uri::matches(registered, uri))
                {
                    Ok(uri.to_string())
                } else {
                    Err(AuthorizeError::Page(
                        "The redirect_uri is not registered for this application.".into(),
                    ))
                }
            }
        }
    }

    /// Keeps a verified request while the user logs in and consents;
    /// returns its id (the "transaction").
    pub async fn begin_authorization(
        &self,
        request: &AuthorizationRequest,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        let id = random_token(24)?;
        let json =
            serde_json::to_string(request).map_err(|e| OAuthError::ServerError(e.to_string()))?;
        self.store
            .insert_authorization_request(
                &id,
                &request.client_id,
                &json,
                now,
                now.plus_millis(PENDING_REQUEST_TTL_MS),
            )
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    pub async fn pending_authorization(
        &self,
        txn: &str,
        now: Timestamp,
    ) -> Result<Option<AuthorizationRequest>, OAuthError> {
        let stored = self
            .store
            .authorization_request(txn, now)
            .await
            .map_err(unavailable)?;
        stored.as_deref().map(parse_request).transpose()
    }

    /// Removes and returns a pending request: whoever takes it decides it,
    /// so a second submit of the same form finds nothing.
    async fn take_pending(
        &self,
        txn: &str,
        now: Timestamp,
    ) -> Result<Option<AuthorizationRequest>, OAuthError> {
        let stored = self
            .store
            .take_authorization_request(txn, now)
            .await
            .map_err(unavailable)?;
        stored.as_deref().map(parse_request).transpose()
    }

    /// Whether the user already consented to this client for at least
    /// these scopes.
    pub async fn has_consent(
        &self,
        user: &UserRecord,
        request: &AuthorizationRequest,
    ) -> Result<bool, OAuthError> {
        let Some(granted) = self
            .store
            .consent(&user.username, &request.consent_key())
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        // Consent is stored for the scopes the user's roles can use, so
        // compare those, not everything the client asked for.
        let granted: Vec<&str> = granted.split(' ').collect();
        Ok(self
            .consent_scopes(request, user)
            .iter()
            .all(|s| granted.contains(&s.as_str())))
    }

    /// What the consent page lists: the requested scopes the user's roles can use.
    pub fn consent_scopes(&self, request: &AuthorizationRequest, user: &UserRecord) -> Vec<String> {
        self.scopes_for_user(&request.scope, &user.roles)
    }

    /// The user's decision. The pending request is taken (single use), so
    /// a second submit of the same form decides nothing. Returns the URL
    /// to send the browser to: the client's redirect URI with a code, or
    /// with `access_denied`.
    pub async fn decide_authorization(
        &self,
        txn: &str,
        user: &UserRecord,
        approve: bool,
        source: Option<String>,
        now: Timestamp,
    ) -> Result<Option<String>, OAuthError> {
        let Some(request) = self.take_pending(txn, now).await? else {
            return Ok(None);
        };
        let scope = self.consent_scopes(&request, user).join(" ");
        // Written before the consent is stored (the record comes first, as
        // for every decision); when the store then refuses it, a second
        // record says so.
        let consent_record = |outcome: Outcome, decision: &str, reason: &str| {
            EventBuilder::new(AuditKind::Authorization, outcome, now)
                .human(&user.username)
                .tenant(&user.tenant)
                .agent(&request.client_id)
                .source(source.clone())
                .tool("oauth/authorize")
                .decision(decision)
                .reason(reason)
                .arguments(
                    serde_json::json!({"scope": scope, "redirect_uri": request.redirect_uri}),
                )
                .build()
        };
        self.record(if approve {
            consent_record(Outcome::Success, "allow", "consent_granted")
        } else {
            consent_record(Outcome::Failure, "deny", "consent_denied")
        })
        .await?;
        if !approve {
            return response_url(
                &request.redirect_uri,
                &self.config.issuer,
                request.state.as_deref(),
                &[
                    ("error", OAuthError::AccessDenied.code()),
                    ("error_description", "the user denied the request"),
                ],
            )
            .map(Some);
        }
        let remembered = self
            .store
            .put_consent(user, &request.consent_key(), &scope, now)
            .await
            .map_err(unavailable)?;
        if !remembered {
            self.record(consent_record(Outcome::Failure, "deny", "account_changed"))
                .await?;
            return Err(user_changed());
        }
        self.issue_code(&request, user, now).await.map(Some)
    }

    /// A code for an approved request, bound to the client, redirect URI,
    /// PKCE challenge, scope and resource. Only its hash is stored.
    pub async fn issue_code(
        &self,
        request: &AuthorizationRequest,
        user: &UserRecord,
        now: Timestamp,
    ) -> Result<String, OAuthError> {
        let code = format!("{AUTHORIZATION_CODE_PREFIX}{}", random_token(32)?);
        let grant = GrantRecord {
            id: random_token(16)?,
            client_id: request.client_id.clone(),
            username: user.username.clone(),
            tenant: user.tenant.clone(),
            roles: user.roles.clone(),
            scope: self.consent_scopes(request, user).join(" "),
            resource: request.resource.clone(),
            created_at: now,
            revoked_at: None,
        };
        let record = AuthCodeRecord {
            code_hash: self.pepper.hash(code.as_bytes()),
            grant_id: grant.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            code_challenge: request.code_challenge.clone(),
            expires_at: now.plus_millis(CODE_TTL_MS),
        };
        let stored = self
            .store
            .insert_code_grant(
                NewGrant {
                    grant: &grant,
                    password_hash: &user.password_hash,
                },
                &record,
            )
            .await
            .map_err(unavailable)?;
        if !stored {
            tracing::warn!(user = %user.username, client = %request.client_id,
                "no code issued: the user's password, roles or access changed while the request was decided");
            return Err(user_changed());
        }
        response_url(
            &request.redirect_uri,
            &self.config.issuer,
            request.state.as_deref(),
            &[("code", &code)],
        )
    }

    /// When the user already consented: take the pending request and answer
    /// with a code at once, without showing the consent page again.
    pub async fn complete_with_consent(
        &self,
        txn: &str,
        user: &UserRecord,
        now: Timestamp,
    ) -> Result<Option<String>, OAuthError> {
        let Some(request) = self.take_pending(txn, now).await? else {
            return Ok(None);
        };
        self.issue_code(&request, user, now).await.map(Some)
    }
}

/// The refusal when a user's password, roles or access changed while a
/// consent, device approval or assertion was being decided (see
/// `NewGrant`): what was decided under the old account is not stored.
pub(crate) fn user_changed() -> OAuthError {
    OAuthError::InvalidGrant(
        "the account changed (password, roles or access) while this was being decided; sign in again"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_found_in_one_pass() {
        let query = |names: &[&str]| -> Vec<(String, String)> {
            names
                .iter()
                .map(|n| (n.to_string(), "v".to_string()))
                .collect()
        };
        assert!(repeated_parameter(&query(&["client_id", "resource", "resource"])).is_ok());
        let twice = repeated_parameter(&query(&["client_id", "state", "client_id"]));
        assert_eq!(
            twice.unwrap_err(),
            "the parameter \"client_id\" appears more than once"
        );
        // A link's own sentence as a name is shown quoted and cut short.
        let sentence = "Your account is locked. Call IT at 555-0100 to unlock it now";
        let shown = repeated_parameter(&query(&[sentence, sentence])).unwrap_err();
        assert!(!shown.contains("to unlock it now"), "{shown}");
        assert!(
            shown.contains("\"Your account is locked. Call IT …\""),
            "{shown}"
        );
        // 16,000 distinct names (what fits in a request line) and one
        // repeated at the end: answered (the quadratic check took ~0.8 s
        // of CPU for this; no time is asserted, the count of names is
        // what the test is about).
        let mut many: Vec<(String, String)> = (0..16_000)
            .map(|i| (format!("p{i}"), String::new()))
            .collect();
        assert!(repeated_parameter(&many).is_ok());
        many.push(("p7".into(), String::new()));
        assert!(repeated_parameter(&many).is_err());
    }

    #[test]
    fn response_url_keeps_the_registered_query_and_adds_iss() {
        let url = response_url(
            "https://app.example/cb?x=1",
            "https://gh.example",
            Some("s t"),
            &[("code", "abc")],
        )
        .unwrap();
        assert_eq!(
            url,
            "https://app.example/cb?x=1&code=abc&state=s+t&iss=https%3A%2F%2Fgh.example"
        );
    }

    #[test]
    fn the_consent_page_names_an_apps_scheme_not_the_host_it_carries() {
        let request = |redirect_uri: &str| AuthorizationRequest {
            client_id: "c".into(),
            client_name: "app".into(),
            redirect_uri: redirect_uri.into(),
            state: None,
            scope: Vec::new(),
            resource: "r".into(),
            code_challenge: "x".into(),
            public_client: true,
        };
        assert_eq!(
            request("https://app.example/cb").redirect_host(),
            "app.example"
        );
        assert_eq!(
            request("http://127.0.0.1:4711/cb").redirect_host(),
            "127.0.0.1"
        );
        assert_eq!(
            request("com.evil.app://gatehouse.corp/cb").redirect_host(),
            "the app that opens com.evil.app: links"
        );
        assert_eq!(
            request("com.example.app:/cb").redirect_host(),
            "the app that opens com.example.app: links"
        );
    }

    #[test]
    fn duplicate_parameters_are_refused() {
        let query = vec![
            ("client_id".to_string(), "a".to_string()),
            ("client_id".to_string(), "b".to_string()),
        ];
        assert!(single(&query, "client_id").is_err());
        assert_eq!(single(&query, "state"), Ok(None));
    }
}
