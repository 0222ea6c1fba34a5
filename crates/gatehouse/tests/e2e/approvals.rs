//! Operation tokens end to end: a call of an `approval` tool is refused
//! with an approval id and URL, a human approves it on the approval page
//! (or from the shell), and the agent's retry with the token runs exactly
//! that call once.

use serde_json::{Value, json};

use super::browser::{Browser, Page, add_user};
use super::harness::{LEGACY, Server, parse_body};

const META: &str = "io.gatehouse/operation_token";

fn email(to: &str) -> Value {
    json!({"to": to, "subject": "Quarterly report", "body": "Attached."})
}

async fn call(server: &Server, key: &str, tool: &str, args: Value, token: Option<&str>) -> Value {
    let mut params = json!({"name": tool, "arguments": args});
    if let Some(token) = token {
        params["_meta"] = json!({ META: token });
    }
    let (status, body) = server.rpc(Some(key), "tools/call", params).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn reason(body: &Value) -> &str {
    body["error"]["data"]["reason"].as_str().unwrap_or_default()
}

fn succeeded(body: &Value) -> bool {
    body["result"].is_object() && body["result"]["isError"] != json!(true)
}

/// The text of the element with this id (pages escape their content).
fn element(page: &Page, id: &str) -> String {
    let marker = format!("id=\"{id}\">");
    let start = page
        .body
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in:\n{}", page.body))
        + marker.len();
    let end = page.body[start..].find('<').unwrap() + start;
    page.body[start..end]
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

/// Opens the approval URL as `user`, logging in, and decides.
async fn decide_on_page(server: &Server, url: &str, user: (&str, &str), decision: &str) -> Page {
    let mut browser = Browser::new(server);
    let mut page = browser.visit(url).await;
    if page.is_login() {
        page = browser.login_then(&page, user.0, user.1).await;
    }
    if page.status != 200 || !page.body.contains("name=\"decision\"") {
        return page;
    }
    let csrf = page.field("csrf");
    let path = url::Url::parse(url).unwrap().path().to_string();
    browser
        .post(&path, &[("csrf", &csrf), ("decision", decision)])
        .await
}

struct Setup {
    server: Server,
    alice_password: String,
    agent: String,
}

fn setup() -> Setup {
    let server = Server::start(None);
    let alice_password = add_user(&server, "alice", "executor");
    let (_, agent) = server.create_key("mailer", "executor", &["--owner", "alice"]);
    Setup {
        server,
        alice_password,
        agent,
    }
}

#[tokio::test]
async fn a_human_approves_on_the_page_and_the_retry_runs_exactly_once() {
    let Setup {
        server,
        alice_password,
        agent,
    } = setup();
    let refused = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        None,
    )
    .await;
    assert_eq!(reason(&refused), "approval_required", "{refused}");
    assert_eq!(refused["error"]["code"], -32001);
    let data = &refused["error"]["data"];
    let approval = data["approval_id"].as_str().unwrap().to_string();
    let url = data["approval_url"].as_str().unwrap().to_string();
    assert!(approval.starts_with("apr_"));
    assert_eq!(url, format!("{}/approvals/{approval}", server.base));
    // Asking again for the same call does not pile up requests.
    let again = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        None,
    )
    .await;
    assert_eq!(again["error"]["data"]["approval_id"], approval.as_str());

    // Another user of the tenant may not decide, nor even see the arguments.
    let bob_password = add_user(&server, "bob", "executor");
    let page = decide_on_page(&server, &url, ("bob", &bob_password), "approve").await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(!page.body.contains("bob@example.com"));

    // Alice sees who asks, which tool and the exact arguments.
    let mut browser = Browser::new(&server);
    let login = browser.visit(&url).await;
    let page = browser.login_then(&login, "alice", &alice_password).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(element(&page, "tool"), "send_email");
    assert_eq!(element(&page, "approval-id"), approval);
    assert!(element(&page, "arguments").contains("bob@example.com"));
    let csrf = page.field("csrf");
    let path = format!("/approvals/{approval}");
    // A form without this browser's CSRF token is refused.
    let forged = Browser::new(&server)
        .post(&path, &[("csrf", &csrf), ("decision", "approve")])
        .await;
    assert_eq!(forged.status, 403);
    let approved = browser
        .post(&path, &[("csrf", &csrf), ("decision", "approve")])
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let token = element(&approved, "operation-token");
    assert!(token.starts_with("gho_"));
    // Deciding twice changes nothing.
    let twice = browser
        .post(&path, &[("csrf", &csrf), ("decision", "deny")])
        .await;
    assert_eq!(twice.status, 409);

    // Every mismatch is refused without spending the token.
    let other_args = call(
        &server,
        &agent,
        "send_email",
        email("eve@evil.example"),
        Some(&token),
    )
    .await;
    assert_eq!(
        reason(&other_args),
        "operation_token_mismatch",
        "{other_args}"
    );
    let other_tool = call(
        &server,
        &agent,
        "write_file",
        json!({"path": "x.txt", "content": "x"}),
        Some(&token),
    )
    .await;
    assert_eq!(reason(&other_tool), "operation_token_mismatch");
    let (_, other_agent) = server.create_key("other", "executor", &["--owner", "alice"]);
    let other_principal = call(
        &server,
        &other_agent,
        "send_email",
        email("bob@example.com"),
        Some(&token),
    )
    .await;
    assert_eq!(reason(&other_principal), "operation_token_mismatch");
    let forged_token = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        Some("gho_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(reason(&forged_token), "operation_token_invalid");

    // The approved call runs once; the second retry is refused.
    let ran = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        Some(&token),
    )
    .await;
    assert!(succeeded(&ran), "{ran}");
    let replay = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        Some(&token),
    )
    .await;
    assert_eq!(reason(&replay), "operation_token_used");

    let reasons: Vec<String> = server
        .audit(&["--tool", "send_email"])
        .iter()
        .filter_map(|r| r["reason"].as_str().map(String::from))
        .collect();
    for expected in [
        "approval_required",
        "approval_granted",
        "operation_token_mismatch",
        "operation_token_used",
    ] {
        assert!(
            reasons.iter().any(|r| r == expected),
            "{expected}: {reasons:?}"
        );
    }
    assert!(reasons.iter().any(|r| r.contains(&approval)), "{reasons:?}");
}

