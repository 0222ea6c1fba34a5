//! `Mcp-Param-*` headers (MCP 2026-07-28, SEP-2243) held to the arguments
//! they mirror.
//!
//! A tool's input schema may mark an argument with `x-mcp-header: NAME`;
//! a 2026-07-28 client then sends its value in `Mcp-Param-NAME` too, so a
//! load balancer or a WAF in front of the server can route or filter on it
//! without reading the body. Gatehouse passes its upstreams' schemas on as
//! they are, and decides on the body: a header that says one region while
//! the body says another would walk round such a filter. A server that
//! reads the body must refuse the mismatch (HTTP 400, JSON-RPC -32020), as
//! it must for `Mcp-Name`.
//!
//! The annotations are those of the definition the call is checked
//! against (the pinned one an upstream's tool is served under); headers
//! no annotation names are not the server's to judge.

use std::sync::Arc;

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use serde_json::{Map, Value};

/// The header prefix, lower case as HTTP/2 and `http` keep names.
pub const PARAM_HEADER_PREFIX: &str = "mcp-param-";
const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// The first protocol version whose requests mirror arguments in headers.
const MIRRORING_VERSION: &str = "2026-07-28";

/// Whether the request speaks a protocol version whose `Mcp-Param-*`
/// headers mirror its arguments (versions are dates: they order as text).
pub fn mirrors_arguments(headers: &::http::HeaderMap) -> bool {
    headers
        .get("mcp-protocol-version")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|version| version >= MIRRORING_VERSION)
}

/// The `x-mcp-header` annotations of one tool's input schema: the path of
/// property names to each annotated argument and its header's name (lower
/// case, after `Mcp-Param-`), and the header names of annotations that are
/// not held to an argument.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamAnnotations {
    mirrored: Vec<(Vec<String>, String)>,
    unheld: Vec<String>,
}

