//! The tamper-evident audit trail (issue 12): every record is chained to
//! the one before and the chain's head is signed at shutdown (and at
//! intervals); `gatehouse audit verify` names the first edited, deleted,
//! reordered or inserted record in the database or in `audit.jsonl`, and
//! says so in its exit status.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use super::harness::{BIN, Server};

/// A data directory with a finished trail: allowed and denied calls, then
/// a graceful stop (the last checkpoint is signed then).
async fn finished_trail() -> Server {
    let mut server = Server::start(None);
    let (_, reader) = server.create_key("r", "reader", &[]);
    for _ in 0..3 {
        let body = server.call_tool(&reader, "whoami", json!({})).await;
        assert!(body["result"].is_object(), "{body}");
    }
    let body = server.call_tool(&reader, "web_fetch", json!({})).await;
    assert_eq!(body["error"]["data"]["reason"], "role_not_allowed");
    assert!(server.stop().success());
    server
}

/// Copies the data directory, so each tampering starts from the same trail.
fn copy_of(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", dir.display()))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

/// `gatehouse audit verify ARGS --json` on `dir`: exit success and JSON.
fn verify(dir: &Path, args: &[&str]) -> (bool, Value, String) {
    let out = Command::new(BIN)
        .args(["audit", "verify", "--json"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("GATEHOUSE_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(stdout.trim()).unwrap_or(Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs SQL on the data directory's SQLite database.
fn sql(dir: &Path, statements: &str) {
    let status = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             c.executescript(sys.argv[2]); c.commit()",
        )
        .arg(dir.join("gatehouse.db"))
        .arg(statements)
        .status()
        .unwrap();
    assert!(status.success(), "{statements}");
}

fn query(dir: &Path, select: &str) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); \
             print('\\n'.join('|'.join(str(v) for v in r) for r in c.execute(sys.argv[2])))",
        )
        .arg(dir.join("gatehouse.db"))
        .arg(select)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn refused(dir: &Path, args: &[&str], names: &str, problem: &str) {
    let (ok, json, stderr) = verify(dir, args);
    assert!(!ok, "tampering went unnoticed: {json}");
    assert_eq!(json["verified"], false, "{json}");
    let at = json["at"].as_str().unwrap();
    assert!(at.contains(names), "expected {names:?} in {json}");
    assert!(
        json["problem"].as_str().unwrap().contains(problem),
        "expected {problem:?} in {json}"
    );
    assert!(stderr.contains("TAMPERED"), "{stderr}");
}

#[tokio::test]
async fn an_untouched_trail_verifies_in_the_database_and_the_file() {
    let server = finished_trail().await;
    let (ok, json, stderr) = verify(server.data_dir(), &[]);
    assert!(ok, "{json} {stderr}");
    // Authentication, decision and outcome records of four calls at least,
    // and the signed checkpoint written at shutdown covering all of them.
    assert!(json["chained_records"].as_u64().unwrap() >= 8, "{json}");
    assert!(json["checkpoints"].as_u64().unwrap() >= 1, "{json}");
    assert_eq!(json["records_after_last_checkpoint"], 0, "{json}");
    assert_eq!(json["unchained_records"], 0, "{json}");

    let file = server.data_dir().join("audit.jsonl");
    let (ok, json, stderr) = verify(server.data_dir(), &["--file", file.to_str().unwrap()]);
    assert!(ok, "{json} {stderr}");
    assert!(json["checkpoints"].as_u64().unwrap() >= 1, "{json}");

    // A restarted server goes on with the same chain.
    let mut again = Server::start_in(copy_of(server.data_dir()), None);
    let key = again.create_key("r2", "reader", &[]).1;
    again.call_tool(&key, "whoami", json!({})).await;
    assert!(again.stop().success());
    let instance = std::fs::read_to_string(again.data_dir().join("audit-chain")).unwrap();
    let (ok, json, stderr) = verify(again.data_dir(), &[]);
    assert!(ok, "{json} {stderr}");
    let head: u64 = query(
        again.data_dir(),
        &format!(
            "SELECT MAX(chain_seq) FROM audit_events WHERE chain = '{}'",
            instance.trim()
        ),
    )
    .parse()
    .unwrap();
    assert!(head > 8, "the chain did not go on: {head}");
}

#[tokio::test]
async fn tampering_with_the_database_is_named() {
    let server = finished_trail().await;
    let dir = server.data_dir();
    let instance = std::fs::read_to_string(dir.join("audit-chain"))
        .unwrap()
        .trim()
        .to_string();
    let id_at = |d: &Path, seq: u64| {
        query(
            d,
            &format!(
                "SELECT id FROM audit_events WHERE chain = '{instance}' AND chain_seq = {seq}"
            ),
        )
    };

    // Edited: the denial turned into a success.
    let copy = copy_of(dir);
    let denied = query(
        copy.path(),
        "SELECT id FROM audit_events WHERE reason = 'role_not_allowed' LIMIT 1",
    );
    sql(
        copy.path(),
        &format!("UPDATE audit_events SET outcome = 'success' WHERE id = '{denied}'"),
    );
    refused(copy.path(), &[], &denied, "edited");

    // Deleted: a record from the middle of the chain.
    let copy = copy_of(dir);
    let gone = id_at(copy.path(), 3);
    let next = id_at(copy.path(), 4);
    sql(
        copy.path(),
        &format!("DELETE FROM audit_events WHERE id = '{gone}'"),
    );
    refused(copy.path(), &[], &next, "missing");

    // Reordered: record 5 written before record 4.
    let b = id_at(dir, 5);
    let copy = copy_of(dir);
    let rows = query(
        copy.path(),
        &format!(
            "SELECT seq FROM audit_events WHERE chain = '{instance}' AND chain_seq IN (4, 5) ORDER BY chain_seq"
        ),
    );
    let seqs: Vec<i64> = rows.lines().map(|l| l.parse().unwrap()).collect();
    sql(
        copy.path(),
        &format!(
            "UPDATE audit_events SET seq = -1 WHERE seq = {s4};
             UPDATE audit_events SET seq = {s4} WHERE seq = {s5};
             UPDATE audit_events SET seq = {s5} WHERE seq = -1;",
            s4 = seqs[0],
            s5 = seqs[1]
        ),
    );
    refused(copy.path(), &[], &b, "missing");

    // Inserted: a copy of a record under a new id (ids are unique), as if
    // written again: the id is part of what is hashed.
    let copy = copy_of(dir);
    sql(
        copy.path(),
        &format!(
            "INSERT INTO audit_events (id, ts, kind, tenant, human, agent, credential, session, source, \
             tool, arguments, decision, reason, outcome, error, latency_us, result_bytes, chain, chain_seq, \
             prev_hash, hash) SELECT 'forged', ts, kind, tenant, human, agent, credential, session, source, \
             tool, arguments, decision, reason, outcome, error, latency_us, result_bytes, chain, chain_seq, \
             prev_hash, hash FROM audit_events WHERE id = '{}'",
            id_at(copy.path(), 2)
        ),
    );
    refused(copy.path(), &[], "forged", "edited");

    // Inserted without a link, after chained records.
    let copy = copy_of(dir);
    sql(
        copy.path(),
        "INSERT INTO audit_events (id, ts, kind, outcome) VALUES ('bare', 0, 'tool_decision', 'success')",
    );
    refused(copy.path(), &[], "bare", "no chain link");

    // The end of the chain cut off: the chain alone is a valid prefix, the
    // signed checkpoint is what shows records are gone.
    let copy = copy_of(dir);
    sql(
        copy.path(),
        &format!("DELETE FROM audit_events WHERE chain = '{instance}' AND chain_seq > 4"),
    );
    refused(copy.path(), &[], &instance, "deleted from its end");

    // A CLI command's whole chain deleted (the record of the key made
    // with `keys create`): the command signed its head, so it is missed.
    let copy = copy_of(dir);
    let made = query(
        copy.path(),
        "SELECT chain FROM audit_events WHERE reason = 'api_key_created' AND agent = 'gatehouse-cli'",
    );
    assert!(made.starts_with("run-"), "{made}");
    sql(
        copy.path(),
        &format!("DELETE FROM audit_events WHERE chain = '{made}'"),
    );
    refused(copy.path(), &[], &made, "deleted from its end");

    // A checkpoint altered to match a rewritten chain: its signature no
    // longer covers it.
    let copy = copy_of(dir);
    sql(
        copy.path(),
        &format!("UPDATE audit_checkpoints SET hash = '{}'", "ab".repeat(32)),
    );
    refused(copy.path(), &[], "checkpoint", "altered");

    // --from checks a window: a record before it may be gone.
    let copy = copy_of(dir);
    let first = id_at(copy.path(), 1);
    let second = id_at(copy.path(), 2);
    sql(
        copy.path(),
        &format!("DELETE FROM audit_events WHERE id = '{first}'"),
    );
    refused(copy.path(), &[], &second, "beginning is missing");
    let from = query(
        copy.path(),
        &format!("SELECT seq FROM audit_events WHERE chain = '{instance}' AND chain_seq = 3"),
    );
    let (ok, json, stderr) = verify(copy.path(), &["--from", &from]);
    assert!(ok, "{json} {stderr}");
}

#[tokio::test]
async fn tampering_with_the_file_is_named() {
    let server = finished_trail().await;
    let lines: Vec<String> = std::fs::read_to_string(server.data_dir().join("audit.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // The server's own chain (a CLI command's records form short chains
    // of their own, each with its checkpoint).
    let record_lines: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("\"link\":{\"chain\":\"i-"))
        .map(|(i, _)| i)
        .collect();
    assert!(record_lines.len() >= 8);
    let check = |edited: Vec<String>, names: &str, problem: &str| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("audit.jsonl");
        std::fs::write(&file, edited.join("\n") + "\n").unwrap();
        // The store (for the signing keys and its checkpoints) is the server's.
        refused(
            server.data_dir(),
            &["--file", file.to_str().unwrap()],
            names,
            problem,
        );
    };

    // Edited: the denial turned into a success.
    let i = lines
        .iter()
        .position(|l| l.contains("role_not_allowed") && l.contains("tool_decision"))
        .unwrap();
    let mut edited = lines.clone();
    edited[i] = edited[i].replace("\"denied\"", "\"success\"");
    check(edited, &format!("line {}", i + 1), "edited");

    // Edited where the hash does not look: the `time` shown beside `ts`.
    let i = record_lines[2];
    let record: Value = serde_json::from_str(&lines[i]).unwrap();
    let time = record["time"].as_str().unwrap().to_string();
    let mut edited = lines.clone();
    edited[i] = edited[i].replace(&time, "2020-01-01T00:00:00.000Z");
    check(edited, &format!("line {}", i + 1), "time");

    // Deleted: named at the chain's next record (other chains' records
    // may lie between), one line up once the line is gone.
    let gone = record_lines[3];
    let mut edited = lines.clone();
    edited.remove(gone);
    check(edited, &format!("line {}", record_lines[4]), "missing");

    // Reordered.
    let (a, b) = (record_lines[4], record_lines[5]);
    let mut edited = lines.clone();
    edited.swap(a, b);
    check(edited, &format!("line {}", a + 1), "missing");

    // Inserted: a record repeated further down.
    let mut edited = lines.clone();
    edited.insert(record_lines[6], lines[record_lines[1]].clone());
    check(
        edited,
        &format!("line {}", record_lines[6] + 1),
        "reordered or copied",
    );

    // Cut at the end: the checkpoint shows it.
    let last_checkpoint = lines
        .iter()
        .rposition(|l| l.contains("\"checkpoint\""))
        .unwrap();
    let mut edited: Vec<String> = lines[..record_lines[5]].to_vec();
    edited.push(lines[last_checkpoint].clone());
    check(edited, "chain", "deleted from its end");

    // Every link stripped and the checkpoint lines dropped, as if the file
    // came from before records were chained: the records are newer than
    // the trail's first signed checkpoint, so their links were removed.
    // A trail runs for days: the records are placed hours after the first
    // checkpoint (within the first hour, one written before chaining on a
    // skewed clock or an instance upgraded later is given the benefit of
    // the doubt). Without a link, nothing hashes `ts`.
    let stripped: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("\"checkpoint\""))
        .map(|l| {
            let mut record: Value = serde_json::from_str(l).unwrap();
            let fields = record.as_object_mut().unwrap();
            fields.remove("link");
            fields.remove("time");
            let later = fields["ts"].as_i64().unwrap() + 3 * 3_600_000;
            fields.insert("ts".into(), json!(later));
            if l.contains("role_not_allowed") {
                record["outcome"] = json!("success");
            }
            record.to_string()
        })
        .collect();
    check(stripped, "line ", "no chain link");
}

/// A rotated file stays verifiable: the chain runs on across files, and a
/// file left out is a gap.
#[tokio::test]
async fn rotated_files_verify_together_and_a_missing_one_is_a_gap() {
    let mut server = Server::start(Some(
        "version = 1\n[audit]\nrotate_bytes = 3000\nrotate_after = \"0s\"\n",
    ));
    let (_, reader) = server.create_key("r", "reader", &[]);
    for _ in 0..20 {
        server.call_tool(&reader, "whoami", json!({})).await;
    }
    assert!(server.stop().success());
    let mut files: Vec<String> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("audit.") && n.ends_with(".jsonl") && n != "audit.jsonl")
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files.push("audit.jsonl".into());
    let paths: Vec<String> = files
        .iter()
        .map(|f| server.data_dir().join(f).display().to_string())
        .collect();
    let mut args: Vec<&str> = Vec::new();
    for path in &paths {
        args.extend(["--file", path.as_str()]);
    }
    let (ok, json, stderr) = verify(server.data_dir(), &args);
    assert!(ok, "{json} {stderr}");
    assert_eq!(json["records_after_last_checkpoint"], 0, "{json}");

    // The second file left out: the third starts where records are missing.
    let mut args: Vec<&str> = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        if i != 1 {
            args.extend(["--file", path.as_str()]);
        }
    }
    refused(server.data_dir(), &args, &files[2], "missing");
}

