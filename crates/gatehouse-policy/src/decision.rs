use std::sync::Arc;

use gatehouse_core::Principal;

use crate::target::{Kind, Target};

/// What gate 2 decided about, and the rule that decided: the same for a
/// permit and for a call that still needs a human's approval.
#[derive(Debug, Clone)]
struct Decided {
    principal: Arc<Principal>,
    tool: String,
    rule: String,
}

impl Decided {
    fn new(principal: Arc<Principal>, target: &Target<'_>, rule: String) -> Self {
        Decided {
            principal,
            tool: target.name.to_string(),
            rule,
        }
    }
}

/// Proof that gate 2 allowed `principal` to use one target: call a tool,
/// get a prompt or read a resource.
///
/// Fields are private and there is no public constructor outside this crate.
#[derive(Debug, Clone)]
pub struct Permit(Decided);

impl Permit {
    pub(crate) fn new(principal: Arc<Principal>, target: &Target<'_>, rule: String) -> Self {
        Permit(Decided::new(principal, target, rule))
    }

    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    /// The name of what was permitted (a tool's, a prompt's, a resource's URI).
    pub fn tool(&self) -> &str {
        &self.0.tool
    }

    /// The policy rule that allowed the call, for the audit record.
    pub fn rule(&self) -> &str {
        &self.0.rule
    }
}

/// A call the policy allows only once a human has approved it: what the
/// gateway needs to ask for approval and, after redeeming an operation
/// token, to obtain the [`Permit`].
///
/// Only this crate creates one, and only for a principal whose role allows
/// the tool with approval and whose scopes allow it.
#[derive(Debug, Clone)]
pub struct ApprovalNeeded(Decided);

impl ApprovalNeeded {
    pub(crate) fn new(principal: Arc<Principal>, target: &Target<'_>, rule: String) -> Self {
        ApprovalNeeded(Decided::new(principal, target, rule))
    }

    pub fn principal(&self) -> &Principal {
        &self.0.principal
    }

    pub fn tool(&self) -> &str {
        &self.0.tool
    }

    /// The policy rule that asks for approval, e.g. "role executor may call
    /// send_email with an approved operation token".
    pub fn rule(&self) -> &str {
        &self.0.rule
    }

    /// The permit for the approved call. The gateway calls this only after
    /// it has atomically redeemed an operation token bound to this exact
    /// call; the rule names the approval for the audit record.
    pub fn into_permit(self, approval_id: &str) -> Permit {
        let mut decided = self.0;
        decided.rule = format!(
            "{}; a human approved this call (approval {approval_id})",
            decided.rule
        );
        Permit(decided)
    }
}

/// Why a call was refused. `code()` is the stable reason code written to the
/// audit log and returned to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// The tool is not named in the policy.
    UnknownTool,
    /// None of the principal's roles may call the tool.
    RoleNotAllowed { roles: Vec<String> },
    /// The credential's scopes do not include the scope the tool needs.
    MissingScope { scope: String },
    /// The tool needs a human-approved operation token and the call came
    /// without a valid one (the gateway refuses with this while it waits).
    ApprovalRequired,
    /// The presented operation token was not accepted; `code` is the
    /// token refusal's own code (`operation_token_used`, …).
    OperationTokenRefused { code: &'static str },
    /// The principal works under a task grant that does not include the tool.
    OutsideTask { task: String },
    /// Tenants are configured and the principal's tenant is not one of them.
    UnknownTenant,
    /// The principal's tenant may not use the tool.
    NotInTenant,
    /// An argument violates one of the tool's constraints. `rule` is the
    /// rule as written in the policy and why it failed; it never contains
    /// the argument's value.
    ConstraintViolated { argument: String, rule: String },
    /// The principal called the tool (or, for a role limit, any tool) too
    /// often; it may try again after `retry_after_secs`.
    RateLimited { retry_after_secs: u64 },
    /// An upstream tool whose definition changed since it was pinned;
    /// withheld until an operator approves the change.
    ToolDefinitionChanged,
    /// An upstream tool whose definition could not be checked against its
    /// pin: the upstream does not list it, or could not list now.
    ToolDefinitionUnreviewed,
    /// A resource URI holding a NUL (`%00`) or a control character, which
    /// a server may read as another one: refused, not decided.
    NonCanonicalUri,
    /// A resource URI longer than [`crate::MAX_RESOURCE_URI_BYTES`]:
    /// refused, not decided (nor routed, nor counted).
    UriTooLong,
    /// A call that needs approval while its requester already has `max`
    /// approvals pending: none is filed until some are decided or expire.
    TooManyPendingApprovals { max: u32 },
    /// The task grant the call runs under was revoked by an incident
    /// response (its store may not have taken it yet).
    GrantRevoked,
    /// A tool or prompt name longer than [`crate::MAX_NAME_BYTES`]:
    /// refused, not decided.
    NameTooLong,
    /// An `Mcp-Param-*` header that does not mirror the argument its
    /// tool's schema marks for it (MCP 2026-07-28, SEP-2243); `detail`
    /// names the header and argument, never a value.
    HeaderMismatch { detail: String },
}

