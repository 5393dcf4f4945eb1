//! Upstream base URLs as admins see them (credentials redacted) and the
//! addresses a channel may not point at (link-local and cloud metadata).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Splits `scheme://authority/rest` into its three parts (the authority
/// without the `//`); `None` when there is no `://`.
fn split(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some((scheme, &rest[..end], &rest[end..]))
}

/// The URL with its userinfo replaced: `http://user:***@host/v1` (or
/// `http://***@host/v1` when only a user, often a token, is given).
pub fn redact(url: &str) -> String {
    let Some((scheme, authority, rest)) = split(url) else { return url.to_string() };
    let Some((userinfo, host)) = authority.rsplit_once('@') else { return url.to_string() };
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_string(),
    };
    format!("{scheme}://{shown}@{host}{rest}")
}

/// `text` (an error message, say) with the userinfo of every URL in it redacted.
pub fn redact_in_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i].rfind(|c: char| !(c.is_ascii_alphanumeric() || "+-.".contains(c))).map_or(0, |j| j + 1);
        let end = rest[i..].find(|c: char| c.is_whitespace() || "\"'<>()`,".contains(c)).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The host of a URL, without userinfo, port or IPv6 brackets.
pub fn host(url: &str) -> Option<String> {
    let (_, authority, _) = split(url)?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// One part of an IPv4 literal as URL parsers read it: decimal, `0x` hex or `0` octal.
fn v4_part(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return if h.is_empty() { Some(0) } else { u64::from_str_radix(h, 16).ok() };
    }
    if s.len() > 1 && s.starts_with('0') {
        return u64::from_str_radix(&s[1..], 8).ok();
    }
    s.parse().ok()
}

/// IPv4 the way WHATWG URL parsers (and so HTTP clients) read it, including
/// `2852039166`, `0xa9fea9fe` and `169.254.43518`.
fn lenient_v4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let nums: Vec<u64> = parts.iter().map(|p| v4_part(p)).collect::<Option<_>>()?;
    let (last, head) = nums.split_last()?;
    if head.iter().any(|n| *n > 255) || *last >= 1u64 << (8 * (5 - nums.len())) {
        return None;
    }
    let mut v: u64 = *last;
    for (i, n) in head.iter().enumerate() {
        v += n << (8 * (3 - i));
    }
    u32::try_from(v).ok().map(Ipv4Addr::from)
}

/// The literal IP a host names, if it is one.
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    lenient_v4(host).map(IpAddr::V4)
}

/// Link-local (169.254.0.0/16, fe80::/10, IPv4-mapped forms included) or a
/// cloud metadata address (AWS `fd00:ec2::254`).
pub fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4.is_link_local();
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80 || v6 == Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)
        }
    }
}

/// Refuses a base URL whose host is a link-local or metadata address (given
/// as a literal IP) or a well-known metadata host name, unless allowed.
/// Loopback and private addresses are fine (self-hosted models).
pub fn check_upstream(url: &str, allow_link_local: bool) -> Result<(), String> {
    if allow_link_local {
        return Ok(());
    }
    let Some(host) = host(url) else { return Ok(()) };
    let metadata_name = matches!(host.as_str(), "metadata.google.internal" | "metadata.goog" | "instance-data");
    if metadata_name || literal_ip(&host).is_some_and(is_link_local) {
        return Err(format!(
            "`{}` points at a link-local or cloud metadata address; set `[relay] allow_link_local_upstreams = true` to allow it",
            redact(url)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_userinfo() {
        assert_eq!(redact("http://user:password@host/v1"), "http://user:***@host/v1");
        assert_eq!(redact("https://tok@host:8443/v1?a=b@c"), "https://***@host:8443/v1?a=b@c");
        assert_eq!(redact("https://api.openai.com/v1"), "https://api.openai.com/v1");
        assert_eq!(redact("http://u:p@ss@host"), "http://u:***@host");
        assert_eq!(redact("not a url"), "not a url");
        assert_eq!(
            redact_in_text("error sending request for url (http://u:secret@h:1/v1/models): refused"),
            "error sending request for url (http://u:***@h:1/v1/models): refused"
        );
        assert_eq!(redact_in_text("no urls here"), "no urls here");
    }

    #[test]
    fn refuses_link_local_and_metadata() {
        for bad in [
            "http://169.254.169.254/latest",
            "http://[fe80::1]:80/v1",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:169.254.169.254]/",
            "http://2852039166/",
            "http://0xa9fea9fe/",
            "http://169.254.43518/",
            "http://user:pw@169.254.1.1/",
            "http://metadata.google.internal/computeMetadata/v1",
        ] {
            let e = check_upstream(bad, false).expect_err(bad);
            assert!(!e.contains("pw@"), "{e}");
            assert!(check_upstream(bad, true).is_ok());
        }
        for ok in [
            "http://127.0.0.1:8000/v1",
            "http://10.0.0.5/v1",
            "http://192.168.1.2:11434",
            "http://[::1]:8080",
            "https://api.openai.com/v1",
            "http://localhost:11434",
        ] {
            assert!(check_upstream(ok, false).is_ok(), "{ok}");
        }
    }
}
