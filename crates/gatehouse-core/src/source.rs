//! How a source address is counted by per-address limits: the lockout of
//! `gatehouse-authn` and the rate limits of the authorization server share
//! this one rule, so an address cannot be worth more in one than the other.

use std::net::{IpAddr, Ipv6Addr};

/// The network an address counts as: an IPv4 address as itself (an
/// IPv4-mapped IPv6 address as the IPv4 address), the IPv6 loopback as
/// itself, and any other IPv6 address by its /64 (`2001:db8:1:2::/64`),
/// since one host usually holds a whole /64 and could otherwise rotate past
/// any limit. `<ipv6>/64` is read back as itself. `None` when `address` is
/// not an IP address (stdio, or no peer).
pub fn source_network(address: &str) -> Option<String> {
    let address = address.trim();
    let ip: IpAddr = match address.strip_suffix("/64") {
        Some(network) => IpAddr::V6(network.parse().ok()?),
        None => address.parse().ok()?,
    };
    Some(match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None if v6.is_loopback() => v6.to_string(),
            None => {
                let s = v6.segments();
                let network = Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
                format!("{network}/64")
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_counts_as_itself_and_ipv6_by_its_64() {
        let cases = [
            ("127.0.0.1", Some("127.0.0.1")),
            (" 10.0.0.1 ", Some("10.0.0.1")),
            ("::ffff:10.0.0.1", Some("10.0.0.1")),
            ("::1", Some("::1")),
            ("2001:db8:1:2:aaaa::5", Some("2001:db8:1:2::/64")),
            (
                "2001:db8:1:2:ffff:ffff:ffff:ffff",
                Some("2001:db8:1:2::/64"),
            ),
            ("2001:db8:1:2::/64", Some("2001:db8:1:2::/64")),
            ("10.0.0.1/64", None),
            ("stdio", None),
            ("", None),
        ];
        for (address, network) in cases {
            assert_eq!(source_network(address).as_deref(), network, "{address:?}");
        }
    }
}
