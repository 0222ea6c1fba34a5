//! `gatehouse audit verify`: checks the audit trail's hash chains and
//! signed checkpoints, in the database or in JSON-lines files, and names
//! the first record that was edited, deleted, reordered or inserted.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use gatehouse_audit::{CHECKPOINT_TYP, CheckpointClaims, Tamper, Verifier, WitnessedCheckpoint};
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
    /// Whether the checkpoint keys were authenticated with the master key
    /// (without it, a key added to the database would be believed).
    pub keys_authenticated: bool,
    /// Chains with records and no checkpoint at all: a process that
    /// stopped without signing (killed), one still in its first interval,
    /// or records inserted by someone without the signing key.
    pub unsigned_chains: Vec<String>,
}

/// The keys checkpoints are verified with.
pub struct CheckpointKeys {
    pub keys: Vec<VerificationKey>,
    /// Each key was proven by its private half, sealed with the master key.
    pub authenticated: bool,
}

/// The longest a chain's records may go without a signed checkpoint: an
/// instance signs one every `audit.checkpoint_interval` while records
/// arrive (and at shutdown), so only the last interval's records of one
/// that stopped without signing may be unsigned. Three intervals leave
/// room for a busy writer.
pub fn max_unsigned_span(checkpoint_interval: std::time::Duration) -> i64 {
    i64::try_from(checkpoint_interval.as_millis())
        .unwrap_or(i64::MAX / 3)
        .saturating_mul(3)
}

/// How long after the first checkpoint a record without a link is still
/// taken for one written before chaining: instances upgraded one after
/// another, and clocks that differ.
const UNCHAINED_MARGIN_MS: i64 = 60 * 60 * 1000;

/// The first and last time of a chain's records after its last checkpoint.
#[derive(Clone, Copy)]
struct Unsigned {
    first_seq: u64,
    earliest: i64,
    latest: i64,
}

/// Signed checkpoints, checked as the records go by.
struct Checkpoints {
    /// (chain, seq) → the hash it signed.
    signed: HashMap<(String, u64), String>,
    seen: HashSet<(String, u64)>,
    /// Per chain: the last record a checkpoint signed.
    last_signed: HashMap<String, u64>,
    /// Per chain: its records after that, by time.
    unsigned: HashMap<String, Unsigned>,
    /// See [`max_unsigned_span`]; `None`: not checked.
    max_unsigned_span: Option<i64>,
    /// When the first checkpoint was signed (its signed `iat`, in ms):
    /// records were chained from then on.
    first_signed_ms: Option<i64>,
    /// The checkpoints servers witnessed (`witness` records), and where.
    witnessed: Vec<(WitnessedCheckpoint, String)>,
}

