//! Test harness for end-to-end runs of the real binary on 127.0.0.1.
//!
//! It starts `kcptun-rs` processes with generated configs, puts an in-test UDP relay between
//! client and server that can drop, duplicate, reorder and delay datagrams (seeded), and
//! offers TCP targets (echo, sink, scripted) plus a deterministic byte stream to check
//! transfers byte for byte without keeping them in memory.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub const PSK: &str = "mOOgv0j2mMDWTvXJq/VXQsu0Q1t5SbhW7rE2rRSm1E0=";

/// splitmix64: small, seeded, good enough for test data and loss decisions.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// A deterministic byte stream: byte `i` of stream `seed`. Generated in 8-byte words.
pub struct Stream {
    rng: Rng,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    pub fn new(seed: u64) -> Stream {
        Stream {
            rng: Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x1234_5678),
            word: [0; 8],
            used: 8,
        }
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.word = self.rng.next().to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

/// Writes `len` bytes of stream `seed` to `w`.
pub fn send_stream(w: &mut impl Write, seed: u64, len: usize) -> io::Result<()> {
    let mut s = Stream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        s.fill(&mut buf[..n]);
        w.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

/// Reads to end of stream from `r` and checks that it is exactly `len` bytes of stream
/// `seed`. Returns the number of bytes read, or the offset of the first wrong byte.
pub fn expect_stream(r: &mut impl Read, seed: u64, len: usize) -> Result<usize, String> {
    let mut s = Stream::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read error after {got} bytes: {e}")),
        };
        if got + n > len {
            return Err(format!("stream longer than {len} bytes"));
        }
        s.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            return Err(format!("byte {} differs", got + i));
        }
        got += n;
    }
    if got != len {
        return Err(format!("stream ended after {got} of {len} bytes"));
    }
    Ok(got)
}

pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `kcptun-rs` process, killed on drop. Its stderr goes to a file in the temp dir
/// that is printed if the test fails (on drop while panicking).
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
    /// The config file it was started with (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn signal(&mut self, sig: i32) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return; // already gone
        }
        // SAFETY-free: use the kill command to stay within safe code.
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SIGTERM first, so the process logs its final counters; then make sure.
        self.signal(15);
        self.wait_exit(Duration::from_secs(2));
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("----- {} log -----\n{}", self.name, self.log_text());
        }
    }
}

pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "kcptun-rs-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Starts the binary with `config` (a JSON value), waiting until `ready` (a TCP address to
/// connect to, or a UDP port to be bound) is up.
pub fn start(name: &str, config: &serde_json::Value) -> Proc {
    start_with(name, config, &[])
}

/// As [`start`], with the binary run under `wrapper` when it is not empty (e.g.
/// `["prlimit", "--nofile=40", "--"]`).
pub fn start_with(name: &str, config: &serde_json::Value, wrapper: &[&str]) -> Proc {
    let dir = tmpdir(name);
    let cfg = dir.join("config.json");
    std::fs::write(&cfg, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    let log = dir.join("stderr.log");
    let bin = env!("CARGO_BIN_EXE_kcptun-rs");
    let mut cmd = match wrapper.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let child = cmd
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start kcptun-rs");
    let p = Proc {
        child,
        name: name.to_string(),
        log,
        config: cfg,
    };
    // Wait for the process to say its sockets are up (connecting to the listener to find
    // out would open a real conversation).
    let t = Instant::now();
    let want_tcp = config.get("listen").is_some();
    loop {
        let log = p.log_text();
        if log.contains("udp socket on") && (!want_tcp || log.contains("listening on tcp")) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "{name} did not start:\n{log}"
        );
        thread::sleep(Duration::from_millis(10));
    }
    p
}

pub fn server_config(kcp_bind: SocketAddr, connect: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "kcp_bind": kcp_bind.to_string(),
        "connect": connect.to_string(),
        "method": "xchacha20poly1305_ietf",
        "psk": PSK,
        "loglevel": 6,
        "linger": 5,
        "time_wait": 10,
        "udp": {"sndbuf": 4194304, "rcvbuf": 4194304},
    })
}

pub fn client_config(listen: SocketAddr, kcp_connect: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "listen": listen.to_string(),
        "kcp_connect": kcp_connect.to_string(),
        "method": "xchacha20poly1305_ietf",
        "psk": PSK,
        "loglevel": 6,
        "linger": 5,
        "time_wait": 10,
        "udp": {"sndbuf": 4194304, "rcvbuf": 4194304},
    })
}

