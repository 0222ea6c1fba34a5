//! What `tools/list` shows: name, title, description and input schema of
//! every built-in tool. The schemas are also what argument checking uses,
//! so the advertised and the enforced shape cannot drift apart.

use std::sync::LazyLock;

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq)]
pub struct ToolDefinition {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    /// A JSON Schema object: `type: object`, `properties`, `required`,
    /// `additionalProperties: false`.
    pub input_schema: Value,
    /// The tool's only effect is its answer: it reads, computes and
    /// returns, and changes nothing, anywhere (no file, setting, message
    /// or request leaves it). Such a call's decision record may be written
    /// together with its outcome record, before the answer is sent (see
    /// `Gateway::call_tool`).
    pub answer_only: bool,
}

pub(crate) const WHOAMI: &str = "whoami";
pub(crate) const READ_FILE: &str = "read_file";
pub(crate) const WRITE_FILE: &str = "write_file";
pub(crate) const SEARCH_DATABASE: &str = "search_database";
pub(crate) const WEB_FETCH: &str = "web_fetch";
pub(crate) const SEND_EMAIL: &str = "send_email";
pub(crate) const EXECUTE_CODE: &str = "execute_code";
pub(crate) const ACCESS_SECRETS: &str = "access_secrets";
pub(crate) const MODIFY_MCP_CONFIG: &str = "modify_mcp_config";

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false,
    })
}

pub(crate) static DEFINITIONS: LazyLock<Vec<ToolDefinition>> = LazyLock::new(|| {
    vec![
        ToolDefinition {
            name: WHOAMI,
            answer_only: true,
            title: "Who am I",
            description: "Shows the identity Gatehouse authenticated for this call: tenant, human, \
                          agent, credential id, roles and scopes. Never shows a secret.",
            input_schema: schema(json!({}), &[]),
        },
        ToolDefinition {
            name: READ_FILE,
            answer_only: false,
            title: "Read file",
            description: "Reads a UTF-8 text file from your tenant's sandboxed file area. \
                          Paths are relative to that area; `..`, absolute paths and links leading out of it are refused.",
            input_schema: schema(
                json!({
                    "path": {
                        "type": "string",
                        "description": "Path relative to the tenant's file area, e.g. `notes/todo.txt`.",
                        "minLength": 1,
                        "maxLength": 1024
                    }
                }),
                &["path"],
            ),
        },
        ToolDefinition {
            name: WRITE_FILE,
            answer_only: false,
            title: "Write file",
            description: "Writes (creates or replaces) a UTF-8 text file in your tenant's sandboxed file area, \
                          creating missing folders. Returns the number of bytes written.",
            input_schema: schema(
                json!({
                    "path": {
                        "type": "string",
                        "description": "Path relative to the tenant's file area, e.g. `notes/todo.txt`.",
                        "minLength": 1,
                        "maxLength": 1024
                    },
                    "content": {
                        "type": "string",
                        "description": "The complete new file content."
                    }
                }),
                &["path", "content"],
            ),
        },
        ToolDefinition {
            name: SEARCH_DATABASE,
            answer_only: true,
            title: "Search demo database",
            description: "Searches the bundled demo dataset (products and customers) for a plain search term \
                          and returns the matching rows. The term is matched literally; it is not SQL.",
            input_schema: schema(
                json!({
                    "query": {
                        "type": "string",
                        "description": "Search term, matched case-insensitively as a substring of text columns.",
                        "minLength": 1,
                        "maxLength": 200
                    },
                    "limit": {
                        "type": "integer",
                        "description": "Maximum number of rows to return.",
                        "minimum": 1,
                        "maximum": 50,
                        "default": 10
                    }
                }),
                &["query"],
            ),
        },
        ToolDefinition {
            name: WEB_FETCH,
            answer_only: false,
            title: "Fetch web page",
            description: "Fetches an http(s) URL with GET from a host the operator has allowlisted and returns \
                          status, content type and up to 256 KiB of body text. Redirects are reported, not followed.",
            input_schema: schema(
                json!({
                    "url": {
                        "type": "string",
                        "description": "Absolute http or https URL without user name or password.",
                        "minLength": 1,
                        "maxLength": 2048
                    }
                }),
                &["url"],
            ),
        },
        ToolDefinition {
            name: SEND_EMAIL,
            answer_only: false,
            title: "Send email",
            description: "Queues a plain-text email in your tenant's outbox for the operator to review; \
                          nothing is delivered. Returns the outbox file name.",
            input_schema: schema(
                json!({
                    "to": {
                        "description": "One recipient address, or a list of up to 20.",
                        "oneOf": [
                            { "type": "string" },
                            {
                                "type": "array",
                                "items": { "type": "string" },
                                "minItems": 1,
                                "maxItems": 20
                            }
                        ]
                    },
                    "subject": {
                        "type": "string",
                        "description": "Subject line (one line, at most 200 characters).",
                        "maxLength": 200
                    },
                    "body": {
                        "type": "string",
                        "description": "Plain-text message body."
                    }
                }),
                &["to", "subject", "body"],
            ),
        },
        ToolDefinition {
            name: EXECUTE_CODE,
            answer_only: true,
            title: "Evaluate expression",
            description: "Evaluates one arithmetic, comparison or string expression such as `2 + 3 * 4` \
                          in a restricted evaluator with no functions, variables, files or network.",
            input_schema: schema(
                json!({
                    "expression": {
                        "type": "string",
                        "description": "The expression, at most 4096 characters.",
                        "minLength": 1,
                        "maxLength": 4096
                    }
                }),
                &["expression"],
            ),
        },
        ToolDefinition {
            name: ACCESS_SECRETS,
            answer_only: false,
            title: "Access tenant secrets",
            description: "Returns the value of one of your tenant's secrets by name; \
                          without a name, lists the secret names only.",
            input_schema: schema(
                json!({
                    "name": {
                        "type": "string",
                        "description": "Secret name; omit it to list the names.",
                        "minLength": 1,
                        "maxLength": 128
                    }
                }),
                &[],
            ),
        },
        ToolDefinition {
            name: MODIFY_MCP_CONFIG,
            answer_only: false,
            title: "Modify runtime settings",
            description: "Changes one allowlisted runtime setting for your tenant and returns its previous and new value. \
                          Give only `key` to read one setting, or neither `key` nor `value` to list all settings.",
            input_schema: schema(
                json!({
                    "key": {
                        "type": "string",
                        "description": "One of: `tools.read_file.max_bytes` (integer 1..=10485760), \
                                        `session.idle_timeout_secs` (integer 60..=86400), \
                                        `audit.note` (string, at most 200 characters), \
                                        `banner` (string, at most 200 characters).",
                        "enum": crate::settings::KEYS
                    },
                    "value": {
                        "type": ["string", "number", "boolean"],
                        "description": "The new value; omit it to read instead of change."
                    }
                }),
                &[],
            ),
        },
    ]
});

