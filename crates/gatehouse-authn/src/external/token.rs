//! An external issuer's access token: checked the way our own are (size and
//! shape first, `crit`/`zip`/`b64`/`enc` refused, key by `kid` from the
//! issuer's set only, algorithm pinned by the key, `exp`/`nbf`/`iat` against
//! the caller's clock) and then mapped to a `Principal` by the issuer's
//! claim settings.

use gatehouse_core::{CredentialKind, CredentialRef, DEFAULT_TENANT, Principal, Timestamp};
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::config::{Issuer, TenantSource, TokenType};
use super::jwk::{ExternalKey, accepted_algorithm};
use crate::jwt::{
    Audience, JwtError, RawHeader, check_times, decode_header, decode_segment,
    is_access_token_type, is_json_object, map_jwt_error,
};

/// A token split and its header checked, before its key is looked up.
pub(crate) struct Parsed<'a> {
    pub(crate) token: &'a str,
    pub(crate) kid: String,
    pub(crate) alg: Algorithm,
    pub(crate) typ: Option<String>,
    /// The unverified `iss`, only to choose the issuer whose keys decide.
    pub(crate) iss: String,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<String>,
}

/// The unverified `iss` of a decoded payload (derived `Deserialize`
/// refuses a duplicate `iss`); `None` when it has none.
pub(crate) fn payload_issuer(payload: &[u8]) -> Result<Option<String>, JwtError> {
    Ok(serde_json::from_slice::<IssuerOnly>(payload)
        .map_err(|_| JwtError::Malformed)?
        .iss)
}

/// An integer claim; present but not an integer is malformed.
pub(crate) fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, JwtError> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(JwtError::Malformed),
    }
}

/// `exp` (required), `nbf` and `iat` against `now`; returns `exp`.
pub(crate) fn checked_times(
    claims: &Map<String, Value>,
    leeway_secs: u64,
    now: Timestamp,
) -> Result<i64, JwtError> {
    let exp = int_claim(claims, "exp")?.ok_or(JwtError::MissingClaim("exp"))?;
    check_times(
        exp,
        int_claim(claims, "nbf")?,
        int_claim(claims, "iat")?,
        leeway_secs,
        now,
    )?;
    Ok(exp)
}

/// `aud` (a string or an array) names one of `audiences`.
pub(crate) fn check_audience(
    claims: &Map<String, Value>,
    audiences: &[String],
) -> Result<(), JwtError> {
    let aud: Audience = claims
        .get("aud")
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or(JwtError::MissingClaim("aud"))?;
    if audiences.iter().any(|a| aud.contains(a)) {
        Ok(())
    } else {
        Err(JwtError::WrongAudience)
    }
}

/// Header checks that need no issuer, and the `iss` that routes the token.
pub(crate) fn parse(token: &str, max_bytes: usize) -> Result<Parsed<'_>, JwtError> {
    let [header_b64, payload_b64, _] = crate::jwt::split_compact(token, max_bytes)?;
    let header: RawHeader = decode_header(header_b64)?;
    let alg = header
        .alg
        .as_deref()
        .and_then(accepted_algorithm)
        .ok_or(JwtError::UnsupportedAlgorithm)?;
    let typ = header.typ.clone();
    let kid = header.checked_kid()?;
    let payload = decode_segment(payload_b64)?;
    if !is_json_object(&payload) {
        return Err(JwtError::Malformed);
    }
    // Without `iss` no key is looked for and no signature checked: anyone
    // can send such a token, so it is malformed (and counts toward a
    // lockout), not a claim missing from a token some issuer signed.
    let iss = payload_issuer(&payload)?.ok_or(JwtError::Malformed)?;
    Ok(Parsed {
        token,
        kid,
        alg,
        // Checked per issuer, in `verify`.
        typ,
        iss,
    })
}

fn type_accepted(issuer: &Issuer, typ: Option<&str>) -> bool {
    match issuer.token_type {
        TokenType::AccessTokenJwt => typ.is_some_and(is_access_token_type),
        TokenType::Untyped => {
            typ.is_none_or(|t| t.eq_ignore_ascii_case("JWT") || is_access_token_type(t))
        }
    }
}