fn set_buffers(s: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: a valid socket and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&bytes as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// What the relay does to datagrams in one direction.
#[derive(Clone, Debug, Default)]
pub struct Impair {
    pub loss: f64,
    pub dup: f64,
    /// Probability that a datagram is held back and sent after the next one.
    pub reorder: f64,
    pub delay: Duration,
}

#[derive(Default)]
pub struct RelayCounters {
    pub c2s: AtomicU64,
    pub s2c: AtomicU64,
    pub dropped: AtomicU64,
}

/// A UDP relay: the client sends to `addr`; datagrams go to `server` from a second socket,
/// and replies come back to the last client address seen.
pub struct Relay {
    pub addr: SocketAddr,
    pub counters: Arc<RelayCounters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Every datagram seen client → server, if recording was asked for.
    pub recorded: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Datagrams from this client address are dropped (a NAT mapping that went away).
    pub block: Arc<Mutex<Option<SocketAddr>>>,
    last_client: Arc<Mutex<Option<SocketAddr>>>,
}

impl Relay {
    pub fn start(server: SocketAddr, c2s: Impair, s2c: Impair, seed: u64) -> Relay {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            server,
            c2s,
            s2c,
            seed,
            false,
        )
    }

    pub fn start_on(
        bind: SocketAddr,
        server: SocketAddr,
        c2s: Impair,
        s2c: Impair,
        seed: u64,
        record: bool,
    ) -> Relay {
        let front = UdpSocket::bind(bind).unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A 4 MiB queue each way, like the netlab configs' UDP buffers: the relay is a link
        // with a queue, not a 200 KiB funnel.
        set_buffers(&front, 4 << 20);
        set_buffers(&back, 4 << 20);
        back.connect(server).unwrap();
        let addr = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let block: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        }
        let mut threads = Vec::new();
        {
            // client -> server
            let (front, back) = (front.try_clone().unwrap(), back.try_clone().unwrap());
            let (stop, counters, client, recorded, block) = (
                stop.clone(),
                counters.clone(),
                client.clone(),
                recorded.clone(),
                block.clone(),
            );
            threads.push(thread::spawn(move || {
                let mut imp = Impairer::new(c2s, seed);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match front.recv_from(&mut buf) {
                        Ok((n, from)) => {
                            if *block.lock().unwrap() == Some(from) {
                                counters.dropped.fetch_add(1, Ordering::Relaxed);
                                continue;
                            }
                            *client.lock().unwrap() = Some(from);
                            counters.c2s.fetch_add(1, Ordering::Relaxed);
                            if record {
                                recorded.lock().unwrap().push(buf[..n].to_vec());
                            }
                            imp.push(&buf[..n], &counters, |d| {
                                let _ = back.send(d);
                            });
                        }
                        Err(_) => imp.tick(|d| {
                            let _ = back.send(d);
                        }),
                    }
                }
            }));
        }
        {
            // server -> client
            let (stop, counters, client) = (stop.clone(), counters.clone(), client.clone());
            threads.push(thread::spawn(move || {
                let mut imp = Impairer::new(s2c, seed ^ 0xdead_beef);
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let to = *client.lock().unwrap();
                    let send = |d: &[u8]| {
                        if let Some(to) = to {
                            let _ = front.send_to(d, to);
                        }
                    };
                    match back.recv(&mut buf) {
                        Ok(n) => {
                            counters.s2c.fetch_add(1, Ordering::Relaxed);
                            imp.push(&buf[..n], &counters, send);
                        }
                        Err(_) => imp.tick(send),
                    }
                }
            }));
        }
        Relay {
            addr,
            counters,
            stop,
            threads,
            recorded,
            block,
            last_client: client,
        }
    }

    /// Drops everything from the client's current address from now on.
    pub fn block_current_client(&self) -> Option<SocketAddr> {
        let c = *self.last_client.lock().unwrap();
        *self.block.lock().unwrap() = c;
        c
    }

    /// The client address the relay last heard from.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        *self.last_client.lock().unwrap()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Applies an [`Impair`] to a sequence of datagrams: loss, duplication, reordering by one
/// position, and a fixed delay (a queue of (due time, datagram)).
struct Impairer {
    imp: Impair,
    rng: Rng,
    held: Option<Vec<u8>>,
    delayed: std::collections::VecDeque<(Instant, Vec<u8>)>,
}

impl Impairer {
    fn new(imp: Impair, seed: u64) -> Impairer {
        Impairer {
            imp,
            rng: Rng(seed),
            held: None,
            delayed: Default::default(),
        }
    }

    fn push(&mut self, d: &[u8], counters: &RelayCounters, mut send: impl FnMut(&[u8])) {
        self.tick(&mut send);
        if self.rng.chance(self.imp.loss) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let copies = if self.rng.chance(self.imp.dup) { 2 } else { 1 };
        for _ in 0..copies {
            if self.held.is_none() && self.rng.chance(self.imp.reorder) {
                self.held = Some(d.to_vec());
                continue;
            }
            self.emit(d, &mut send);
            if let Some(h) = self.held.take() {
                self.emit(&h, &mut send);
            }
        }
    }

