//! Argument constraints: per-tool rules on the arguments of a call.
//!
//! Every rule is checked on a *normalized* value, so that percent-encoding,
//! Unicode normalization forms, backslashes, `..` segments or letter case
//! cannot carry a value past an allowlist. Violations name the argument and
//! the rule (never the argument's value, which may be sensitive), for the
//! audit record.
//!
//! Kinds, written in the policy as `arg = { kind = …, … }`; when one argument
//! has several kinds, every one must hold:
//!
//! | kind | value | check |
//! |---|---|---|
//! | `prefix = ["reports/", …]` | path string | the path must be in NFC as sent (the tool opens it as sent; another spelling is another name); every reading of it (literal, and percent-decoded layer by layer) is NFC-normalized, `\` becomes `/`, `.`/`..` collapse lexically; it must not contain NUL nor climb above its root, and must start, segment by segment, with one of the prefixes (an absolute path only matches an absolute prefix). Case-sensitive: on a case-insensitive file system this can only refuse more, never less. |
//! | `hosts = ["example.com", "*.example.org"]` | URL string | parsed with the WHATWG parser (`url`): scheme `http`/`https`, no userinfo, host lowercased and IDNA-encoded, one trailing dot ignored; equal to an entry, or a strict subdomain of a `*.` entry. Ports are not constrained. |
//! | `domains = ["example.com", "*.example.org"]` | address string or array of them | each a bare `local@domain` (exactly one `@`; no display name, list separators, quotes, brackets, whitespace or control characters); the domain, NFC-normalized and lowercased, one trailing dot ignored, must equal an entry or be a strict subdomain of a `*.` entry. Homoglyphs: a non-ASCII domain only matches an entry that is itself written in non-ASCII, so `exаmple.com` (Cyrillic `а`) or full-width `ｅxample.com` never match `example.com`. |
//! | `pattern = "regex"` | string | the string as sent and its NFC form both match the whole regex (anchored). |
//! | `max_length = N` | string | the string as sent and its NFC form each have at most N characters. |
//! | `min = x`, `max = y` | number | within the bounds (inclusive). |
//! | `one_of = [..]` | string, number or bool | equal to one entry (strings byte for byte: as sent against the entry as written). |
//!
//! An absent argument (or JSON `null`) violates its constraint unless the
//! constraint says `optional = true`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use percent_encoding::percent_decode_str;
use regex::Regex;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::exact_number::ExactNumber;

/// How many layers of percent-encoding a path may carry; each layer is
/// checked, and a path that still decodes further is refused.
const MAX_DECODE_LAYERS: usize = 4;

/// One refused argument: which one and which rule, for the audit reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintViolation {
    /// The argument's name.
    pub argument: String,
    /// The rule as written in the policy, then why it failed, e.g.
    /// `prefix ["reports/"]: path climbs above its root`. Never contains the
    /// argument's value.
    pub rule: String,
}

impl fmt::Display for ConstraintViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "argument '{}' violates {}", self.argument, self.rule)
    }
}

/// The constraints on one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgConstraint {
    optional: bool,
    checks: Vec<Check>,
}

#[derive(Debug, Clone)]
enum Check {
    Prefix {
        written: Vec<String>,
        prefixes: Vec<NormalizedPath>,
    },
    Hosts {
        written: Vec<String>,
        entries: Vec<NameEntry>,
    },
    Domains {
        written: Vec<String>,
        entries: Vec<NameEntry>,
    },
    Pattern {
        written: String,
        regex: Regex,
    },
    MaxLength(u64),
    Min(ExactNumber),
    Max(ExactNumber),
    OneOf(Vec<Value>),
}

/// Two checks are equal when they are written the same (a compiled regex
/// has no equality of its own).
impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}
impl Eq for Check {}

/// A host or domain allowlist entry, in ASCII (IDNA) form.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NameEntry {
    /// Without the `*.` of a wildcard entry.
    ascii: String,
    wildcard: bool,
    /// The entry was written with non-ASCII characters.
    non_ascii: bool,
}

impl NameEntry {
    fn matches(&self, name: &str) -> bool {
        if self.wildcard {
            name.len() > self.ascii.len() + 1
                && name.ends_with(&self.ascii)
                && name.as_bytes()[name.len() - self.ascii.len() - 1] == b'.'
        } else {
            name == self.ascii
        }
    }
}

