//! docs/security-tests.md promises a test for every attack: each test it
//! names must exist, or the promise is empty.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The last segment of each `a::b::c` code span: a test function, or a
/// module of tests. `…` abbreviates a path; `(…)` adds a remark.
fn named_tests(doc: &str) -> Vec<(String, String)> {
    let mut names = Vec::new();
    for (i, span) in doc.split('`').enumerate() {
        if i % 2 == 0 || !span.contains("::") {
            continue;
        }
        let last = span.rsplit("::").next().unwrap_or_default();
        let last = last.trim().trim_start_matches('…');
        let last = last.split('(').next().unwrap_or_default().trim();
        if !last.is_empty()
            && last
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            names.push((span.to_string(), last.to_string()));
        }
    }
    names
}

#[test]
fn every_test_named_in_the_security_tests_document_exists() {
    let root = repo_root();
    let doc = std::fs::read_to_string(root.join("docs/security-tests.md")).unwrap();
    let mut files = Vec::new();
    rust_files(&root.join("crates"), &mut files);
    let mut source = String::new();
    let mut stems = Vec::new();
    for file in &files {
        source.push_str(&std::fs::read_to_string(file).unwrap());
        if let Some(stem) = file.file_stem() {
            stems.push(stem.to_string_lossy().to_string());
        }
    }
    let named = named_tests(&doc);
    assert!(named.len() > 100, "only {} test names found", named.len());
    let missing: Vec<&String> = named
        .iter()
        .filter(|(_, name)| {
            !source.contains(&format!("fn {name}("))
                && !source.contains(&format!("fn {name}<"))
                && !source.contains(&format!("mod {name}"))
                && !stems.iter().any(|s| s == name)
        })
        .map(|(span, _)| span)
        .collect();
    assert!(
        missing.is_empty(),
        "named in docs/security-tests.md but not found: {missing:#?}"
    );
}
