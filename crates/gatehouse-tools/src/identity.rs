//! `whoami`: the authenticated identity, as gate 1 established it.

use gatehouse_core::Principal;
use serde_json::json;

use crate::ToolOutput;

pub(crate) fn whoami(principal: &Principal) -> ToolOutput {
    // Listed field by field rather than serialising `Principal`, so a field
    // added to it later is not exposed without a decision.
    let structured = json!({
        "tenant": principal.tenant,
        "human": principal.human,
        "agent": principal.agent,
        "credential": {
            "kind": principal.credential.kind.as_str(),
            "id": principal.credential.id,
        },
        "roles": principal.roles,
        "scopes": principal.scopes,
    });
    ToolOutput {
        text: serde_json::to_string_pretty(&structured).unwrap_or_default(),
        structured: Some(structured),
    }
}
