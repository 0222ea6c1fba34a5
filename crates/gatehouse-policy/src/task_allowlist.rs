//! The allowlist of a task grant: the task's tools that the claiming
//! principal may call anyway (role ∩ task), never the union.

use std::time::Duration;

use gatehouse_core::Principal;

use crate::policy::Access;
use crate::{MAX_TASK_DURATION, Policy};

/// Why a task may not be granted. `code()` is the stable reason code for
/// the client and the audit log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskRefusal {
    #[error("the policy declares no task \"{task}\"")]
    UnknownTask { task: String },
    /// A grant is a ceiling: claiming another task from inside one would be
    /// a way around it.
    #[error(
        "the caller already works under a grant for task \"{current}\" and may not claim another"
    )]
    AlreadyInTask { current: String },
    /// The task names roles the principal has none of, or the principal may
    /// call none of the task's tools.
    #[error("the caller's roles may not claim task \"{task}\"")]
    NotAllowed { task: String },
}

impl TaskRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            TaskRefusal::UnknownTask { .. } => "unknown_task",
            TaskRefusal::AlreadyInTask { .. } => "task_escalation",
            TaskRefusal::NotAllowed { .. } => "task_not_allowed",
        }
    }
}

impl Policy {
    /// The tools a grant for `task` gives `principal`, in the task's order:
    /// those the principal may call directly or with approval (role, scope
    /// and tenant all allowing it). Approval stays needed under the grant.
    pub fn task_allowlist(
        &self,
        principal: &Principal,
        task: &str,
    ) -> Result<Vec<String>, TaskRefusal> {
        // Checked first so that an agent inside a grant learns nothing about
        // which other tasks exist.
        if let Some(current) = &principal.task {
            return Err(TaskRefusal::AlreadyInTask {
                current: current.task.clone(),
            });
        }
        let Some(spec) = self.task(task) else {
            return Err(TaskRefusal::UnknownTask {
                task: task.to_string(),
            });
        };
        let not_allowed = || TaskRefusal::NotAllowed {
            task: task.to_string(),
        };
        if !principal.roles.iter().any(|role| spec.may_claim(role)) {
            return Err(not_allowed());
        }
        let tools: Vec<String> = spec
            .tools()
            .iter()
            .filter(|tool| {
                self.access_outside_task(principal, &self.listed_tool(tool)) != Access::Deny
            })
            .cloned()
            .collect();
        if tools.is_empty() {
            return Err(not_allowed());
        }
        Ok(tools)
    }

    /// The longest a grant for `task` may live, if the task exists.
    pub fn task_duration(&self, task: &str) -> Option<Duration> {
        self.task(task).map(|spec| spec.max_duration())
    }

    /// The lifetime of a grant for `task`: its maximum, or the one-hour
    /// ceiling when the task is unknown.
    pub fn task_max_duration(&self, task: &str) -> Duration {
        self.task_duration(task).unwrap_or(MAX_TASK_DURATION)
    }
}

#[cfg(test)]
#[path = "task_allowlist_tests.rs"]
mod tests;
