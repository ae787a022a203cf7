//! Addresses as a client on the same host dials them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The address a local client dials to reach a server bound to `bound`: the bound address
/// itself, or loopback when it is bound to "any" (0.0.0.0, ::).
pub fn dialable(bound: SocketAddr) -> SocketAddr {
    match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), bound.port())
        }
        _ => bound,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_is_dialled_on_loopback() {
        let d = |s: &str| dialable(s.parse().expect("address")).to_string();
        assert_eq!(d("0.0.0.0:9090"), "127.0.0.1:9090");
        assert_eq!(d("[::]:9090"), "[::1]:9090");
        assert_eq!(d("127.0.0.1:9100"), "127.0.0.1:9100");
        assert_eq!(d("10.0.0.5:9090"), "10.0.0.5:9090");
    }
}