/// A path after normalization: NFC, `/` separators, no `.`, `..` or empty
/// segments. Tools that open files should open this form, so that the
/// file opened is the one the constraint checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedPath {
    pub absolute: bool,
    pub segments: Vec<String>,
}

impl NormalizedPath {
    fn starts_with(&self, prefix: &NormalizedPath) -> bool {
        self.absolute == prefix.absolute && self.segments.starts_with(&prefix.segments)
    }
}

impl fmt::Display for NormalizedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.absolute {
            f.write_str("/")?;
        }
        f.write_str(&self.segments.join("/"))
    }
}

/// Why a path cannot be normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    Nul,
    ClimbsAboveRoot,
    BadPercentEncoding,
    TooManyEncodingLayers,
}

impl PathError {
    fn as_str(self) -> &'static str {
        match self {
            PathError::Nul => "path contains NUL",
            PathError::ClimbsAboveRoot => "path climbs above its root",
            PathError::BadPercentEncoding => "percent-encoded path is not UTF-8",
            PathError::TooManyEncodingLayers => "path has too many layers of percent-encoding",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalizes one literal reading of a path (no percent-decoding): NFC,
/// `\` to `/`, lexical `.`/`..` collapse; refuses NUL and climbing above
/// the root.
pub fn normalize_path(raw: &str) -> Result<NormalizedPath, PathError> {
    let nfc: String = raw.nfc().collect();
    if nfc.contains('\0') {
        return Err(PathError::Nul);
    }
    let slashed = nfc.replace('\\', "/");
    let absolute = slashed.starts_with('/');
    let mut segments: Vec<String> = Vec::new();
    for segment in slashed.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                if segments.pop().is_none() {
                    return Err(PathError::ClimbsAboveRoot);
                }
            }
            s => segments.push(s.to_string()),
        }
    }
    Ok(NormalizedPath { absolute, segments })
}

/// Every reading of a path a tool might act on: the literal one and each
/// percent-decoded layer. A path passes a prefix rule only if all do, so
/// it does not matter whether the tool decodes or not.
pub fn path_readings(raw: &str) -> Result<Vec<NormalizedPath>, PathError> {
    let mut readings = Vec::new();
    let mut current = raw.to_string();
    for _ in 0..MAX_DECODE_LAYERS {
        readings.push(normalize_path(&current)?);
        let decoded = percent_decode_str(&current)
            .decode_utf8()
            .map_err(|_| PathError::BadPercentEncoding)?
            .into_owned();
        if decoded == current {
            return Ok(readings);
        }
        current = decoded;
    }
    Err(PathError::TooManyEncodingLayers)
}

/// An error in a constraint as written: `key` is the sub-key at fault
/// (e.g. `pattern`), if any.
#[derive(Debug)]
pub(crate) struct ConstraintParseError {
    pub(crate) key: Option<String>,
    pub(crate) reason: String,
}

fn perr(key: &str, reason: impl Into<String>) -> ConstraintParseError {
    ConstraintParseError {
        key: Some(key.to_string()),
        reason: reason.into(),
    }
}

const KINDS: &str = "prefix, hosts, domains, pattern, max_length, min, max, one_of, optional";

fn string_list(key: &str, value: &toml::Value) -> Result<Vec<String>, ConstraintParseError> {
    let Some(items) = value.as_array() else {
        return Err(perr(key, "expected an array of strings"));
    };
    if items.is_empty() {
        return Err(perr(key, "must list at least one entry"));
    }
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| perr(key, "expected an array of strings"))
        })
        .collect()
}

fn number(key: &str, value: &toml::Value) -> Result<ExactNumber, ConstraintParseError> {
    ExactNumber::of_toml(value).ok_or_else(|| perr(key, "expected a finite number"))
}

/// Parses a host or domain entry: optional leading `*.`, then a domain
/// (or, for exact host entries, an IP address), lowercased and IDNA-encoded.
fn name_entry(key: &str, written: &str, allow_ip: bool) -> Result<NameEntry, ConstraintParseError> {
    let (wildcard, rest) = match written.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, written),
    };
    let bad = || perr(key, format!("invalid entry \"{written}\""));
    if rest.is_empty()
        || rest.contains(['*', '@', '/', '%'])
        || (rest.contains(':') && !rest.starts_with('['))
    {
        return Err(bad());
    }
    let nfc: String = rest.nfc().collect::<String>().to_lowercase();
    let nfc = nfc.strip_suffix('.').unwrap_or(&nfc).to_string();
    let host = url::Host::parse(&nfc).map_err(|_| bad())?;
    let ascii = match host {
        url::Host::Domain(d) => d,
        other if allow_ip && !wildcard => other.to_string(),
        _ => return Err(bad()),
    };
    Ok(NameEntry {
        ascii,
        wildcard,
        non_ascii: !rest.is_ascii(),
    })
}

