//! Where the push client may connect: a push endpoint is a URL the subscriber chose, and the
//! server POSTs to it, so without a check a subscriber could make the server reach this
//! machine or its network (SSRF).
//!
//! The check runs where the connection is made, not only when the subscription is taken: the
//! client's DNS resolver ([`PublicOnly`]) keeps only public unicast addresses of a name and
//! fails when none is left, so a name that resolved to a public address at subscribe time and
//! to `127.0.0.1` at send time (DNS rebinding) still cannot reach loopback. A URL whose host
//! is an address skips DNS, so [`check_target`] checks it before each request, and allows only
//! `https` on port 443, the port every browser's push service uses. The URL is parsed the way
//! browsers parse it (`url`, WHATWG), so `https://127.1/`, `https://0x7f.1/` and
//! `https://[::ffff:127.0.0.1]/` are all seen as the loopback address they are.
//!
//! `PUSH_ALLOW_LOCAL_ENDPOINTS` (tests with a push service on this machine) lifts all of it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::error::{Error, Result};

/// The only port push requests go to.
pub const PUSH_PORT: u16 = 443;

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918), shared
/// (RFC 6598), link-local, unique-local, unspecified, multicast, broadcast, documentation or
/// reserved. IPv4 inside IPv6 (mapped, compatible, NAT64) is judged as the IPv4 it carries.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (carrier-grade NAT), RFC 6598.
        || (a == 100 && (64..128).contains(&b))
        // IETF protocol assignments, RFC 6890.
        || (a == 192 && b == 0 && c == 0)
        // Benchmarking, RFC 2544.
        || (a == 198 && (b == 18 || b == 19))
        // Reserved (240/4).
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96): the IPv4 inside.
    if segments[..6] == [0; 6] || segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [_, _, _, _, _, _, hi, lo] = segments;
        let embedded = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return !ip.is_unspecified() && !ip.is_loopback() && is_public_v4(embedded);
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // Unique local, fc00::/7.
        || (segments[0] & 0xfe00) == 0xfc00
        // Link-local, fe80::/10.
        || (segments[0] & 0xffc0) == 0xfe80
        // Site-local (deprecated), fec0::/10.
        || (segments[0] & 0xffc0) == 0xfec0
        // Documentation, 2001:db8::/32.
        || (segments[0] == 0x2001 && segments[1] == 0x0db8))
}

/// Checks a push endpoint before a request: `https`, port 443, and a host that is a name
/// (which [`PublicOnly`] resolves) or a public address. With `allow_local`, any http(s) URL.
pub fn check_target(endpoint: &str, allow_local: bool) -> Result<Url> {
    let refuse = |why: &str| Err(Error::validation(format!("endpoint {why}")));
    let Ok(url) = Url::parse(endpoint) else {
        return refuse("is not a URL");
    };
    if !url.username().is_empty() || url.password().is_some() {
        return refuse("must not carry credentials");
    }
    if allow_local {
        return match url.scheme() {
            "https" | "http" if url.host().is_some() => Ok(url),
            _ => refuse("must be an http(s) URL"),
        };
    }
    if url.scheme() != "https" {
        return refuse("must be an https:// URL");
    }
    if url.port_or_known_default() != Some(PUSH_PORT) {
        return refuse("must use port 443, as push services do");
    }
    match url.host() {
        Some(url::Host::Domain(_)) => Ok(url),
        Some(url::Host::Ipv4(ip)) if is_public_v4(ip) => Ok(url),
        Some(url::Host::Ipv6(ip)) if is_public_v6(ip) => Ok(url),
        Some(_) => refuse("must not be a loopback, private or local address"),
        None => refuse("has no host"),
    }
}

/// The push client's DNS resolver: the system's answer, minus every address that is not
/// public; an error when nothing is left, so the request never connects.
#[derive(Debug, Default, Clone, Copy)]
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let public = resolve_public(&host).await?;
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// The public addresses `host` resolves to; an error when it resolves to none (or fails).
pub async fn resolve_public(host: &str) -> std::io::Result<Vec<SocketAddr>> {
    let all: Vec<SocketAddr> = tokio::net::lookup_host((host, PUSH_PORT)).await?.collect();
    let public: Vec<SocketAddr> = all.iter().copied().filter(|a| is_public(a.ip())).collect();
    if public.is_empty() {
        tracing::warn!(host, addresses = ?all, "push: refused an endpoint that resolves to no public address");
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{host} resolves to no public address"),
        ));
    }
    Ok(public)
}

/// The HTTP client push requests go through: no redirects (an endpoint is a subscriber's
/// choice: never follow it somewhere else), no proxy from the environment (the resolver must
/// see the endpoint's own name), and unless `allow_local`, the [`PublicOnly`] resolver.
pub fn client(allow_local: bool, connect_timeout: Duration) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(connect_timeout);
    if !allow_local {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    builder
        .build()
        .map_err(|e| Error::Internal(format!("cannot build the push client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_pass() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "142.250.74.10",
            "1.1.1.1",
            "2a00:1450:4007:80e::200a",
            "::ffff:142.250.74.10",
            "64:ff9b::8efa:4a0a",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} must pass");
        }
    }

    #[test]
    fn targets_are_https_on_443_with_a_name_or_public_address() {
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://web.push.apple.com:443/Q",
            "https://142.250.74.10/x",
        ] {
            check_target(ok, false).unwrap();
        }
        for bad in [
            "http://fcm.googleapis.com/x",
            "https://fcm.googleapis.com:8443/x",
            "https://127.1/x",
            "https://0x7f.1/x",
            "https://0177.0.0.1/x",
            "https://2130706433/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest",
            "https://user:pw@push.example.net/x",
            "not a url",
        ] {
            assert!(check_target(bad, false).is_err(), "{bad}");
        }
        check_target("http://127.0.0.1:9/push", true).unwrap();
        assert!(check_target("ftp://127.0.0.1/x", true).is_err());
    }

    /// The resolver is what a DNS-rebinding name meets at connect time: `localhost` (a name,
    /// so it reaches the resolver; the system resolves it to loopback only) gives nothing to
    /// connect to. `localhost.` is refused too (resolved to loopback, or not at all).
    #[tokio::test]
    async fn the_resolver_gives_no_local_address() {
        let name: Name = "localhost".parse().unwrap();
        let refused = PublicOnly.resolve(name).await;
        let error = refused.err().expect("localhost is refused").to_string();
        assert!(error.contains("no public address"), "{error}");
        let name: Name = "localhost.".parse().unwrap();
        assert!(PublicOnly.resolve(name).await.is_err());
    }
}
