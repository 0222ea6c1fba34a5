//! Gate 2's pure policy: decides, for one principal and one tool, whether
//! the call may run, from the policy and its inputs alone (no store, no
//! audit log).
//!
//! The only way to obtain a [`Permit`] is [`Policy::authorize`] (or
//! [`Policy::authorize_call`], which also checks argument constraints),
//! directly or, for a tool that needs a human's approval, through
//! [`ApprovalNeeded::into_permit`] once an operation token was redeemed; the
//! dispatcher takes a `Permit`, so no tool runs without a decision.
//! Policies are loaded from TOML with [`Policy::from_toml`]; the shipped
//! default is [`DEFAULT_POLICY_TOML`]. Gate 2's state (task grants,
//! approvals) lives beside this crate, in `gatehouse-authz`.

mod admin_access;
mod canonical;
pub mod constraints;
mod decision;
mod exact_number;
mod explain;
mod loose_names;
mod policy;
mod policy_file;
mod resource_readings;
mod shared_policy;
mod target;
mod task_allowlist;
mod tenants;
#[cfg(test)]
mod test_support;
pub mod uri_template;

pub use admin_access::{ADMIN_SCOPE, AdminRefusal};
pub use canonical::canonical_json;
pub use constraints::{ArgConstraint, ConstraintViolation, NormalizedPath, PathError};
pub use decision::{ApprovalNeeded, Decision, Deny, DenyReason, Permit};
pub use exact_number::same_number;
pub use explain::{Explanation, PolicyCheck};
pub use policy::{
    Access, DEFAULT_POLICY_TOML, MAX_NAME_BYTES, MAX_RESOURCE_URI_BYTES, Policy, ROLES, ToolRule,
    UNNAMED_TOOL_SCOPE,
};
pub use policy_file::{MAX_TASK_DURATION, POLICY_VERSION, PolicyError, RateLimit, TaskSpec};
pub use shared_policy::SharedPolicy;
pub use target::{Kind, Target};
pub use task_allowlist::TaskRefusal;
