//! Which address a request comes from when Gatehouse runs behind a
//! reverse proxy (`server.trusted_proxies`).
//!
//! Behind a proxy every connection comes from the proxy. Counting failures
//! and limits by that address would let anyone lock every caller out (and
//! record every caller as the proxy), so for a connection from a trusted
//! proxy the caller is read from `X-Forwarded-For`: each proxy appends the
//! address it received the request from, so the list is read from the
//! right, past the trusted proxies, to the first address none of them is.
//! Anything to the left of that was written by the caller and is ignored.
//! A connection from anywhere else is taken as it is, whatever it sends.

use std::net::IpAddr;

use ipnet::IpNet;

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`10.0.0.7`, `::1`) or networks (`10.0.0.0/8`,
    /// `fd00::/8`); an entry that is neither is named in the error.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, String> {
        let mut networks = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            let network = match entry.parse::<IpNet>() {
                Ok(network) => network.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(address) => IpNet::from(address),
                    Err(_) => {
                        return Err(format!(
                            "{entry:?} is not an IP address or network (10.0.0.0/8, 192.0.2.7, fd00::/8)"
                        ));
                    }
                },
            };
            networks.push(network);
        }
        Ok(TrustedProxies(networks))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, address: IpAddr) -> bool {
        let address = address.to_canonical();
        self.0.iter().any(|network| network.contains(&address))
    }

    /// The caller's address: `peer` itself unless it is a trusted proxy;
    /// then the right-most address of the `X-Forwarded-For` values (in the
    /// order received) that is not a trusted proxy. When the list holds
    /// nothing but trusted proxies, or an entry that is not an address
    /// before reaching one (a proxy wrote it, so this is a misconfigured
    /// proxy, not the caller), the last trusted hop is the caller.
    ///
    /// Values are bytes, each hop read on its own: a caller's own part of
    /// the list may hold anything (bytes that are no UTF-8 included), and
    /// must not make the hops the proxies added unreadable.
    pub fn caller<'a>(
        &self,
        peer: IpAddr,
        forwarded_for: impl DoubleEndedIterator<Item = &'a [u8]>,
    ) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut caller = peer;
        let hops: Vec<&[u8]> = forwarded_for.collect();
        for hop in hops
            .iter()
            .rev()
            .flat_map(|value| value.rsplit(|b| *b == b','))
        {
            let Some(address) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
                return caller;
            };
            caller = address.to_canonical();
            if !self.trusts(caller) {
                return caller;
            }
        }
        caller
    }
}

/// One entry of `X-Forwarded-For`: an address, maybe with a port
/// (`192.0.2.7:4711`, `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address);
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    hop.strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "192.0.2.7", "fd00::/8"]).unwrap()
    }

    #[test]
    fn only_a_trusted_proxy_is_believed() {
        let p = proxies();
        // Not a proxy: whatever it claims, it is itself.
        assert_eq!(
            p.caller(
                ip("203.0.113.9"),
                ["198.51.100.1"].map(str::as_bytes).into_iter()
            ),
            ip("203.0.113.9")
        );
        // A proxy: the address it appended.
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["198.51.100.1"].map(str::as_bytes).into_iter()
            ),
            ip("198.51.100.1")
        );
        // The caller's own entries (left of the proxy's) are not believed.
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["1.2.3.4, 198.51.100.1"].map(str::as_bytes).into_iter()
            ),
            ip("198.51.100.1")
        );
        // Two proxies in a row, in one header or two.
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["1.2.3.4, 198.51.100.1, 192.0.2.7"]
                    .map(str::as_bytes)
                    .into_iter()
            ),
            ip("198.51.100.1")
        );
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["1.2.3.4, 198.51.100.1", "10.9.9.9"]
                    .map(str::as_bytes)
                    .into_iter()
            ),
            ip("198.51.100.1")
        );
        // No header: the proxy itself. Only proxies: the left-most of them.
        assert_eq!(p.caller(ip("10.1.2.3"), std::iter::empty()), ip("10.1.2.3"));
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["10.4.4.4, 192.0.2.7"].map(str::as_bytes).into_iter()
            ),
            ip("10.4.4.4")
        );
        // A hop that is no address stops the walk at the last trusted one.
        assert_eq!(
            p.caller(
                ip("10.1.2.3"),
                ["198.51.100.1, unknown"].map(str::as_bytes).into_iter()
            ),
            ip("10.1.2.3")
        );
        // Ports, brackets and IPv4-mapped peers.
        assert_eq!(
            p.caller(
                ip("::ffff:10.1.2.3"),
                ["[2001:db8::5]:443"].map(str::as_bytes).into_iter()
            ),
            ip("2001:db8::5")
        );
        assert_eq!(
            p.caller(
                ip("fd00::1"),
                ["198.51.100.1:5000"].map(str::as_bytes).into_iter()
            ),
            ip("198.51.100.1")
        );
        // Bytes that are no UTF-8 in the caller's own part of the value
        // hide nothing the proxy added.
        assert_eq!(
            p.caller(ip("10.1.2.3"), [&b"\xff\xfe, 198.51.100.1"[..]].into_iter()),
            ip("198.51.100.1")
        );
        // Nobody trusted: nothing is read.
        assert_eq!(
            TrustedProxies::default().caller(
                ip("10.1.2.3"),
                ["198.51.100.1"].map(str::as_bytes).into_iter()
            ),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn a_bad_entry_is_named() {
        let e = TrustedProxies::parse(&["10.0.0.0/8", "proxy.internal"]).unwrap_err();
        assert!(e.contains("proxy.internal"), "{e}");
        assert!(TrustedProxies::parse(&["::1", "127.0.0.1/32"]).is_ok());
    }
}
