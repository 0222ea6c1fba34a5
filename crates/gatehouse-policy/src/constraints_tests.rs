use super::*;
use serde_json::json;

fn constraint(toml_text: &str) -> ArgConstraint {
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("c = {toml_text}"))
        .unwrap()
        .remove("c")
        .unwrap();
    ArgConstraint::parse(&value).unwrap_or_else(|e| panic!("{}", e.reason))
}

/// `Ok(())` or the `why` part of the violated rule.
fn check(c: &ArgConstraint, value: Value) -> Result<(), String> {
    c.check("arg", Some(&value)).map_err(|v| {
        assert_eq!(v.argument, "arg");
        v.rule
            .split_once(": ")
            .map(|(_, why)| why.to_string())
            .unwrap_or(v.rule)
    })
}

fn passes(c: &ArgConstraint, value: &str) -> bool {
    check(c, json!(value)).is_ok()
}

// ---- paths -------------------------------------------------------------

#[test]
fn paths_inside_a_prefix_pass() {
    let c = constraint(r#"{ prefix = ["reports/", "public/"] }"#);
    for ok in [
        "reports/q1.csv",
        "reports/2024/q1.csv",
        "./reports/q1.csv",
        "reports//q1.csv",
        "reports/x/../q1.csv",
        "public/index.html",
        "reports",
        "reports\\q1.csv",
    ] {
        assert!(passes(&c, ok), "{ok}");
    }
}

#[test]
fn prefixes_compare_whole_segments() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    assert_eq!(
        check(&c, json!("reportsX/secret")),
        Err("path is outside the allowed prefixes".into())
    );
    assert!(!passes(&c, "reports.bak/x"));
    let c = constraint(r#"{ prefix = ["reports"] }"#);
    assert!(!passes(&c, "reportsX"));
    assert!(passes(&c, "reports/x"));
}

#[test]
fn dot_dot_in_every_spelling_is_caught() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    for (bad, why) in [
        ("../etc/passwd", "path climbs above its root"),
        ("reports/../../etc/passwd", "path climbs above its root"),
        (
            "reports/../secrets.txt",
            "path is outside the allowed prefixes",
        ),
        ("%2e%2e/etc/passwd", "path climbs above its root"),
        (
            "reports/%2e%2e/%2e%2e/etc/passwd",
            "path climbs above its root",
        ),
        (
            "reports/%2E%2E/secrets",
            "path is outside the allowed prefixes",
        ),
        (
            "reports/%2e%2e%2fsecrets",
            "path is outside the allowed prefixes",
        ),
        (
            "reports/%252e%252e/secrets",
            "path is outside the allowed prefixes",
        ),
        (
            "reports/..\\secrets",
            "path is outside the allowed prefixes",
        ),
        ("..\\..\\windows\\system32", "path climbs above its root"),
        ("reports\\..\\..\\x", "path climbs above its root"),
        ("reports/%5c..%5c..%5cx", "path climbs above its root"),
        (
            "reports/%25252e%25252e/x",
            "path is outside the allowed prefixes",
        ),
        (
            "reports/%2525252e%2525252e/x",
            "path has too many layers of percent-encoding",
        ),
    ] {
        assert_eq!(check(&c, json!(bad)), Err(why.into()), "{bad}");
    }
}

#[test]
fn every_reading_of_an_encoded_path_must_be_inside() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    // Decoded, this is inside; literally it is not (a tool that does not
    // decode would open "%72eports/…").
    assert!(!passes(&c, "%72eports/q1.csv"));
    // A literal percent sign that decodes to something inside is fine.
    assert!(passes(&c, "reports/100%25.csv"));
    // Invalid UTF-8 after decoding.
    assert_eq!(
        check(&c, json!("reports/%ff.csv")),
        Err("percent-encoded path is not UTF-8".into())
    );
}

#[test]
fn nul_is_refused_raw_and_encoded() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    assert_eq!(
        check(&c, json!("reports/a\u{0}.csv")),
        Err("path contains NUL".into())
    );
    assert_eq!(
        check(&c, json!("reports/a%00.csv")),
        Err("path contains NUL".into())
    );
}

