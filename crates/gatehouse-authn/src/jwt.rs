//! Validation of RFC 9068 JWT access tokens (the resource-server side).
//!
//! The rules close the gaps jsonwebtoken leaves open (see
//! `security-cases.md` B2.1): the algorithm is pinned to ES256 by the key,
//! never taken from the token; `typ` must be `at+jwt`; any `crit` header is
//! rejected; keys are looked up by `kid` in an in-memory map only (embedded
//! `jwk`/`jku`/`x5u`/`x5c` headers are ignored); `exp`, `nbf` and `iat` are
//! checked against the caller's `now`, not the system clock; `aud`, `iss`,
//! `sub`, `exp`, `iat`, `client_id` and `jti` are required.
//!
//! Cheap checks run first: the size cap and the token shape are checked
//! before anything is base64-decoded or parsed.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use gatehouse_core::Timestamp;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize};

/// Default clock-skew allowance for `exp`, `nbf` and `iat`.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Upper bound for the leeway; larger configured values are clamped.
pub const MAX_LEEWAY_SECS: u64 = 60;
/// Default cap on the length of a token, checked before any decoding.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// Longest `kid` that is looked up at all.
pub const MAX_KID_BYTES: usize = 256;

/// The only signature algorithm accepted.
const ALG: &str = "ES256";
/// Length of a raw JWS ES256 signature (R ‖ S, 32 bytes each).
const ES256_SIGNATURE_BYTES: usize = 64;
/// Length of a P-256 field element (a JWK `x` or `y`).
const P256_COORDINATE_BYTES: usize = 32;

/// Why a token was rejected. Messages never contain token contents.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("the token is too large")]
    TooLarge,
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature algorithm is not accepted")]
    UnsupportedAlgorithm,
    #[error("the token is not an access token (typ)")]
    WrongType,
    #[error("the token has a critical header")]
    CriticalHeader,
    /// `zip`, `enc` or `b64` header: compression, encryption or an unencoded
    /// payload, none of which an access token may use.
    #[error("the token has an unsupported header")]
    UnsupportedHeader,
    #[error("the token has no key id")]
    MissingKeyId,
    #[error("the token's key id is not known")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    /// A claim that names the caller holds a control character (which the
    /// names Gatehouse keys principals by must not contain).
    #[error("the token's claim `{0}` holds a control character")]
    UnusableClaim(&'static str),
    /// A configured verification key is unusable (construction only).
    #[error("the verification key is invalid")]
    InvalidKey,
    /// The token names an issuer that is not configured.
    #[error("the token's issuer is not trusted")]
    UnknownIssuer,
    /// The issuer's keys could not be fetched and none are usable: the
    /// token is refused (fail closed). An outage, not the caller's doing.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    /// An opaque token its issuer's introspection endpoint calls inactive
    /// (unknown, expired or revoked there).
    #[error("the token is not active")]
    Inactive,
    /// The same: an opaque token its issuer already called inactive
    /// (answered from the cache). Presenting one token again tells a
    /// guesser nothing, so it does not count toward a lockout: a client
    /// repeating its expired token locked everyone behind its address.
    #[error("the token is not active")]
    StillInactive,
    /// The issuer's introspection endpoint could not answer: the token is
    /// refused (fail closed). An outage, not the caller's doing.
    #[error("the issuer cannot check the token now")]
    IntrospectionUnavailable,
    /// A signed assertion whose `sub` is not the one required (a client
    /// assertion: the client's own id).
    #[error("the token's subject is not accepted")]
    WrongSubject,
    /// A signed assertion valid for longer than assertions may be.
    #[error("the token is valid for too long")]
    LifetimeTooLong,
    /// An ID token whose `nonce` is not the one sent with this sign-in.
    #[error("the token's nonce does not match")]
    WrongNonce,
}

