use std::net::SocketAddr;

/// The TCP peer of a request, inserted into its extensions by the listener,
/// so every layer (audit, rate limits) can name the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);
