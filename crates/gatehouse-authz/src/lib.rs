//! Gate 2: decides, for one principal and one tool, whether the call may run.
//!
//! The only way to obtain a [`Permit`] is [`Policy::authorize`]; the
//! dispatcher takes a `Permit`, so no tool runs without a decision.

mod decision;
mod policy;

pub use decision::{Decision, Deny, DenyReason, Permit};
pub use policy::{Access, Policy, ROLES, ToolRule};
