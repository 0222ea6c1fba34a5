use serde_json::json;

use crate::settings::READ_FILE_MAX_BYTES;
use crate::test_support::{code, harness, harness_with, ok};
use gatehouse_store::Store;

#[tokio::test]
async fn write_then_read_round_trips() {
    let h = harness().await;
    let written = ok(h
        .call(
            "acme",
            "write_file",
            json!({"path": "notes/day 1/todo.txt", "content": "buy milk\nünïcode"}),
        )
        .await);
    assert_eq!(
        written.structured,
        Some(json!({"path": "notes/day 1/todo.txt", "bytes": 18}))
    );
    let read = ok(h
        .call("acme", "read_file", json!({"path": "notes/day 1/todo.txt"}))
        .await);
    assert_eq!(read.text, "buy milk\nünïcode");
    // Replacing works and leaves no temporary files behind.
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "notes/day 1/todo.txt", "content": "done"}),
    )
    .await);
    let read = ok(h
        .call(
            "acme",
            "read_file",
            json!({"path": "./notes//day 1/todo.txt"}),
        )
        .await);
    assert_eq!(read.text, "done");
    let entries = std::fs::read_dir(h.files_dir("acme").join("notes/day 1"))
        .map(|d| d.count())
        .unwrap_or_default();
    assert_eq!(entries, 1);
}

#[tokio::test]
async fn traversal_and_absolute_paths_are_refused() {
    let h = harness().await;
    std::fs::write(h.dir.path().join("outside.txt"), "secret").unwrap_or_else(|e| panic!("{e}"));
    for path in [
        "../x",
        "a/../../x",
        "../../../outside.txt",
        "/etc/passwd",
        "a\\..\\x",
        "a\u{0}b",
    ] {
        let read = h.call("acme", "read_file", json!({"path": path})).await;
        assert_eq!(code(&read), "refused", "read {path:?}");
        let write = h
            .call("acme", "write_file", json!({"path": path, "content": "x"}))
            .await;
        assert_eq!(code(&write), "refused", "write {path:?}");
    }
    assert!(!h.dir.path().join("x").exists());
}

#[tokio::test]
async fn percent_encoded_dots_are_a_literal_name_inside_the_area() {
    let h = harness().await;
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "%2e%2e/x", "content": "literal"}),
    )
    .await);
    assert!(h.files_dir("acme").join("%2e%2e").join("x").is_file());
    let read = ok(h
        .call("acme", "read_file", json!({"path": "%2e%2e/x"}))
        .await);
    assert_eq!(read.text, "literal");
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_leading_out_are_refused() {
    use std::os::unix::fs::symlink;
    let h = harness().await;
    let outside_dir = h.dir.path().join("outside");
    std::fs::create_dir_all(&outside_dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(outside_dir.join("secret.txt"), "top secret").unwrap_or_else(|e| panic!("{e}"));
    let files = h.files_dir("acme");
    symlink(outside_dir.join("secret.txt"), files.join("file-link"))
        .unwrap_or_else(|e| panic!("{e}"));
    symlink(&outside_dir, files.join("dir-link")).unwrap_or_else(|e| panic!("{e}"));
    symlink("/etc/passwd", files.join("passwd")).unwrap_or_else(|e| panic!("{e}"));

    for path in ["file-link", "dir-link/secret.txt", "passwd"] {
        let result = h.call("acme", "read_file", json!({"path": path})).await;
        assert_eq!(code(&result), "refused", "read {path}");
        if let Err(e) = result {
            assert!(!e.to_string().contains("top secret"));
        }
    }
    for path in [
        "file-link",
        "dir-link/new.txt",
        "dir-link/sub/new.txt",
        "passwd",
    ] {
        let result = h
            .call(
                "acme",
                "write_file",
                json!({"path": path, "content": "pwned"}),
            )
            .await;
        assert_eq!(code(&result), "refused", "write {path}");
    }
    let untouched = std::fs::read_to_string(outside_dir.join("secret.txt")).unwrap_or_default();
    assert_eq!(untouched, "top secret");
    assert!(!outside_dir.join("new.txt").exists() && !outside_dir.join("sub").exists());
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_that_stay_inside_are_followed_for_reading() {
    use std::os::unix::fs::symlink;
    let h = harness().await;
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "real/a.txt", "content": "inside"}),
    )
    .await);
    let files = h.files_dir("acme");
    symlink(files.join("real"), files.join("alias")).unwrap_or_else(|e| panic!("{e}"));
    let read = ok(h
        .call("acme", "read_file", json!({"path": "alias/a.txt"}))
        .await);
    assert_eq!(read.text, "inside");
}

#[tokio::test]
async fn size_limits_apply_to_reads_and_writes() {
    let h = harness_with(|c| c.max_file_bytes = 16).await;
    let too_big = h
        .call(
            "acme",
            "write_file",
            json!({"path": "big.txt", "content": "x".repeat(17)}),
        )
        .await;
    assert_eq!(code(&too_big), "invalid_arguments");
    assert!(!h.files_dir("acme").join("big.txt").exists());
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "fits.txt", "content": "x".repeat(16)}),
    )
    .await);

    std::fs::write(h.files_dir("acme").join("planted.txt"), "y".repeat(17))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = h
        .call("acme", "read_file", json!({"path": "planted.txt"}))
        .await;
    assert_eq!(code(&result), "refused");
}

