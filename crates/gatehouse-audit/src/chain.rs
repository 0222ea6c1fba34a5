//! The hash chain that makes the audit trail tamper-evident.
//!
//! Every record written by one instance carries its place in that
//! instance's chain (`ChainLink`): a sequence number without gaps, the hash
//! of the record before it and its own hash, taken over the chain id, the
//! sequence number, the previous hash and every other field of the record.
//! An edited record no longer matches its hash; a deleted one leaves a gap;
//! a reordered or inserted one does not follow its predecessor. Someone who
//! can write the database could recompute every hash after an edit, which is
//! why the writer also signs the chain's head at intervals
//! (`checkpoint.rs`): a rewritten chain no longer matches its checkpoints.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use gatehouse_core::{AuditEvent, ChainLink};
use gatehouse_store::Store;
use serde::Serialize;

use crate::AuditError;

/// The previous hash of a chain's first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record's hash is taken over. The record is serialized with its
/// fields in declaration order and `arguments` with sorted keys, so the same
/// record read back from the database or the JSON-lines file gives the same
/// bytes.
#[derive(Serialize)]
struct Hashed<'a> {
    chain: &'a str,
    seq: u64,
    prev_hash: &'a str,
    record: &'a AuditEvent,
}

/// Hex SHA-256 of a record at `seq` in `chain` after `prev_hash`. `event`'s
/// own link is left out of what is hashed.
pub fn record_hash(chain: &str, seq: u64, prev_hash: &str, event: &AuditEvent) -> String {
    let unlinked;
    let record = if event.link.is_some() {
        unlinked = AuditEvent {
            link: None,
            ..event.clone()
        };
        &unlinked
    } else {
        event
    };
    let hashed = Hashed {
        chain,
        seq,
        prev_hash,
        record,
    };
    // Serialized whole, then hashed in one call: serde writes a record in
    // dozens of small pieces, and a digest update per piece cost more than
    // the hashing itself. aws-lc's SHA-256 uses the CPU's SHA extensions.
    // (Strings, numbers and a JSON value always serialize; the writer and
    // the verifier would hash the same bytes even if they did not.)
    let bytes = serde_json::to_vec(&hashed).unwrap_or_default();
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &bytes,
    ))
}

/// How the chain of one run of a command or of `gatehouse stdio` is named
/// (then a UUID); a server's chain is `i-` and a UUID.
pub const RUN_CHAIN_PREFIX: &str = "run-";

/// The head of one instance's chain, as the writer extends it.
#[derive(Debug, Clone)]
pub struct Chain {
    id: String,
    seq: u64,
    head: String,
    /// An instance's chain holds the server's lock file beside its id file
    /// locked while it lives: two servers on one data directory would
    /// write one chain, each record's number twice, and `audit verify`
    /// would report it broken for ever.
    lock: Option<Arc<File>>,
}

impl PartialEq for Chain {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.seq, &self.head) == (&other.id, other.seq, &other.head)
    }
}
impl Eq for Chain {}

impl Chain {
    /// A chain that goes on after `last` (its last record's seq and hash),
    /// or starts when there is none.
    pub fn resume(id: String, last: Option<(u64, String)>) -> Chain {
        let (seq, head) = last.unwrap_or((0, GENESIS_HASH.to_string()));
        Chain {
            id,
            seq,
            head,
            lock: None,
        }
    }

    /// The same chain (and the lock it holds), going on after `last`: what
    /// the store holds after a failed write. A chain made anew here let go
    /// of the instance's lock, and a second server could start.
    pub fn resumed_at(self, last: Option<(u64, String)>) -> Chain {
        let (seq, head) = last.unwrap_or((0, GENESIS_HASH.to_string()));
        Chain { seq, head, ..self }
    }

    /// A chain of its own for one run of a command (`gatehouse approvals
    /// decide`, …), which may run beside the server: its records never
    /// take seq numbers from the server's chain.
    pub fn for_run() -> Chain {
        Chain::resume(format!("{RUN_CHAIN_PREFIX}{}", uuid::Uuid::now_v7()), None)
    }

