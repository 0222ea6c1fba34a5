//! Gate 2: decides, for one principal and one tool, whether the call may run.
//!
//! The only way to obtain a [`Permit`] is [`Policy::authorize`] (or
//! [`Policy::authorize_call`], which also checks argument constraints),
//! directly or, for a tool that needs a human's approval, through
//! [`ApprovalNeeded::into_permit`] once an operation token was redeemed; the
//! dispatcher takes a `Permit`, so no tool runs without a decision.
//! Policies are loaded from TOML with [`Policy::from_toml`]; the shipped
//! default is [`DEFAULT_POLICY_TOML`].

mod admin_access;
mod approvals;
mod canonical;
pub mod constraints;
mod decision;
mod explain;
mod policy;
mod policy_file;
mod shared_policy;
mod task_allowlist;
mod task_grants;
mod tenants;

pub use admin_access::{ADMIN_SCOPE, AdminRefusal};
pub use approvals::{
    APPROVAL_PREFIX, ApprovalError, ApprovalSettings, Approvals, Decided, Decider,
    OPERATION_TOKEN_META, OPERATION_TOKEN_PREFIX, TokenRefusal, decision_event,
};
pub use canonical::{arguments_hash, canonical_json};
pub use constraints::{ArgConstraint, ConstraintViolation, NormalizedPath, PathError};
pub use decision::{ApprovalNeeded, Decision, Deny, DenyReason, Permit};
pub use explain::Explanation;
pub use policy::{Access, DEFAULT_POLICY_TOML, Policy, ROLES, ToolRule, UNNAMED_TOOL_SCOPE};
pub use policy_file::{MAX_TASK_DURATION, POLICY_VERSION, PolicyError, RateLimit, TaskSpec};
pub use shared_policy::SharedPolicy;
pub use task_allowlist::TaskRefusal;
pub use task_grants::{
    GrantOrigin, TASK_GRANT_PREFIX, TASK_META, TaskGrantError, TaskGrants, grant_of,
};
