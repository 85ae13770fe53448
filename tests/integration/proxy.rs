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
    task::{AbortHandle, JoinHandle},
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
    /// Every task holding a client socket, both directions of each connection.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

pub(crate) struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: AbortHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.state.connections.lock().unwrap().drain(..) {
            task.abort();
        }
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
                    match state.mode.load(Ordering::SeqCst) {
                        REFUSE => {} // dropped: the client sees the connection close
                        SWALLOW => {
                            let held = tokio::spawn(async move {
                                let _held = client;
                                std::future::pending::<()>().await;
                            });
                            state.connections.lock().unwrap().push(held);
                        }
                        _ => pump(client, &state).await,
                    }
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
    pub(crate) async fn cut(&self) {
        self.switch(REFUSE).await;
    }

    /// The server hangs: open connections are closed, new ones accepted and never answered.
    pub(crate) async fn swallow(&self) {
        self.switch(SWALLOW).await;
    }

    /// The server is back.
    pub(crate) async fn restore(&self) {
        self.switch(FORWARD).await; // swallowed connections are closed too
    }

    /// Changes the mode, and returns once every connection opened before is closed.
    async fn switch(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
        let tasks: Vec<_> = self.state.connections.lock().unwrap().drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Connects `client` to the server: one task a direction, both registered.
async fn pump(client: TcpStream, state: &Arc<State>) {
    let Ok(server) = TcpStream::connect(state.upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let up = tokio::spawn({
        let state = state.clone();
        async move {
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
        }
    });
    state.connections.lock().unwrap().extend([down, up]);
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

/// The proxies in front of every node a store talks to (one for a single server).
pub(crate) struct Proxies(Vec<Proxy>);

impl Proxies {
    pub(crate) fn new(proxies: Vec<Proxy>) -> Self {
        Self(proxies)
    }

    /// The messages sent through all of them.
    pub(crate) fn messages(&self) -> usize {
        self.0.iter().map(Proxy::messages).sum()
    }

    pub(crate) async fn cut(&self) {
        for proxy in &self.0 {
            proxy.cut().await;
        }
    }

    pub(crate) async fn swallow(&self) {
        for proxy in &self.0 {
            proxy.swallow().await;
        }
    }

    pub(crate) async fn restore(&self) {
        for proxy in &self.0 {
            proxy.restore().await;
        }
    }
}
