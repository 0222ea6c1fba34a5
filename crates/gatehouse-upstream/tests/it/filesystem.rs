//! `@modelcontextprotocol/server-filesystem` (TypeScript SDK, 2025-era) via npx.

use std::time::Duration;

use gatehouse_upstream::UpstreamConfig;
use serde_json::json;

use crate::common::{npx, start, text};

/// Pinned, so a new release cannot change what the test checks.
const FILESYSTEM_SERVER: &str = "@modelcontextprotocol/server-filesystem@2026.8.31";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_and_reads_a_directory() {
    let Some(npx) = npx("filesystem server test") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hello.txt"), "hello from the gateway\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let root = dir.path().canonicalize().unwrap().display().to_string();
    let mut config = UpstreamConfig::stdio("files", npx, &["-y", FILESYSTEM_SERVER, &root]);
    // npx may download the package first.
    config.connect_timeout = Duration::from_secs(120);
    config.call_timeout = Duration::from_secs(120);
    let set = start(vec![config]);
    let files = set.get("files").unwrap();

    let tools = files.list_tools(None, None).await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"list_directory"), "{names:?}");
    assert!(names.contains(&"read_text_file"), "{names:?}");

    let listing = files
        .call_tool(
            None,
            "list_directory",
            json!({"path": root}).as_object().cloned(),
            None,
        )
        .await
        .unwrap();
    let listing = text(&listing);
    assert!(
        listing.contains("hello.txt") && listing.contains("sub"),
        "{listing}"
    );

    let path = format!("{root}/hello.txt");
    let content = files
        .call_tool(
            None,
            "read_text_file",
            json!({"path": path}).as_object().cloned(),
            None,
        )
        .await
        .unwrap();
    assert!(text(&content).contains("hello from the gateway"));

    // A 2025-11-25 server: the client fell back from server/discover.
    let version = files.health().protocol_version.unwrap();
    assert!(version.as_str() < "2026-07-28", "{version}");
    set.shutdown().await;
}
