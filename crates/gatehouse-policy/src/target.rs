//! What a request asks gate 2 for: a tool to call, a prompt to get or a
//! resource to read, by name (a resource by its URI), and the upstream
//! server that serves it, if any.

/// The kinds of things MCP lets a client use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Tool,
    Prompt,
    Resource,
}

impl Kind {
    /// The word used in messages, audit records and the policy file
    /// (`[tools.*]`, `[prompts.*]`, `[resources.*]` are its plurals).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }
}

/// One thing a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub kind: Kind,
    /// The name the client sees (for an upstream's tool, with its prefix);
    /// a resource's URI.
    pub name: &'a str,
    /// The upstream server that serves it, as the gateway routed it; `None`
    /// for Gatehouse's own tools. Decides which `[upstreams.NAME]` defaults
    /// apply when the policy does not name the target itself.
    pub upstream: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// One of Gatehouse's built-in tools.
    pub fn tool(name: &'a str) -> Self {
        Target {
            kind: Kind::Tool,
            name,
            upstream: None,
        }
    }

    /// Something an upstream server serves.
    pub fn upstream(kind: Kind, name: &'a str, upstream: &'a str) -> Self {
        Target {
            kind,
            name,
            upstream: Some(upstream),
        }
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
