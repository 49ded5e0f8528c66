//! The proxy's listening addresses, checked: each must be free before pingora is handed it (it
//! would retry a taken port for ~30 s, then panic in a thread of its own while the process
//! runs on), must accept once the server runs (else the process ends, loudly), and must accept
//! for `/readyz` to say ready.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tracing::error;

/// How long the server may take to listen on every address before the process gives up
/// (pingora's own retries of a taken port last about 30 s).
const LISTEN_WITHIN: Duration = Duration::from_secs(40);

/// Binds each address once and lets it go: a taken port (or one this user may not bind) ends
/// the start with one line naming it.
pub fn check_free(addrs: &[(&str, SocketAddr)]) -> Result<()> {
    for (role, addr) in addrs {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!("cannot listen on {addr} ({role}): {e}");
        }
    }
    Ok(())
}

/// Where to connect to reach a listener (an unspecified address is reached on loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Whether the listener takes a connection now (one on port 0, whose port the system picks,
/// cannot be checked and counts as taking them).
pub async fn accepts(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return true;
    }
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(reachable(addr))
        )
        .await,
        Ok(Ok(_))
    )
}

/// The first listener of `addrs` that does not accept now.
pub async fn first_closed(addrs: &[SocketAddr]) -> Option<SocketAddr> {
    for &addr in addrs {
        if !accepts(addr).await {
            return Some(addr);
        }
    }
    None
}

/// Ends the process when a listener does not accept within [`LISTEN_WITHIN`] of the start.
pub struct Watch {
    pub addrs: Vec<(&'static str, SocketAddr)>,
}

#[async_trait]
impl BackgroundService for Watch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let started = Instant::now();
        let mut waiting = self.addrs.clone();
        while !waiting.is_empty() {
            let mut still = Vec::new();
            for (role, addr) in waiting {
                if !accepts(addr).await {
                    still.push((role, addr));
                }
            }
            waiting = still;
            if let Some((role, addr)) = waiting.first()
                && started.elapsed() >= LISTEN_WITHIN
            {
                error!(%addr, role, "Cannot listen; stopping");
                eprintln!(
                    "strangler: cannot listen on {addr} ({role}): not accepting {}s after the start",
                    LISTEN_WITHIN.as_secs()
                );
                std::process::exit(1);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
