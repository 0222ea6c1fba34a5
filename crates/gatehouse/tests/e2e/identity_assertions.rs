//! The MCP enterprise-managed authorization extension against the real
//! binary: an identity provider on loopback signs identity assertions
//! (ID-JAG), a confidential client exchanges them for Gatehouse tokens.
//! Valid, wrong audience, wrong client, replayed, expired, untrusted
//! issuer, and the person's user created, mapped and disabled.

use gatehouse_core::{Clock, SystemClock};
use gatehouse_oauth::SigningKey;
use serde_json::{Value, json};

use super::external_issuers::provider;
use super::harness::Server;
use super::oauth::token_request;

const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

fn now() -> i64 {
    SystemClock.now().as_secs()
}

fn config(issuer: &str) -> String {
    format!(
        "version = 1\n[[oauth.identity_providers]]\nname = \"acme\"\nissuer = \"{issuer}\"\n\
         internal = true\nidentity_assertions = true\ncreate_users = true\n\
         roles_claim = \"groups\"\nrole_map = {{ \"mcp-ops\" = \"executor\" }}\n\
         default_role = \"reader\"\n"
    )
}

struct Setup {
    server: Server,
    idp: SigningKey,
    issuer: String,
    client: (String, String),
}

fn setup() -> Setup {
    let idp = SigningKey::generate().unwrap();
    let (issuer, _) = provider(&idp);
    let server = Server::start(Some(&config(&issuer)));
    let created = server.cli_json(&["clients", "create", "--name", "agent", "--role", "reader"]);
    let client = (
        created["client_id"].as_str().unwrap().to_string(),
        created["client_secret"].as_str().unwrap().to_string(),
    );
    Setup {
        server,
        idp,
        issuer,
        client,
    }
}

impl Setup {
    fn claims(&self, sub: &str, jti: &str) -> Value {
        let now = now();
        json!({
            "iss": self.issuer, "sub": sub, "aud": self.server.base,
            "resource": self.server.mcp_url(), "client_id": self.client.0,
            "jti": jti, "iat": now, "exp": now + 120,
        })
    }

    fn id_jag(&self, claims: &Value) -> String {
        self.idp.sign_typed(claims, "oauth-id-jag+jwt").unwrap()
    }

    async fn exchange(&self, assertion: &str) -> (u16, Value) {
        let (status, _, body) = token_request(
            &self.server,
            &[("grant_type", JWT_BEARER), ("assertion", assertion)],
            Some((&self.client.0, &self.client.1)),
        )
        .await;
        (status, body)
    }
}

