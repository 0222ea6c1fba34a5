//! Gate 2's state, beside the pure policy of `gatehouse-policy`: task
//! grants declared by agents and operation tokens approved by humans, both
//! kept in the store and audited. The policy is re-exported, so callers
//! that need both use one crate.

mod approvals;
mod task_grants;

pub use approvals::{
    APPROVAL_PREFIX, ApprovalError, ApprovalSettings, Approvals, Decided, Decider,
    OPERATION_TOKEN_META, OPERATION_TOKEN_PREFIX, TokenRefusal, decision_event,
};
pub use gatehouse_policy::*;
pub use task_grants::{
    GrantOrigin, TASK_GRANT_PREFIX, TASK_META, TaskGrantError, TaskGrants, grant_of,
};
