//! The HTTP front door: listener, Host/Origin guard, gate 1 and session
//! binding in front of the MCP endpoint, plus the metadata documents.

mod admin;
mod admission;
mod authenticate;
mod body;
mod errors;
mod fast_call;
mod guard;
mod in_flight;
mod listener;
mod metadata;
mod metrics_endpoint;
mod policy_check;
mod request_id;
mod router;
mod session_call;
mod session_rechecks;
mod session_stream;
mod sessions;
mod upstreams_status;

pub use listener::{ListenerSettings, PeerAddr, serve};
pub use metrics_endpoint::{metrics_hosts, metrics_router};
pub use request_id::{REQUEST_ID_HEADER, RequestId, RequestSpan, new_request_id, route_class};
pub use router::{HttpConfig, ReadinessProbe, build_router};
pub use sessions::{MAX_SESSIONS, MAX_SESSIONS_PER_PRINCIPAL, SessionBindings};
