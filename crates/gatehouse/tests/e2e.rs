//! End-to-end tests: every test boots the real `gatehouse` binary on port 0
//! with its own data directory and talks to it over HTTP or stdio.
//!
//! This is the only integration-test binary (each file in `tests/` would be
//! another binary to build and link): add new suites as modules under `e2e/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod e2e {
    pub mod harness;

    mod admin_api;
    mod alerts;
    mod approvals;
    mod audit_chain;
    mod audit_durability;
    mod audit_output;
    mod auth;
    mod authorization_code;
    mod browser;
    mod cli_output;
    mod config;
    mod device;
    mod docs;
    mod external_issuers;
    mod federated_sign_in;
    mod filesystem;
    mod identity;
    mod identity_assertions;
    mod introspection;
    mod keys;
    mod lifecycle;
    mod lockout;
    mod matrix;
    mod metrics;
    mod oauth;
    mod policy;
    pub mod postgres;
    mod private_key_jwt;
    mod registration;
    mod relay;
    mod secrets_hygiene;
    mod sessions;
    mod signing_keys;
    mod stdio;
    mod task_grants;
    mod tenants;
    mod tool_pins;
    mod tools;
    mod traces;
    mod transport;
    mod upstreams;
}
