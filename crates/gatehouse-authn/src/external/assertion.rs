//! Signed assertions presented to Gatehouse's authorization server: a
//! client's `private_key_jwt` (RFC 7523 §2.2) and an identity assertion
//! from a trusted identity provider (ID-JAG). Both are short-lived JWTs
//! signed by a key Gatehouse found itself (the client's registered JWKS,
//! the provider's), never by one the assertion carries.
//!
//! The checks an access token gets (size, alphabet, header members,
//! algorithm pinned by the key, times against the caller's clock) apply,
//! plus: `iss` (and, for a client, `sub`) fixed by the caller, exactly one
//! audience and it must be ours (the audience-injection fix of RFC 7523bis:
//! an assertion made for any other party is refused, even if it lists us
//! too), a `jti` for single use (the caller remembers it), and a lifetime
//! no longer than the caller allows.

use std::collections::HashMap;
use std::sync::Arc;

use gatehouse_core::Timestamp;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use super::jwk::{ExternalKey, SOLE_KEY, accepted_algorithm};
use super::key_set::KeySet;
use super::token::{checked_times, int_claim, payload_issuer};
use crate::jwt::{
    DEFAULT_MAX_TOKEN_BYTES, JwtError, decode_header, decode_segment, is_json_object, map_jwt_error,
};

/// Longest `jti` remembered.
const MAX_JTI_BYTES: usize = 256;

/// Which `typ` header an assertion may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssertionType {
    /// A client assertion: none, `JWT` or `client-authentication+jwt`;
    /// never the type of another token (`at+jwt`, `oauth-id-jag+jwt`...).
    ClientAuthentication,
    /// Exactly this type (an identity assertion: `oauth-id-jag+jwt`).
    Exactly(&'static str),
}

/// What an assertion must say.
pub struct AssertionRules<'a> {
    pub issuer: &'a str,
    /// The required `sub`, when the caller fixes it (a client assertion:
    /// the client id); otherwise `sub` must merely be present.
    pub subject: Option<&'a str>,
    /// Gatehouse's identifiers: `aud` must be exactly one of them.
    pub audiences: &'a [String],
    pub typ: AssertionType,
    /// Longest accepted lifetime, from `iat` (when present) and from now.
    pub max_lifetime_secs: i64,
    pub leeway_secs: u64,
    pub algorithms: &'a [Algorithm],
}

/// Where the signing key comes from.
pub enum AssertionKeys<'a> {
    /// A key set fetched from a URL (and cached).
    Fetched(&'a Arc<KeySet>),
    /// A JWKS document registered with the client.
    Given(&'a HashMap<String, ExternalKey>),
}

/// A verified assertion.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub claims: Map<String, Value>,
    pub jti: String,
    pub exp: i64,
}

/// The unverified `iss` of an assertion, only to find who claims to have
/// made it (whose keys then decide).
pub fn unverified_issuer(token: &str) -> Option<String> {
    let [_, payload, _] = crate::jwt::split_compact(token, DEFAULT_MAX_TOKEN_BYTES).ok()?;
    let payload = decode_segment(payload).ok()?;
    payload_issuer(&payload).ok()?
}

fn type_accepted(rule: AssertionType, typ: Option<&str>) -> bool {
    match rule {
        AssertionType::ClientAuthentication => typ.is_none_or(|t| {
            t.eq_ignore_ascii_case("JWT") || t.eq_ignore_ascii_case("client-authentication+jwt")
        }),
        AssertionType::Exactly(expected) => typ.is_some_and(|t| t.eq_ignore_ascii_case(expected)),
    }
}

/// The claims of `token` once its header passes (`typ` judged by
/// `typ_ok`), its algorithm is allowed and pinned by the key, and its
/// signature verifies with a key from `keys`. Nothing in the claims is
/// judged yet.
pub(crate) async fn signed_claims(
    token: &str,
    keys: AssertionKeys<'_>,
    algorithms: &[Algorithm],
    typ_ok: impl Fn(Option<&str>) -> bool,
    now: Timestamp,
) -> Result<Map<String, Value>, JwtError> {
    let [header_b64, payload_b64, _] = crate::jwt::split_compact(token, DEFAULT_MAX_TOKEN_BYTES)?;
    let header = decode_header(header_b64)?;
    let alg = header
        .alg
        .as_deref()
        .and_then(accepted_algorithm)
        .filter(|alg| algorithms.contains(alg))
        .ok_or(JwtError::UnsupportedAlgorithm)?;
    if !typ_ok(header.typ.as_deref()) {
        return Err(JwtError::WrongType);
    }
    let kid = header.checked_optional_kid()?;
    let payload = decode_segment(payload_b64)?;
    if !is_json_object(&payload) {
        return Err(JwtError::Malformed);
    }
    // No key named: the set's only key, if it has exactly one.
    let kid = kid
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| SOLE_KEY.to_owned());
    let key = match keys {
        AssertionKeys::Fetched(set) => set.key(&kid, now).await?,
        AssertionKeys::Given(map) => map.get(&kid).cloned().ok_or(JwtError::UnknownKey)?,
    };
    if !key.algorithms.contains(&alg) {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    let mut validation = Validation::new(alg);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    // The caller checks these, exactly and against `now`.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    Ok(
        jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| map_jwt_error(e.kind()))?
            .claims,
    )
}

/// Verifies `token` under `rules` with a key from `keys`, at `now`.
pub async fn verify_assertion(
    token: &str,
    keys: AssertionKeys<'_>,
    rules: &AssertionRules<'_>,
    now: Timestamp,
) -> Result<Assertion, JwtError> {
    let claims = signed_claims(
        token,
        keys,
        rules.algorithms,
        |typ| type_accepted(rules.typ, typ),
        now,
    )
    .await?;
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(JwtError::WrongIssuer);
    }
    let sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(JwtError::MissingClaim("sub"))?;
    if rules.subject.is_some_and(|expected| expected != sub) {
        return Err(JwtError::WrongSubject);
    }
    // Exactly one audience, and it is ours.
    let aud = match claims.get("aud") {
        Some(Value::String(one)) => Some(one.as_str()),
        Some(Value::Array(items)) if items.len() == 1 => items[0].as_str(),
        Some(_) => None,
        None => return Err(JwtError::MissingClaim("aud")),
    };
    if !aud.is_some_and(|aud| rules.audiences.iter().any(|a| a == aud)) {
        return Err(JwtError::WrongAudience);
    }
    let exp = checked_times(&claims, rules.leeway_secs, now)?;
    let iat = int_claim(&claims, "iat")?;
    let leeway = i64::try_from(rules.leeway_secs).unwrap_or(0);
    let too_long = exp.saturating_sub(now.as_secs()) > rules.max_lifetime_secs + leeway
        || iat.is_some_and(|iat| exp.saturating_sub(iat) > rules.max_lifetime_secs);
    if too_long {
        return Err(JwtError::LifetimeTooLong);
    }
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or(JwtError::MissingClaim("jti"))?
        .to_owned();
    Ok(Assertion { claims, jti, exp })
}