impl JwtError {
    /// Whether this failure was found only after the signature verified
    /// with one of our keys. Such a token was genuinely issued (it expired,
    /// is not valid yet, or names another issuer or audience, e.g. after the
    /// public URL changed); it is no guess. Every other failure is found
    /// before or at the signature check, so a guesser can cause it.
    pub fn signature_was_valid(&self) -> bool {
        match self {
            JwtError::Expired
            | JwtError::NotYetValid
            | JwtError::IssuedInFuture
            | JwtError::WrongIssuer
            | JwtError::WrongAudience
            | JwtError::MissingClaim(_)
            | JwtError::UnusableClaim(_)
            | JwtError::KeysUnavailable
            | JwtError::IntrospectionUnavailable
            | JwtError::WrongSubject
            | JwtError::LifetimeTooLong
            | JwtError::WrongNonce
            | JwtError::StillInactive => true,
            JwtError::TooLarge
            | JwtError::Malformed
            | JwtError::UnsupportedAlgorithm
            | JwtError::WrongType
            | JwtError::CriticalHeader
            | JwtError::UnsupportedHeader
            | JwtError::MissingKeyId
            | JwtError::UnknownKey
            | JwtError::BadSignature
            | JwtError::InvalidKey
            | JwtError::UnknownIssuer
            | JwtError::Inactive => false,
        }
    }

    /// Stable snake_case reason code for audit logs.
    pub fn code(&self) -> &'static str {
        match self {
            JwtError::TooLarge => "token_too_large",
            JwtError::Malformed => "malformed_token",
            JwtError::UnsupportedAlgorithm => "unsupported_algorithm",
            JwtError::WrongType => "wrong_token_type",
            JwtError::CriticalHeader => "critical_header",
            JwtError::UnsupportedHeader => "unsupported_header",
            JwtError::MissingKeyId => "missing_kid",
            JwtError::UnknownKey => "unknown_kid",
            JwtError::BadSignature => "bad_signature",
            JwtError::Expired => "token_expired",
            JwtError::NotYetValid => "token_not_yet_valid",
            JwtError::IssuedInFuture => "issued_in_future",
            JwtError::WrongIssuer => "wrong_issuer",
            JwtError::WrongAudience => "wrong_audience",
            JwtError::MissingClaim(_) => "missing_claim",
            JwtError::UnusableClaim(_) => "unusable_claim",
            JwtError::InvalidKey => "invalid_key",
            JwtError::UnknownIssuer => "unknown_issuer",
            JwtError::KeysUnavailable => "issuer_keys_unavailable",
            JwtError::Inactive | JwtError::StillInactive => "token_inactive",
            JwtError::IntrospectionUnavailable => "introspection_unavailable",
            JwtError::WrongSubject => "wrong_subject",
            JwtError::LifetimeTooLong => "lifetime_too_long",
            JwtError::WrongNonce => "wrong_nonce",
        }
    }
}

/// One verification key, pinned to ES256: the algorithm comes from the key,
/// never from the token header.
#[derive(Clone)]
pub struct VerificationKey {
    pub kid: String,
    decoding_key: DecodingKey,
}

impl VerificationKey {
    /// Builds a P-256 key from the base64url `x` and `y` members of an EC JWK.
    /// Rejects coordinates of the wrong length and points not on the curve.
    pub fn from_es256_jwk(kid: &str, x: &str, y: &str) -> Result<Self, JwtError> {
        if kid.is_empty() || kid.len() > MAX_KID_BYTES {
            return Err(JwtError::InvalidKey);
        }
        let point = p256_point(x, y).ok_or(JwtError::InvalidKey)?;
        Ok(VerificationKey {
            kid: kid.to_owned(),
            decoding_key: DecodingKey::from_ec_der(&point),
        })
    }
}

/// The uncompressed point 0x04 ‖ X ‖ Y from the base64url `x` and `y` of a
/// P-256 JWK, if both are 32 bytes and the point is on the curve (and not
/// the identity).
pub(crate) fn p256_point(x: &str, y: &str) -> Option<Vec<u8>> {
    let x = URL_SAFE_NO_PAD.decode(x).ok()?;
    let y = URL_SAFE_NO_PAD.decode(y).ok()?;
    if x.len() != P256_COORDINATE_BYTES || y.len() != P256_COORDINATE_BYTES {
        return None;
    }
    let mut point = Vec::with_capacity(1 + 2 * P256_COORDINATE_BYTES);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    aws_lc_rs::signature::ParsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
        &point,
    )
    .ok()?;
    Some(point)
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerificationKey")
            .field("kid", &self.kid)
            .field("alg", &ALG)
            .finish()
    }
}

