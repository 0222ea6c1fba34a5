use serde_json::json;

use super::MAX_EXPRESSION_CHARS;
use crate::test_support::{code, harness, ok};

async fn eval(expression: &str) -> Result<crate::ToolOutput, crate::ToolError> {
    let h = harness().await;
    h.call("acme", "execute_code", json!({ "expression": expression }))
        .await
}

#[tokio::test]
async fn arithmetic_and_comparisons() {
    let output = ok(eval("2 + 3 * 4").await);
    assert_eq!(output.text, "14");
    assert_eq!(output.structured, Some(json!({"value": 14})));
    assert_eq!(
        ok(eval("7 / 2.0").await).structured,
        Some(json!({"value": 3.5}))
    );
    assert_eq!(ok(eval("(1 + 2) == 3 && !false").await).text, "true");
    assert_eq!(
        ok(eval("1, \"two\", 3.0").await).structured,
        Some(json!({"value": [1, "two", 3.0]}))
    );
}

#[tokio::test]
async fn string_concatenation() {
    let output = ok(eval("\"a\" + \"b\"").await);
    assert_eq!(output.text, "ab");
    assert_eq!(output.structured, Some(json!({"value": "ab"})));
}

#[tokio::test]
async fn functions_and_builtins_are_refused() {
    for expression in [
        "system(\"ls\")",
        "std::process::Command(\"sh\")",
        "len(\"abc\")",
        "str::regex_matches(\"aaa\", \"a+\")",
        "random()",
        "math::sqrt(4)",
    ] {
        let result = eval(expression).await;
        assert_eq!(code(&result), "refused", "{expression}");
    }
}

#[tokio::test]
async fn variables_and_assignments_do_not_exist() {
    assert_eq!(code(&eval("x + 1").await), "refused");
    assert_eq!(code(&eval("x = 5").await), "refused");
    assert_eq!(code(&eval("x = \"a\"; x += x; x").await), "refused");
}

#[tokio::test]
async fn errors_and_limits() {
    assert_eq!(code(&eval("1 / 0").await), "failed");
    assert_eq!(code(&eval("9223372036854775807 + 1").await), "failed");
    assert_eq!(code(&eval("(1 + ").await), "failed");
    assert_eq!(code(&eval("   ").await), "invalid_arguments");
    let long = format!("1{}", "+1".repeat(MAX_EXPRESSION_CHARS / 2));
    assert_eq!(code(&eval(&long).await), "invalid_arguments");
    let h = harness().await;
    let wrong = h
        .call("acme", "execute_code", json!({"expression": 1}))
        .await;
    assert_eq!(code(&wrong), "invalid_arguments");
}

/// Deeply nested input at the length limit must not overflow the stack
/// (which would abort the whole process, not just fail the call).
#[tokio::test]
async fn deep_nesting_at_the_length_limit_is_survived() {
    let max = MAX_EXPRESSION_CHARS;
    let cases = [
        format!("{}1", "-".repeat(max - 1)),
        format!("{}true", "!".repeat(max - 4)),
        format!("{}1{}", "(".repeat(max / 2), ")".repeat(max / 2 - 1)),
        format!("{}1{}", "-(".repeat(max / 3), ")".repeat(max / 3)),
        format!("{}1{}", "f(".repeat(max / 3), ")".repeat(max / 3)),
        format!("{}1", "f ".repeat(max / 2 - 1)),
        format!("2{}", "^1".repeat(max / 2 - 1)),
    ];
    for case in &cases {
        assert!(case.chars().count() <= max);
        let result = eval(case).await;
        assert!(
            matches!(code(&result), "ok" | "failed" | "refused"),
            "{result:?}"
        );
    }
}
