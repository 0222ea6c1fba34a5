//! Finding the one credential a request presents.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::AuthnError;

/// Longer values are refused before any parsing (oversized-token DoS).
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

const API_KEY_HEADER: &str = "x-api-key";
/// Query parameters that would carry a credential in the URL, where it leaks
/// into logs and browser history.
const QUERY_CREDENTIAL_PARAMS: [&str; 5] = ["access_token", "api_key", "apikey", "key", "token"];

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, AuthnError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthnError::Ambiguous);
    }
    if first.len() > MAX_CREDENTIAL_BYTES {
        return Err(AuthnError::Malformed);
    }
    first.to_str().map(Some).map_err(|_| AuthnError::Malformed)
}

fn bearer_token(value: &str) -> Result<&str, AuthnError> {
    let (scheme, token) = value.split_once(' ').ok_or(AuthnError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthnError::Malformed);
    }
    let token = token.trim_start_matches(' ');
    // RFC 6750 token68 characters only.
    let token68 = !token.is_empty()
        && token
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if !token68 {
        return Err(AuthnError::Malformed);
    }
    Ok(token)
}

fn query_has_credential(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        QUERY_CREDENTIAL_PARAMS
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
    })
}

/// The credential of a request: `Authorization: Bearer <x>` or `X-API-Key: <x>`.
///
/// Refuses credentials in the query string, repeated headers and two
/// different credentials at once. `Ok(None)` means none was presented.
pub fn presented_credential<'a>(
    headers: &'a HeaderMap,
    query: Option<&str>,
) -> Result<Option<&'a str>, AuthnError> {
    if query.is_some_and(query_has_credential) {
        return Err(AuthnError::InQuery);
    }
    let bearer = single_header(headers, AUTHORIZATION.as_str())?
        .map(bearer_token)
        .transpose()?;
    let api_key = single_header(headers, API_KEY_HEADER)?.map(str::trim);
    match (bearer, api_key) {
        (Some(a), Some(b)) if a != b => Err(AuthnError::Ambiguous),
        (Some(a), _) => Ok(Some(a)),
        (None, Some("")) => Err(AuthnError::Malformed),
        (None, Some(b)) => Ok(Some(b)),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn bearer_and_api_key_header_are_accepted() {
        let h = headers(&[("authorization", "Bearer abc")]);
        assert_eq!(presented_credential(&h, None), Ok(Some("abc")));
        let h = headers(&[("authorization", "bearer  abc")]);
        assert_eq!(presented_credential(&h, None), Ok(Some("abc")));
        let h = headers(&[("x-api-key", "abc")]);
        assert_eq!(presented_credential(&h, None), Ok(Some("abc")));
        let h = headers(&[("authorization", "Bearer abc"), ("x-api-key", "abc")]);
        assert_eq!(presented_credential(&h, None), Ok(Some("abc")));
        assert_eq!(presented_credential(&HeaderMap::new(), None), Ok(None));
    }

    #[test]
    fn query_credentials_are_refused() {
        for q in ["access_token=x", "a=1&api_key=x", "TOKEN=x", "key"] {
            assert_eq!(
                presented_credential(&HeaderMap::new(), Some(q)),
                Err(AuthnError::InQuery),
                "{q}"
            );
        }
        assert_eq!(
            presented_credential(&HeaderMap::new(), Some("session=1")),
            Ok(None)
        );
    }

    #[test]
    fn ambiguous_and_malformed_are_refused() {
        let cases: [(&[(&'static str, &str)], AuthnError); 7] = [
            (
                &[("authorization", "Bearer a"), ("authorization", "Bearer b")],
                AuthnError::Ambiguous,
            ),
            (
                &[("authorization", "Bearer a"), ("x-api-key", "b")],
                AuthnError::Ambiguous,
            ),
            (
                &[("x-api-key", "a"), ("x-api-key", "a")],
                AuthnError::Ambiguous,
            ),
            (&[("authorization", "Basic YTpi")], AuthnError::Malformed),
            (&[("authorization", "Bearer")], AuthnError::Malformed),
            (&[("authorization", "Bearer a b")], AuthnError::Malformed),
            (&[("authorization", "Bearer a\"b")], AuthnError::Malformed),
        ];
        for (pairs, want) in cases {
            assert_eq!(
                presented_credential(&headers(pairs), None),
                Err(want),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn oversized_credential_is_refused_before_parsing() {
        let big = "a".repeat(MAX_CREDENTIAL_BYTES + 1);
        let h = headers(&[("x-api-key", &big)]);
        assert_eq!(presented_credential(&h, None), Err(AuthnError::Malformed));
    }
}