#[tokio::test]
async fn tenant_setting_lowers_but_never_raises_the_read_limit() {
    let h = harness_with(|c| c.max_file_bytes = 100).await;
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "a.txt", "content": "x".repeat(50)}),
    )
    .await);
    h.store
        .put_setting("acme", READ_FILE_MAX_BYTES, "10")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        code(&h.call("acme", "read_file", json!({"path": "a.txt"})).await),
        "refused"
    );
    h.store
        .put_setting("acme", READ_FILE_MAX_BYTES, "10000")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    ok(h.call("acme", "read_file", json!({"path": "a.txt"})).await);
    std::fs::write(h.files_dir("acme").join("b.txt"), "z".repeat(200))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        code(&h.call("acme", "read_file", json!({"path": "b.txt"})).await),
        "refused"
    );
}

#[tokio::test]
async fn tenants_are_isolated() {
    let h = harness().await;
    ok(h.call(
        "tenant-b",
        "write_file",
        json!({"path": "b.txt", "content": "b's data"}),
    )
    .await);
    let result = h
        .call("tenant-a", "read_file", json!({"path": "b.txt"}))
        .await;
    assert_eq!(code(&result), "not_found");
    let result = h
        .call(
            "tenant-a",
            "read_file",
            json!({"path": "../tenant-b/files/b.txt"}),
        )
        .await;
    assert_eq!(code(&result), "refused");
    assert!(
        h.tools
            .sandbox_dir()
            .join("tenants/tenant-b/files/b.txt")
            .is_file()
    );
}

#[tokio::test]
async fn invalid_tenant_names_are_refused() {
    let h = harness().await;
    for tenant in ["..", "../evil", "a/b", "", "x y"] {
        let result = h
            .call(
                tenant,
                "write_file",
                json!({"path": "a.txt", "content": "x"}),
            )
            .await;
        assert_eq!(code(&result), "refused", "{tenant:?}");
        let result = h.call(tenant, "read_file", json!({"path": "a.txt"})).await;
        assert_eq!(code(&result), "refused", "{tenant:?}");
    }
    assert!(!h.dir.path().join("evil").exists());
    assert!(!h.tools.sandbox_dir().join("a.txt").exists());
}

#[tokio::test]
async fn missing_files_folders_and_bad_content() {
    let h = harness().await;
    assert_eq!(
        code(
            &h.call("acme", "read_file", json!({"path": "nope.txt"}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        code(
            &h.call("acme", "read_file", json!({"path": "no/dir/x"}))
                .await
        ),
        "not_found"
    );
    ok(h.call(
        "acme",
        "write_file",
        json!({"path": "dir/a.txt", "content": "x"}),
    )
    .await);
    assert_eq!(
        code(&h.call("acme", "read_file", json!({"path": "dir"})).await),
        "invalid_arguments"
    );
    let over_file = h
        .call(
            "acme",
            "write_file",
            json!({"path": "dir/a.txt/b.txt", "content": "x"}),
        )
        .await;
    assert_eq!(code(&over_file), "invalid_arguments");
    let over_dir = h
        .call("acme", "write_file", json!({"path": "dir", "content": "x"}))
        .await;
    assert_eq!(code(&over_dir), "invalid_arguments");
    std::fs::write(h.files_dir("acme").join("bin"), [0xff, 0xfe, 0x00])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        code(&h.call("acme", "read_file", json!({"path": "bin"})).await),
        "failed"
    );
}

#[tokio::test]
async fn arguments_are_checked_strictly() {
    let h = harness().await;
    let unknown = h
        .call("acme", "read_file", json!({"path": "a", "follow": true}))
        .await;
    assert_eq!(code(&unknown), "invalid_arguments");
    let wrong = h
        .call("acme", "write_file", json!({"path": "a", "content": 5}))
        .await;
    assert!(
        matches!(wrong, Err(ref e) if e.to_string().contains("'content'")),
        "{wrong:?}"
    );
    let missing = h.call("acme", "read_file", json!({})).await;
    assert_eq!(code(&missing), "invalid_arguments");
    let empty = h.call("acme", "read_file", json!({"path": ""})).await;
    assert_eq!(code(&empty), "invalid_arguments");
}

/// A tenant's file area shares its volume with the database and the audit
/// log: its bytes and entries are capped (a replaced file frees what it
/// held), and a refused write creates nothing.
#[test]
fn a_tenants_file_area_has_a_quota() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let quota = super::Quota {
        bytes: 10,
        entries: 3,
    };
    let path = |p: &str| crate::sandbox::RelativePath::parse(p).unwrap();
    let write = |p: &str, content: &[u8]| super::write_text(root, &path(p), content, 100, quota);
    assert_eq!(write("a.txt", b"12345").unwrap(), 5);
    assert_eq!(write("a.txt", b"1234567890").unwrap(), 10);
    let full = write("b.txt", b"1").unwrap_err();
    assert_eq!(full.code(), "refused");
    assert!(full.to_string().contains("10 bytes"), "{full}");
    assert!(!root.join("b.txt").exists());
    write("a.txt", b"").unwrap();
    write("d/e.txt", b"").unwrap();
    let full = write("f/g.txt", b"").unwrap_err();
    assert!(full.to_string().contains("files and folders"), "{full}");
    assert!(!root.join("f").exists());
}

#[test]
fn paths_go_down_at_most_sixteen_folders() {
    let deep = "a/".repeat(17) + "f.txt";
    let error = crate::sandbox::RelativePath::parse(&deep).unwrap_err();
    assert_eq!(error.code(), "invalid_arguments");
    let fine = "a/".repeat(16) + "f.txt";
    assert!(crate::sandbox::RelativePath::parse(&fine).is_ok());
}