#[tokio::test]
async fn without_the_authorization_server_checkpoints_are_signed_too() {
    let mut server = Server::start(Some("version = 1\n[oauth]\nenabled = false\n"));
    let (_, reader) = server.create_key("r", "reader", &[]);
    for _ in 0..3 {
        let body = server.call_tool(&reader, "whoami", json!({})).await;
        assert!(body["result"].is_object(), "{body}");
    }
    // No authorization server: no JWKS, but a key of the store signs.
    let jwks = server
        .http
        .get(format!("{}/oauth/jwks.json", server.base))
        .send()
        .await
        .unwrap();
    assert_ne!(jwks.status(), 200);
    assert!(server.stop().success());
    let (ok, json, stderr) = verify(server.data_dir(), &[]);
    assert!(ok, "{json} {stderr}");
    assert!(json["checkpoints"].as_u64().unwrap() >= 1, "{json}");
    assert_eq!(json["records_after_last_checkpoint"], 0, "{json}");
}

/// A database writer adds a signing key of their own (its private half not
/// sealed with the master key) and signs the checkpoints anew with it, as
/// they would over a rewritten chain: where the master key is, `verify`
/// does not believe that key.
#[tokio::test]
async fn checkpoints_signed_by_a_key_added_to_the_database_are_refused() {
    use gatehouse_core::Timestamp;
    use gatehouse_oauth::SigningKey;
    use gatehouse_store::{SigningKeyRecord, SqliteStore, Store};

    let server = finished_trail().await;
    let copy = copy_of(server.data_dir());
    let attacker = SigningKey::generate().unwrap();
    let mut updates = String::new();
    {
        let store = SqliteStore::open(&copy.path().join("gatehouse.db"))
            .await
            .unwrap();
        store
            .insert_signing_key(&SigningKeyRecord {
                kid: attacker.kid().to_string(),
                // Nothing the master key opens: the attacker has none.
                sealed_pkcs8: vec![7; 64],
                public_jwk: serde_json::to_string(&attacker.public_jwk()).unwrap(),
                created_at: Timestamp(0),
                activates_at: Timestamp(0),
                // Withdrawn, so the server itself never tries to sign with it.
                revoked_at: Some(Timestamp(1)),
            })
            .await
            .unwrap();
        let checkpoints = store.audit_checkpoints().await.unwrap();
        assert!(!checkpoints.is_empty());
        for c in checkpoints {
            let claims =
                json!({"iss": "forger", "chain": c.chain, "seq": c.seq, "hash": c.hash, "iat": 0});
            let jws = attacker
                .sign_typed(&claims, gatehouse_audit::CHECKPOINT_TYP)
                .unwrap();
            updates.push_str(&format!(
                "UPDATE audit_checkpoints SET jws = '{jws}' WHERE chain = '{}' AND seq = {};",
                c.chain, c.seq
            ));
        }
    }
    sql(copy.path(), &updates);
    refused(copy.path(), &[], "checkpoint", "does not verify");

    // Without the master key the keys cannot be proven: the trail verifies
    // as far as the stored keys go, and the report says they are unproven.
    std::fs::remove_file(copy.path().join("master.key")).unwrap();
    let (ok, json, stderr) = verify(copy.path(), &[]);
    assert!(ok, "{json} {stderr}");
    assert_eq!(json["keys_authenticated"], false, "{json}");
    // A master key that proves no stored key (not the servers', or the
    // servers' with their keys replaced) vouches for nothing: verify
    // refuses rather than fall back to the stored keys, the forger's too.
    std::fs::write(copy.path().join("master.key"), "ab".repeat(32)).unwrap();
    let (ok, json, stderr) = verify(copy.path(), &[]);
    assert!(!ok, "{json} {stderr}");
    assert!(stderr.contains("opens with the master key"), "{stderr}");
    // The untouched trail, with its master key, is proven.
    let (ok, json, stderr) = verify(server.data_dir(), &[]);
    assert!(ok, "{json} {stderr}");
    assert_eq!(json["keys_authenticated"], true, "{json}");
}

