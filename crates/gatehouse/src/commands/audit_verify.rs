//! `gatehouse audit verify`: checks the audit trail's hash chains and
//! signed checkpoints, in the database or in JSON-lines files, and names
//! the first record that was edited, deleted, reordered or inserted.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use gatehouse_audit::{CHECKPOINT_TYP, CheckpointClaims, Tamper, Verifier};
use gatehouse_authn::jwt::{VerificationKey, verify_signed};
use gatehouse_core::{AuditEvent, ChainLink};
use gatehouse_store::{AuditCheckpoint, Store};
use serde::Deserialize;

/// Records read from the database per page.
const PAGE: u32 = 1000;

/// The first problem found, and where.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    /// "record 1234 (id …)" or "line 57 of audit.jsonl (id …)".
    pub at: String,
    pub problem: String,
}

/// What a clean run checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub chained: u64,
    pub unchained: u64,
    pub chains: usize,
    pub checkpoints: usize,
    /// Per chain: records after its last checkpoint (covered by the chain
    /// only).
    pub after_last_checkpoint: u64,
}

/// Signed checkpoints, checked as the records go by.
struct Checkpoints {
    /// (chain, seq) → the hash it signed.
    signed: HashMap<(String, u64), String>,
    seen: HashSet<(String, u64)>,
}

impl Checkpoints {
    /// Verifies each checkpoint's signature and that its claims are the
    /// stored ones; a forged or altered checkpoint is a finding.
    fn new(list: &[AuditCheckpoint], keys: &[VerificationKey]) -> Result<Checkpoints, Finding> {
        let mut signed = HashMap::new();
        for checkpoint in list {
            let at = || {
                format!(
                    "checkpoint {} of chain {}",
                    checkpoint.seq, checkpoint.chain
                )
            };
            let claims: CheckpointClaims = verify_signed(&checkpoint.jws, CHECKPOINT_TYP, keys)
                .map_err(|e| Finding {
                    at: at(),
                    problem: format!("its signature does not verify ({e}): forged or altered"),
                })?;
            if claims.chain != checkpoint.chain
                || claims.seq != checkpoint.seq
                || claims.hash != checkpoint.hash
            {
                return Err(Finding {
                    at: at(),
                    problem: "it differs from what its signature covers: altered".into(),
                });
            }
            signed.insert((claims.chain, claims.seq), claims.hash);
        }
        Ok(Checkpoints {
            signed,
            seen: HashSet::new(),
        })
    }

    fn observe(&mut self, link: &ChainLink) -> Result<(), String> {
        let key = (link.chain.clone(), link.seq);
        if let Some(hash) = self.signed.get(&key) {
            if *hash != link.hash {
                return Err(format!(
                    "it does not match the signed checkpoint of record {} of chain {}: the chain was rewritten",
                    link.seq, link.chain
                ));
            }
            self.seen.insert(key);
        }
        Ok(())
    }

    /// After every record: a checkpoint beyond a chain's last record means
    /// records were cut from its end. With `partial`, checkpoints before
    /// the window, and those of chains with no record in it, are not
    /// looked for.
    /// With `seen_chains_only`, checkpoints of chains the source does not
    /// hold at all are not looked for (a file holds one instance's records,
    /// the store every instance's checkpoints).
    fn finish(
        &self,
        verifier: &Verifier,
        partial: bool,
        seen_chains_only: bool,
    ) -> Result<u64, Finding> {
        let mut after_last = 0;
        for (chain, seq) in self.signed.keys() {
            if self.seen.contains(&(chain.clone(), *seq)) {
                continue;
            }
            let Some(head) = verifier.heads().get(chain).map(|(s, _)| *s).or(
                // A chain with no record left at all: every one was deleted
                // (unless the window starts after all of them: a short
                // chain of a CLI command made before `--from`).
                (!seen_chains_only && !partial).then_some(0),
            ) else {
                continue;
            };
            if *seq > head || !partial {
                return Err(Finding {
                    at: format!("chain {chain}"),
                    problem: format!(
                        "a signed checkpoint covers record {seq}, but the trail ends at {head}: records were deleted from its end"
                    ),
                });
            }
        }
        for (chain, (head, _)) in verifier.heads() {
            let last = self
                .signed
                .keys()
                .filter(|(c, _)| c == chain)
                .map(|(_, s)| *s)
                .max()
                .unwrap_or(0);
            after_last += head.saturating_sub(last);
        }
        Ok(after_last)
    }
}

/// The public keys that may have signed checkpoints: every signing key the
/// store holds (retired ones too: old checkpoints stay valid).
pub async fn checkpoint_keys(store: &dyn Store) -> anyhow::Result<Vec<VerificationKey>> {
    let mut keys = Vec::new();
    for record in store.signing_keys().await? {
        keys.push(gatehouse_authn::verification_key(&record)?);
    }
    Ok(keys)
}

fn at_record(seq: i64, event: &AuditEvent) -> String {
    format!("record {seq} (id {})", event.id)
}

