//! The cost of one gate-2 decision with a 50-tool policy (issue 4 target:
//! under 10 µs). Run with:
//!
//!     cargo run --release -p gatehouse-authz --example decision_cost
//!
//! Prints the median over rounds of the mean time per decision, side by
//! side: a plain role/scope decision; one that also checks argument
//! constraints (a path prefix and a URL host list, both present in every
//! call's arguments); the full gate 2 (tenancy on, a scoped credential
//! under a 50-tool task grant, constraints); and the SHA-256 of the
//! canonical arguments that an operation token is bound to.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use gatehouse_core::{CredentialKind, CredentialRef, Principal, TaskGrant, Timestamp};
use gatehouse_policy::{Policy, canonical_json};
use serde_json::json;

const TOOLS: usize = 50;
const ROUNDS: usize = 15;
const CALLS: usize = 100_000;

fn policy() -> Policy {
    Policy::from_toml(&policy_text()).unwrap()
}

/// The same tools with tenancy switched on and a task naming all of them.
fn full_policy() -> Policy {
    let tools: Vec<String> = (0..TOOLS).map(|i| format!("\"tool_{i:02}\"")).collect();
    let text = format!(
        "{}\n[tenants.acme]\n[tenants.globex]\n[tasks.everything]\ntools = [{}]\nmax_duration = \"1h\"\n",
        policy_text(),
        tools.join(", ")
    );
    Policy::from_toml(&text).unwrap()
}

fn policy_text() -> String {
    let mut text = String::from(
        "version = 1\n[roles.reader]\n[roles.analyst]\ninherits = [\"reader\"]\n\
         [roles.executor]\ninherits = [\"analyst\"]\n[roles.admin]\ninherits = [\"executor\"]\n",
    );
    for i in 0..TOOLS {
        let role = ["reader", "analyst", "executor", "admin"][i % 4];
        text.push_str(&format!(
            "[tools.tool_{i:02}]\nscope = \"tools:s{}\"\nroles = [\"{role}\"]\n",
            i % 5
        ));
        text.push_str(&format!(
            "[tools.tool_{i:02}.constraints]\npath = {{ prefix = [\"reports/\", \"public/\"] }}\n\
             url = {{ hosts = [\"example.com\", \"*.example.org\"] }}\n"
        ));
    }
    text
}

fn median_ns(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let policy = policy();
    let principal = Arc::new(Principal {
        tenant: "default".into(),
        human: Some("alice".into()),
        agent: "agent".into(),
        credential: CredentialRef {
            kind: CredentialKind::AccessToken,
            id: "jti".into(),
        },
        // Admin inherits every role, so every decision is a permit and every
        // constrained call checks both constraints: the expensive path.
        roles: vec!["admin".into()],
        scopes: None,
        expires_at: None,
        task: None,
        issuer: None,
    });
    let tools: Vec<String> = (0..TOOLS).map(|i| format!("tool_{i:02}")).collect();
    let args = json!({"path": "reports/2026/q3.txt", "url": "https://api.example.org/v1/data"});

    let full = full_policy();
    let scoped = Arc::new(Principal {
        tenant: "acme".into(),
        scopes: Some((0..5).map(|i| format!("tools:s{i}")).collect()),
        task: Some(TaskGrant {
            id: "tg_bench".into(),
            task: "everything".into(),
            tools: tools.clone(),
            expires_at: Timestamp(i64::MAX),
            issued_at: None,
        }),
        ..(*principal).clone()
    });

    let mut plain = Vec::new();
    let mut constrained = Vec::new();
    let mut complete = Vec::new();
    let mut hashing = Vec::new();
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for i in 0..CALLS {
            black_box(policy.authorize(&principal, &tools[i % TOOLS]));
        }
        plain.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
        let start = Instant::now();
        for i in 0..CALLS {
            black_box(policy.authorize_call(&principal, &tools[i % TOOLS], &args));
        }
        constrained.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
        let start = Instant::now();
        for i in 0..CALLS {
            black_box(full.authorize_call(&scoped, &tools[i % TOOLS], &args));
        }
        complete.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
        let start = Instant::now();
        for _ in 0..CALLS {
            black_box(canonical_json(black_box(&args)));
        }
        hashing.push(start.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    println!("policy: {TOOLS} tools, each with a path-prefix and a URL-host constraint");
    println!(
        "role + scope decision:               median {:>7.0} ns per decision ({ROUNDS} rounds x {CALLS})",
        median_ns(plain)
    );
    println!(
        "role + scope + argument constraints: median {:>7.0} ns per decision ({ROUNDS} rounds x {CALLS})",
        median_ns(constrained)
    );
    println!(
        "full gate 2 (tenant, scopes, task grant, constraints): median {:>7.0} ns per decision",
        median_ns(complete)
    );
    println!(
        "canonical JSON of the arguments (operation tokens):   median {:>7.0} ns per call",
        median_ns(hashing)
    );
}
