use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use axum::{Json, Router};
use gatehouse_authn::Authenticator;
use gatehouse_core::RateLimiter;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::RequestBodyDeadlineLayer;
use url::Url;

use super::guard::{HostAllowlist, OriginAllowlist};
use super::sessions::{MAX_SESSIONS, SessionBindings, SessionLimits};
use super::{
    admin, authenticate, body, guard, metadata, policy_check, request_id, upstreams_status,
};
use crate::incidents::SessionControl;
use crate::sdk::{HttpServiceOptions, SdkSessions, streamable_http_service};
use crate::{Gateway, routes};
use gatehouse_upstream::HealthState;

/// Settings of the HTTP front door.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Base of the resource identifier and of every metadata URL.
    pub public_url: Url,
    /// Extra `Host` values accepted besides loopback and the public URL's host.
    pub allowed_hosts: Vec<String>,
    /// Extra `Origin` values accepted besides the public URL's origin.
    pub allowed_origins: Vec<String>,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub session_idle_timeout: Duration,
    /// Sessions in total (2025-11-25 and earlier); new ones are refused beyond.
    pub max_sessions: usize,
    /// Sessions of one principal; its newest is refused beyond.
    pub max_sessions_per_principal: usize,
    /// `initialize` requests of one principal per minute.
    pub initialize_per_minute: u32,
    /// Issuer of the authorization server that issues tokens for this
    /// resource, listed in the protected resource metadata.
    pub authorization_server: Option<String>,
    /// Further readiness checks (the authorization server: a key that
    /// signs now), each reported by name on /readyz.
    pub readiness: Vec<Arc<dyn ReadinessProbe>>,
}

/// A readiness check a component adds to /readyz.
pub trait ReadinessProbe: Send + Sync + std::fmt::Debug {
    /// Its name in the /readyz answer.
    fn name(&self) -> &'static str;
    /// Whether it is ready now.
    fn check(&self) -> futures::future::BoxFuture<'_, bool>;
}

/// URLs derived from the public URL, computed once.
#[derive(Debug, Clone)]
pub struct PublicUrls {
    /// Scheme, host and port, no trailing slash.
    pub origin: String,
    /// The canonical resource identifier: `<origin>/mcp`.
    pub resource: String,
    pub resource_metadata: String,
}

impl PublicUrls {
    pub fn new(public_url: &Url) -> Self {
        let origin = public_url.origin().ascii_serialization();
        PublicUrls {
            resource: format!("{origin}{}", routes::MCP),
            resource_metadata: format!("{origin}{}", routes::PROTECTED_RESOURCE_METADATA_MCP),
            origin,
        }
    }
}

pub struct AppState {
    pub authorization_server: Option<String>,
    pub gateway: Arc<Gateway>,
    pub authenticator: Arc<Authenticator>,
    pub sessions: Arc<SessionBindings>,
    /// The SDK's side of the sessions, to end one that could not be bound.
    pub sdk_sessions: SdkSessions,
    /// `initialize` requests per principal (subject key) and minute.
    pub session_starts: RateLimiter,
    pub hosts: HostAllowlist,
    pub origins: OriginAllowlist,
    pub urls: PublicUrls,
    pub readiness: Vec<Arc<dyn ReadinessProbe>>,
}

fn allowed_hosts(config: &HttpConfig) -> HostAllowlist {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .into_iter()
        .map(String::from)
        .collect();
    if let Some(host) = config.public_url.host_str() {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        hosts.push(match config.public_url.port() {
            Some(port) if !matches!(host, "localhost" | "127.0.0.1" | "::1") => {
                format!("{host}:{port}")
            }
            _ => host.to_string(),
        });
    }
    hosts.extend(config.allowed_hosts.iter().cloned());
    HostAllowlist::new(hosts)
}

fn allowed_origins(config: &HttpConfig) -> OriginAllowlist {
    let mut origins = vec![config.public_url.origin().ascii_serialization()];
    origins.extend(config.allowed_origins.iter().cloned());
    OriginAllowlist::new(origins)
}

async fn health() -> &'static str {
    "ok"
}