fn whoami_text(body: &Value) -> String {
    body["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The `iat` of a signed assertion (its payload read, not verified).
fn assertion_iat(jwt: &str) -> i64 {
    use base64::Engine as _;
    let payload = jwt.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["iat"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn an_identity_assertion_is_exchanged_for_a_token_of_its_person() {
    let s = setup();
    let metadata = s
        .server
        .get_json("/.well-known/oauth-authorization-server")
        .await;
    assert!(
        metadata["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(JWT_BEARER)),
        "{metadata}"
    );

    let assertion = s.id_jag(&s.claims("U123", "jag-1"));
    let (status, body) = s.exchange(&assertion).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let token = body["access_token"].as_str().unwrap().to_string();
    let text = whoami_text(&s.server.call_tool(&token, "whoami", json!({})).await);
    assert!(text.contains("acme:u123"), "{text}");
    // Created on first arrival, with the default role (no group mapped).
    let users = s.server.cli_json(&["users", "list"]);
    let created = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "acme:u123")
        .unwrap_or_else(|| panic!("{users}"));
    assert_eq!(created["roles"], json!(["reader"]));
    let audit = s.server.audit(&["--tool", "oauth/user_created"]);
    assert_eq!(audit.len(), 1, "{audit:?}");

    // The same assertion again: refused, whatever the client.
    let (status, body) = s.exchange(&assertion).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );

    // The provider's groups decide the roles, on every arrival.
    let mut ops = s.claims("U123", "jag-2");
    ops["groups"] = json!(["mcp-ops", "staff"]);
    // Issued after the first (claims of one second that take a role away
    // and add another apply only the removal: which is newer is unknown).
    ops["iat"] = json!(assertion_iat(&assertion) + 1);
    let (status, body) = s.exchange(&s.id_jag(&ops)).await;
    assert_eq!(status, 200, "{body}");
    let users = s.server.cli_json(&["users", "list"]);
    let user = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "acme:u123")
        .unwrap();
    assert_eq!(user["roles"], json!(["executor"]));

    // Disabled in Gatehouse: its tokens stop at once, and no new one.
    s.server.cli_json(&["users", "disable", "acme:u123"]);
    let (status, _) = s
        .server
        .rpc(
            Some(&token),
            "tools/call",
            json!({"name": "whoami", "arguments": {}}),
        )
        .await;
    assert_eq!(status, 401);
    let (status, body) = s.exchange(&s.id_jag(&s.claims("U123", "jag-3"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test]
async fn bad_identity_assertions_are_refused() {
    let s = setup();
    let now = now();
    let change = |edit: &dyn Fn(&mut Value)| {
        let mut claims = s.claims("U9", &format!("bad-{}", rand_suffix()));
        edit(&mut claims);
        s.id_jag(&claims)
    };
    let stranger = SigningKey::generate().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "audience is the MCP resource, not the issuer",
            change(&|c| c["aud"] = json!(s.server.mcp_url())),
            "invalid_grant",
        ),
        (
            "issued to another client",
            change(&|c| c["client_id"] = json!("ghc_someoneelse")),
            "invalid_grant",
        ),
        (
            "expired",
            change(&|c| {
                c["iat"] = json!(now - 600);
                c["exp"] = json!(now - 300);
            }),
            "invalid_grant",
        ),
        (
            "valid for an hour",
            change(&|c| c["exp"] = json!(now + 3600)),
            "invalid_grant",
        ),
        (
            "no iat",
            change(&|c| {
                c.as_object_mut().unwrap().remove("iat");
            }),
            "invalid_grant",
        ),
        (
            "for another resource",
            change(&|c| c["resource"] = json!("https://other.example.com/mcp")),
            "invalid_target",
        ),
        (
            "an untrusted issuer",
            stranger
                .sign_typed(
                    &{
                        let mut c = s.claims("U9", "bad-untrusted");
                        c["iss"] = json!("https://evil.example.com");
                        c
                    },
                    "oauth-id-jag+jwt",
                )
                .unwrap(),
            "invalid_grant",
        ),
        (
            "the provider's issuer, another key",
            stranger
                .sign_typed(&s.claims("U9", "bad-forged"), "oauth-id-jag+jwt")
                .unwrap(),
            "invalid_grant",
        ),
        (
            "a plain JWT, not an ID-JAG",
            s.idp.sign_typed(&s.claims("U9", "bad-typ"), "JWT").unwrap(),
            "invalid_grant",
        ),
    ];
    for (name, assertion, error) in cases {
        let (status, body) = s.exchange(&assertion).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(error)),
            "{name}: {body}"
        );
    }
    // Nobody was created by any of them.
    let users = s.server.cli_json(&["users", "list"]);
    assert!(
        !users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"].as_str().unwrap().starts_with("acme:")),
        "{users}"
    );

    // A public client may not exchange one, even a valid one.
    let public = s
        .server
        .cli_json(&["clients", "create", "--name", "pub", "--public"]);
    let public_id = public["client_id"].as_str().unwrap();
    let mut claims = s.claims("U9", "public-1");
    claims["client_id"] = json!(public_id);
    let (status, _, body) = token_request(
        &s.server,
        &[
            ("grant_type", JWT_BEARER),
            ("assertion", &s.id_jag(&claims)),
            ("client_id", public_id),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("unauthorized_client")),
        "{body}"
    );
    let failures = s
        .server
        .audit(&["--tool", "oauth/token", "--outcome", "failure"]);
    assert!(failures.len() >= 10, "{failures:?}");
}

/// Assertions minted before and after a role was taken away at the
/// provider, exchanged in the other order: the older one cannot bring the
/// role back (refused, and its token never issued); an older one that says
/// what the newer one said is exchanged.
#[tokio::test]
async fn an_older_assertion_cannot_bring_back_a_role_the_provider_took_away() {
    let s = setup();
    let now = now();
    let assertion = |jti: &str, groups: Value, ago: i64| {
        let mut claims = s.claims("U77", jti);
        claims["groups"] = groups;
        claims["iat"] = json!(now - ago);
        s.id_jag(&claims)
    };
    let roles = || {
        let users = s.server.cli_json(&["users", "list"]);
        users
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "acme:u77")
            .unwrap_or_else(|| panic!("{users}"))["roles"]
            .clone()
    };
    let ops = assertion("old-ops", json!(["mcp-ops"]), 20);
    let stale_ops = assertion("stale-ops", json!(["mcp-ops"]), 10);
    let stale_same = assertion("stale-same", json!([]), 8);
    let removed = assertion("removed", json!([]), 5);

    let (status, body) = s.exchange(&ops).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(roles(), json!(["executor"]));
    let (status, body) = s.exchange(&removed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(roles(), json!(["reader"]));
    let (status, body) = s.exchange(&stale_ops).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("newer")),
        "{body}"
    );
    assert_eq!(
        roles(),
        json!(["reader"]),
        "the older assertion brought the role back"
    );
    let (status, body) = s.exchange(&stale_same).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(roles(), json!(["reader"]));
}

/// A unique suffix per call, so each bad assertion has its own `jti`.
fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

/// The provider's `scope` in the assertion is its decision about the
/// client: a request may narrow it, never widen it.
#[tokio::test]
async fn a_request_cannot_widen_the_scope_the_assertion_carries() {
    let s = setup();
    let mut claims = s.claims("U88", "scoped-1");
    claims["groups"] = json!(["mcp-ops"]);
    claims["scope"] = json!("tools:read");
    let exchange = |assertion: String, scope: &'static str| {
        let server = &s.server;
        let client = s.client.clone();
        async move {
            let (status, _, body) = token_request(
                server,
                &[
                    ("grant_type", JWT_BEARER),
                    ("assertion", &assertion),
                    ("scope", scope),
                ],
                Some((&client.0, &client.1)),
            )
            .await;
            (status, body)
        }
    };
    let (status, body) = exchange(s.id_jag(&claims), "tools:read tools:write").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    claims["jti"] = json!("scoped-2");
    let (status, body) = exchange(s.id_jag(&claims), "tools:read").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "tools:read", "{body}");
}
