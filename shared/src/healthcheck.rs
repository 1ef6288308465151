//! `api healthcheck` and `worker healthcheck`: one `GET` to a service's own health route, for
//! container healthchecks that must not need curl in the image. A wildcard listen address
//! (`0.0.0.0`, `[::]`) is probed on loopback. Exit status 0 for a `200`, 1 for anything else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the whole probe may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// Where to probe a service listening on `addr`.
pub fn probe_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// `GET path` on `addr`: the status code, or why there is none.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let attempt = async {
        let mut stream = TcpStream::connect(probe_addr(addr))
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send: {e}"))?;
        let mut head = [0u8; 64];
        let mut read = 0;
        while read < 12 {
            let n = stream
                .read(&mut head[read..])
                .await
                .map_err(|e| format!("cannot read: {e}"))?;
            if n == 0 {
                break;
            }
            read += n;
        }
        let line = String::from_utf8_lossy(&head[..read]).to_string();
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
    };
    tokio::time::timeout(TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer from {addr} within {TIMEOUT:?}"))?
}

/// Probes, prints one line, and gives the exit status.
pub async fn run(what: &str, addr: SocketAddr, path: &str) -> ExitCode {
    match get_status(addr, path).await {
        Ok(200) => {
            println!("{what} healthy ({path} on {addr})");
            ExitCode::SUCCESS
        }
        Ok(code) => {
            eprintln!("{what} unhealthy: {path} on {addr} answered {code}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{what} unhealthy: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_addresses_are_probed_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(probe_addr(any).to_string(), "127.0.0.1:8080");
        let any6: SocketAddr = "[::]:9091".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(probe_addr(any6).to_string(), "[::1]:9091");
        let own: SocketAddr = "10.1.2.3:80".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(probe_addr(own), own);
    }
}