/// A `one_of` entry. A string is kept as written: a caller's string is
/// compared as sent, byte for byte, since the tool gets it as sent.
fn toml_to_json(key: &str, value: &toml::Value) -> Result<Value, ConstraintParseError> {
    match value {
        toml::Value::String(s) => Ok(Value::String(s.clone())),
        toml::Value::Integer(i) => Ok(Value::from(*i)),
        toml::Value::Float(f) if f.is_finite() => Ok(Value::from(*f)),
        toml::Value::Boolean(b) => Ok(Value::Bool(*b)),
        _ => Err(perr(key, "entries must be strings, numbers or booleans")),
    }
}

impl ArgConstraint {
    /// Parses `{ prefix = [...], optional = true }` and friends.
    pub(crate) fn parse(value: &toml::Value) -> Result<Self, ConstraintParseError> {
        let Some(table) = value.as_table() else {
            return Err(ConstraintParseError {
                key: None,
                reason: "expected a table like { prefix = [\"reports/\"] }".to_string(),
            });
        };
        let mut optional = false;
        let mut checks = Vec::new();
        let (mut min, mut max) = (None, None);
        for (key, value) in table {
            let key = key.as_str();
            match key {
                "optional" => {
                    optional = value
                        .as_bool()
                        .ok_or_else(|| perr(key, "expected true or false"))?;
                }
                "prefix" => {
                    let written = string_list(key, value)?;
                    let prefixes = written
                        .iter()
                        .map(|p| {
                            normalize_path(p)
                                .map_err(|e| perr(key, format!("invalid prefix \"{p}\": {e}")))
                        })
                        .collect::<Result<_, _>>()?;
                    checks.push(Check::Prefix { written, prefixes });
                }
                "hosts" => {
                    let written = string_list(key, value)?;
                    let entries = written
                        .iter()
                        .map(|h| name_entry(key, h, true))
                        .collect::<Result<_, _>>()?;
                    checks.push(Check::Hosts { written, entries });
                }
                "domains" => {
                    let written = string_list(key, value)?;
                    let entries = written
                        .iter()
                        .map(|d| name_entry(key, d, false))
                        .collect::<Result<_, _>>()?;
                    checks.push(Check::Domains { written, entries });
                }
                "pattern" => {
                    let written = value
                        .as_str()
                        .ok_or_else(|| perr(key, "expected a string"))?
                        .to_string();
                    let regex = Regex::new(&format!("^(?:{written})$"))
                        .map_err(|e| perr(key, format!("invalid regex: {e}")))?;
                    checks.push(Check::Pattern { written, regex });
                }
                "max_length" => match value.as_integer() {
                    Some(n) if n >= 0 => checks.push(Check::MaxLength(n.unsigned_abs())),
                    _ => return Err(perr(key, "expected a non-negative integer")),
                },
                "min" => min = Some(number(key, value)?),
                "max" => max = Some(number(key, value)?),
                "one_of" => {
                    let Some(items) = value.as_array().filter(|a| !a.is_empty()) else {
                        return Err(perr(key, "expected a non-empty array"));
                    };
                    let values = items
                        .iter()
                        .map(|v| toml_to_json(key, v))
                        .collect::<Result<_, _>>()?;
                    checks.push(Check::OneOf(values));
                }
                other => {
                    return Err(ConstraintParseError {
                        key: None,
                        reason: format!(
                            "unknown constraint kind \"{other}\" (expected one of {KINDS})"
                        ),
                    });
                }
            }
        }
        if let (Some(lo), Some(hi)) = (min, max)
            && lo.compare(hi) == Some(std::cmp::Ordering::Greater)
        {
            return Err(perr("min", "must not exceed max"));
        }
        checks.extend(min.map(Check::Min));
        checks.extend(max.map(Check::Max));
        if checks.is_empty() {
            return Err(ConstraintParseError {
                key: None,
                reason: format!("no constraint given (expected one of {KINDS})"),
            });
        }
        Ok(ArgConstraint { optional, checks })
    }