/// The same forger also junks the sealed private half of every genuine
/// key, so that no key proves with the servers' master key and verify
/// would fall back to every stored key, the forger's included.
#[tokio::test]
async fn junking_the_genuine_keys_does_not_make_the_forgers_key_count() {
    let server = finished_trail().await;
    let copy = copy_of(server.data_dir());
    sql(
        copy.path(),
        "UPDATE signing_keys SET sealed_pkcs8 = X'0707070707070707';",
    );
    let (ok, json, stderr) = verify(copy.path(), &[]);
    assert!(!ok, "{json} {stderr}");
    assert!(stderr.contains("opens with the master key"), "{stderr}");
}

/// A database writer edits a record, re-hashes the chain after it and
/// deletes the chain's checkpoints (which sit in the same database): the
/// chain alone is consistent again. But an instance signs a checkpoint
/// every `audit.checkpoint_interval` while it writes, so a chain whose
/// records span longer than that without one is named.
#[tokio::test]
async fn a_rewritten_chain_whose_checkpoints_were_deleted_is_named() {
    use gatehouse_core::{Outcome, Timestamp};
    use gatehouse_store::{SqliteStore, Store};

    let server = finished_trail().await;
    let instance = std::fs::read_to_string(server.data_dir().join("audit-chain"))
        .unwrap()
        .trim()
        .to_string();
    let copy = copy_of(server.data_dir());
    let mut updates = String::new();
    {
        let store = SqliteStore::open(&copy.path().join("gatehouse.db"))
            .await
            .unwrap();
        let rows = store.audit_page(0, 1000).await.unwrap();
        let mut chain = gatehouse_audit::Chain::resume(instance.clone(), None);
        let mut rewritten = 0;
        for row in rows
            .iter()
            .filter(|r| r.event.link.as_ref().is_some_and(|l| l.chain == instance))
        {
            let mut event = row.event.clone();
            // A real trail spans hours: ten minutes between records.
            event.ts = Timestamp(1_700_000_000_000 + rewritten * 600_000);
            rewritten += 1;
            let outcome = if event.outcome == Outcome::Denied {
                event.outcome = Outcome::Success;
                "success"
            } else {
                event.outcome.as_str()
            };
            event.link = None;
            chain.link(&mut event);
            let link = event.link.as_ref().unwrap();
            updates.push_str(&format!(
                "UPDATE audit_events SET ts = {}, outcome = '{outcome}', prev_hash = '{}', hash = '{}' WHERE id = '{}';",
                event.ts.0, link.prev_hash, link.hash, event.id
            ));
        }
        assert!(rewritten > 3, "{rewritten}");
    }
    updates.push_str(&format!(
        "DELETE FROM audit_checkpoints WHERE chain = '{instance}';"
    ));
    sql(copy.path(), &updates);
    refused(copy.path(), &[], &instance, "without a signed checkpoint");
}