#[tokio::test]
async fn concurrent_retries_with_one_token_run_the_call_once() {
    let Setup { server, agent, .. } = setup();
    let refused = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        None,
    )
    .await;
    let approval = refused["error"]["data"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = server.cli_json(&["approvals", "list"]);
    assert_eq!(listed[0]["id"], approval.as_str());
    assert_eq!(listed[0]["arguments"]["to"], "bob@example.com");
    let approved = server.cli_json(&["approvals", "approve", &approval]);
    let token = approved["operation_token"].as_str().unwrap().to_string();
    // A decision is a success: no error text; it names the approval and
    // where it was made.
    let decisions = server.audit(&["--tool", "send_email", "--kind", "grant"]);
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["reason"], "approval_granted");
    assert_eq!(decisions[0]["approval"], approval.as_str());
    assert_eq!(decisions[0]["source"], "cli");
    assert!(
        decisions[0].get("error").is_none_or(Value::is_null),
        "{decisions:?}"
    );
    let attempts = (0..8).map(|_| {
        let (server, agent, token) = (&server, agent.clone(), token.clone());
        async move {
            call(
                server,
                &agent,
                "send_email",
                email("bob@example.com"),
                Some(&token),
            )
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    let ran = results.iter().filter(|r| succeeded(r)).count();
    let used = results
        .iter()
        .filter(|r| reason(r) == "operation_token_used")
        .count();
    assert_eq!((ran, used), (1, 7), "{results:?}");
}

#[tokio::test]
async fn a_denied_call_stays_denied_and_a_new_request_needs_a_new_approval() {
    let Setup {
        server,
        alice_password,
        agent,
    } = setup();
    let refused = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        None,
    )
    .await;
    let url = refused["error"]["data"]["approval_url"]
        .as_str()
        .unwrap()
        .to_string();
    let approval = refused["error"]["data"]["approval_id"]
        .as_str()
        .unwrap()
        .to_string();
    let page = decide_on_page(&server, &url, ("alice", &alice_password), "deny").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Denied"));
    let out = server.cli(&["approvals", "approve", &approval]);
    assert!(
        !out.status.success(),
        "a denied approval cannot be approved later"
    );
    let again = call(
        &server,
        &agent,
        "send_email",
        email("bob@example.com"),
        None,
    )
    .await;
    assert_eq!(reason(&again), "approval_required");
    assert_ne!(again["error"]["data"]["approval_id"], approval.as_str());
}

#[tokio::test]
async fn clients_with_url_elicitation_are_asked_to_open_the_approval_page() {
    let Setup { server, agent, .. } = setup();
    let post = |session: Option<String>, body: Value| {
        let (server, agent) = (&server, &agent);
        async move { server.post_legacy(agent, session.as_deref(), body).await }
    };
    let response = post(
        None,
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": LEGACY,
            "capabilities": {"elicitation": {"url": {}}},
            "clientInfo": {"name": "e2e", "version": "1"}
        }}),
    )
    .await;
    let session = response.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_string();
    post(
        Some(session.clone()),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await;
    let response = post(
        Some(session),
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
            "name": "send_email", "arguments": email("bob@example.com")
        }}),
    )
    .await;
    let body = parse_body(&response.text().await.unwrap());
    assert_eq!(body["error"]["code"], -32042, "{body}");
    let elicitation = &body["error"]["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    assert_eq!(
        elicitation["elicitationId"],
        body["error"]["data"]["approval_id"]
    );
    assert!(
        elicitation["url"]
            .as_str()
            .unwrap()
            .ends_with(body["error"]["data"]["approval_id"].as_str().unwrap())
    );
}

