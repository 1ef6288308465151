//! A TCP hop between a service and a server that a test can cut: [`Proxy::cut`] closes every
//! connection through it and refuses new ones until [`Proxy::restore`]. For losing one
//! connection (a listener's) while everything else keeps working.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone)]
pub struct Proxy {
    pub port: u16,
    down: Arc<AtomicBool>,
    /// Bumped by each cut: connections opened before it end.
    cuts: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
}

impl Proxy {
    /// Forwards `127.0.0.1:<port>` to `target` (`host:port`).
    pub async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = Self {
            port,
            down: Arc::new(AtomicBool::new(false)),
            cuts: watch::channel(0).0,
            accepted: Arc::new(AtomicU64::new(0)),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if p.down.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                p.accepted.fetch_add(1, Ordering::SeqCst);
                let mut cut = p.cuts.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        proxy
    }

    /// Closes every connection through the proxy and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        self.cuts.send_modify(|n| *n += 1);
    }

    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Connections taken so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}
