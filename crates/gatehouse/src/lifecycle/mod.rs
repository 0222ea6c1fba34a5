//! The credential lifecycle (issue 12): maximum age with a warning before
//! it, automatic signing-key rotation with an overlap, alerts on and
//! revocation of unused credentials, per credential kind and tenant.
//! `settings` reads `[lifecycle]`, `policy` holds it resolved, `plan` is
//! the pure decision per credential, `pass` reads the store and acts,
//! `housekeeping` runs passes in `serve` under a lease.

pub mod housekeeping;
pub mod pass;
pub mod plan;
pub mod policy;
pub mod settings;