/// A command's chain (here the one that made the reader's key) ends with
/// the command, and nothing in it points to another chain: a database
/// writer could delete it whole, checkpoints included, and the trail
/// stayed consistent. The server witnesses it in its own chain (a
/// `witness` record, signed with the server's next checkpoint), so the
/// deletion is named at that record, in the database and in the file.
#[tokio::test]
async fn a_commands_chain_deleted_whole_is_named_where_the_server_witnessed_it() {
    let server = finished_trail().await;
    let dir = server.data_dir();
    let runs = query(
        dir,
        "SELECT DISTINCT chain FROM audit_checkpoints WHERE chain LIKE 'run-%'",
    );
    assert!(!runs.is_empty(), "the key command signed no chain");
    let witnessed = server.audit(&["--kind", "witness"]);
    assert!(
        witnessed
            .iter()
            .any(|w| runs.contains(w["arguments"]["chain"].as_str().unwrap())),
        "{witnessed:?}"
    );
    let (ok, json, stderr) = verify(dir, &[]);
    assert!(ok, "{json} {stderr}");
    assert_eq!(json["unsigned_chains"], json!([]), "{json}");

    let copy = copy_of(dir);
    sql(
        copy.path(),
        "DELETE FROM audit_events WHERE chain LIKE 'run-%'; \
         DELETE FROM audit_checkpoints WHERE chain LIKE 'run-%';",
    );
    refused(copy.path(), &[], "record", "that chain was deleted");

    // The same in the file: its lines of the command's chain gone too.
    let file = copy.path().join("audit.jsonl");
    let kept: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .filter(|line| {
            !line.contains("\"link\":{\"chain\":\"run-")
                && !line.contains("\"checkpoint\":{\"chain\":\"run-")
        })
        .map(str::to_owned)
        .collect();
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    refused(
        copy.path(),
        &["--file", file.to_str().unwrap()],
        "line",
        "that chain was deleted",
    );
}