pub(crate) fn find(name: &str) -> Option<&'static ToolDefinition> {
    DEFINITIONS.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tools_that_change_nothing_are_answer_only() {
        // A tool on this list has its decision written with its outcome,
        // after it ran: adding one is a security decision (see the field).
        let answer_only: Vec<&str> = DEFINITIONS
            .iter()
            .filter(|d| d.answer_only)
            .map(|d| d.name)
            .collect();
        assert_eq!(answer_only, [WHOAMI, SEARCH_DATABASE, EXECUTE_CODE]);
    }

    #[test]
    fn nine_tools_with_closed_object_schemas() {
        assert_eq!(DEFINITIONS.len(), 9);
        for def in DEFINITIONS.iter() {
            let schema = &def.input_schema;
            assert_eq!(schema["type"], "object", "{}", def.name);
            assert_eq!(schema["additionalProperties"], false, "{}", def.name);
            let properties = schema["properties"].as_object();
            assert!(properties.is_some(), "{}", def.name);
            for required in schema["required"].as_array().into_iter().flatten() {
                let required = required.as_str().unwrap_or_default();
                assert!(
                    properties.is_some_and(|p| p.contains_key(required)),
                    "{}: required '{required}' is not a property",
                    def.name
                );
            }
            assert!(!def.description.is_empty() && !def.title.is_empty());
        }
    }

    #[test]
    fn names_match_the_policy_matrix() {
        let policy = gatehouse_authz::Policy::default_matrix();
        for def in DEFINITIONS.iter() {
            assert!(
                policy.rule(def.name).is_some(),
                "{} not in policy",
                def.name
            );
        }
    }
}