/// The value at a dotted path (`realm_access.roles`); a claim whose own
/// name contains a dot (`https://example.com/roles`) is tried whole first.
fn claim_at<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(String::from)
            .collect(),
        _ => Vec::new(),
    }
}

fn string_claim(claims: &Map<String, Value>, path: &str) -> Option<String> {
    claim_at(claims, path)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// The Gatehouse roles the values at `roles_claim` map to through
/// `role_map` (sorted, no duplicates); unmapped values are ignored.
pub fn mapped_roles(
    claims: &Map<String, Value>,
    roles_claim: Option<&str>,
    role_map: &std::collections::BTreeMap<String, String>,
) -> Vec<String> {
    let mut roles: Vec<String> = roles_claim
        .and_then(|path| claim_at(claims, path))
        .map(strings)
        .unwrap_or_default()
        .iter()
        .filter_map(|value| role_map.get(value).cloned())
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Verifies `parsed` with `key` for `issuer` at `now` and maps its claims.
pub(crate) fn verify(
    parsed: &Parsed<'_>,
    key: &ExternalKey,
    issuer: &Issuer,
    now: Timestamp,
) -> Result<Principal, JwtError> {
    if !key.algorithms.contains(&parsed.alg) {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    if !type_accepted(issuer, parsed.typ.as_deref()) {
        return Err(JwtError::WrongType);
    }
    let mut validation = Validation::new(parsed.alg);
    validation.set_issuer(&[issuer.issuer.as_str()]);
    validation.set_audience(&issuer.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Times are checked against `now` below, not the system clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = true;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(parsed.token, &key.key, &validation)
        .map_err(|e| map_jwt_error(e.kind()))?
        .claims;

    let exp = checked_times(&claims, issuer.leeway_secs, now)?;
    // Defence in depth: iss and aud once more, exactly.
    if claims.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
        return Err(JwtError::WrongIssuer);
    }
    check_audience(&claims, &issuer.audiences)?;
    principal(&claims, issuer, parsed.token, exp, false)
}

pub(crate) fn principal(
    claims: &Map<String, Value>,
    issuer: &Issuer,
    token: &str,
    exp: i64,
    subject_may_be_client: bool,
) -> Result<Principal, JwtError> {
    let agent = issuer
        .agent_claims
        .iter()
        .find_map(|claim| string_claim(claims, claim));
    // An introspection answer need not carry `sub` (RFC 7662): a machine
    // token may name only its client, which is then the subject. A JWT
    // access token always has one (RFC 9068).
    let subject = string_claim(claims, &issuer.subject_claim)
        .or_else(|| agent.clone().filter(|_| subject_may_be_client))
        .ok_or(JwtError::MissingClaim("sub"))?;
    let agent = agent.unwrap_or_else(|| subject.clone());
    let tenant = match &issuer.tenant {
        TenantSource::Fixed(tenant) => tenant.clone(),
        TenantSource::Claim(claim, allowed) => {
            let named = string_claim(claims, claim).ok_or(JwtError::MissingClaim("tenant"))?;
            if !allowed.contains(&named) {
                return Err(JwtError::UnusableClaim("tenant"));
            }
            named
        }
        TenantSource::Default => DEFAULT_TENANT.to_owned(),
    };
    for (claim, value) in [("sub", &subject), ("agent", &agent), ("tenant", &tenant)] {
        if value.chars().any(char::is_control) {
            return Err(JwtError::UnusableClaim(claim));
        }
    }
    let roles = mapped_roles(claims, issuer.roles_claim.as_deref(), &issuer.role_map);
    let scopes = claims
        .get("scope")
        .or_else(|| claims.get("scp"))
        .map(strings);
    // The credential is named by its `jti`, or else by a digest of the
    // token: never by the token itself.
    let id = match string_claim(claims, "jti") {
        Some(jti) => jti,
        None => {
            let digest = Sha256::digest(token.as_bytes());
            format!("sha256:{}", hex::encode(&digest[..16]))
        }
    };
    Ok(Principal {
        tenant,
        human: (subject != agent).then_some(subject),
        agent,
        credential: CredentialRef {
            kind: CredentialKind::ExternalToken,
            id,
        },
        roles,
        scopes,
        expires_at: Some(Timestamp::from_secs(exp)),
        task: None,
        issuer: Some(issuer.issuer.clone()),
    })
}