/// What the resource server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatorConfig {
    /// Exact `iss` value (no normalisation: a trailing slash is a different issuer).
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Empty rejects all tokens.
    pub audiences: Vec<String>,
    /// Clock-skew allowance in seconds; clamped to [`MAX_LEEWAY_SECS`].
    pub leeway_secs: u64,
    /// Tokens longer than this are rejected before decoding.
    pub max_token_bytes: usize,
}

impl ValidatorConfig {
    /// A config with the default leeway and size cap.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> Self {
        ValidatorConfig {
            issuer: issuer.into(),
            audiences,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// `aud`: a single string or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    Single(String),
    Multiple(Vec<String>),
}

impl Audience {
    pub fn values(&self) -> &[String] {
        match self {
            Audience::Single(one) => std::slice::from_ref(one),
            Audience::Multiple(many) => many,
        }
    }

    pub fn contains(&self, audience: &str) -> bool {
        self.values().iter().any(|a| a == audience)
    }
}

/// The claims of a validated access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub jti: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Present on task tokens (token exchange): the task grant the token
    /// stands for; `jti` is then the grant id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskClaim>,
}

/// The `task` claim of a task token: the grant's task and allowlist, and
/// the credential it was derived from (which must still be valid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskClaim {
    pub name: String,
    pub tools: Vec<String>,
    /// `api_key` or `access_token`.
    pub base_kind: String,
    /// The base credential's id: an API key id, or an access token's `jti`.
    pub base_id: String,
    /// The key that signed the base access token: the task token stands
    /// only while that key is trusted (withdrawing a key stops the task
    /// tokens made from the tokens it signed). Absent for an API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_kid: Option<String>,
}

/// The payload as signed: every claim optional so that a missing one is
/// reported by name, not as a generic parse error. Derived `Deserialize`
/// rejects duplicate keys of these fields.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    client_id: Option<String>,
    scope: Option<String>,
    tenant: Option<String>,
    roles: Option<Vec<String>>,
    jti: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    task: Option<TaskClaim>,
}

/// The header members we look at. Derived `Deserialize` rejects duplicates.
#[derive(Deserialize)]
pub(crate) struct RawHeader {
    pub(crate) alg: Option<String>,
    pub(crate) typ: Option<String>,
    pub(crate) kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub(crate) crit: bool,
    #[serde(default, deserialize_with = "present")]
    pub(crate) b64: bool,
    #[serde(default, deserialize_with = "present")]
    pub(crate) zip: bool,
    #[serde(default, deserialize_with = "present")]
    pub(crate) enc: bool,
}

impl RawHeader {
    /// `crit` (RFC 7515 §4.1.11: an unknown one must be refused, and we know
    /// none), `b64`, `zip` and `enc` refuse the token; a `kid` is required.
    pub(crate) fn checked_kid(self) -> Result<String, JwtError> {
        self.checked_optional_kid()?
            .filter(|kid| !kid.is_empty())
            .ok_or(JwtError::MissingKeyId)
    }

    /// The same checks, for a signed assertion, which may name no key.
    pub(crate) fn checked_optional_kid(self) -> Result<Option<String>, JwtError> {
        if self.crit {
            return Err(JwtError::CriticalHeader);
        }
        if self.b64 || self.zip || self.enc {
            return Err(JwtError::UnsupportedHeader);
        }
        if self
            .kid
            .as_ref()
            .is_some_and(|kid| kid.len() > MAX_KID_BYTES)
        {
            return Err(JwtError::UnknownKey);
        }
        Ok(self.kid)
    }
}

/// The three segments of a compact JWS, after the size cap and a check of
/// the alphabet, before anything is decoded.
pub(crate) fn split_compact(token: &str, max_bytes: usize) -> Result<[&str; 3], JwtError> {
    if token.len() > max_bytes {
        return Err(JwtError::TooLarge);
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(JwtError::Malformed);
    }
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(JwtError::Malformed);
    };
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        return Err(JwtError::Malformed);
    }
    Ok([header, payload, signature])
}