    /// The instance's chain: its id is kept in the file `id_file` (made on
    /// the first start), and it goes on from its last stored record. The
    /// server's lock file beside it stays locked while the chain lives: a
    /// second server on the same data directory is refused
    /// ([`AuditError::ChainInUse`]).
    pub async fn for_instance(store: &dyn Store, id_file: &Path) -> Result<Chain, AuditError> {
        let (id, lock) = instance_chain_id(id_file)?;
        let last = store
            .audit_chain_head(&id)
            .await
            .map_err(|e| AuditError::WriteFailed(format!("audit chain {id}: {e}")))?;
        let mut chain = Chain::resume(id, last);
        chain.lock = lock.map(Arc::new);
        Ok(chain)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The last record's seq (0 before the first) and hash.
    pub fn head(&self) -> (u64, &str) {
        (self.seq, &self.head)
    }

    /// Puts `event` at the end of the chain.
    pub fn link(&mut self, event: &mut AuditEvent) {
        let seq = self.seq + 1;
        let hash = record_hash(&self.id, seq, &self.head, event);
        event.link = Some(ChainLink {
            chain: self.id.clone(),
            seq,
            prev_hash: std::mem::replace(&mut self.head, hash.clone()),
            hash,
        });
        self.seq = seq;
    }
}

/// The file a server holds locked, beside its chain's id file.
pub const SERVER_LOCK_FILE: &str = ".gatehouse-server.lock";

/// The id in `path`, or a new one written there first, with the server's
/// lock file beside it locked (an exclusive advisory lock, released when
/// the process ends, however it ends). A file of its own, that nothing
/// rewrites or renames: an id file replaced while a server runs (an
/// editor's or rsync's rename) would be a new one, which a second server
/// could lock; a directory cannot be locked on NFS. Ids are `i-` and a UUID;
/// anything else in the file, an empty file included, stops start-up
/// rather than start a chain under a name nobody chose. The lock is `None`
/// on a file system that has no locks (said loudly: nothing then stops a
/// second server).
fn instance_chain_id(path: &Path) -> Result<(String, Option<File>), AuditError> {
    let failed = |e: std::io::Error| AuditError::WriteFailed(format!("{}: {e}", path.display()));
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(directory).map_err(failed)?;
    let lock = lock_file(directory, path).map_err(failed)?;
    let locked = match lock.try_lock() {
        Ok(()) => true,
        Err(std::fs::TryLockError::WouldBlock) => {
            return Err(AuditError::ChainInUse(path.display().to_string()));
        }
        Err(std::fs::TryLockError::Error(e)) if locks_unsupported(&e) => {
            tracing::warn!(
                directory = %directory.display(),
                error = %e,
                "the file system of the data directory has no locks: nothing stops a second \
                 server on this data directory from writing the same audit chain"
            );
            false
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(failed(e)),
    };
    remove_staged(directory);
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_new_chain_id(path, directory).map_err(failed)?;
            File::open(path).map_err(failed)?
        }
        Err(e) => return Err(failed(e)),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(failed)?;
    let id = text.trim();
    let valid = id
        .strip_prefix("i-")
        .is_some_and(|uuid| uuid::Uuid::parse_str(uuid).is_ok());
    if !valid {
        return Err(AuditError::WriteFailed(format!(
            "{}: not an audit chain id (expected i-<uuid>)",
            path.display()
        )));
    }
    Ok((id.to_string(), locked.then_some(lock)))
}

/// A new chain id, put at `path` whole or not at all: written to a file of
/// its own and synced, then renamed into place (under the server's lock).
/// A start killed half-way leaves no empty id file behind (which stops
/// start-up), only a staged file the next start removes.
fn write_new_chain_id(path: &Path, parent: &Path) -> std::io::Result<()> {
    let staged = parent.join(format!(".audit-chain-{}.tmp", uuid::Uuid::now_v7()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&staged)?;
        file.write_all(format!("i-{}\n", uuid::Uuid::now_v7()).as_bytes())?;
        file.sync_all()?;
        // Under the server's lock: no other start writes it meanwhile.
        std::fs::rename(&staged, path)
    })();
    let _ = std::fs::remove_file(&staged);
    written?;
    // The link itself is durable once the directory is.
    File::open(parent)?.sync_all()
}

/// A lock the file system cannot take (NFS without a lock manager, or on
/// a file opened read-only; some FUSE and SMB mounts), as opposed to one
/// another process holds.
fn locks_unsupported(error: &std::io::Error) -> bool {
    const EBADF: i32 = 9;
    const ENOLCK: i32 = 37;
    const EOPNOTSUPP: i32 = 95;
    error.kind() == std::io::ErrorKind::Unsupported
        || matches!(error.raw_os_error(), Some(EBADF | ENOLCK | EOPNOTSUPP))
}

/// The server's lock file in `directory`, made if missing. In a directory
/// mounted read-only (PostgreSQL as the store) it cannot be made: the id
/// file, opened to read, is locked instead.
fn lock_file(directory: &Path, id_file: &Path) -> std::io::Result<File> {
    let path = directory.join(SERVER_LOCK_FILE);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => Ok(file),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            File::open(&path).or_else(|_| File::open(id_file))
        }
        Err(e) => Err(e),
    }
}

