//! An OpenID Connect ID token, as Gatehouse receives it when it signs a
//! person in through an identity provider (OpenID Connect Core §3.1.3.7):
//! signed by the provider's keys (never by a key the token carries), `iss`
//! exactly the provider, Gatehouse's client id in `aud` (and, if `aud`
//! names others too, as `azp`), `exp` and `iat` present and sane, and the
//! `nonce` Gatehouse sent with this very sign-in (a replayed or injected ID
//! token carries another).

use gatehouse_core::Timestamp;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::assertion::{AssertionKeys, signed_claims};
use super::token::{checked_times, int_claim};
use crate::jwt::JwtError;

/// What the ID token must say.
pub struct IdTokenRules<'a> {
    pub issuer: &'a str,
    /// Gatehouse's client id at the provider.
    pub client_id: &'a str,
    /// The nonce sent in the authorization request.
    pub nonce: &'a str,
    pub leeway_secs: u64,
    pub algorithms: &'a [Algorithm],
}

/// An ID token's `typ`, when present, is `JWT` (never an access token's
/// or an assertion's type).
fn id_token_type(typ: Option<&str>) -> bool {
    typ.is_none_or(|t| t.eq_ignore_ascii_case("JWT"))
}

/// Verifies an ID token from the provider whose keys are `keys`.
pub async fn verify_id_token(
    token: &str,
    keys: AssertionKeys<'_>,
    rules: &IdTokenRules<'_>,
    now: Timestamp,
) -> Result<Map<String, Value>, JwtError> {
    let claims = signed_claims(token, keys, rules.algorithms, id_token_type, now).await?;
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(JwtError::WrongIssuer);
    }
    let ours = |v: &Value| v.as_str() == Some(rules.client_id);
    match claims.get("aud") {
        Some(Value::String(one)) if one == rules.client_id => {}
        Some(Value::Array(all)) if all.iter().any(ours) => {
            // Several audiences: the authorized party must be us.
            if all.len() > 1 && claims.get("azp").and_then(Value::as_str) != Some(rules.client_id) {
                return Err(JwtError::WrongAudience);
            }
        }
        Some(_) => return Err(JwtError::WrongAudience),
        None => return Err(JwtError::MissingClaim("aud")),
    }
    if let Some(azp) = claims.get("azp")
        && !ours(azp)
    {
        return Err(JwtError::WrongAudience);
    }
    if int_claim(&claims, "iat")?.is_none() {
        return Err(JwtError::MissingClaim("iat"));
    }
    checked_times(&claims, rules.leeway_secs, now)?;
    if claims.get("nonce").and_then(Value::as_str) != Some(rules.nonce) {
        return Err(JwtError::WrongNonce);
    }
    if claims
        .get("sub")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(JwtError::MissingClaim("sub"));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::external::test_keys::{TestKey, jwks};
    use crate::external::{ACCEPTED_ALGORITHMS, parse_jwks};
    use serde_json::json;

    const NOW: i64 = 1_900_000_000;
    const ISS: &str = "https://login.acme.example";

    fn claims() -> Value {
        json!({ "iss": ISS, "sub": "u1", "aud": "gh", "nonce": "n-1",
                "iat": NOW, "exp": NOW + 300 })
    }

    async fn check(key: &TestKey, header: Value, claims: &Value) -> Result<(), JwtError> {
        let keys = parse_jwks(
            jwks(std::slice::from_ref(key)).to_string().as_bytes(),
            &ACCEPTED_ALGORITHMS,
        )
        .unwrap();
        let token = key.sign_raw(&header.to_string(), &claims.to_string());
        let rules = IdTokenRules {
            issuer: ISS,
            client_id: "gh",
            nonce: "n-1",
            leeway_secs: 30,
            algorithms: &ACCEPTED_ALGORITHMS,
        };
        verify_id_token(
            &token,
            AssertionKeys::Given(&keys),
            &rules,
            Timestamp::from_secs(NOW),
        )
        .await
        .map(|_| ())
    }

    #[tokio::test]
    async fn an_id_token_is_held_to_the_sign_in_that_asked_for_it() {
        let key = TestKey::rsa("k");
        let header = json!({ "alg": "RS256", "kid": "k", "typ": "JWT" });
        assert_eq!(check(&key, header.clone(), &claims()).await, Ok(()));
        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims();
            change(&mut c);
            c
        };
        let cases: Vec<(&str, Value, JwtError)> = vec![
            (
                "another sign-in's nonce",
                with(&|c| c["nonce"] = json!("n-2")),
                JwtError::WrongNonce,
            ),
            (
                "no nonce",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("nonce");
                }),
                JwtError::WrongNonce,
            ),
            (
                "another client",
                with(&|c| c["aud"] = json!("other")),
                JwtError::WrongAudience,
            ),
            (
                "us among others without azp",
                with(&|c| c["aud"] = json!(["gh", "other"])),
                JwtError::WrongAudience,
            ),
            (
                "azp of another client",
                with(&|c| c["azp"] = json!("other")),
                JwtError::WrongAudience,
            ),
            (
                "another issuer",
                with(&|c| c["iss"] = json!("https://evil.example")),
                JwtError::WrongIssuer,
            ),
            (
                "no iat",
                with(&|c| {
                    c.as_object_mut().unwrap().remove("iat");
                }),
                JwtError::MissingClaim("iat"),
            ),
            (
                "expired",
                with(&|c| c["exp"] = json!(NOW - 60)),
                JwtError::Expired,
            ),
        ];
        for (name, claims, expected) in cases {
            assert_eq!(
                check(&key, header.clone(), &claims).await,
                Err(expected),
                "{name}"
            );
        }
        // Several audiences are fine when we are the authorized party.
        let mut both = claims();
        both["aud"] = json!(["gh", "other"]);
        both["azp"] = json!("gh");
        assert_eq!(check(&key, header.clone(), &both).await, Ok(()));
        // An access token is not an ID token.
        let typed = json!({ "alg": "RS256", "kid": "k", "typ": "at+jwt" });
        assert_eq!(
            check(&key, typed, &claims()).await,
            Err(JwtError::WrongType)
        );
    }
}