/// The decoded header, which must be a JSON object without duplicate members.
pub(crate) fn decode_header(segment: &str) -> Result<RawHeader, JwtError> {
    let json = decode_segment(segment)?;
    if !is_json_object(&json) {
        return Err(JwtError::Malformed);
    }
    serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)
}

/// True whenever the member exists, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(deserializer)?;
    Ok(true)
}

/// Verifies a compact JWS that is not an access token, signed with one of
/// `keys` (ES256 only, the algorithm from the key), whose header `typ` is
/// exactly `typ`, and returns its payload. No registered claim is required
/// or checked: the caller checks what its claims mean (e.g. an audit
/// checkpoint, which stays valid for as long as the audit trail is kept).
pub fn verify_signed<T: serde::de::DeserializeOwned>(
    token: &str,
    typ: &str,
    keys: &[VerificationKey],
) -> Result<T, JwtError> {
    const MAX_SIGNED_BYTES: usize = 16 * 1024;
    let [header_b64, payload_b64, signature_b64] = split_compact(token, MAX_SIGNED_BYTES)?;
    let header = decode_header(header_b64)?;
    if header.alg.as_deref() != Some(ALG) {
        return Err(JwtError::UnsupportedAlgorithm);
    }
    if header.typ.as_deref() != Some(typ) {
        return Err(JwtError::WrongType);
    }
    let kid = header.checked_kid()?;
    let key = keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or(JwtError::UnknownKey)?;
    if !is_json_object(&decode_segment(payload_b64)?) {
        return Err(JwtError::Malformed);
    }
    if decode_segment(signature_b64)?.len() != ES256_SIGNATURE_BYTES {
        return Err(JwtError::BadSignature);
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_required_spec_claims::<&str>(&[]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<T>(token, &key.decoding_key, &validation)
        .map(|data| data.claims)
        .map_err(|e| map_jwt_error(e.kind()))
}

/// Validates access tokens against a fixed issuer, audiences and key set.
pub struct AccessTokenValidator {
    config: ValidatorConfig,
    keys: HashMap<String, VerificationKey>,
    validation: Validation,
}

impl fmt::Debug for AccessTokenValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("AccessTokenValidator")
            .field("config", &self.config)
            .field("kids", &kids)
            .finish()
    }
}

impl AccessTokenValidator {
    /// `leeway_secs` is clamped to [`MAX_LEEWAY_SECS`]. A later key with the
    /// same `kid` replaces an earlier one.
    pub fn new(mut config: ValidatorConfig, keys: Vec<VerificationKey>) -> Self {
        config.leeway_secs = config.leeway_secs.min(MAX_LEEWAY_SECS);

        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[config.issuer.as_str()]);
        validation.set_audience(&config.audiences);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = config.leeway_secs;
        // jsonwebtoken reads the system clock for these; we check them
        // against the caller's `now` instead (see `check_times`).
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;

