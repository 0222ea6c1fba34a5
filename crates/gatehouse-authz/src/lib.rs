//! Gate 2: decides, for one principal and one tool, whether the call may run.
//!
//! The only way to obtain a [`Permit`] is [`Policy::authorize`] (or
//! [`Policy::authorize_call`], which also checks argument constraints); the
//! dispatcher takes a `Permit`, so no tool runs without a decision.
//! Policies are loaded from TOML with [`Policy::from_toml`]; the shipped
//! default is [`DEFAULT_POLICY_TOML`].

pub mod constraints;
mod decision;
mod policy;
mod policy_file;

pub use constraints::{ArgConstraint, ConstraintViolation, NormalizedPath, PathError};
pub use decision::{Decision, Deny, DenyReason, Permit};
pub use policy::{Access, DEFAULT_POLICY_TOML, Policy, ROLES, ToolRule, UNNAMED_TOOL_SCOPE};
pub use policy_file::{MAX_TASK_DURATION, POLICY_VERSION, PolicyError, RateLimit, TaskSpec};