    /// Whether an absent argument is acceptable.
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// Checks one argument's value (`None` when absent or `null`).
    pub fn check(&self, argument: &str, value: Option<&Value>) -> Result<(), ConstraintViolation> {
        let violation = |rule: String| ConstraintViolation {
            argument: argument.to_string(),
            rule,
        };
        let Some(value) = value.filter(|v| !v.is_null()) else {
            if self.optional {
                return Ok(());
            }
            return Err(violation("required: argument is missing".to_string()));
        };
        for check in &self.checks {
            if let Err(why) = check.evaluate(value) {
                return Err(violation(format!("{}: {why}", check.describe())));
            }
        }
        Ok(())
    }
}

fn quoted_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl Check {
    /// The rule as written in the policy.
    fn describe(&self) -> String {
        match self {
            Check::Prefix { written, .. } => format!("prefix {}", quoted_list(written)),
            Check::Hosts { written, .. } => format!("hosts {}", quoted_list(written)),
            Check::Domains { written, .. } => format!("domains {}", quoted_list(written)),
            Check::Pattern { written, .. } => format!("pattern {written:?}"),
            Check::MaxLength(n) => format!("max_length {n}"),
            Check::Min(x) => format!("min {x}"),
            Check::Max(x) => format!("max {x}"),
            Check::OneOf(values) => format!("one_of {}", Value::Array(values.clone())),
        }
    }

    fn evaluate(&self, value: &Value) -> Result<(), &'static str> {
        match self {
            Check::Prefix { prefixes, .. } => {
                let path = value.as_str().ok_or("expected a string")?;
                // The readings are normalized (NFC), but the tool opens the
                // path as sent, and on most file systems another spelling
                // is another name: `\u{212A}eys/x` reads as `Keys/x`, and
                // `re\u{301}ports/x` as `r\u{e9}ports/x`, while each opens
                // a folder of its own beside the allowed one. Only a path
                // already in NFC is judged.
                if !unicode_normalization::is_nfc(path) {
                    return Err("path is not in Unicode normalization form C (NFC)");
                }
                let readings = path_readings(path).map_err(PathError::as_str)?;
                let inside = readings
                    .iter()
                    .all(|r| prefixes.iter().any(|p| r.starts_with(p)));
                inside
                    .then_some(())
                    .ok_or("path is outside the allowed prefixes")
            }
            Check::Hosts { entries, .. } => {
                check_url(value.as_str().ok_or("expected a string")?, entries)
            }
            Check::Domains { entries, .. } => match value {
                Value::String(s) => check_address(s, entries),
                Value::Array(items) => items.iter().try_for_each(|item| {
                    check_address(
                        item.as_str().ok_or("expected addresses as strings")?,
                        entries,
                    )
                }),
                _ => Err("expected an address or an array of addresses"),
            },
            // The tool gets the string as sent: it and its NFC form must
            // both match (`O\u{212A}` is `OK` only in NFC), and its length
            // is the longer of the two (30 conjoining jamo are 10 in NFC).
            Check::Pattern { regex, .. } => {
                let raw = value.as_str().ok_or("expected a string")?;
                let nfc: String = raw.nfc().collect();
                (regex.is_match(raw) && regex.is_match(&nfc))
                    .then_some(())
                    .ok_or("value does not match")
            }
            Check::MaxLength(n) => {
                let s = value.as_str().ok_or("expected a string")?;
                let len = s.chars().count().max(s.nfc().count()) as u64;
                (len <= *n).then_some(()).ok_or("value is too long")
            }
            Check::Min(lo) => within(value, *lo, Ordering::Less, "value is below the minimum"),
            Check::Max(hi) => within(value, *hi, Ordering::Greater, "value is above the maximum"),
            Check::OneOf(allowed) => {
                let found = match value {
                    // As sent, against the entries as written: the tool
                    // gets the string as it is.
                    Value::String(s) => allowed.iter().any(|a| a.as_str() == Some(s.as_str())),
                    Value::Number(n) => {
                        let x = ExactNumber::of_json(n);
                        allowed
                            .iter()
                            .filter_map(Value::as_number)
                            .any(|a| ExactNumber::of_json(a).equals(x))
                    }
                    Value::Bool(b) => allowed.iter().any(|a| a.as_bool() == Some(*b)),
                    _ => false,
                };
                found
                    .then_some(())
                    .ok_or("value is not one of the allowed values")
            }
        }
    }
}

