//! The banner `serve` prints: what a new user needs for a first
//! authenticated call, with a key or by signing in.

use std::path::Path;

use serde_json::json;

use crate::context::Context;
use crate::output;

/// Credentials created on the first start, shown once.
pub struct FirstRun<'a> {
    pub key: Option<&'a str>,
    pub user: Option<(&'a str, &'a str)>,
    /// Credentials created but not printed (standard output is not a
    /// terminal).
    pub withheld: Option<Withheld<'a>>,
    /// The issuer, when the embedded authorization server runs.
    pub authorization_server: Option<&'a str>,
    /// Where Prometheus scrapes, when `[metrics]` is on.
    pub metrics_url: Option<&'a str>,
}

/// What the first start created and did not print, and where it is.
pub struct Withheld<'a> {
    pub key: bool,
    pub user: bool,
    /// The file they were written to, if that worked.
    pub file: Option<&'a Path>,
}

/// What a new user needs for a first authenticated call.
pub fn print_welcome(mcp_url: &str, first: &FirstRun<'_>, ctx: &Context) {
    let key = first.key;
    let header_key = key.unwrap_or("<your API key>");
    let list_body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let mut lines = vec![
        String::new(),
        "Gatehouse is running.".into(),
        format!("  MCP endpoint:   {mcp_url}"),
        format!("  Data directory: {}", ctx.data_dir.display()),
        format!(
            "  Audit log:      {} (or: gatehouse audit tail --follow)",
            ctx.in_data_dir(&ctx.config.audit.file).display()
        ),
    ];
    if let Some(url) = first.metrics_url {
        lines.push(format!("  Metrics:        {url}"));
    }
    lines.push(String::new());
    for line in lines {
        output::line(&line);
    }
    if let Some(withheld) = &first.withheld {
        print_withheld(withheld);
    }
    if let Some(key) = key {
        output::line(
            "First start: created an admin API key. It is shown only this once; store it now:",
        );
        output::line("");
        output::line(&format!("  {key}"));
        output::line("");
        output::line("Create keys with less power for agents, e.g.:");
        output::line("  gatehouse keys create --name my-agent --role reader");
        output::line("or an OAuth client for the client-credentials grant:");
        output::line("  gatehouse clients create --name my-service --role reader");
        output::line("");
    }
    if let Some((username, password)) = first.user {
        output::line("First start: created the user below for signing in through the browser");
        output::line(
            "(OAuth login and consent, or the device flow). The password is shown only once:",
        );
        output::line("");
        output::line(&format!("  username: {username}"));
        output::line(&format!("  password: {password}"));
        output::line("");
        output::line("Add people with: gatehouse users add <name> --role reader");
        output::line("");
    }
    if let Some(issuer) = first.authorization_server {
        output::line(&format!(
            "OAuth clients (VS Code, MCP Inspector, the Python and TypeScript SDKs) need only the URL {mcp_url}:"
        ));
        output::line(&format!(
            "they register themselves, send you to {issuer}/authorize to sign in and consent, and get a"
        ));
        output::line(
            "short-lived token bound to this server. On a headless box: the device flow at /device.",
        );
        output::line("");
    }
    let curl = format!(
        "curl -s {mcp_url} \\\n    -H {} \\\n    -H 'Content-Type: application/json' \\\n    -H 'Accept: application/json, text/event-stream' \\\n    -H 'MCP-Protocol-Version: 2026-07-28' \\\n    -H 'Mcp-Method: tools/list' \\\n    -d {}",
        output::shell_word(&format!("Authorization: Bearer {header_key}")),
        output::shell_word(list_body),
    );
    let binary = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "gatehouse".into());
    // Claude Desktop runs local servers over stdio: the same policy and audit.
    let claude_json = json!({
        "mcpServers": {
            "gatehouse": {
                "command": binary,
                "args": ["stdio", "--data-dir", ctx.data_dir.display().to_string()],
                "env": {"GATEHOUSE_API_KEY": header_key}
            }
        }
    });
    let vscode_json = json!({
        "servers": {
            "gatehouse": {
                "type": "http",
                "url": mcp_url,
                "headers": {"Authorization": format!("Bearer {header_key}")}
            }
        }
    });
    let pretty = |v: &serde_json::Value| serde_json::to_string_pretty(v).unwrap_or_default();
    for line in [
        "List the tools this key may call:".to_string(),
        String::new(),
        format!("  {curl}"),
        String::new(),
        "Claude Desktop (claude_desktop_config.json), over stdio:".into(),
        pretty(&claude_json),
        String::new(),
        "VS Code (.vscode/mcp.json), over Streamable HTTP:".into(),
        pretty(&vscode_json),
        String::new(),
        "MCP Inspector:".into(),
        format!(
            "  npx @modelcontextprotocol/inspector --cli {mcp_url} --transport http --header {} --method tools/list",
            output::shell_word(&format!("Authorization: Bearer {header_key}"))
        ),
        String::new(),
    ] {
        output::line(&line);
    }
}

/// Says where the first start's credentials are, without printing them.
fn print_withheld(withheld: &Withheld<'_>) {
    let what = match (withheld.key, withheld.user) {
        (true, true) => "an admin API key and the admin login",
        (true, false) => "an admin API key",
        _ => "the admin login",
    };
    output::line(&format!("First start: created {what}."));
    output::line(
        "No secret is printed: standard output is not a terminal, and a journal or log may keep it.",
    );
    match withheld.file {
        Some(path) => {
            output::line(&format!(
                "They are in {} (readable only by this user): store them, then delete that file.",
                path.display()
            ));
        }
        None => {
            output::line("Writing them to a file failed (see the log). Make new ones:");
            if withheld.key {
                output::line("  gatehouse keys create --name admin-2 --role admin");
            }
            if withheld.user {
                output::line("  gatehouse users passwd admin");
            }
        }
    }
    output::line("");
}