/// A prefix written in either form is the same prefix, but a path is
/// judged only in NFC: the tool opens the path as sent, and another
/// spelling (NFD, a Kelvin sign for K) is another folder beside the
/// allowed one on most file systems.
#[test]
fn paths_are_judged_only_in_nfc() {
    let nfc = constraint("{ prefix = [\"r\u{e9}ports/\"] }");
    let nfd = constraint("{ prefix = [\"re\u{301}ports/\"] }");
    for c in [&nfc, &nfd] {
        assert!(passes(c, "r\u{e9}ports/q1.csv"));
        assert_eq!(
            check(c, json!("re\u{301}ports/q1.csv")),
            Err("path is not in Unicode normalization form C (NFC)".into())
        );
        // Percent-encoded NFD: decoded it is inside, literally it is not.
        assert!(!passes(c, "re%CC%81ports/q1.csv"));
        assert!(!passes(c, "reports/q1.csv"));
    }
    assert_eq!(
        normalize_path("re\u{301}ports/./a").unwrap().to_string(),
        "r\u{e9}ports/a"
    );
}

#[test]
fn absolute_paths_only_match_absolute_prefixes() {
    let rel = constraint(r#"{ prefix = ["reports/"] }"#);
    assert!(!passes(&rel, "/reports/q1.csv"));
    assert!(!passes(&rel, "\\reports\\q1.csv"));
    assert!(!passes(&rel, "C:\\reports\\q1.csv"));
    let abs = constraint(r#"{ prefix = ["/srv/data/"] }"#);
    assert!(passes(&abs, "/srv/data/x"));
    assert!(passes(&abs, "//srv/./data/x"));
    assert!(!passes(&abs, "srv/data/x"));
    assert!(!passes(&abs, "/srv/data/../../etc/passwd"));
}

#[test]
fn paths_are_case_sensitive() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    assert!(!passes(&c, "Reports/q1.csv"));
    assert!(!passes(&c, "REPORTS/q1.csv"));
}

#[test]
fn non_string_paths_are_refused() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    assert_eq!(check(&c, json!(7)), Err("expected a string".into()));
    assert_eq!(
        check(&c, json!(["reports/a"])),
        Err("expected a string".into())
    );
}

// ---- hosts -------------------------------------------------------------