        let keys = keys.into_iter().map(|k| (k.kid.clone(), k)).collect();
        AccessTokenValidator {
            config,
            keys,
            validation,
        }
    }

    /// Whether a key with this id verifies tokens here.
    pub fn has_key(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    pub fn config(&self) -> &ValidatorConfig {
        &self.config
    }

    /// Full validation of a compact JWS access token at time `now`.
    pub fn validate(&self, token: &str, now: Timestamp) -> Result<AccessTokenClaims, JwtError> {
        // 1. Size and shape, before any decoding.
        let [header_b64, payload_b64, signature_b64] =
            split_compact(token, self.config.max_token_bytes)?;

        // 2. Header: alg, typ, crit and friends, kid.
        let header = decode_header(header_b64)?;
        if header.alg.as_deref() != Some(ALG) {
            return Err(JwtError::UnsupportedAlgorithm);
        }
        if !header.typ.as_deref().is_some_and(is_access_token_type) {
            return Err(JwtError::WrongType);
        }
        let kid = header.checked_kid()?;
        let key = self.keys.get(&kid).ok_or(JwtError::UnknownKey)?;

        // The payload must be a JSON object (serde would also accept an
        // array for a struct), and the signature raw R ‖ S.
        if !is_json_object(&decode_segment(payload_b64)?) {
            return Err(JwtError::Malformed);
        }
        if decode_segment(signature_b64)?.len() != ES256_SIGNATURE_BYTES {
            return Err(JwtError::BadSignature);
        }

        // 3. Signature, iss, aud and required claims.
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.decoding_key, &self.validation)
            .map_err(|e| map_jwt_error(e.kind()))?;
        let raw = data.claims;

        // 4. Times, against `now`.
        let exp = raw.exp.ok_or(JwtError::MissingClaim("exp"))?;
        let iat = raw.iat.ok_or(JwtError::MissingClaim("iat"))?;
        self.check_times(exp, raw.nbf, iat, now)?;

        // 5. Remaining claims; iss/aud re-checked here as defence in depth.
        let iss = raw.iss.ok_or(JwtError::MissingClaim("iss"))?;
        if iss != self.config.issuer {
            return Err(JwtError::WrongIssuer);
        }
        let aud = raw.aud.ok_or(JwtError::MissingClaim("aud"))?;
        if !self.config.audiences.iter().any(|a| aud.contains(a)) {
            return Err(JwtError::WrongAudience);
        }
        let sub = non_empty(raw.sub, "sub")?;
        let client_id = non_empty(raw.client_id, "client_id")?;
        let jti = non_empty(raw.jti, "jti")?;

        Ok(AccessTokenClaims {
            iss,
            sub,
            aud,
            client_id,
            scope: raw.scope,
            tenant: raw.tenant,
            roles: raw.roles.unwrap_or_default(),
            jti,
            iat,
            exp,
            nbf: raw.nbf,
            task: raw.task,
        })
    }

    fn check_times(
        &self,
        exp: i64,
        nbf: Option<i64>,
        iat: i64,
        now: Timestamp,
    ) -> Result<(), JwtError> {
        check_times(exp, nbf, Some(iat), self.config.leeway_secs, now)
    }
}

/// `exp`, `nbf` and `iat` against `now`, with `leeway_secs` (clamped to
/// [`MAX_LEEWAY_SECS`]) either way.
pub(crate) fn check_times(
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    leeway_secs: u64,
    now: Timestamp,
) -> Result<(), JwtError> {
    let now_ms = now.as_millis();
    let leeway_ms = i64::try_from(leeway_secs.min(MAX_LEEWAY_SECS))
        .unwrap_or(0)
        .saturating_mul(1000);
    let earliest = now_ms.saturating_sub(leeway_ms);
    let latest = now_ms.saturating_add(leeway_ms);
    if exp.saturating_mul(1000) <= earliest {
        return Err(JwtError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf.saturating_mul(1000) > latest) {
        return Err(JwtError::NotYetValid);
    }
    if iat.is_some_and(|iat| iat.saturating_mul(1000) > latest) {
        return Err(JwtError::IssuedInFuture);
    }
    Ok(())
}

/// RFC 9068 §4: `at+jwt`, or the full media type; compared case-insensitively.
pub(crate) fn is_access_token_type(typ: &str) -> bool {
    typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
}

pub(crate) fn decode_segment(segment: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed)
}

pub(crate) fn is_json_object(json: &[u8]) -> bool {
    json.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

fn non_empty(value: Option<String>, claim: &'static str) -> Result<String, JwtError> {
    match value {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(JwtError::MissingClaim(claim)),
    }
}

/// Maps jsonwebtoken's errors without carrying over any of their text
/// (which can quote token contents).
pub(crate) fn map_jwt_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidKeyFormat => {
            JwtError::BadSignature
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => JwtError::UnsupportedAlgorithm,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(match claim.as_str() {
            "exp" => "exp",
            "iat" => "iat",
            "iss" => "iss",
            "aud" => "aud",
            "sub" => "sub",
            "nbf" => "nbf",
            _ => "unknown",
        }),
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        _ => JwtError::Malformed,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