    fn emit(&mut self, d: &[u8], send: &mut impl FnMut(&[u8])) {
        if self.imp.delay.is_zero() {
            send(d);
        } else {
            self.delayed
                .push_back((Instant::now() + self.imp.delay, d.to_vec()));
        }
    }

    fn tick(&mut self, mut send: impl FnMut(&[u8])) {
        let now = Instant::now();
        while self.delayed.front().is_some_and(|(t, _)| *t <= now) {
            let (_, d) = self.delayed.pop_front().unwrap();
            send(&d);
        }
        if let Some(h) = self.held.take() {
            // Do not hold a datagram forever when traffic stops.
            self.emit(&h, &mut send);
        }
    }
}

/// A TCP echo server: each connection gets back what it sends; it half-closes after the
/// client's EOF. Counts connections.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
}

pub fn echo_server() -> Echo {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let acc = accepted.clone();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            acc.fetch_add(1, Ordering::Relaxed);
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if c.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = c.shutdown(Shutdown::Write);
            });
        }
    });
    Echo { addr, accepted }
}

/// A TCP server that runs `f` on every accepted connection (each in its own thread).
pub fn scripted_server<F>(f: F) -> SocketAddr
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let f = Arc::new(f);
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let f = f.clone();
            thread::spawn(move || f(c));
        }
    });
    addr
}

/// Connects with generous timeouts (the tests check correctness, not speed).
pub fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
    c
}

/// A server + relay + client triple wired together with an echo target.
pub struct Tunnel {
    pub server: Proc,
    pub client: Proc,
    pub relay: Relay,
    pub listen: SocketAddr,
    pub kcp_bind: SocketAddr,
}

pub fn tunnel_to(target: SocketAddr, c2s: Impair, s2c: Impair, seed: u64) -> Tunnel {
    tunnel_with(target, c2s, s2c, seed, |_| {}, |_| {})
}

pub fn tunnel_with(
    target: SocketAddr,
    c2s: Impair,
    s2c: Impair,
    seed: u64,
    tweak_server: impl FnOnce(&mut serde_json::Value),
    tweak_client: impl FnOnce(&mut serde_json::Value),
) -> Tunnel {
    let kcp_bind: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let mut scfg = server_config(kcp_bind, target);
    tweak_server(&mut scfg);
    let server = start("server", &scfg);
    let relay = Relay::start(kcp_bind, c2s, s2c, seed);
    let listen: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut ccfg = client_config(listen, relay.addr);
    tweak_client(&mut ccfg);
    let client = start("client", &ccfg);
    Tunnel {
        server,
        client,
        relay,
        listen,
        kcp_bind,
    }
}

/// One HTTP/1.1 GET (or other method): (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut c = connect(addr);
    write!(c, "{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    c.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {resp:?}"));
    let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

/// Parses Prometheus text exposition: checks the shape of every line and returns the
/// samples as (name with labels, value). Panics on a malformed line.
pub fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    let mut typed = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE line");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line}");
            }
            typed.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let name = series.split('{').next().unwrap();
        assert!(typed.contains_key(name), "sample before its TYPE: {line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
        }
        out.push((series.to_string(), value.parse().expect("numeric value")));
    }
    out
}

/// The value of one series (exact name with labels) in `/metrics` of `addr`.
pub fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = http(addr, "GET", "/metrics");
    assert_eq!(status, 200);
    parse_prometheus(&body)
        .into_iter()
        .find(|(s, _)| s == series)
        .unwrap_or_else(|| panic!("no {series} in\n{body}"))
        .1
}

/// Sends `len` bytes of stream `seed` through `addr` (an echo) and reads them back
/// concurrently, half-closing after sending: (writer, reader). The reader's result is what
/// [`expect_stream`] says of the echo.
pub fn echo_in_background(
    addr: SocketAddr,
    seed: u64,
    len: usize,
) -> (JoinHandle<()>, JoinHandle<Result<usize, String>>) {
    let c = connect(addr);
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        send_stream(&mut w, seed, len).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut r = c;
    let reader = thread::spawn(move || expect_stream(&mut r, seed, len));
    (writer, reader)
}

/// [`echo_in_background`], waited for: panics with a precise message on any difference.
pub fn echo_roundtrip(addr: SocketAddr, seed: u64, len: usize) {
    let (writer, reader) = echo_in_background(addr, seed, len);
    let got = reader.join().unwrap();
    writer.join().unwrap();
    assert_eq!(got, Ok(len), "echo of stream {seed}");
}