impl Checkpoints {
    /// Verifies each checkpoint's signature and that its claims are the
    /// stored ones; a forged or altered checkpoint is a finding.
    fn new(
        list: &[AuditCheckpoint],
        keys: &[VerificationKey],
        max_unsigned_span: Option<i64>,
    ) -> Result<Checkpoints, Finding> {
        let mut signed = HashMap::new();
        let mut first_signed_ms = None;
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
            first_signed_ms =
                Some(first_signed_ms.map_or(claims.iat * 1000, |f: i64| f.min(claims.iat * 1000)));
            signed.insert((claims.chain, claims.seq), claims.hash);
        }
        let mut last_signed: HashMap<String, u64> = HashMap::new();
        for (chain, seq) in signed.keys() {
            let last = last_signed.entry(chain.clone()).or_default();
            *last = (*last).max(*seq);
        }
        Ok(Checkpoints {
            signed,
            seen: HashSet::new(),
            last_signed,
            unsigned: HashMap::new(),
            max_unsigned_span,
            first_signed_ms,
            witnessed: Vec::new(),
        })
    }

    /// Every checkpoint a server witnessed must still be in the trail, as
    /// witnessed: a command's or a stdio run's chain deleted whole,
    /// checkpoints included, leaves nothing else behind.
    fn witnessed_present(&self) -> Result<(), Finding> {
        for (w, at) in &self.witnessed {
            let problem = match self.signed.get(&(w.chain.clone(), w.seq)) {
                Some(hash) if *hash == w.hash => continue,
                Some(_) => format!(
                    "it witnessed checkpoint {} of chain {} with another hash than the stored one: that checkpoint was replaced",
                    w.seq, w.chain
                ),
                None => format!(
                    "it witnessed a signed checkpoint of record {} of chain {}, which the trail no longer holds: that chain was deleted (its checkpoints too)",
                    w.seq, w.chain
                ),
            };
            return Err(Finding {
                at: at.clone(),
                problem,
            });
        }
        Ok(())
    }

    /// A record without a chain link is one written before records were
    /// chained; one written after the first checkpoint was signed had its
    /// link removed (to pass as such a record).
    fn unchained(&self, ts: i64) -> Result<(), String> {
        match self.first_signed_ms {
            Some(first) if ts > first.saturating_add(UNCHAINED_MARGIN_MS) => Err(format!(
                "it has no chain link, but it was written after the trail was chained and signed (first checkpoint at {}): its link was removed",
                gatehouse_core::Timestamp(first).to_rfc3339()
            )),
            _ => Ok(()),
        }
    }

    /// Notes the time of a record no checkpoint signs.
    fn note_time(&mut self, link: &ChainLink, ts: i64) {
        if self
            .last_signed
            .get(&link.chain)
            .is_some_and(|l| link.seq <= *l)
        {
            return;
        }
        self.unsigned
            .entry(link.chain.clone())
            .and_modify(|u| {
                u.earliest = u.earliest.min(ts);
                u.latest = u.latest.max(ts);
            })
            .or_insert(Unsigned {
                first_seq: link.seq,
                earliest: ts,
                latest: ts,
            });
    }

    /// A chain whose unsigned records span more than an instance lets pass
    /// without signing: its checkpoints were deleted (and the chain maybe
    /// rewritten under them), or the instance could not sign.
    fn unsigned_too_long(&self) -> Result<(), Finding> {
        let Some(limit) = self.max_unsigned_span else {
            return Ok(());
        };
        let mut chains: Vec<_> = self.unsigned.iter().collect();
        chains.sort_by(|a, b| a.0.cmp(b.0));
        for (chain, unsigned) in chains {
            let span = unsigned.latest.saturating_sub(unsigned.earliest);
            if span > limit {
                return Err(Finding {
                    at: format!("chain {chain}"),
                    problem: format!(
                        "its records from {} on span {} s without a signed checkpoint, though an instance signs one at least every {} s: its checkpoints were deleted (or it could not sign them)",
                        unsigned.first_seq,
                        span / 1000,
                        limit / 3000
                    ),
                });
            }
        }
        Ok(())
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
        self.witnessed_present()?;
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
/// store holds (retired ones too: old checkpoints stay valid). With the
/// master key, a key counts only when its sealed private half opens with
/// the master key and is the stored public key's: a database writer could
/// otherwise add a key of their own (or swap one's public half) and sign
/// checkpoints over a rewritten trail. A key that fails is left out, so
/// whatever it signed fails to verify.
pub async fn checkpoint_keys(
    store: &dyn Store,
    master: Option<&gatehouse_oauth::MasterKey>,
) -> anyhow::Result<CheckpointKeys> {
    let records = store.signing_keys().await?;
    let proven_records: Vec<_> = match master {
        Some(master) => records.iter().filter(|r| proven(master, r)).collect(),
        None => Vec::new(),
    };
    // A master key that proves none of the stored keys is either not the
    // servers' (one a command made beside servers that take theirs from
    // the environment) or the servers' with every key record replaced
    // (a database writer junking the sealed halves so that the keys,
    // theirs included, would be used unproven). The two cannot be told
    // apart, so nothing is vouched for: verify where the servers' master
    // key is. Without a master key at all, the keys are used unproven and
    // the report says so.
    if master.is_some() && !records.is_empty() && proven_records.is_empty() {
        anyhow::bail!(
            "cannot verify the checkpoints: none of the {} signing key(s) in the store opens with the \
             master key here. Either it is not the servers' master key (run verify where theirs is, \
             or set GATEHOUSE_MASTER_KEY to it), or the stored keys were replaced",
            records.len()
        );
    }
    let authenticated = master.is_some();
    let used: Vec<_> = if authenticated {
        proven_records
    } else {
        records.iter().collect()
    };
    let mut keys = Vec::new();
    for record in used {
        keys.push(gatehouse_authn::verification_key(record)?);
    }
    Ok(CheckpointKeys {
        keys,
        authenticated,
    })
}

/// Whether the record's public key is the one its sealed private key has.
fn proven(master: &gatehouse_oauth::MasterKey, record: &gatehouse_store::SigningKeyRecord) -> bool {
    let Ok(pkcs8) = master.open(&record.sealed_pkcs8, record.kid.as_bytes()) else {
        return false;
    };
    let pkcs8 = zeroize::Zeroizing::new(pkcs8);
    let Ok(key) = gatehouse_oauth::SigningKey::from_pkcs8(&pkcs8) else {
        return false;
    };
    serde_json::from_str::<gatehouse_oauth::PublicJwk>(&record.public_jwk)
        .is_ok_and(|stored| stored == key.public_jwk() && key.kid() == record.kid)
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
    if event.link.is_none() {
        checkpoints
            .unchained(event.ts.0)
            .map_err(|problem| Finding { at: at(), problem })?;
    }
    if let Some(link) = &event.link {
        checkpoints
            .observe(link)
            .map_err(|problem| Finding { at: at(), problem })?;
        checkpoints.note_time(link, event.ts.0);
    }
    match WitnessedCheckpoint::of(event) {
        None => {}
        Some(Ok(witnessed)) => checkpoints.witnessed.push((witnessed, at())),
        Some(Err(problem)) => {
            return Err(Finding {
                at: at(),
                problem: format!("{problem}: edited"),
            });
        }
    }
    Ok(())
}

/// Verifies the database's trail, from its first record or from record
/// `from` (the `seq` that `audit query --json` shows).
pub async fn verify_store(
    store: &dyn Store,
    keys: &CheckpointKeys,
    from: Option<i64>,
    max_unsigned_span: Option<i64>,
) -> anyhow::Result<Result<Summary, Finding>> {
    let list = store.audit_checkpoints().await?;
    let mut checkpoints = match Checkpoints::new(&list, &keys.keys, max_unsigned_span) {
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
        (from.is_some(), false),
        keys.authenticated,
    ))
}

