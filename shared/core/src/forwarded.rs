//! The caller's address behind reverse proxies. `X-Forwarded-For` and
//! `Forwarded` (RFC 7239) are believed only from a trusted proxy, and read
//! from the right: each trusted hop is skipped and the first address not in
//! the list is the caller (the leftmost entries are whatever the caller wrote).

use std::net::IpAddr;

use ipnet::IpNet;

/// The caller's address: `peer` itself unless it is a trusted proxy, else the
/// nearest untrusted hop that the forwarding headers name. `forwarded` is the
/// `Forwarded` header (preferred, being the standard) and `x_forwarded_for`
/// the de-facto one; unparseable entries end the walk at the last good hop.
pub fn client_ip(peer: IpAddr, forwarded: Option<&str>, x_forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = match (forwarded, x_forwarded_for) {
        (Some(f), _) => f.split(',').filter_map(forwarded_for).collect(),
        (None, Some(x)) => x.split(',').map(str::trim).collect(),
        (None, None) => return peer,
    };
    let mut client = peer;
    for hop in hops.iter().rev() {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            None => break,
        }
    }
    client
}

/// The `for=` value of one `Forwarded` element.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then(|| v.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap_or_else(|_| panic!("{s}"))).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("{s}"))
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("203.0.113.9"), None, Some("1.1.1.1"), &trusted), ip("203.0.113.9"));
        assert_eq!(client_ip(ip("203.0.113.9"), Some("for=1.1.1.1"), None, &[]), ip("203.0.113.9"));
    }

    #[test]
    fn the_nearest_untrusted_hop_is_the_caller() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        // The caller wrote 6.6.6.6 itself; the edge proxy (10.0.0.2) saw 198.51.100.7.
        let xff = "6.6.6.6, 198.51.100.7, 10.0.0.2";
        assert_eq!(client_ip(ip("10.0.0.1"), None, Some(xff), &trusted), ip("198.51.100.7"));
        let fwd = r#"for=6.6.6.6, for="[2001:db8::5]:4711";proto=https, for=10.0.0.2"#;
        assert_eq!(client_ip(ip("::1"), Some(fwd), Some("9.9.9.9"), &trusted), ip("2001:db8::5"));
        assert_eq!(client_ip(ip("10.0.0.1"), None, Some("198.51.100.7:5000"), &trusted), ip("198.51.100.7"));
    }

    #[test]
    fn garbage_stops_at_the_last_good_hop() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(client_ip(ip("10.0.0.1"), None, Some("unknown, 10.0.0.3"), &trusted), ip("10.0.0.3"));
        assert_eq!(client_ip(ip("10.0.0.1"), Some("for=_hidden"), None, &trusted), ip("10.0.0.1"));
        assert_eq!(client_ip(ip("10.0.0.1"), None, None, &trusted), ip("10.0.0.1"));
    }
}
