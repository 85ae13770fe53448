//! A loopback TCP proxy in front of a real server: counts the client's protocol messages
//! (round trips), and can refuse or swallow connections to fake an outage.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::AbortHandle,
};

#[derive(Clone, Copy, Debug)]
pub(crate) enum Protocol {
    /// Redis: one RESP array per command.
    Resp,
    /// PostgreSQL: one `Sync` (extended protocol) or `Query` (simple protocol) per round trip.
    Postgres,
}

const FORWARD: u8 = 0;
const REFUSE: u8 = 1;
const SWALLOW: u8 = 2;

struct State {
    upstream: SocketAddr,
    protocol: Protocol,
    mode: AtomicU8,
    messages: AtomicUsize,
    connections: Mutex<Vec<AbortHandle>>,
}

pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

impl Proxy {
    pub(crate) async fn start(upstream: SocketAddr, protocol: Protocol) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream,
            protocol,
            mode: AtomicU8::new(FORWARD),
            messages: AtomicUsize::new(0),
            connections: Mutex::default(),
        });
        let accept = tokio::spawn({
            let state = state.clone();
            async move {
                loop {
                    let (client, _) = listener.accept().await.unwrap();
                    let task = match state.mode.load(Ordering::SeqCst) {
                        REFUSE => continue, // dropped: the client sees the connection close
                        SWALLOW => tokio::spawn(async move {
                            let _held = client;
                            std::future::pending::<()>().await;
                        }),
                        _ => tokio::spawn(pump(client, state.clone())),
                    };
                    state.connections.lock().unwrap().push(task.abort_handle());
                }
            }
        })
        .abort_handle();
        Self {
            addr,
            state,
            accept,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages the clients have sent so far.
    pub(crate) fn messages(&self) -> usize {
        self.state.messages.load(Ordering::SeqCst)
    }

    /// The server goes away: open connections are closed, new ones refused.
    pub(crate) fn cut(&self) {
        self.state.mode.store(REFUSE, Ordering::SeqCst);
        self.drop_connections();
    }

    /// The server hangs: open connections are closed, new ones accepted and never answered.
    pub(crate) fn swallow(&self) {
        self.state.mode.store(SWALLOW, Ordering::SeqCst);
        self.drop_connections();
    }

    /// The server is back.
    pub(crate) fn restore(&self) {
        self.state.mode.store(FORWARD, Ordering::SeqCst);
        self.drop_connections(); // swallowed ones too
    }

    fn drop_connections(&self) {
        for task in self.state.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn pump(client: TcpStream, state: Arc<State>) {
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down =
        tokio::spawn(async move { tokio::io::copy(&mut server_read, &mut client_write).await });
    let mut counter = Counter::new(state.protocol);
    let mut buf = vec![0; 64 * 1024];
    loop {
        let n = match client_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        state
            .messages
            .fetch_add(counter.feed(&buf[..n]), Ordering::SeqCst);
        if server_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    down.abort();
}

/// Splits a client's byte stream into protocol messages.
struct Counter {
    protocol: Protocol,
    pending: Vec<u8>,
    started: bool,
}

impl Counter {
    fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            pending: Vec::new(),
            started: false,
        }
    }

    /// Takes more bytes; returns how many countable messages they completed.
    fn feed(&mut self, bytes: &[u8]) -> usize {
        self.pending.extend_from_slice(bytes);
        let mut counted = 0;
        loop {
            let parsed = match self.protocol {
                Protocol::Resp => resp_command(&self.pending).map(|len| (len, true)),
                Protocol::Postgres => self.postgres_message(),
            };
            let Some((len, countable)) = parsed else {
                return counted;
            };
            self.pending.drain(..len);
            counted += usize::from(countable);
        }
    }

    fn postgres_message(&mut self) -> Option<(usize, bool)> {
        if !self.started {
            // The startup message: a length, then the rest, no type byte.
            let len = u32::from_be_bytes(self.pending.get(..4)?.try_into().unwrap()) as usize;
            if self.pending.len() < len {
                return None;
            }
            self.started = true;
            return Some((len, false));
        }
        let kind = *self.pending.first()?;
        let len = u32::from_be_bytes(self.pending.get(1..5)?.try_into().unwrap()) as usize + 1;
        if self.pending.len() < len {
            return None;
        }
        Some((len, kind == b'S' || kind == b'Q'))
    }
}

/// The length of the complete RESP command (`*N\r\n` then N bulk strings) at the start of
/// `bytes`, if it is all there.
fn resp_command(bytes: &[u8]) -> Option<usize> {
    fn line(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
        let end = at + bytes.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let number = std::str::from_utf8(&bytes[at + 1..end])
            .ok()?
            .parse()
            .ok()?;
        Some((number, end + 2))
    }
    assert_eq!(
        bytes.first().copied().unwrap_or(b'*'),
        b'*',
        "RESP arrays only"
    );
    let (count, mut at) = line(bytes, 0)?;
    for _ in 0..count {
        let (len, start) = line(bytes, at)?;
        at = start + len + 2;
        if bytes.len() < at {
            return None;
        }
    }
    Some(at)
}

#[test]
fn resp_commands_are_split_even_with_binary_payloads() {
    let mut counter = Counter::new(Protocol::Resp);
    let command = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\n\r\n\r\n\r\n";
    assert_eq!(counter.feed(&command[..10]), 0);
    assert_eq!(counter.feed(&command[10..]), 1);
    assert_eq!(counter.feed(&[command.as_slice(), command].concat()), 2);
}