impl DenyReason {
    pub fn code(&self) -> &'static str {
        match self {
            DenyReason::UnknownTool => "unknown_tool",
            DenyReason::RoleNotAllowed { .. } => "role_not_allowed",
            DenyReason::MissingScope { .. } => "insufficient_scope",
            DenyReason::ApprovalRequired => "approval_required",
            DenyReason::OperationTokenRefused { code } => code,
            DenyReason::OutsideTask { .. } => "outside_task",
            DenyReason::UnknownTenant => "unknown_tenant",
            DenyReason::NotInTenant => "tool_not_in_tenant",
            DenyReason::ConstraintViolated { .. } => "constraint_violated",
            DenyReason::RateLimited { .. } => "rate_limited",
            DenyReason::ToolDefinitionChanged => "tool_definition_changed",
            DenyReason::ToolDefinitionUnreviewed => "tool_definition_unreviewed",
            DenyReason::NonCanonicalUri => "non_canonical_uri",
            DenyReason::UriTooLong => "uri_too_long",
            DenyReason::TooManyPendingApprovals { .. } => "too_many_pending_approvals",
            DenyReason::GrantRevoked => "task_grant_revoked",
            DenyReason::NameTooLong => "name_too_long",
            DenyReason::HeaderMismatch { .. } => "header_mismatch",
        }
    }
}

/// A refusal, with what a client needs to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deny {
    /// What was refused: a tool, a prompt or a resource.
    pub kind: Kind,
    /// Its name (a resource's URI).
    pub tool: String,
    pub reason: DenyReason,
}

impl Deny {
    pub fn new(target: &Target<'_>, reason: DenyReason) -> Self {
        Deny {
            kind: target.kind,
            tool: target.name.to_string(),
            reason,
        }
    }

    /// A refused call of a tool.
    pub fn tool(name: &str, reason: DenyReason) -> Self {
        Deny::new(&Target::tool(name), reason)
    }

    /// A sentence for the client and the audit log. Contains no secret.
    pub fn message(&self) -> String {
        let kind = self.kind.as_str();
        let verb = if self.kind == Kind::Tool {
            "call"
        } else {
            "use"
        };
        match &self.reason {
            DenyReason::UnknownTool => format!(
                "{kind} '{}' is not in the policy; unknown {kind}s are denied",
                self.tool
            ),
            DenyReason::RoleNotAllowed { roles } => format!(
                "role {} may not {verb} {kind} '{}'",
                roles.join(", "),
                self.tool
            ),
            DenyReason::MissingScope { scope } => format!(
                "{kind} '{}' needs scope '{}', which this credential was not granted",
                self.tool, scope
            ),
            DenyReason::ApprovalRequired => format!(
                "{kind} '{}' needs a human to approve this call first; \
                 retry with the operation token the approval gives",
                self.tool
            ),
            DenyReason::OperationTokenRefused { code } => format!(
                "the operation token for {kind} '{}' was not accepted ({code})",
                self.tool
            ),
            DenyReason::OutsideTask { task } => format!(
                "{kind} '{}' is not part of the task grant for task '{task}'",
                self.tool
            ),
            // Says nothing about which tenants exist.
            DenyReason::UnknownTenant => format!(
                "the caller's tenant is not configured in the policy, so {kind} '{}' is denied",
                self.tool
            ),
            DenyReason::NotInTenant => {
                format!(
                    "{kind} '{}' is not available to the caller's tenant",
                    self.tool
                )
            }
            DenyReason::ConstraintViolated { argument, rule } => format!(
                "argument '{argument}' of {kind} '{}' violates the policy rule {rule}",
                self.tool
            ),
            DenyReason::RateLimited { retry_after_secs } => format!(
                "{kind} '{}' was called too often; retry in {retry_after_secs} s",
                self.tool
            ),
            DenyReason::ToolDefinitionChanged => format!(
                "{kind} '{}' changed at its upstream server since it was reviewed; \
                 it is withheld until an operator approves the change",
                self.tool
            ),
            DenyReason::ToolDefinitionUnreviewed => format!(
                "{kind} '{}' could not be checked against its reviewed definition \
                 (its upstream server does not list it now)",
                self.tool
            ),
            DenyReason::NonCanonicalUri => format!(
                "{kind} '{}' holds a NUL or a control character, which no server reads \
                 as written",
                self.tool
            ),
            DenyReason::UriTooLong => format!(
                "{kind} URIs may be at most {} bytes long",
                crate::MAX_RESOURCE_URI_BYTES
            ),
            DenyReason::TooManyPendingApprovals { max } => format!(
                "{kind} '{}' needs a human's approval, and {max} approvals asked for by you are \
                 still pending: wait until they are decided or expire",
                self.tool
            ),
            DenyReason::GrantRevoked => format!(
                "the task grant this call of {kind} '{}' runs under was revoked after repeated \
                 refused calls; ask for a new grant",
                self.tool
            ),
            DenyReason::NameTooLong => format!(
                "{kind} names may be at most {} bytes long",
                crate::MAX_NAME_BYTES
            ),
            DenyReason::HeaderMismatch { detail } => format!(
                "{kind} '{}' was not called: {detail} (Mcp-Param-* headers must carry the \
                 arguments their tool marks with x-mcp-header, as sent)",
                self.tool
            ),
        }
    }

    /// The scope that would allow the call, for an `insufficient_scope` challenge.
    pub fn required_scope(&self) -> Option<&str> {
        match &self.reason {
            DenyReason::MissingScope { scope } => Some(scope),
            _ => None,
        }
    }
}

/// The outcome of gate 2 for one call.
#[derive(Debug, Clone)]
pub enum Decision {
    Permit(Permit),
    Deny(Deny),
    /// Allowed once a human approves this exact call.
    NeedsApproval(ApprovalNeeded),
}