/// The default policy with `send_email`'s body masked by `redact`.
fn policy_with_masked_body() -> String {
    let default = include_str!("../../../gatehouse-policy/src/default_policy.toml");
    let masked = default.replace(
        "[tools.send_email]\nscope = \"tools:write\"\nroles = [\"admin\"]\napproval_roles = [\"executor\"]\n",
        "[tools.send_email]\nscope = \"tools:write\"\nroles = [\"admin\"]\napproval_roles = [\"executor\"]\nredact = [\"body\"]\n",
    );
    assert_ne!(masked, default);
    masked
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Issue 9 item 5: the page and `approvals list` showed the audit-redacted
/// arguments, and anything random-looking (32+ characters with a digit)
/// was redacted, so an agent could hide the file or recipient it wanted
/// approved. The approver now sees exactly the arguments the token is
/// bound to; only fields the policy marks `redact` are masked, labelled,
/// with their SHA-256; and the audit record of the approved call carries
/// the SHA-256 of the canonical arguments.
#[tokio::test]
async fn the_approver_sees_exactly_what_runs_and_the_audit_proves_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), policy_with_masked_body()).unwrap();
    let server = Server::start_in(dir, Some("version = 1\n[policy]\nfile = \"policy.toml\"\n"));
    let alice_password = add_user(&server, "alice", "executor");
    let (_, agent) = server.create_key("mailer", "executor", &["--owner", "alice"]);

    let path = "reports/Q3Xk9mPqR7vT2nWz8yLb4cHd6fJg1sAe.csv";
    let recipient = "Q3Xk9mPqR7vT2nWz8yLb4cHd6fJg1sAe@exfil.example";
    let body = "Basic secretbodytext, the numbers";
    let write = json!({"path": path, "content": "a,b\n1,2\n"});
    let mail = json!({"to": recipient, "subject": format!("Attached {path}"), "body": body});
    let mut approvals = Vec::new();
    for (tool, args) in [("write_file", &write), ("send_email", &mail)] {
        let refused = call(&server, &agent, tool, args.clone(), None).await;
        assert_eq!(reason(&refused), "approval_required", "{refused}");
        let data = &refused["error"]["data"];
        approvals.push((
            data["approval_id"].as_str().unwrap().to_string(),
            data["approval_url"].as_str().unwrap().to_string(),
        ));
    }

    // `approvals list`: the exact arguments, in JSON and in the table.
    let listed = server.cli_json(&["approvals", "list"]);
    let find = |id: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()
            .clone()
    };
    let listed_write = find(&approvals[0].0);
    assert_eq!(listed_write["arguments"], write, "{listed_write}");
    assert_eq!(listed_write["masked_fields"], json!({}));
    // Keyed with the servers' pepper: not the plain SHA-256 a reader of the
    // audit trail could try guesses against.
    let plain = |v: &Value| sha256_hex(gatehouse_authz::canonical_json(v).as_bytes());
    let write_hash = listed_write["arguments_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(write_hash.len(), 64);
    assert_ne!(write_hash, plain(&write));
    let listed_mail = find(&approvals[1].0);
    let mail_hash = listed_mail["arguments_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let body_sha256 = listed_mail["masked_fields"]["body"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(body_sha256.len(), 64);
    assert_ne!(body_sha256, plain(&json!(body)));
    // Whoever holds the servers' pepper (a shell on the server) can check.
    let hashed = |args: &[&str], input: &Value| {
        let out = server.cli_with_stdin(args, Some(&input.to_string()));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    assert_eq!(hashed(&["approvals", "hash"], &write), write_hash);
    assert_eq!(hashed(&["approvals", "hash"], &mail), mail_hash);
    let field = [
        "approvals",
        "hash",
        "--approval",
        &approvals[1].0,
        "--field",
        "body",
    ];
    assert_eq!(hashed(&field, &json!(body)), body_sha256);
    assert_ne!(hashed(&field, &json!("a guess")), body_sha256);
    assert_eq!(listed_mail["arguments"]["to"], recipient, "{listed_mail}");
    assert_eq!(
        listed_mail["arguments"]["subject"],
        format!("Attached {path}")
    );
    assert_eq!(listed_mail["arguments"]["body"], "[REDACTED]");
    assert_eq!(listed_mail["masked_fields"], json!({"body": body_sha256}));
    let table = String::from_utf8(server.cli(&["approvals", "list"]).stdout).unwrap();
    assert!(table.contains(path) && table.contains(recipient), "{table}");
    assert!(table.contains(&format!("body={body_sha256}")), "{table}");
    assert!(!table.contains("secretbodytext"), "{table}");

    // The page shows the same, says which field is masked and its hash.
    let mut browser = Browser::new(&server);
    let login = browser.visit(&approvals[0].1).await;
    let page = browser.login_then(&login, "alice", &alice_password).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let shown: Value = serde_json::from_str(&element(&page, "arguments")).unwrap();
    assert_eq!(shown, write);
    assert!(!page.body.contains("masked-field"), "{}", page.body);
    let page = browser.visit(&approvals[1].1).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let shown: Value = serde_json::from_str(&element(&page, "arguments")).unwrap();
    assert_eq!(shown["to"], recipient);
    assert_eq!(shown["subject"], format!("Attached {path}"));
    assert_eq!(shown["body"], "[REDACTED]");
    assert!(
        page.body
            .contains("<code class=\"masked-field\">body</code>"),
        "{}",
        page.body
    );
    assert!(page.body.contains(&body_sha256), "{}", page.body);
    assert!(!page.body.contains("secretbodytext"));

    // Approved, the calls run, and their records carry the canonical hash.
    for ((id, url), (tool, args)) in approvals
        .iter()
        .zip([("write_file", &write), ("send_email", &mail)])
    {
        let page = browser.visit(url).await;
        let approved = browser
            .post(
                &format!("/approvals/{id}"),
                &[("csrf", &page.field("csrf")), ("decision", "approve")],
            )
            .await;
        assert_eq!(approved.status, 200, "{}", approved.body);
        let token = element(&approved, "operation-token");
        let ran = call(&server, &agent, tool, args.clone(), Some(&token)).await;
        assert!(succeeded(&ran), "{ran}");
        let hash = if tool == "write_file" {
            &write_hash
        } else {
            &mail_hash
        };
        let records = server.audit(&["--tool", tool]);
        let allowed: Vec<&Value> = records
            .iter()
            .filter(|r| r["kind"] == "tool_decision" && r["decision"] == "allow")
            .collect();
        assert_eq!(allowed.len(), 1, "{records:?}");
        assert_eq!(allowed[0]["args_sha256"], hash.as_str(), "{records:?}");
        assert!(allowed[0]["reason"].as_str().unwrap().contains(id.as_str()));
        let outcome = records
            .iter()
            .find(|r| r["kind"] == "tool_outcome")
            .unwrap();
        assert_eq!(outcome["args_sha256"], hash.as_str());
        // Every record of the call names the approval: the refusal that
        // filed it, the human's decision (made on the page, from this
        // browser's address, with no error text) and the run.
        for record in &records {
            assert_eq!(record["approval"], id.as_str(), "{record}");
        }
        let decision = records.iter().find(|r| r["kind"] == "grant").unwrap();
        assert_eq!(decision["source"], "127.0.0.1", "{decision}");
        assert!(
            decision.get("error").is_none_or(Value::is_null),
            "{decision}"
        );
    }
    // The audit keeps its own redaction: the masked body never reaches it.
    let audit_file = std::fs::read_to_string(server.data_dir().join("audit.jsonl")).unwrap();
    assert!(!audit_file.contains("secretbodytext"));
}