/// `(partial, seen_chains_only)`: see [`Checkpoints::finish`].
fn summary(
    verifier: &Verifier,
    checkpoints: &Checkpoints,
    count: usize,
    (partial, seen_chains_only): (bool, bool),
    keys_authenticated: bool,
) -> Result<Summary, Finding> {
    let after_last_checkpoint = checkpoints.finish(verifier, partial, seen_chains_only)?;
    checkpoints.unsigned_too_long()?;
    let (chained, unchained) = verifier.counts();
    let mut unsigned_chains: Vec<String> = verifier
        .heads()
        .keys()
        .filter(|chain| !checkpoints.last_signed.contains_key(*chain))
        .cloned()
        .collect();
    unsigned_chains.sort();
    Ok(Summary {
        chained,
        unchained,
        chains: verifier.heads().len(),
        checkpoints: count,
        after_last_checkpoint,
        keys_authenticated,
        unsigned_chains,
    })
}

/// A checkpoint line of the JSON-lines file: nothing else. (A record line
/// that also carried a copied `checkpoint` member would otherwise be read
/// as that checkpoint, and the record in it never checked.)
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointLine {
    #[serde(rename = "time")]
    _time: Option<serde::de::IgnoredAny>,
    checkpoint: FileCheckpoint,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
    // A JSON parser keeps the last of two equal keys, a person or another
    // tool may read the first: `"outcome":"success",…,"outcome":"denied"`
    // must not verify as the denial while it reads as a success.
    if serde_json::from_str::<NoDuplicateKeys>(text).is_err() {
        return Err("not JSON, or a member named twice: edited".into());
    }
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
    let shown = value
        .get("time")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned);
    let event: AuditEvent = serde_json::from_value(value.clone())
        .map_err(|e| format!("not an audit record ({e}): damaged"))?;
    // Every member is one the hash covers (or `time`, checked below): a
    // member added to a line would be shown by readers and checked by
    // nothing.
    let covered = serde_json::to_value(&event).unwrap_or_default();
    if let Some(members) = value.as_object()
        && let Some(extra) = members.iter().find(|(name, v)| {
            *name != "time" && covered.get(name.as_str()).is_none() && !v.is_null()
        })
    {
        return Err(format!(
            "it holds a member no record has ({}): edited",
            extra.0
        ));
    }
    // `time` repeats the record's `ts` for people and tools reading the
    // file; the hash covers `ts` only, so a changed `time` is checked here.
    if shown.is_some_and(|time| time != event.ts.to_rfc3339()) {
        return Err("its time is not the time its hash covers: edited".into());
    }
    Ok(Line::Record(Box::new(event)))
}

/// Parses any JSON value, refusing an object that names a member twice
/// (at any depth).
struct NoDuplicateKeys;

impl<'de> Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NoDuplicateKeysVisitor)
    }
}

struct NoDuplicateKeysVisitor;