/// Staged ids a start killed half-way left behind.
fn remove_staged(directory: &Path) {
    let Ok(entries) = std::fs::read_dir(directory) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".audit-chain-") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// What is wrong with a record, as `gatehouse audit verify` names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tamper {
    #[error("its contents do not match its hash: it was edited")]
    Edited,
    #[error("records {first}..={last} of chain {chain} are missing: deleted")]
    Missing {
        chain: String,
        first: u64,
        last: u64,
    },
    #[error(
        "it is record {seq} of chain {chain}, which came already (up to {seen}): reordered or copied"
    )]
    OutOfOrder { chain: String, seq: u64, seen: u64 },
    #[error(
        "it does not follow record {previous} of chain {chain} (its previous hash differs): inserted or replaced"
    )]
    Unlinked { chain: String, previous: u64 },
    #[error(
        "it has no chain link, after chained records: inserted (every record is chained since the chain began)"
    )]
    Unchained,
    #[error(
        "the first record seen of chain {chain} is {seq}, not 1: the chain's beginning is missing"
    )]
    Headless { chain: String, seq: u64 },
}

/// Where the chains stand while records are checked in order.
#[derive(Debug, Default)]
pub struct Verifier {
    /// Per chain: the last seq and hash seen.
    heads: HashMap<String, (u64, String)>,
    /// Records may start mid-chain (`--from`): the first of each chain is
    /// then taken as it is.
    partial: bool,
    chained: u64,
    unchained: u64,
}

impl Verifier {
    /// Checks from the very first record: each chain must start at 1.
    pub fn from_start() -> Verifier {
        Verifier::default()
    }

    /// Checks a window of the trail: each chain may start anywhere.
    pub fn partial() -> Verifier {
        Verifier {
            partial: true,
            ..Verifier::default()
        }
    }

    /// Records checked that carry a link, and that do not (written before
    /// the chain existed).
    pub fn counts(&self) -> (u64, u64) {
        (self.chained, self.unchained)
    }

    /// The last seq and hash seen of each chain.
    pub fn heads(&self) -> &HashMap<String, (u64, String)> {
        &self.heads
    }

