//! What linking a record into the hash chain costs, natively (callgrind
//! runs without the CPU's SHA extensions, so it overstates the hash):
//! `cargo run --release -p gatehouse-audit --example chain_cost`.
//! Links 100,000 records shaped like a tool call's (a decision with two
//! arguments) per round, 9 rounds, and prints the median per record, beside
//! serializing the same record to JSON alone (what the file line costs).

#![allow(clippy::print_stdout)]

use std::time::Instant;

use gatehouse_audit::{Chain, EventBuilder};
use gatehouse_core::{AuditKind, Outcome, Principal, Timestamp};

const RECORDS: usize = 100_000;
const ROUNDS: usize = 9;

fn record(i: usize) -> gatehouse_core::AuditEvent {
    let principal = Principal {
        tenant: "default".into(),
        human: Some("alice".into()),
        agent: "claude-desktop".into(),
        credential: gatehouse_core::CredentialRef {
            kind: gatehouse_core::CredentialKind::ApiKey,
            id: "k_01HZX3K8Q4".into(),
        },
        roles: vec!["reader".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    };
    EventBuilder::new(
        AuditKind::ToolDecision,
        Outcome::Success,
        Timestamp(i as i64),
    )
    .principal(&principal)
    .tool("files__read_text_file")
    .arguments(serde_json::json!({"path": format!("/srv/shared/report-{i}.txt"), "head": 20}))
    .decision("allow")
    .reason("role reader may call files__read_text_file")
    .build()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let records: Vec<_> = (0..RECORDS).map(record).collect();
    let mut link = Vec::new();
    let mut serialize = Vec::new();
    for _ in 0..ROUNDS {
        let mut batch = records.clone();
        let mut chain = Chain::resume("i-bench".into(), None);
        let start = Instant::now();
        for event in &mut batch {
            chain.link(event);
        }
        link.push(start.elapsed().as_nanos() as f64 / RECORDS as f64);
        let start = Instant::now();
        let mut bytes = 0;
        for event in &batch {
            bytes += serde_json::to_vec(event).map_or(0, |v| v.len());
        }
        serialize.push(start.elapsed().as_nanos() as f64 / RECORDS as f64);
        std::hint::black_box(bytes);
    }
    println!(
        "per record, median of {ROUNDS} rounds of {RECORDS}: link (serialize + SHA-256) {:.0} ns, serialize alone {:.0} ns",
        median(link),
        median(serialize)
    );
}