/// A number not on the `outside` side of `bound` (equal to it included).
fn within(
    value: &Value,
    bound: ExactNumber,
    outside: Ordering,
    why: &'static str,
) -> Result<(), &'static str> {
    let x = value.as_number().ok_or("expected a number")?;
    match ExactNumber::of_json(x).compare(bound) {
        Some(order) if order != outside => Ok(()),
        _ => Err(why),
    }
}

/// Whether `raw` starts with `scheme://`, in any case.
fn starts_with_scheme(raw: &str, scheme: &str) -> bool {
    raw.get(..scheme.len() + 3)
        .is_some_and(|start| start.eq_ignore_ascii_case(&format!("{scheme}://")))
}

fn check_url(raw: &str, entries: &[NameEntry]) -> Result<(), &'static str> {
    // The host checked here must be the host the tool will fetch, and the
    // tool gets the raw string: shapes that URL parsers read differently are
    // refused. The WHATWG parser reads `\` as `/` (`http://ok.com\@evil.com`
    // is ok.com to it, evil.com to Python's urllib), drops tabs and
    // newlines, and takes `http:evil.com` for a host.
    if raw
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return Err("URL contains a backslash, whitespace or a control character");
    }
    let url = url::Url::parse(raw).map_err(|_| "not a valid URL")?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("URL scheme must be http or https");
    }
    if !starts_with_scheme(raw, url.scheme()) {
        return Err("URL must start with http:// or https://");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL carries userinfo");
    }
    let host = url.host().ok_or("URL has no host")?.to_string();
    let host = host.strip_suffix('.').unwrap_or(&host);
    entries
        .iter()
        .any(|e| e.matches(host))
        .then_some(())
        .ok_or("host is not allowed")
}

/// Characters that make an address more than one bare `local@domain`.
fn forbidden_in_address(c: char) -> bool {
    c.is_whitespace() || c.is_control() || ",;<>()[]\"\\:".contains(c)
}

fn check_address(raw: &str, entries: &[NameEntry]) -> Result<(), &'static str> {
    let address: String = raw.nfc().collect();
    if address.chars().any(forbidden_in_address) {
        return Err("address must be a bare local@domain");
    }
    let Some((local, domain)) = address.split_once('@') else {
        return Err("address must contain exactly one @");
    };
    if domain.contains('@') {
        return Err("address must contain exactly one @");
    }
    if local.is_empty() || domain.is_empty() {
        return Err("address must be a bare local@domain");
    }
    if domain.contains('%') {
        return Err("address has an invalid domain");
    }
    // Judged on the domain as sent: NFC and lowercasing can turn a
    // look-alike into ASCII (the Kelvin sign U+212A becomes `K`, then `k`).
    let non_ascii = raw.rsplit_once('@').is_some_and(|(_, d)| !d.is_ascii());
    let domain = domain.to_lowercase();
    let domain = domain.strip_suffix('.').unwrap_or(&domain);
    let ascii = match url::Host::parse(domain) {
        Ok(url::Host::Domain(d)) => d,
        _ => return Err("address has an invalid domain"),
    };
    let allowed = entries
        .iter()
        .any(|e| (e.non_ascii || !non_ascii) && e.matches(&ascii));
    if allowed {
        Ok(())
    } else if non_ascii && !entries.iter().any(|e| e.non_ascii) {
        Err("non-ASCII domain is not allowed (possible homoglyph)")
    } else {
        Err("recipient domain is not allowed")
    }
}

/// All constraints of one tool, by argument name.
pub(crate) type ToolConstraints = BTreeMap<String, ArgConstraint>;

/// Checks `args` (a JSON object, or `null` for none) against a tool's
/// constraints; the first violation in argument-name order wins.
pub(crate) fn check_all(
    constraints: &ToolConstraints,
    args: &Value,
) -> Result<(), ConstraintViolation> {
    if constraints.is_empty() {
        return Ok(());
    }
    let empty = serde_json::Map::new();
    let map = match args {
        Value::Object(map) => map,
        Value::Null => &empty,
        _ => {
            return Err(ConstraintViolation {
                argument: String::new(),
                rule: "arguments: expected an object".to_string(),
            });
        }
    };
    for (name, constraint) in constraints {
        constraint.check(name, map.get(name))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "constraints_tests.rs"]
mod tests;