impl ParamAnnotations {
    /// Every annotation reached from the schema's root through
    /// `properties` alone (at any depth). One that names an HTTP token
    /// once (case aside), on a string, number, integer or boolean argument,
    /// is held to its argument. Any other (on an object, a name given
    /// twice) cannot be: a call that sends its header anyway is refused,
    /// since a filter in front may read it (a client that follows the
    /// rules drops such a tool and sends none).
    pub fn of_schema(input_schema: &Map<String, Value>) -> Arc<ParamAnnotations> {
        let mut found = Vec::new();
        let mut unheld = Vec::new();
        collect(
            input_schema.get("properties"),
            &mut Vec::new(),
            &mut found,
            &mut unheld,
        );
        let named_twice: Vec<String> = found
            .iter()
            .enumerate()
            .filter(|(i, (_, header))| found[..*i].iter().any(|(_, seen)| seen == header))
            .map(|(_, (_, header))| header.clone())
            .collect();
        found.retain(|(_, header)| !named_twice.contains(header));
        unheld.extend(named_twice);
        Arc::new(ParamAnnotations {
            mirrored: found,
            unheld,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.mirrored.is_empty() && self.unheld.is_empty()
    }
}

fn collect(
    properties: Option<&Value>,
    path: &mut Vec<String>,
    found: &mut Vec<(Vec<String>, String)>,
    unheld: &mut Vec<String>,
) {
    let Some(Value::Object(properties)) = properties else {
        return;
    };
    for (name, schema) in properties {
        path.push(name.clone());
        if let Some(Value::String(header)) = schema.get("x-mcp-header")
            && is_token(header)
        {
            let header = header.to_ascii_lowercase();
            if is_primitive(schema) {
                found.push((path.clone(), header));
            } else {
                unheld.push(header);
            }
        }
        collect(schema.get("properties"), path, found, unheld);
        path.pop();
    }
}

/// An HTTP field-name token (RFC 9110 §5.1): what can follow `Mcp-Param-`.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A property a header can carry: a string, a number or a boolean (or
/// one of them or null).
fn is_primitive(schema: &Value) -> bool {
    let primitive = |t: &str| matches!(t, "string" | "number" | "integer" | "boolean");
    match schema.get("type") {
        Some(Value::String(t)) => primitive(t),
        Some(Value::Array(types)) => {
            let named: Vec<&str> = types.iter().filter_map(Value::as_str).collect();
            named.len() == types.len()
                && named.iter().any(|t| *t != "null")
                && named.iter().all(|t| *t == "null" || primitive(t))
        }
        _ => false,
    }
}

/// The `Mcp-Param-*` headers of one 2026-07-28 request: the name after
/// the prefix (lower case) and the value as sent (what
/// `CallContext::param_headers` carries to the gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParamHeaders(pub Vec<(String, String)>);

impl ParamHeaders {
    /// The request's `Mcp-Param-*` headers. A header sent twice, or whose
    /// value is not visible ASCII, is refused: an intermediary that keeps
    /// the first of two could route on a value this request never carries.
    pub fn of_request(headers: &::http::HeaderMap) -> Result<ParamHeaders, String> {
        let mut found: Vec<(String, String)> = Vec::new();
        for (name, value) in headers {
            let Some(param) = name.as_str().strip_prefix(PARAM_HEADER_PREFIX) else {
                continue;
            };
            if found.iter().any(|(seen, _)| seen == param) {
                return Err(format!(
                    "the Mcp-Param-{param} header is sent more than once"
                ));
            }
            let value = value
                .to_str()
                .map_err(|_| format!("the Mcp-Param-{param} header is not visible ASCII"))?;
            found.push((param.to_string(), value.to_string()));
        }
        Ok(ParamHeaders(found))
    }

    fn get(&self, param: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name == param)
            .map(|(_, value)| value.as_str())
    }

    /// Whether each annotated argument and its header agree: both absent,
    /// or both present with the same value (the header's decoded from its
    /// `=?base64?…?=` form). The reason names the header and argument,
    /// never a value.
    pub fn check(
        &self,
        annotations: &ParamAnnotations,
        arguments: &Map<String, Value>,
    ) -> Result<(), String> {
        if let Some(param) = annotations
            .unheld
            .iter()
            .find(|param| self.get(param).is_some())
        {
            return Err(format!(
                "the Mcp-Param-{param} header is sent, but the tool marks no argument it can \
                 carry (its x-mcp-header is on an object, or named twice)"
            ));
        }
        for (path, param) in &annotations.mirrored {
            let argument = path.join(".");
            let sent = self.get(param);
            let given = argument_at(arguments, path)
                .filter(|value| !value.is_null())
                .map(|value| {
                    as_header_text(value).ok_or_else(|| {
                        format!(
                            "argument `{argument}` is marked for the Mcp-Param-{param} header but \
                             is not a string, number or boolean"
                        )
                    })
                })
                .transpose()?;
            match (sent, given) {
                (None, None) => {}
                (Some(_), None) => {
                    return Err(format!(
                        "the Mcp-Param-{param} header is sent but argument `{argument}` is not"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "argument `{argument}` is sent without its Mcp-Param-{param} header"
                    ));
                }
                (Some(header), Some((body, is_number))) => {
                    let decoded = decoded(header).ok_or_else(|| {
                        format!("the Mcp-Param-{param} header's base64 value cannot be decoded")
                    })?;
                    if decoded != body && !(is_number && same_number(&decoded, &body)) {
                        return Err(format!(
                            "the Mcp-Param-{param} header does not match argument `{argument}`"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn argument_at<'a>(arguments: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(arguments.get(first)?, |value, key| value.get(key))
}

/// An argument as its header carries it, and whether it is a number.
fn as_header_text(value: &Value) -> Option<(String, bool)> {
    match value {
        Value::String(text) => Some((text.clone(), false)),
        Value::Bool(flag) => Some((flag.to_string(), false)),
        Value::Number(number) => Some((number.to_string(), true)),
        _ => None,
    }
}

/// Whether two texts are the same JSON number, exactly (`1e21` and
/// `1e+21`, as JavaScript and Rust print them).
fn same_number(header: &str, body: &str) -> bool {
    match (
        serde_json::from_str::<serde_json::Number>(header),
        serde_json::from_str::<serde_json::Number>(body),
    ) {
        (Ok(a), Ok(b)) => gatehouse_authz::same_number(&a, &b),
        _ => false,
    }
}

/// A header's value, decoded when it is in the `=?base64?…?=` form.
fn decoded(header: &str) -> Option<String> {
    match header
        .strip_prefix(BASE64_PREFIX)
        .and_then(|inner| inner.strip_suffix(BASE64_SUFFIX))
    {
        Some(encoded) => String::from_utf8(BASE64_STANDARD.decode(encoded).ok()?).ok(),
        None => Some(header.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Map<String, Value> {
        json!({
            "type": "object",
            "properties": {
                "region": { "type": "string", "x-mcp-header": "Region" },
                "dry_run": { "type": "boolean", "x-mcp-header": "Dry-Run" },
                "target": {
                    "type": "object",
                    "properties": { "id": { "type": "integer", "x-mcp-header": "Target-Id" } }
                },
                "note": { "type": "string" },
                "bad": { "type": "string", "x-mcp-header": "" }
            }
        })
        .as_object()
        .unwrap()
        .clone()
    }

    fn headers(pairs: &[(&str, &str)]) -> Result<ParamHeaders, String> {
        let mut map = ::http::HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                ::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                ::http::HeaderValue::from_str(value).unwrap(),
            );
        }
        ParamHeaders::of_request(&map)
    }

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn annotations_are_found_at_any_depth_and_empty_ones_name_nothing() {
        let annotations = ParamAnnotations::of_schema(&schema());
        let mut found: Vec<_> = annotations
            .mirrored
            .iter()
            .map(|(path, header)| (path.join("."), header.clone()))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                ("dry_run".to_string(), "dry-run".to_string()),
                ("region".into(), "region".into()),
                ("target.id".into(), "target-id".into()),
            ]
        );
        assert!(ParamAnnotations::of_schema(&Map::new()).is_empty());
    }

    #[test]
    fn headers_that_mirror_their_arguments_pass() {
        let annotations = ParamAnnotations::of_schema(&schema());
        let sent = headers(&[
            ("Mcp-Param-Region", "eu-central1"),
            ("mcp-param-dry-run", "false"),
            ("Mcp-Param-Target-Id", "42"),
            ("Mcp-Param-Unrelated", "anything"),
        ])
        .unwrap();
        let given = arguments(json!({
            "region": "eu-central1", "dry_run": false, "target": { "id": 42 }, "note": "x"
        }));
        assert_eq!(sent.check(&annotations, &given), Ok(()));
        // Absent on both sides, or null in the body: nothing to mirror.
        let none = headers(&[]).unwrap();
        assert_eq!(
            none.check(&annotations, &arguments(json!({ "region": null }))),
            Ok(())
        );
        // A value that cannot travel bare comes base64-wrapped.
        let wrapped = headers(&[("Mcp-Param-Region", "=?base64?IFrDvHJpY2g=?=")]).unwrap();
        assert_eq!(
            wrapped.check(&annotations, &arguments(json!({ "region": " Zürich" }))),
            Ok(())
        );
    }

    /// The header a filter in front reads says one thing, the body the
    /// call runs with another: refused, whichever side is missing or differs.
    #[test]
    fn a_header_that_disagrees_with_its_argument_is_refused() {
        let annotations = ParamAnnotations::of_schema(&schema());
        let cases = [
            (
                vec![("Mcp-Param-Region", "us-west1")],
                json!({ "region": "eu-central1" }),
                "the Mcp-Param-region header does not match argument `region`",
            ),
            (
                vec![],
                json!({ "region": "eu-central1" }),
                "argument `region` is sent without its Mcp-Param-region header",
            ),
            (
                vec![("Mcp-Param-Region", "us-west1")],
                json!({}),
                "the Mcp-Param-region header is sent but argument `region` is not",
            ),
            (
                vec![("Mcp-Param-Target-Id", "43")],
                json!({ "target": { "id": 42 } }),
                "the Mcp-Param-target-id header does not match argument `target.id`",
            ),
            (
                vec![("Mcp-Param-Region", "=?base64?!!!?=")],
                json!({ "region": "eu" }),
                "the Mcp-Param-region header's base64 value cannot be decoded",
            ),
            (
                vec![("Mcp-Param-Region", "[\"eu\"]")],
                json!({ "region": ["eu"] }),
                "argument `region` is marked for the Mcp-Param-region header but is not a \
                 string, number or boolean",
            ),
        ];
        for (sent, given, why) in cases {
            let sent = headers(&sent).unwrap();
            assert_eq!(
                sent.check(&annotations, &arguments(given.clone())),
                Err(why.to_string()),
                "{given}"
            );
        }
    }

    /// A client cannot follow these (a header name that is no HTTP token,
    /// an object, a name given twice): it drops the tool. Its calls are not
    /// held to them (which would refuse every call), but a header sent for
    /// one anyway is refused.
    #[test]
    fn annotations_a_client_cannot_follow_are_not_held_against_calls() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": { "type": "string", "x-mcp-header": "R\u{e9}gion" },
                "spaced": { "type": "string", "x-mcp-header": "A B" },
                "filter": { "type": "object", "x-mcp-header": "Filter" },
                "ratio": { "type": "number", "x-mcp-header": "Ratio" },
                "a": { "type": "string", "x-mcp-header": "Twice" },
                "b": { "type": "string", "x-mcp-header": "twice" },
                "kept": { "type": "integer", "x-mcp-header": "Kept" }
            }
        });
        let annotations = ParamAnnotations::of_schema(schema.as_object().unwrap());
        let mut mirrored = annotations.mirrored.clone();
        mirrored.sort();
        assert_eq!(
            mirrored,
            [
                (vec!["kept".to_string()], "kept".to_string()),
                (vec!["ratio".to_string()], "ratio".to_string()),
            ]
        );
        let sent = headers(&[("Mcp-Param-Kept", "3"), ("Mcp-Param-Ratio", "0.5")]).unwrap();
        let given = arguments(json!({
            "city": "Z\u{fc}rich", "spaced": "x", "filter": {"a": 1}, "ratio": 0.5,
            "a": "x", "b": "y", "kept": 3
        }));
        assert_eq!(sent.check(&annotations, &given), Ok(()));
        // A header the tool marks where no argument can carry it: a filter
        // in front may read it, so it is not sent past one.
        for header in ["Mcp-Param-Filter", "Mcp-Param-Twice"] {
            let sent = headers(&[
                ("Mcp-Param-Kept", "3"),
                ("Mcp-Param-Ratio", "0.5"),
                (header, "x"),
            ])
            .unwrap();
            assert!(sent.check(&annotations, &given).is_err(), "{header}");
        }
        // A float marked for a header is held to it, as a number.
        let sent = headers(&[("Mcp-Param-Kept", "3"), ("Mcp-Param-Ratio", "0.25")]).unwrap();
        assert!(sent.check(&annotations, &given).is_err());
        // A nullable type is one a header can carry.
        let nullable = json!({"type": "object", "properties": {
            "n": {"type": ["string", "null"], "x-mcp-header": "N"}}});
        let nullable = ParamAnnotations::of_schema(nullable.as_object().unwrap());
        assert_eq!(nullable.mirrored.len(), 1);
    }

    /// Numbers as another language prints them are the same number; a
    /// string is compared as written.
    #[test]
    fn numbers_are_compared_as_numbers_and_strings_as_written() {
        let schema = json!({
            "type": "object",
            "properties": {
                "big": { "type": "integer", "x-mcp-header": "Big" },
                "name": { "type": "string", "x-mcp-header": "Name" }
            }
        });
        let annotations = ParamAnnotations::of_schema(schema.as_object().unwrap());
        let given = arguments(json!({ "big": 1e21, "name": "1.0" }));
        let sent = headers(&[("Mcp-Param-Big", "1e+21"), ("Mcp-Param-Name", "1.0")]).unwrap();
        assert_eq!(sent.check(&annotations, &given), Ok(()));
        let sent = headers(&[("Mcp-Param-Big", "1e21"), ("Mcp-Param-Name", "1")]).unwrap();
        assert_eq!(
            sent.check(&annotations, &given),
            Err("the Mcp-Param-name header does not match argument `name`".into())
        );
        let given = arguments(json!({ "big": 1_234_567_890_123_456_789_u64 }));
        let sent = headers(&[("Mcp-Param-Big", "1234567890123456700")]).unwrap();
        assert_eq!(
            sent.check(&annotations, &given),
            Err("the Mcp-Param-big header does not match argument `big`".into())
        );
    }

    #[test]
    fn a_header_sent_twice_is_refused() {
        let twice = headers(&[("Mcp-Param-Region", "eu"), ("mcp-param-region", "us")]);
        assert_eq!(
            twice,
            Err("the Mcp-Param-region header is sent more than once".to_string())
        );
    }
}
