//! A loopback TCP proxy that cuts connections: before a request is through (the server never
//! sees it), in the middle of one, or in the middle of the reply (the server stored the batch
//! and the client never learns it). Seeded, so a failing run's choices can be replayed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct ChaosProxy {
    addr: SocketAddr,
    cuts: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// Forwards to `upstream`; each connection is cut, with probability `cut_percent`, in one
    /// direction after a random number of bytes: below `up_within` of requests, or below
    /// `down_within` of replies. Clients reuse connections, so a cut can fall in any request.
    pub async fn start(
        upstream: SocketAddr,
        seed: u64,
        cut_percent: u64,
        (up_within, down_within): (u64, u64),
    ) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cuts = Arc::new(AtomicU64::new(0));
        let counter = cuts.clone();
        let task = tokio::spawn(async move {
            let mut rng = Rng(seed | 1);
            while let Ok((client, _)) = listener.accept().await {
                let plan = if rng.below(100) < cut_percent {
                    let upload = rng.below(2) == 0;
                    Some((upload, rng.below(if upload { up_within } else { down_within })))
                } else {
                    None
                };
                tokio::spawn(relay(client, upstream, plan, counter.clone()));
            }
        });
        ChaosProxy { addr, cuts, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `plan`: cut the upload (`true`) or the reply (`false`) after that many bytes.
async fn relay(client: TcpStream, upstream: SocketAddr, plan: Option<(bool, u64)>, cuts: Arc<AtomicU64>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_rd, mut client_wr) = client.into_split();
    let (mut server_rd, mut server_wr) = server.into_split();
    let limit = |upload: bool| match plan {
        Some((u, at)) if u == upload => at,
        _ => u64::MAX,
    };
    let up = pipe(&mut client_rd, &mut server_wr, limit(true));
    let down = pipe(&mut server_rd, &mut client_wr, limit(false));
    // The first direction to end (closed, or cut) ends both: dropping the halves closes the sockets.
    let cut = tokio::select! {
        cut = up => cut,
        cut = down => cut,
    };
    if cut {
        cuts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Copies until EOF (false) or until `limit` bytes have passed (true: cut).
async fn pipe(
    from: &mut tokio::net::tcp::OwnedReadHalf,
    to: &mut tokio::net::tcp::OwnedWriteHalf,
    limit: u64,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    let mut passed = 0u64;
    loop {
        let room = (limit - passed).min(buf.len() as u64) as usize;
        if room == 0 {
            return true;
        }
        let n = match from.read(&mut buf[..room]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return false;
        }
        passed += n as u64;
    }
}

/// xorshift64: small, seeded, good enough to pick fault points.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seed for this run: fixed per test in the suite (a failure comes from a change in the
/// code or the machine's timing, never from a new draw); `KCAP_FAULT_SEED=<n>` replays one,
/// `KCAP_FAULT_SEED=clock` draws a new one for a soak. Printed, so a failing run's output names it.
pub fn seed(test: &str) -> u64 {
    let fixed = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let seed = match std::env::var("KCAP_FAULT_SEED").ok().as_deref() {
        Some("clock") => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(fixed, |d| d.as_nanos() as u64),
        Some(n) => n.parse().unwrap_or(fixed),
        None => fixed,
    };
    eprintln!("{test}: KCAP_FAULT_SEED={seed}");
    seed
}
