//! A loopback TCP proxy that counts round trips and can add latency.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Counters shared by every connection through a [`TcpProxy`].
#[derive(Debug, Default)]
pub struct ProxyStats {
    round_trips: AtomicU64,
    connections: AtomicU64,
}

impl ProxyStats {
    /// Client-to-server bursts that followed server data (or opened a connection): each is
    /// one round trip the client waited for. Counted exactly, from the byte streams.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A proxy on `127.0.0.1` in front of `upstream`, on plain OS threads (so the injected
/// delay is as precise as `thread::sleep`, not a 1 ms timer wheel). Each chunk is delayed
/// by `one_way` in each direction, in order. Runs until the process ends.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    stats: Arc<ProxyStats>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` with `one_way` latency added in each direction.
    ///
    /// # Errors
    /// An I/O error when the proxy cannot bind its port on 127.0.0.1.
    pub fn start(upstream: SocketAddr, one_way: Duration) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let shared = stats.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                // true while the last bytes seen went server -> client
                let turn = Arc::new(AtomicBool::new(true));
                if let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) {
                    pump(client, s2, one_way, turn.clone(), Some(shared.clone()));
                    pump(server, c2, one_way, turn, None);
                }
            }
        });
        Ok(TcpProxy { addr, stats })
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }
}

/// Copies `from` -> `to` through a delay line. With `count`, it is the client->server
/// direction and counts a round trip whenever it reads after server data.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    delay: Duration,
    turn: Arc<AtomicBool>,
    count: Option<Arc<ProxyStats>>,
) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    match &count {
                        Some(stats) => {
                            if turn.swap(false, Ordering::SeqCst) {
                                stats.round_trips.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        None => turn.store(true, Ordering::SeqCst),
                    }
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        while let Ok((due, bytes)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&bytes).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