#[test]
fn hosts_match_exactly_or_by_wildcard_suffix() {
    let c = constraint(r#"{ hosts = ["example.com", "*.docs.example.org"] }"#);
    for ok in [
        "https://example.com/",
        "http://example.com:8080/a?b#c",
        "https://api.docs.example.org/x",
        "https://a.b.docs.example.org/x",
    ] {
        assert!(passes(&c, ok), "{ok}");
    }
    for (bad, why) in [
        ("https://www.example.com/", "host is not allowed"),
        ("https://docs.example.org/", "host is not allowed"),
        ("https://evildocs.example.org/", "host is not allowed"),
        ("https://example.com.evil.net/", "host is not allowed"),
        ("https://notexample.com/", "host is not allowed"),
        ("ftp://example.com/", "URL scheme must be http or https"),
        ("file:///etc/passwd", "URL scheme must be http or https"),
        ("example.com", "not a valid URL"),
        ("https://", "not a valid URL"),
    ] {
        assert_eq!(check(&c, json!(bad)), Err(why.into()), "{bad}");
    }
}

#[test]
fn hosts_are_case_insensitive_and_ignore_one_trailing_dot() {
    let c = constraint(r#"{ hosts = ["Example.COM"] }"#);
    assert!(passes(&c, "https://EXAMPLE.com/"));
    assert!(passes(&c, "HTTPS://eXaMpLe.CoM/path"));
    assert!(passes(&c, "https://example.com./"));
    assert!(!passes(&c, "https://example.com../"));
    let c = constraint(r#"{ hosts = ["example.com."] }"#);
    assert!(passes(&c, "https://example.com/"));
}

#[test]
fn userinfo_is_refused() {
    let c = constraint(r#"{ hosts = ["example.com"] }"#);
    for bad in [
        "https://user@example.com/",
        "https://user:pw@example.com/",
        "https://:pw@example.com/",
        "https://example.com@evil.com/",
        "https://example.com%40evil.com@example.com/",
    ] {
        assert_eq!(
            check(&c, json!(bad)),
            Err("URL carries userinfo".into()),
            "{bad}"
        );
    }
}

#[test]
fn urls_that_parsers_read_differently_are_refused() {
    let c = constraint(r#"{ hosts = ["example.com"] }"#);
    // Each names example.com to the WHATWG parser, another host (or none)
    // to others.
    for bad in [
        "http://example.com\\@evil.com/",
        "http://example.com\\\\evil.com/",
        "http://exa\tmple.com/",
        "http://example.com/\n",
        " http://example.com/",
        "http:example.com/x",
        "http:/example.com/x",
        "https:\\\\example.com/",
    ] {
        assert!(check(&c, json!(bad)).is_err(), "{bad:?}");
    }
    for good in ["http://example.com/a?b=c#d", "HTTPS://EXAMPLE.com/"] {
        assert_eq!(check(&c, json!(good)), Ok(()), "{good}");
    }
}

#[test]
fn idn_hosts_compare_in_punycode() {
    let c = constraint(r#"{ hosts = ["bücher.de"] }"#);
    assert!(passes(&c, "https://xn--bcher-kva.de/"));
    assert!(passes(&c, "https://BÜCHER.de/"));
    let c = constraint(r#"{ hosts = ["example.com"] }"#);
    // Cyrillic а is a different host.
    assert!(!passes(&c, "https://ex\u{430}mple.com/"));
    // Full-width letters map to ASCII in IDNA: it *is* example.com, and an
    // HTTP client using the same parser connects there.
    assert!(passes(&c, "https://\u{ff45}xample.com/"));
}

#[test]
fn ip_hosts_are_normalized() {
    let c = constraint(r#"{ hosts = ["127.0.0.1", "[::1]"] }"#);
    assert!(passes(&c, "http://127.0.0.1/"));
    assert!(passes(&c, "http://0x7f.0.0.1/"));
    assert!(passes(&c, "http://2130706433/"));
    assert!(passes(&c, "http://[0:0::1]/"));
    assert!(!passes(&c, "http://127.0.0.2/"));
}

// ---- e-mail domains ----------------------------------------------------

#[test]
fn recipient_domains_match_exactly_or_by_wildcard() {
    let c = constraint(r#"{ domains = ["example.com", "*.corp.example.org"] }"#);
    for ok in [
        json!("bob@example.com"),
        json!("Bob@EXAMPLE.COM"),
        json!("bob@Example.Com."),
        json!("alice@mail.corp.example.org"),
        json!(["a@example.com", "b@x.corp.example.org"]),
        json!([]),
    ] {
        assert_eq!(check(&c, ok.clone()), Ok(()), "{ok}");
    }
    for (bad, why) in [
        (json!("bob@evil.com"), "recipient domain is not allowed"),
        (
            json!("bob@sub.example.com"),
            "recipient domain is not allowed",
        ),
        (
            json!("bob@corp.example.org"),
            "recipient domain is not allowed",
        ),
        (
            json!("bob@example.com.evil.com"),
            "recipient domain is not allowed",
        ),
        (
            json!(["a@example.com", "b@evil.com"]),
            "recipient domain is not allowed",
        ),
        (
            json!("bob@evil.com@example.com"),
            "address must contain exactly one @",
        ),
        (json!("bob"), "address must contain exactly one @"),
        (json!("@example.com"), "address must be a bare local@domain"),
        (json!("bob@"), "address must be a bare local@domain"),
        (
            json!("bob@evil.com, a@example.com"),
            "address must be a bare local@domain",
        ),
        (
            json!("bob@evil.com;a@example.com"),
            "address must be a bare local@domain",
        ),
        (
            json!("Bob <bob@evil.com> a@example.com"),
            "address must be a bare local@domain",
        ),
        (
            json!("\"a@example.com\"@evil.com"),
            "address must be a bare local@domain",
        ),
        (
            json!("bob@example.com\r\nBcc: x@evil.com"),
            "address must be a bare local@domain",
        ),
        (json!("bob@example%2ecom"), "address has an invalid domain"),
        (
            json!("bob@exa_mple com"),
            "address must be a bare local@domain",
        ),
        (json!(42), "expected an address or an array of addresses"),
        (json!([42]), "expected addresses as strings"),
    ] {
        assert_eq!(check(&c, bad.clone()), Err(why.into()), "{bad}");
    }
}

#[test]
fn homoglyph_and_non_ascii_domains_are_refused() {
    let c = constraint(r#"{ domains = ["example.com", "key.com"] }"#);
    for bad in [
        "bob@ex\u{430}mple.com",  // Cyrillic а
        "bob@\u{435}xample.com",  // Cyrillic е
        "bob@\u{ff45}xample.com", // full-width e: IDNA maps it to example.com
        "bob@EXAMPLE.\u{441}om",  // Cyrillic с
        "bob@\u{212a}ey.com",     // Kelvin sign: NFC makes it an ASCII K
    ] {
        assert_eq!(
            check(&c, json!(bad)),
            Err("non-ASCII domain is not allowed (possible homoglyph)".into()),
            "{bad}"
        );
    }
    // Its punycode spelling is ASCII but another domain.
    assert_eq!(
        check(&c, json!("bob@xn--exmple-4nf.com")),
        Err("recipient domain is not allowed".into())
    );
}

#[test]
fn non_ascii_entries_allow_their_own_domain_in_any_form() {
    let c = constraint(r#"{ domains = ["bücher.de", "example.com"] }"#);
    assert!(passes(&c, "a@bücher.de"));
    assert!(passes(&c, "a@BÜCHER.DE"));
    assert!(passes(&c, "a@bu\u{308}cher.de")); // NFD
    assert!(passes(&c, "a@xn--bcher-kva.de"));
    // A non-ASCII look-alike of the ASCII entry is still refused.
    assert_eq!(
        check(&c, json!("a@ex\u{430}mple.com")),
        Err("recipient domain is not allowed".into())
    );
}

// ---- scalar rules ------------------------------------------------------

#[test]
fn patterns_are_anchored_and_match_as_sent_and_in_nfc() {
    let c = constraint(r#"{ pattern = "[a-z]+" }"#);
    assert!(passes(&c, "abc"));
    assert!(!passes(&c, "abc1"));
    assert!(!passes(&c, "1abc"));
    assert!(!passes(&c, ""));
    let c = constraint(r#"{ pattern = "a|b" }"#);
    assert!(!passes(&c, "ab"));
    assert!(passes(&c, "b"));
    let c = constraint("{ pattern = \"caf\u{e9}\" }");
    assert!(passes(&c, "caf\u{e9}"));
    // The tool gets the string as sent: it must match too, not only its NFC.
    assert!(!passes(&c, "cafe\u{301}"));
    let c = constraint(r#"{ pattern = "[A-Z]+" }"#);
    assert!(!passes(&c, "O\u{212A}"));
    assert_eq!(check(&c, json!(1)), Err("expected a string".into()));
}

#[test]
fn max_length_counts_the_longer_of_as_sent_and_nfc() {
    let c = constraint("{ max_length = 4 }");
    assert!(passes(&c, "café"));
    // As sent it is five characters (the accent apart).
    assert!(!passes(&c, "cafe\u{301}"));
    assert_eq!(check(&c, json!("cafés")), Err("value is too long".into()));
    // Conjoining jamo: fewer characters in NFC than as sent.
    let c = constraint("{ max_length = 2 }");
    assert!(!passes(&c, "\u{1100}\u{1161}\u{1100}\u{1161}"));
}

#[test]
fn ranges_are_inclusive() {
    let c = constraint("{ min = 1, max = 10.5 }");
    assert_eq!(check(&c, json!(1)), Ok(()));
    assert_eq!(check(&c, json!(10.5)), Ok(()));
    assert_eq!(
        check(&c, json!(0.99)),
        Err("value is below the minimum".into())
    );
    assert_eq!(
        check(&c, json!(11)),
        Err("value is above the maximum".into())
    );
    assert_eq!(check(&c, json!("5")), Err("expected a number".into()));
}

/// Ids beyond 2^53 share their `f64` with their neighbours: compared as
/// `f64`, an allowlist of one id admitted every id within ±127 of it, and
/// a `max` let the next integer through. The tool gets the integer as sent.
#[test]
fn large_integers_are_compared_exactly() {
    let c = constraint("{ one_of = [1234567890123456789] }");
    assert_eq!(check(&c, json!(1_234_567_890_123_456_789_u64)), Ok(()));
    for neighbour in [1_234_567_890_123_456_700_u64, 1_234_567_890_123_456_790] {
        assert_eq!(
            check(&c, json!(neighbour)),
            Err("value is not one of the allowed values".into()),
            "{neighbour}"
        );
    }
    let c = constraint("{ max = 9007199254740992 }");
    assert_eq!(check(&c, json!(9_007_199_254_740_992_u64)), Ok(()));
    assert_eq!(
        check(&c, json!(9_007_199_254_740_993_u64)),
        Err("value is above the maximum".into())
    );
    let c = constraint("{ min = -9007199254740992 }");
    assert_eq!(
        check(&c, json!(-9_007_199_254_740_993_i64)),
        Err("value is below the minimum".into())
    );
    // An integer bound against a float, and the other way round, exactly.
    let c = constraint("{ min = 1, max = 10.5 }");
    assert_eq!(
        check(&c, json!(0.999_999_999_999_999_9)),
        Err("value is below the minimum".into())
    );
    assert_eq!(check(&c, json!(10)), Ok(()));
    let value: toml::Value =
        toml::from_str::<toml::Table>("c = { min = 9007199254740993, max = 9007199254740992.0 }")
            .unwrap()
            .remove("c")
            .unwrap();
    assert!(
        ArgConstraint::parse(&value).is_err(),
        "min above max, by one, is refused"
    );
}

#[test]
fn one_of_compares_by_type() {
    let c = constraint(r#"{ one_of = ["asc", "desc", 3, true] }"#);
    assert_eq!(check(&c, json!("asc")), Ok(()));
    assert_eq!(check(&c, json!(3.0)), Ok(()));
    assert_eq!(check(&c, json!(true)), Ok(()));
    for bad in [
        json!("ASC"),
        json!("3"),
        json!(false),
        json!(["asc"]),
        json!({}),
    ] {
        assert_eq!(
            check(&c, bad.clone()),
            Err("value is not one of the allowed values".into()),
            "{bad}"
        );
    }
}

/// Strings are compared byte for byte, as sent against the entry as
/// written: the tool gets the string as sent.
#[test]
fn one_of_compares_strings_as_written() {
    let nfc = constraint("{ one_of = [\"caf\u{e9}\"] }");
    assert_eq!(check(&nfc, json!("caf\u{e9}")), Ok(()));
    assert!(check(&nfc, json!("cafe\u{301}")).is_err());
    let nfd = constraint("{ one_of = [\"cafe\u{301}\"] }");
    assert_eq!(check(&nfd, json!("cafe\u{301}")), Ok(()));
    assert!(check(&nfd, json!("caf\u{e9}")).is_err());
}

// ---- presence and reporting ---------------------------------------------

#[test]
fn missing_arguments_are_refused_unless_optional() {
    let required = constraint("{ max = 3 }");
    let optional = constraint("{ max = 3, optional = true }");
    let v = required.check("n", None).unwrap_err();
    assert_eq!(v.argument, "n");
    assert_eq!(v.rule, "required: argument is missing");
    assert!(required.check("n", Some(&Value::Null)).is_err());
    assert!(optional.is_optional());
    assert!(optional.check("n", None).is_ok());
    assert!(optional.check("n", Some(&Value::Null)).is_ok());
    assert!(optional.check("n", Some(&json!(9))).is_err());
}

#[test]
fn violations_name_argument_and_rule_but_not_the_value() {
    let c = constraint(r#"{ prefix = ["reports/"] }"#);
    let v = c
        .check("path", Some(&json!("top-secret/../../x")))
        .unwrap_err();
    assert_eq!(v.argument, "path");
    assert_eq!(v.rule, r#"prefix ["reports/"]: path climbs above its root"#);
    assert!(!v.to_string().contains("top-secret"));
    assert_eq!(
        v.to_string(),
        r#"argument 'path' violates prefix ["reports/"]: path climbs above its root"#
    );
}

#[test]
fn all_kinds_on_one_argument_must_hold() {
    let c = constraint(r#"{ pattern = "[a-z/]+\\.csv", prefix = ["reports/"], max_length = 20 }"#);
    assert!(passes(&c, "reports/a.csv"));
    assert!(!passes(&c, "reports/a.txt"));
    assert!(!passes(&c, "public/a.csv"));
    assert!(!passes(&c, "reports/abcdefghijklmn.csv"));
}

#[test]
fn check_all_walks_every_constrained_argument() {
    let mut set = ToolConstraints::new();
    set.insert("a".into(), constraint("{ max = 1 }"));
    set.insert("b".into(), constraint("{ max = 1, optional = true }"));
    assert!(check_all(&set, &json!({"a": 1})).is_ok());
    assert!(check_all(&set, &json!({"a": 1, "b": 1, "other": 99})).is_ok());
    assert_eq!(
        check_all(&set, &json!({"a": 1, "b": 2}))
            .unwrap_err()
            .argument,
        "b"
    );
    assert_eq!(check_all(&set, &json!({})).unwrap_err().argument, "a");
    assert_eq!(check_all(&set, &Value::Null).unwrap_err().argument, "a");
    assert_eq!(
        check_all(&set, &json!([1])).unwrap_err().rule,
        "arguments: expected an object"
    );
    assert!(check_all(&ToolConstraints::new(), &json!([1])).is_ok());
}