/// Ready when the store answers, the audit log takes records and every
/// added probe passes (the authorization server has a key that signs now):
/// without them every request would be refused. Upstreams are counted by state,
/// never named (the probe is unauthenticated).
async fn ready(State(state): State<Arc<AppState>>) -> (StatusCode, Json<serde_json::Value>) {
    let store = state.authenticator.store_reachable().await;
    let audit = state.gateway.audit().is_healthy();
    let upstreams = state.gateway.upstream_health();
    let count = |wanted: HealthState| upstreams.iter().filter(|h| h.state == wanted).count();
    let mut ready = store && audit;
    let mut body = serde_json::json!({
        "store": if store { "ok" } else { "unreachable" },
        "audit": if audit { "ok" } else { "failing" },
        "upstreams": {
            "ready": count(HealthState::Ready),
            "connecting": count(HealthState::Connecting),
            "failing": count(HealthState::Failing),
            "disabled": count(HealthState::Disabled),
        },
    });
    for probe in &state.readiness {
        let ok = probe.check().await;
        ready &= ok;
        body[probe.name()] = serde_json::json!(if ok { "ok" } else { "failing" });
    }
    body["ready"] = serde_json::json!(ready);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// The whole HTTP application: /mcp, the admin endpoints, the metadata
/// documents and `oauth_routes` (the authorization server's endpoints and
/// pages, when it runs). Every route but the liveness and readiness probes
/// is behind the Host guard, and every route shares one body cap and one body deadline:
/// they are applied here, after every router is merged, so no route can be
/// added without them.
pub fn build_router(
    gateway: Arc<Gateway>,
    authenticator: Arc<Authenticator>,
    config: &HttpConfig,
    shutdown: CancellationToken,
    oauth_routes: Option<Router>,
) -> Router {
    build(gateway, authenticator, config, shutdown, oauth_routes).0
}

/// [`build_router`], and the SDK's sessions behind it.
fn build(
    gateway: Arc<Gateway>,
    authenticator: Arc<Authenticator>,
    config: &HttpConfig,
    shutdown: CancellationToken,
    oauth_routes: Option<Router>,
) -> (Router, SdkSessions) {
    let hosts = allowed_hosts(config);
    let origins = allowed_origins(config);
    let metrics = Arc::clone(gateway.metrics());
    let sessions = Arc::new(SessionBindings::new(SessionLimits {
        idle_timeout: config.session_idle_timeout,
        max_total: config.max_sessions,
        max_per_principal: config.max_sessions_per_principal,
    }));
    let (mcp, sdk_sessions) = streamable_http_service(
        Arc::clone(&gateway),
        HttpServiceOptions {
            allowed_hosts: hosts.entries().to_vec(),
            allowed_origins: origins.entries().to_vec(),
            max_body_bytes: config.max_body_bytes,
            session_idle_timeout: config.session_idle_timeout,
            shutdown: shutdown.clone(),
            bindings: Arc::clone(&sessions),
            authenticator: Arc::clone(&authenticator),
        },
    );
    // An incident in a session without a task grant ends the session.
    if let Some(incidents) = gateway.incidents() {
        incidents.set_session_control(Arc::new(EndSession {
            bindings: Arc::clone(&sessions),
            sdk: sdk_sessions.clone(),
        }));
    }
    let state = Arc::new(AppState {
        authorization_server: config.authorization_server.clone(),
        gateway,
        authenticator,
        sessions: Arc::clone(&sessions),
        sdk_sessions: sdk_sessions.clone(),
        session_starts: RateLimiter::new(config.initialize_per_minute, 60_000, MAX_SESSIONS),
        hosts,
        origins,
        urls: PublicUrls::new(&config.public_url),
        readiness: config.readiness.clone(),
    });
    // A session whose credential no longer holds is ended.
    super::session_rechecks::spawn(Arc::clone(&state), shutdown);
    // Layers run outside-in: guard, then gate 1, then reading the body
    // (only for authenticated callers), then rmcp.
    let mcp_routes = Router::new()
        .route_service(routes::MCP, mcp)
        .layer(from_fn_with_state(Arc::clone(&state), body::buffer))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            authenticate::authenticate,
        ))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            guard::host_and_origin,
        ));
    // Admin endpoints: the same guard and gate 1 as /mcp, then the admin
    // gate (role, task, scope; every request audited), no MCP layer.
    let admin_routes = Router::new()
        .route(
            routes::POLICY_CHECK,
            axum::routing::post(policy_check::check),
        )
        .route(routes::ADMIN_UPSTREAMS, get(upstreams_status::status))
        .with_state(Arc::clone(&state))
        .layer(from_fn_with_state(Arc::clone(&state), admin::gate))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            authenticate::authenticate,
        ))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            guard::host_and_origin,
        ));
    // Everything else: the metadata documents and the authorization
    // server. The guard first, then the body is read in full.
    let mut other_routes = Router::new()
        .route(
            routes::PROTECTED_RESOURCE_METADATA_MCP,
            get(metadata::for_mcp),
        )
        .route(
            routes::PROTECTED_RESOURCE_METADATA,
            get(metadata::for_origin),
        )
        .with_state(Arc::clone(&state));
    if let Some(oauth_routes) = oauth_routes {
        other_routes = other_routes.merge(oauth_routes);
    }
    let other_routes = other_routes
        .layer(from_fn(body::read_whole))
        .layer(from_fn_with_state(
            Arc::clone(&state),
            guard::host_and_form_origin,
        ));
    let router = Router::new()
        // Liveness and readiness probes (a load balancer, Kubernetes) name
        // the instance by its address rather than the public host, and the
        // answers name nothing: no Host guard here.
        .route(routes::HEALTH, get(health))
        .route(routes::READY, get(ready).with_state(Arc::clone(&state)))
        .merge(other_routes)
        .merge(mcp_routes)
        .merge(admin_routes)
        .layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .layer(RequestBodyDeadlineLayer::new(config.body_timeout))
        // Outermost: every answer, refusals by any layer included, carries
        // the request's id and is counted.
        .layer(from_fn_with_state(metrics, request_id::observe));
    (router, sdk_sessions)
}

#[cfg(test)]
#[path = "router_tests.rs"]
mod tests;

/// Ends a session for the incident response: unbound at once (its id
/// answers 404 from the next request on), and closed in the SDK (its
/// streams end) a moment later, once the refusal that made the incident
/// has been answered on the stream the close would cut.
struct EndSession {
    bindings: Arc<SessionBindings>,
    sdk: SdkSessions,
}

/// How long the SDK's side of an ended session stays open for the answer
/// in flight.
const END_SESSION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

impl SessionControl for EndSession {
    fn end<'a>(&'a self, session: &'a str) -> futures::future::BoxFuture<'a, ()> {
        Box::pin(async move {
            self.bindings.unbind(session);
            let sdk = self.sdk.clone();
            let session = session.to_string();
            tokio::spawn(async move {
                tokio::time::sleep(END_SESSION_GRACE).await;
                sdk.close(&session).await;
            });
        })
    }
}
