//! Who the client is, behind the proxies we trust (`TRUSTED_PROXIES`).
//!
//! The socket's peer is the client unless it is a trusted proxy. When it is, the hops the
//! proxies recorded are read from the right (the nearest first): `X-Forwarded-For`, or
//! `Forwarded` (RFC 7239) when there is no `X-Forwarded-For`. The client is the first hop that
//! is not a trusted proxy; everything left of it may have been written by the client itself and
//! is never believed. A hop that is not an address (`unknown`, an obfuscated name) ends the
//! walk at the last trusted hop. With no trusted proxies configured the headers are ignored.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use shared::cidr::{Cidr, canonical};

/// The client's address, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// The client of a request that came from `peer` with `headers`.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let mut client = peer;
    for hop in hops(headers).into_iter().rev() {
        let Some(ip) = hop else { break };
        client = canonical(ip);
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The recorded hops, leftmost first; `None` for one that is not an address.
fn hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|s| s.trim().to_owned()))
            .filter(|s| !s.is_empty())
            .collect()
    };
    let forwarded_for = values("x-forwarded-for");
    if !forwarded_for.is_empty() {
        return forwarded_for.iter().map(|h| parse_node(h)).collect();
    }
    values("forwarded")
        .iter()
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
                .and_then(|(_, v)| parse_node(v.trim().trim_matches('"')))
        })
        .collect()
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|v6| v6.parse().ok())
}

/// The middleware: every request carries its [`ClientIp`]. Served without our accept loop (a
/// test calling the router directly), there is no peer, and every request is `0.0.0.0`.
pub async fn resolve(State(trusted): State<Arc<[Cidr]>>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    let ip = client_ip(peer, req.headers(), &trusted);
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn trusted() -> Vec<Cidr> {
        vec![
            "10.0.0.0/8".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ]
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted()),
            ip("203.0.113.9")
        );
        // No proxies configured: the headers mean nothing.
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &[]), ip("10.0.0.2"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        // The client forged the first entry; our two proxies appended the rest.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.5")]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
        // Several header lines count as one list, in order.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7:5123"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let h = headers(&[(
            "forwarded",
            r#"for=1.2.3.4, for="[2001:db8:cafe::17]:4711";proto=https, For="[2606:4700::1]";by=10.0.0.1"#,
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), &h, &trusted()),
            ip("2606:4700::1")
        );
    }

    #[test]
    fn an_unreadable_hop_stops_at_the_last_trusted_one() {
        let h = headers(&[("forwarded", "for=198.51.100.7, for=unknown, for=10.0.0.9")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.9"));
        // Only proxies in the chain: the leftmost is as close to the client as we can tell.
        let h = headers(&[("x-forwarded-for", "10.0.0.7, 10.0.0.8")]);
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &trusted()), ip("10.0.0.7"));
    }

    #[test]
    fn ipv4_mapped_peers_are_matched_as_ipv4() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), &h, &trusted()),
            ip("198.51.100.7")
        );
    }
}