fn check(
    verifier: &mut Verifier,
    checkpoints: &mut Checkpoints,
    event: &AuditEvent,
    at: impl Fn() -> String,
) -> Result<(), Finding> {
    verifier.check(event).map_err(|t: Tamper| Finding {
        at: at(),
        problem: t.to_string(),
    })?;
    if let Some(link) = &event.link {
        checkpoints
            .observe(link)
            .map_err(|problem| Finding { at: at(), problem })?;
    }
    Ok(())
}

/// Verifies the database's trail, from its first record or from record
/// `from` (the `seq` that `audit query --json` shows).
pub async fn verify_store(
    store: &dyn Store,
    keys: &[VerificationKey],
    from: Option<i64>,
) -> anyhow::Result<Result<Summary, Finding>> {
    let list = store.audit_checkpoints().await?;
    let mut checkpoints = match Checkpoints::new(&list, keys) {
        Ok(c) => c,
        Err(finding) => return Ok(Err(finding)),
    };
    let mut verifier = match from {
        Some(_) => Verifier::partial(),
        None => Verifier::from_start(),
    };
    let mut after = from.map_or(0, |f| f.saturating_sub(1));
    loop {
        let rows = store.audit_page(after, PAGE).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.seq;
        for row in &rows {
            if let Err(finding) = check(&mut verifier, &mut checkpoints, &row.event, || {
                at_record(row.seq, &row.event)
            }) {
                return Ok(Err(finding));
            }
        }
    }
    Ok(summary(
        &verifier,
        &checkpoints,
        list.len(),
        from.is_some(),
        false,
    ))
}

fn summary(
    verifier: &Verifier,
    checkpoints: &Checkpoints,
    count: usize,
    partial: bool,
    seen_chains_only: bool,
) -> Result<Summary, Finding> {
    let after_last_checkpoint = checkpoints.finish(verifier, partial, seen_chains_only)?;
    let (chained, unchained) = verifier.counts();
    Ok(Summary {
        chained,
        unchained,
        chains: verifier.heads().len(),
        checkpoints: count,
        after_last_checkpoint,
    })
}

/// A checkpoint line of the JSON-lines file.
#[derive(Deserialize)]
struct CheckpointLine {
    checkpoint: FileCheckpoint,
}

#[derive(Deserialize)]
struct FileCheckpoint {
    chain: String,
    seq: u64,
    hash: String,
    jws: String,
}

/// One line of the file: a record or a checkpoint.
enum Line {
    Record(Box<AuditEvent>),
    Checkpoint(AuditCheckpoint),
}

fn parse_line(text: &str) -> Result<Line, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON ({e}): damaged"))?;
    if value.get("checkpoint").is_some() {
        let line: CheckpointLine = serde_json::from_value(value)
            .map_err(|e| format!("not a checkpoint ({e}): damaged"))?;
        let c = line.checkpoint;
        return Ok(Line::Checkpoint(AuditCheckpoint {
            chain: c.chain,
            seq: c.seq,
            hash: c.hash,
            ts: gatehouse_core::Timestamp(0),
            jws: c.jws,
        }));
    }
    serde_json::from_value(value)
        .map(|e| Line::Record(Box::new(e)))
        .map_err(|e| format!("not an audit record ({e}): damaged"))
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    std::io::BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))
}

/// Verifies JSON-lines files, read in the order given (oldest first), with
/// the checkpoints in the files and in `stored`.
pub fn verify_files(
    paths: &[PathBuf],
    keys: &[VerificationKey],
    stored: &[AuditCheckpoint],
    partial: bool,
) -> anyhow::Result<Result<Summary, Finding>> {
    let mut files = Vec::new();
    for path in paths {
        files.push((path, read_lines(path)?));
    }
    // First the checkpoints, wherever they are in the files.
    let mut list: Vec<AuditCheckpoint> = stored.to_vec();
    for (path, lines) in &files {
        for (n, text) in lines.iter().enumerate() {
            match parse_line(text) {
                Ok(Line::Checkpoint(c)) => {
                    if !list
                        .iter()
                        .any(|s| s.chain == c.chain && s.seq == c.seq && s.jws == c.jws)
                    {
                        list.push(c);
                    }
                }
                Ok(Line::Record(_)) => {}
                Err(problem) => {
                    return Ok(Err(Finding {
                        at: format!("line {} of {}", n + 1, path.display()),
                        problem,
                    }));
                }
            }
        }
    }
    // A chain and seq signed twice with different hashes cannot both hold.
    let mut checkpoints = match Checkpoints::new(&list, keys) {
        Ok(c) => c,
        Err(finding) => return Ok(Err(finding)),
    };
    let mut verifier = if partial {
        Verifier::partial()
    } else {
        Verifier::from_start()
    };
    for (path, lines) in &files {
        for (n, text) in lines.iter().enumerate() {
            let Ok(Line::Record(event)) = parse_line(text) else {
                continue;
            };
            let at = || format!("line {} of {} (id {})", n + 1, path.display(), event.id);
            if let Err(finding) = check(&mut verifier, &mut checkpoints, &event, at) {
                return Ok(Err(finding));
            }
        }
    }
    Ok(summary(&verifier, &checkpoints, list.len(), partial, true))
}