impl<'de> serde::de::Visitor<'de> for NoDuplicateKeysVisitor {
    type Value = NoDuplicateKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<NoDuplicateKeys, E> {
        Ok(NoDuplicateKeys)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> Result<NoDuplicateKeys, A::Error> {
        while items.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut members: A,
    ) -> Result<NoDuplicateKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(name) = members.next_key::<String>()? {
            if !seen.insert(name) {
                return Err(serde::de::Error::custom("a member named twice"));
            }
            members.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
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
    keys: &CheckpointKeys,
    stored: &[AuditCheckpoint],
    partial: bool,
    max_unsigned_span: Option<i64>,
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
    let mut checkpoints = match Checkpoints::new(&list, &keys.keys, max_unsigned_span) {
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
    Ok(summary(
        &verifier,
        &checkpoints,
        list.len(),
        (partial, true),
        keys.authenticated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::{AuditKind, Outcome, Timestamp};

    fn record_line() -> serde_json::Value {
        let event = gatehouse_audit::EventBuilder::new(
            AuditKind::ToolDecision,
            Outcome::Denied,
            Timestamp(1_700_000_000_000),
        )
        .tool("write_file")
        .decision("deny")
        .build();
        let mut line = serde_json::to_value(&event).unwrap();
        line["time"] = json_str(&event.ts.to_rfc3339());
        line
    }

    fn json_str(s: &str) -> serde_json::Value {
        serde_json::Value::String(s.to_string())
    }

    /// Records linked into `chain`, as the writer links them.
    fn chained(chain: &str, events: Vec<AuditEvent>) -> Vec<AuditEvent> {
        let mut chain = gatehouse_audit::Chain::resume(chain.into(), None);
        events
            .into_iter()
            .map(|mut event| {
                chain.link(&mut event);
                event
            })
            .collect()
    }

    fn witness_record(chain: &str, seq: u64) -> AuditEvent {
        gatehouse_audit::EventBuilder::new(
            AuditKind::Witness,
            Outcome::Success,
            Timestamp(1_700_000_000_000),
        )
        .arguments(serde_json::json!({"chain": chain, "seq": seq, "hash": "ab"}))
        .build()
    }

    fn verify_lines(events: &[AuditEvent], stored: &[AuditCheckpoint]) -> Result<Summary, Finding> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let text: String = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap() + "\n")
            .collect();
        std::fs::write(&path, text).unwrap();
        let keys = CheckpointKeys {
            keys: Vec::new(),
            authenticated: false,
        };
        verify_files(&[path], &keys, stored, false, None).unwrap()
    }

    #[test]
    fn a_witnessed_checkpoint_that_is_gone_is_named() {
        let events = chained("i-server", vec![witness_record("run-gone", 3)]);
        let finding = verify_lines(&events, &[]).unwrap_err();
        assert!(finding.at.starts_with("line 1 "), "{finding:?}");
        assert!(
            finding.problem.contains("that chain was deleted"),
            "{finding:?}"
        );
        // A witness record that names no checkpoint is no witness.
        let mut bare = witness_record("run-gone", 3);
        bare.arguments = Some(serde_json::json!({"chain": "run-gone"}));
        let finding = verify_lines(&chained("i-server", vec![bare]), &[]).unwrap_err();
        assert!(finding.problem.contains("edited"), "{finding:?}");
    }

    #[test]
    fn chains_no_checkpoint_signs_are_listed() {
        let denial = || serde_json::from_value::<AuditEvent>(record_line()).unwrap();
        let mut events = chained("run-b", vec![denial()]);
        events.extend(chained("run-a", vec![denial()]));
        assert_ne!(events[0].id, events[1].id);
        let summary = verify_lines(&events, &[]).unwrap();
        assert_eq!(summary.unsigned_chains, ["run-a", "run-b"]);
    }

    #[test]
    fn genuine_lines_parse() {
        assert!(matches!(
            parse_line(&record_line().to_string()),
            Ok(Line::Record(_))
        ));
        let checkpoint = r#"{"time":"2023-11-14T22:13:20Z","checkpoint":{"chain":"i-1","seq":3,"hash":"ab","jws":"x.y.z"}}"#;
        assert!(matches!(parse_line(checkpoint), Ok(Line::Checkpoint(_))));
    }

    #[test]
    fn a_record_dressed_as_a_checkpoint_is_refused() {
        let mut line = record_line();
        line["checkpoint"] =
            serde_json::json!({"chain": "i-1", "seq": 3, "hash": "ab", "jws": "x.y.z"});
        assert!(parse_line(&line.to_string()).is_err());
        let extra = r#"{"time":"t","checkpoint":{"chain":"i-1","seq":3,"hash":"ab","jws":"x.y.z","note":1}}"#;
        assert!(parse_line(extra).is_err());
    }

    #[test]
    fn a_member_named_twice_or_unknown_is_refused() {
        let line = record_line().to_string();
        let twice = line.replacen("{", r#"{"outcome":"success","#, 1);
        assert!(parse_line(&twice).is_err(), "{twice}");
        assert!(line.contains(r#""arguments":null"#), "{line}");
        let nested = line.replacen(r#""arguments":null"#, r#""arguments":{"a":1,"a":2}"#, 1);
        assert!(parse_line(&nested).is_err(), "{nested}");
        let mut extra = record_line();
        extra["shown_to_readers"] = json_str("success");
        assert!(parse_line(&extra.to_string()).is_err());
        // A member the record leaves out when empty may be written as null.
        let mut null = record_line();
        null["approval"] = serde_json::Value::Null;
        assert!(parse_line(&null.to_string()).is_ok());
    }
}
