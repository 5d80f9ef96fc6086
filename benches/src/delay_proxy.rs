//! `strata-bench delay-proxy`: a TCP proxy that holds every byte a fixed time in each
//! direction — the propagation delay of a long path, for `benches/slow-link.sh` (this
//! kernel has no netem; the rate limit is tc's tbf on the veth pair).
//!
//! Each accepted connection gets its own upstream connection and two one-way lines. A line
//! reads whatever arrives (up to [`READ_CHUNK`] bytes at a time), stamps it with its arrival
//! time, and writes it to the other side `delay` after that time, in order; so a request and
//! its response take `2 × delay` longer, and a stream keeps its throughput. At most
//! `buffer` bytes wait in a line: a full line stops reading, and TCP pushes back on the
//! sender. EOF is passed on (delayed like data) as a write shutdown; a reset or error ends
//! the connection. One thread (tokio's current-thread runtime): the proxy shares the
//! machine with what is measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

/// The most one read takes off a socket (and so the granularity of the delay line).
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Args)]
pub(crate) struct DelayProxyArgs {
    /// Address to listen on (`IP:PORT`).
    listen: SocketAddr,
    /// Where each connection is forwarded to (`IP:PORT`).
    upstream: SocketAddr,
    /// Delay of every byte, each way, in milliseconds (a round trip costs twice this).
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// Bytes a direction may hold before it stops reading (at least the bandwidth × delay
    /// of the link behind it, or the proxy itself limits the throughput).
    #[arg(long, default_value_t = 4 << 20)]
    buffer: usize,
    /// Also hold the first bytes of each connection one extra round trip, the TCP handshake
    /// a real path would cost (the proxy accepts at once otherwise).
    #[arg(long)]
    handshake_rtt: bool,
}

pub(crate) fn run(args: &DelayProxyArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.buffer >= READ_CHUNK,
        "--buffer must be at least {READ_CHUNK} bytes"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: &DelayProxyArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let line = Line {
        delay: Duration::from_millis(args.delay_ms),
        buffer: args.buffer,
    };
    let first_extra = if args.handshake_rtt {
        line.delay * 2
    } else {
        Duration::ZERO
    };
    eprintln!(
        "delay-proxy: {} -> {}, {} ms each way{}",
        listener.local_addr()?,
        args.upstream,
        args.delay_ms,
        if args.handshake_rtt {
            ", +1 round trip per connection"
        } else {
            ""
        }
    );
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of descriptors and the like: keep serving the open connections.
                eprintln!("delay-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let upstream = args.upstream;
        tokio::spawn(async move {
            if let Err(e) = line.connect(client, upstream, first_extra).await {
                eprintln!("delay-proxy: {peer}: {e:#}");
            }
        });
    }
}

/// The settings of every one-way line.
#[derive(Debug, Clone, Copy)]
struct Line {
    delay: Duration,
    buffer: usize,
}

/// What travels down a line: data (holding its share of the buffer) or EOF.
#[derive(Debug)]
struct Segment {
    due: Instant,
    data: Option<(Vec<u8>, OwnedSemaphorePermit)>,
}

impl Line {
    async fn connect(
        self,
        client: TcpStream,
        upstream: SocketAddr,
        first_extra: Duration,
    ) -> anyhow::Result<()> {
        let server = TcpStream::connect(upstream)
            .await
            .with_context(|| format!("connect to {upstream}"))?;
        for s in [&client, &server] {
            s.set_nodelay(true)?;
        }
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        // Both directions at once; the first to fail ends the connection (dropping the other
        // direction closes its sockets).
        tokio::try_join!(
            self.carry(cr, sw, first_extra),
            self.carry(sr, cw, Duration::ZERO)
        )?;
        Ok(())
    }

    /// One direction: reads `from` into the line and writes it out to `to` when due.
    async fn carry(
        self,
        mut from: OwnedReadHalf,
        mut to: OwnedWriteHalf,
        first_extra: Duration,
    ) -> anyhow::Result<()> {
        let budget = Arc::new(Semaphore::new(self.buffer));
        let (tx, mut rx) = mpsc::unbounded_channel::<Segment>();
        let reader = async move {
            let mut buf = vec![0u8; READ_CHUNK];
            let mut extra = first_extra;
            loop {
                let n = from.read(&mut buf).await?;
                let due = Instant::now() + self.delay + std::mem::take(&mut extra);
                if n == 0 {
                    let _ = tx.send(Segment { due, data: None });
                    return Ok::<_, std::io::Error>(());
                }
                // n ≤ READ_CHUNK ≤ buffer: always grantable eventually.
                let permit = budget
                    .clone()
                    .acquire_many_owned(n as u32)
                    .await
                    .expect("never closed");
                if tx
                    .send(Segment {
                        due,
                        data: Some((buf[..n].to_vec(), permit)),
                    })
                    .is_err()
                {
                    return Ok(()); // the writer has failed; its error ends the connection
                }
            }
        };
        let writer = async move {
            while let Some(segment) = rx.recv().await {
                tokio::time::sleep_until(segment.due).await;
                match segment.data {
                    Some((data, _permit)) => to.write_all(&data).await?,
                    None => {
                        to.shutdown().await?;
                        break;
                    }
                }
            }
            Ok::<_, std::io::Error>(())
        };
        tokio::try_join!(reader, writer)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(delay_ms: u64, buffer: usize) -> (SocketAddr, SocketAddr) {
        // Upstream: echoes until EOF, then closes.
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = up.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    tokio::io::copy(&mut r, &mut w).await.unwrap();
                    w.shutdown().await.unwrap();
                });
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let line = Line {
            delay: Duration::from_millis(delay_ms),
            buffer,
        };
        tokio::spawn(async move {
            loop {
                let (c, _) = proxy.accept().await.unwrap();
                tokio::spawn(line.connect(c, up_addr, Duration::ZERO));
            }
        });
        (proxy_addr, up_addr)
    }

    #[tokio::test]
    async fn a_round_trip_takes_twice_the_delay() {
        let (proxy, _) = start(30, 1 << 20).await;
        let mut s = TcpStream::connect(proxy).await.unwrap();
        s.set_nodelay(true).unwrap();
        for _ in 0..3 {
            let t = Instant::now();
            s.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            s.read_exact(&mut got).await.unwrap();
            let rtt = t.elapsed();
            assert_eq!(&got, b"ping");
            assert!(rtt >= Duration::from_millis(60), "{rtt:?}");
            assert!(rtt < Duration::from_millis(200), "{rtt:?}");
        }
    }

    #[tokio::test]
    async fn streams_arrive_whole_and_in_order_through_a_small_buffer() {
        let (proxy, _) = start(5, READ_CHUNK).await;
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let s = TcpStream::connect(proxy).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap(); // EOF goes through, the echo closes, we read EOF
        });
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        writer.await.unwrap();
        assert_eq!(back.len(), data.len());
        assert!(back == data);
    }

    #[tokio::test]
    async fn a_refused_upstream_closes_the_client() {
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone_addr = gone.local_addr().unwrap();
        drop(gone);
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = proxy.local_addr().unwrap();
        let line = Line {
            delay: Duration::from_millis(1),
            buffer: READ_CHUNK,
        };
        tokio::spawn(async move {
            let (c, _) = proxy.accept().await.unwrap();
            assert!(line.connect(c, gone_addr, Duration::ZERO).await.is_err());
        });
        let mut s = TcpStream::connect(proxy_addr).await.unwrap();
        let mut buf = Vec::new();
        // EOF or a reset, not a hang.
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap();
    }
}