/// Two servers on one data directory (a volume shared in a rolling update,
/// an old process still flushing while its replacement starts) wrote one
/// audit chain, each record's number twice, and `audit verify` reported it
/// broken for ever. The second server is refused while the first runs, and
/// starts once it is gone, on the same chain.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let mut first = Server::start(None);
    // Bounded: a second server that started would otherwise run on.
    let out = Command::new("timeout")
        .arg("30")
        .arg(BIN)
        .arg("serve")
        .arg("--json")
        .arg("--data-dir")
        .arg(first.data_dir())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .env_remove("GATEHOUSE_CONFIG")
        .env_remove("GATEHOUSE_PEPPER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("another Gatehouse server is running on this data directory"),
        "{stderr}"
    );
    let (_, reader) = first.create_key("r", "reader", &[]);
    let body = first.call_tool(&reader, "whoami", json!({})).await;
    assert!(body["result"].is_object(), "{body}");
    assert!(first.stop().success());
    let dir = std::mem::replace(&mut first.dir, tempfile::tempdir().unwrap());
    drop(first);
    let mut second = Server::start_in(dir, None);
    let body = second.call_tool(&reader, "whoami", json!({})).await;
    assert!(body["result"].is_object(), "{body}");
    assert!(second.stop().success());
    let verified = second.cli(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
}