    /// Checks the next record in the order it was written.
    pub fn check(&mut self, event: &AuditEvent) -> Result<(), Tamper> {
        let Some(link) = &event.link else {
            if self.chained > 0 {
                return Err(Tamper::Unchained);
            }
            self.unchained += 1;
            return Ok(());
        };
        if record_hash(&link.chain, link.seq, &link.prev_hash, event) != link.hash {
            return Err(Tamper::Edited);
        }
        match self.heads.get(&link.chain) {
            None => {
                let first_is_genesis = link.seq == 1 && link.prev_hash == GENESIS_HASH;
                if !self.partial && !first_is_genesis {
                    return Err(Tamper::Headless {
                        chain: link.chain.clone(),
                        seq: link.seq,
                    });
                }
            }
            Some((seq, hash)) => {
                if link.seq <= *seq {
                    return Err(Tamper::OutOfOrder {
                        chain: link.chain.clone(),
                        seq: link.seq,
                        seen: *seq,
                    });
                }
                if link.seq > seq + 1 {
                    return Err(Tamper::Missing {
                        chain: link.chain.clone(),
                        first: seq + 1,
                        last: link.seq - 1,
                    });
                }
                if &link.prev_hash != hash {
                    return Err(Tamper::Unlinked {
                        chain: link.chain.clone(),
                        previous: *seq,
                    });
                }
            }
        }
        self.heads
            .insert(link.chain.clone(), (link.seq, link.hash.clone()));
        self.chained += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventBuilder;
    use gatehouse_core::{AuditKind, Outcome, Timestamp};

    /// Two servers on one data directory wrote one chain, each record's
    /// number twice: the second is refused while the first holds it, and
    /// gets it (the same id) once the first is gone.
    #[tokio::test]
    async fn an_instance_chain_is_held_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = gatehouse_store::SqliteStore::in_memory().await.unwrap();
        let id_file = dir.path().join("state").join("audit-chain");
        let first = Chain::for_instance(&store, &id_file).await.unwrap();
        assert!(first.id().starts_with("i-"));
        let refused = Chain::for_instance(&store, &id_file).await.unwrap_err();
        assert!(matches!(refused, AuditError::ChainInUse(_)), "{refused}");
        assert!(
            refused.to_string().contains("another Gatehouse server"),
            "{refused}"
        );
        // A clone (the writer's copy) keeps the lock as long as it lives,
        // and so does the chain resumed from the store after a failed write.
        let copy = first.clone();
        let id = first.id().to_string();
        drop(first);
        assert!(Chain::for_instance(&store, &id_file).await.is_err());
        let resumed = copy.resumed_at(Some((7, "ab".repeat(32))));
        assert_eq!(resumed.head(), (7, "ab".repeat(32).as_str()));
        assert!(matches!(
            Chain::for_instance(&store, &id_file).await,
            Err(AuditError::ChainInUse(_))
        ));
        drop(resumed);
        let again = Chain::for_instance(&store, &id_file).await.unwrap();
        assert_eq!(again.id(), id);
        assert_eq!(
            std::fs::read_to_string(&id_file).unwrap(),
            format!("{id}\n")
        );
        drop(again);
        // The id file replaced while a server runs (an editor's or rsync's
        // rename): the second server is refused all the same.
        {
            let held = Chain::for_instance(&store, &id_file).await.unwrap();
            let replacement = dir.path().join("state").join("audit-chain.new");
            std::fs::write(&replacement, format!("{id}\n")).unwrap();
            std::fs::rename(&replacement, &id_file).unwrap();
            assert!(matches!(
                Chain::for_instance(&store, &id_file).await,
                Err(AuditError::ChainInUse(_))
            ));
            drop(held);
        }
        // No staged file is left behind by the first start, and one a start
        // killed half-way left is removed by the next.
        std::fs::write(dir.path().join("state/.audit-chain-x.tmp"), "i-").unwrap();
        drop(Chain::for_instance(&store, &id_file).await.unwrap());
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, [SERVER_LOCK_FILE, "audit-chain"]);
        // Anything but an id stops start-up, an emptied file too (a new
        // chain would quietly break the old one's continuity).
        for text in ["not-an-id\n", ""] {
            std::fs::write(&id_file, text).unwrap();
            assert!(matches!(
                Chain::for_instance(&store, &id_file).await,
                Err(AuditError::WriteFailed(_))
            ));
        }
        // The lock needs no write access: a read-only id file still starts.
        std::fs::write(&id_file, format!("{id}\n")).unwrap();
        let mut read_only = std::fs::metadata(&id_file).unwrap().permissions();
        read_only.set_readonly(true);
        std::fs::set_permissions(&id_file, read_only).unwrap();
        let chain = Chain::for_instance(&store, &id_file).await.unwrap();
        assert_eq!(chain.id(), id);
    }

    fn chained(n: usize) -> Vec<AuditEvent> {
        let mut chain = Chain::resume("c1".into(), None);
        (0..n)
            .map(|i| {
                let mut event = EventBuilder::new(
                    AuditKind::ToolDecision,
                    Outcome::Success,
                    Timestamp(i as i64),
                )
                .tool("read_file")
                .arguments(serde_json::json!({"path": format!("/f{i}"), "z": 1, "a": [1.5, "x"]}))
                .build();
                chain.link(&mut event);
                event
            })
            .collect()
    }

    fn verify(events: &[AuditEvent]) -> Result<(), (usize, Tamper)> {
        let mut verifier = Verifier::from_start();
        for (i, event) in events.iter().enumerate() {
            verifier.check(event).map_err(|t| (i, t))?;
        }
        Ok(())
    }

    #[test]
    fn an_untouched_chain_verifies_and_survives_a_round_trip_through_json() {
        let events = chained(5);
        assert_eq!(verify(&events), Ok(()));
        let reread: Vec<AuditEvent> = events
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        assert_eq!(verify(&reread), Ok(()));
        assert_eq!(events[0].link.as_ref().unwrap().prev_hash, GENESIS_HASH);
        assert_eq!(
            events[1].link.as_ref().unwrap().prev_hash,
            events[0].link.as_ref().unwrap().hash
        );
    }

    /// Numbers a caller sends (a denied call's arguments are recorded too)
    /// must read back as the same number, or the record would look edited
    /// and `audit verify` would stop there (serde_json's default parser is
    /// not exact for every number; the workspace enables float_roundtrip).
    #[test]
    fn a_record_with_any_number_reads_back_with_its_hash() {
        let mut chain = Chain::resume("c1".into(), None);
        let texts = [
            "1.5e-30",
            "0.1",
            "2.2250738585072014e-308",
            "1.7976931348623157e308",
            "9007199254740993",
            "123456789.98765432",
            "5e-324",
            "0.30000000000000004",
        ];
        let events: Vec<AuditEvent> = texts
            .iter()
            .map(|text| {
                let arguments: serde_json::Value =
                    serde_json::from_str(&format!("{{\"x\": {text}}}")).unwrap();
                let mut event =
                    EventBuilder::new(AuditKind::ToolDecision, Outcome::Denied, Timestamp(1))
                        .arguments(arguments)
                        .build();
                chain.link(&mut event);
                event
            })
            .collect();
        let reread: Vec<AuditEvent> = events
            .iter()
            .map(|e| serde_json::from_str(&serde_json::to_string(e).unwrap()).unwrap())
            .collect();
        assert_eq!(verify(&reread), Ok(()));
    }

    #[test]
    fn an_edited_record_is_named() {
        let mut events = chained(5);
        events[2].outcome = Outcome::Denied;
        assert_eq!(verify(&events), Err((2, Tamper::Edited)));
        let mut events = chained(5);
        events[3].arguments = Some(serde_json::json!({"path": "/etc/shadow"}));
        assert_eq!(verify(&events), Err((3, Tamper::Edited)));
    }

    #[test]
    fn a_deleted_record_leaves_a_gap() {
        let mut events = chained(5);
        events.remove(2);
        let missing = Tamper::Missing {
            chain: "c1".into(),
            first: 3,
            last: 3,
        };
        assert_eq!(verify(&events), Err((2, missing)));
        // The first record deleted: the chain has no beginning.
        let mut events = chained(3);
        events.remove(0);
        assert!(matches!(verify(&events), Err((0, Tamper::Headless { .. }))));
        // A window may start mid-chain.
        let mut verifier = Verifier::partial();
        assert_eq!(verifier.check(&events[0]), Ok(()));
    }

    #[test]
    fn reordered_records_are_out_of_order() {
        let mut events = chained(5);
        events.swap(1, 3);
        // Record 4 comes right after 1: 2 and 3 look missing.
        assert!(matches!(verify(&events), Err((1, Tamper::Missing { .. }))));
        let mut events = chained(5);
        let copy = events[1].clone();
        events.insert(3, copy);
        assert!(matches!(
            verify(&events),
            Err((3, Tamper::OutOfOrder { .. }))
        ));
    }

    #[test]
    fn an_inserted_record_does_not_follow_its_predecessor() {
        let mut events = chained(5);
        // A forged record with a valid hash of its own, at the place of 3,
        // but linked to the wrong predecessor (what an insert must fake).
        let mut forged = events[2].clone();
        forged.tool = Some("delete_everything".into());
        let link = forged.link.take().unwrap();
        let prev = events[0].link.as_ref().unwrap().hash.clone();
        let hash = record_hash(&link.chain, link.seq, &prev, &forged);
        forged.link = Some(ChainLink {
            prev_hash: prev,
            hash,
            ..link
        });
        events[2] = forged;
        assert_eq!(
            verify(&events),
            Err((
                2,
                Tamper::Unlinked {
                    chain: "c1".into(),
                    previous: 2
                }
            ))
        );
        // A record without a link after chained ones.
        let mut events = chained(3);
        let mut bare = events[1].clone();
        bare.link = None;
        events.insert(2, bare);
        assert_eq!(verify(&events), Err((2, Tamper::Unchained)));
    }

    #[test]
    fn chains_of_several_instances_interleave() {
        let mut a = Chain::resume("a".into(), None);
        let mut b = Chain::resume("b".into(), None);
        let mut events = Vec::new();
        for i in 0..6 {
            let mut event =
                EventBuilder::new(AuditKind::ToolOutcome, Outcome::Success, Timestamp(i)).build();
            if i % 2 == 0 {
                a.link(&mut event);
            } else {
                b.link(&mut event);
            }
            events.push(event);
        }
        assert_eq!(verify(&events), Ok(()));
        let mut verifier = Verifier::from_start();
        for e in &events {
            verifier.check(e).unwrap();
        }
        assert_eq!(verifier.heads().len(), 2);
        assert_eq!(verifier.counts(), (6, 0));
    }

    #[test]
    fn a_resumed_chain_goes_on_from_its_last_record() {
        let events = chained(2);
        let last = events[1].link.clone().unwrap();
        let mut chain = Chain::resume("c1".into(), Some((last.seq, last.hash)));
        let mut next =
            EventBuilder::new(AuditKind::ToolOutcome, Outcome::Success, Timestamp(9)).build();
        chain.link(&mut next);
        let mut all = events;
        all.push(next);
        assert_eq!(verify(&all), Ok(()));
    }
}
