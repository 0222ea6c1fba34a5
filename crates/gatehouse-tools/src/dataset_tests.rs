use std::sync::Arc;

use gatehouse_store::Store;
use serde_json::{Map, Value, json};

use super::like_pattern;
use crate::test_support::{self, code, harness, ok, permit, principal};
use crate::{BuiltinTools, ToolError, ToolOutput};

#[test]
fn like_wildcards_are_escaped() {
    assert_eq!(like_pattern("a%b_c\\d"), "%a\\%b\\_c\\\\d%");
    assert_eq!(like_pattern("O'Brien"), "%O'Brien%");
}

async fn search(h: &test_support::Harness, query: Value) -> Result<ToolOutput, ToolError> {
    h.call("acme", "search_database", query).await
}

fn result_names(output: &ToolOutput) -> Vec<String> {
    let structured = output.structured.clone().unwrap_or_default();
    structured["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["row"]["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn search_finds_rows_in_both_tables() {
    let h = harness().await;
    let output = ok(search(&h, json!({"query": "LAMP"})).await);
    assert_eq!(result_names(&output), ["Lighthouse Desk Lamp"]);
    let structured = output.structured.unwrap_or_default();
    assert_eq!(structured["count"], 1);
    assert_eq!(structured["results"][0]["table"], "products");
    assert_eq!(structured["results"][0]["row"]["price"], 49.9);

    let output = ok(search(&h, json!({"query": "Port Amberly"})).await);
    assert_eq!(
        result_names(&output),
        ["Ada Quillfeather", "Dorian Peplow", "Marisol Threnody"]
    );
    let output = ok(search(&h, json!({"query": "a", "limit": 3})).await);
    assert_eq!(output.structured.unwrap_or_default()["count"], 3);
}

#[tokio::test]
async fn search_terms_are_literal_never_sql() {
    let h = harness().await;
    let names = |q: &'static str| {
        let h = &h;
        async move { result_names(&ok(search(h, json!({ "query": q })).await)) }
    };
    assert_eq!(names("%").await, ["Pier Cotton Tote"]);
    assert_eq!(names("_").await, ["Keel Mechanical Keyboard"]);
    assert_eq!(names("'s").await, ["Chef's Knife Classic"]);
    assert_eq!(names("O'R").await, ["Jasper O'Rourkeby"]);
    assert!(names("' OR 1=1 --").await.is_empty());
    assert!(names("'; DROP TABLE products; --").await.is_empty());
    assert!(names("\\").await.is_empty());
    assert_eq!(names("lamp").await.len(), 1, "the dataset survived");
}

#[tokio::test]
async fn search_arguments_are_validated() {
    let h = harness().await;
    for args in [
        json!({"query": ""}),
        json!({"query": "  "}),
        json!({"query": "a", "limit": 0}),
        json!({"query": "a", "limit": 51}),
        json!({"query": "a", "limit": "5"}),
        json!({"query": 5}),
        json!({"query": "x".repeat(201)}),
        json!({"query": "a", "sql": "SELECT 1"}),
    ] {
        assert_eq!(
            code(&search(&h, args.clone()).await),
            "invalid_arguments",
            "{args}"
        );
    }
}

#[tokio::test]
async fn dataset_is_created_once_and_rebuilt_when_damaged() {
    let h = harness().await;
    let path = h.tools.sandbox_dir().join("dataset.sqlite");
    assert!(path.is_file());
    let store: Arc<dyn Store> = Arc::clone(&h.store) as Arc<dyn Store>;
    let config = h.tools.config().clone();
    // Reopening an existing sandbox keeps working.
    let again = BuiltinTools::open(config.clone(), Arc::clone(&store)).await;
    assert!(again.is_ok());
    std::fs::write(&path, "not a database").unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = BuiltinTools::open(config, store)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let p = permit(&principal("acme"), "search_database");
    let mut args = Map::new();
    args.insert("query".into(), json!("lamp"));
    let output = ok(rebuilt.call(&p, args).await);
    assert_eq!(output.structured.unwrap_or_default()["count"], 1);
}
