//! Hostile traffic against the real binary on 127.0.0.1 (issue 8): the negative wire vectors,
//! replays, floods of garbage and forgeries, and the resource caps. The anchors are WireGuard
//! (silent to anything unauthenticated) and QUIC (no amplification): every test checks that
//! the server answers nothing it should not, and that the drop counters of its SIGTERM line
//! account for every hostile datagram.

mod harness;
mod hostile_common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use hostile_common::*;
use kcptun::framing::{Framer, Key, Method};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Everything that arrives on `sock` within `window` (raw datagrams).
fn drain(sock: &UdpSocket, window: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + window;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => out.push(buf[..n].to_vec()),
            Err(_) => break,
        }
    }
    out
}

fn server_for(target: SocketAddr, tweak: impl FnOnce(&mut Value)) -> (Proc, SocketAddr) {
    let kcp_bind: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let mut cfg = server_config(kcp_bind, target);
    tweak(&mut cfg);
    (start("server", &cfg), kcp_bind)
}

// ------------------------------------------------------------------------ negative vectors

/// Every negative vector of every method file, injected into a live server configured with
/// that file's method and key: no answer, no conversation, no dial, and each one counted
/// under its reason (auth, length, replay).
#[test]
fn negative_vectors_get_no_answer_and_are_counted() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"));
    if !dir.exists() {
        eprintln!("skipping: ../shared/vectors not found");
        return;
    }
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name == "kdf.json" {
            continue;
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let method = v["method"].as_str().unwrap();
        if !Method::from_name(method).unwrap().available() {
            eprintln!("skipping {name}: {method} not available on this CPU");
            continue;
        }
        files += 1;
        check_negative_vectors(&name, &v);
    }
    assert!(files >= 4, "only {files} vector files checked");
}

fn check_negative_vectors(name: &str, v: &Value) {
    let echo = echo_server();
    let (mut server, kcp_bind) = server_for(echo.addr, |c| {
        c["method"] = v["method"].clone();
        c.as_object_mut().unwrap().remove("psk");
        match v["key_mode"].as_str().unwrap() {
            "psk" => c["psk"] = v["psk"].clone(),
            _ => c["password"] = v["password"].clone(),
        }
    });
    // The datagram a replay vector repeats: a captured one or an injected PING.
    let original = |r: &Value| -> Vec<u8> {
        if let Some(inj) = r.get("positive_injected").and_then(|x| x.as_str()) {
            let p = v["positive_injected"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == inj)
                .unwrap();
            return unhex(p["datagram_hex"].as_str().unwrap());
        }
        let sc = v["scenarios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == r["scenario"])
            .unwrap();
        let d = sc["datagrams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["index"] == r["index"])
            .unwrap();
        unhex(d["datagram_hex"].as_str().unwrap())
    };
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut want: HashMap<&str, u64> = HashMap::new();
    let negs = v["negative_vectors"].as_array().unwrap();
    // Forgeries and short datagrams first: not one answer.
    for n in negs.iter().filter(|n| n["reject_reason"] != "replay") {
        sock.send_to(&unhex(n["datagram_hex"].as_str().unwrap()), kcp_bind)
            .unwrap();
        *want
            .entry(match n["reject_reason"].as_str().unwrap() {
                "auth" => "drop_auth",
                _ => "drop_short",
            })
            .or_default() += 1;
    }
    let got = drain(&sock, Duration::from_millis(400));
    assert!(got.is_empty(), "{name}: {} answers to forgeries", got.len());
    assert_eq!(
        echo.accepted.load(Ordering::Relaxed),
        0,
        "{name}: a forgery dialled the target"
    );
    // Replays: the original is accepted (and may be answered), the repeat is not.
    let mut originals_opened = 0;
    for n in negs.iter().filter(|n| n["reject_reason"] == "replay") {
        let orig = original(&n["replay_of"]);
        let dup = unhex(n["datagram_hex"].as_str().unwrap());
        assert_eq!(orig, dup, "{name}: a replay vector is its original");
        sock.send_to(&orig, kcp_bind).unwrap();
        drain(&sock, Duration::from_millis(300));
        originals_opened += 1;
        sock.send_to(&dup, kcp_bind).unwrap();
        let got = drain(&sock, Duration::from_millis(300));
        assert!(got.is_empty(), "{name}: the replay was answered");
        *want.entry("drop_replay").or_default() += 1;
    }
    let c = stop_and_count(&mut server);
    for (k, n) in &want {
        assert_eq!(get(&c, k), *n, "{name}: counter {k}: {c:?}");
    }
    // Nothing hostile opened a conversation: only originals may have (a captured DIAL).
    assert!(
        get(&c, "sessions_opened") <= originals_opened,
        "{name}: {c:?}"
    );
    let total: u64 = want.values().sum();
    assert_eq!(
        get(&c, "udp_rx_datagrams"),
        total + originals_opened,
        "{name}: {c:?}"
    );
}

// ------------------------------------------------------------------------------- replays

/// A recorded conversation re-sent to the same server after it ended: every datagram is
/// dropped as a replay, nothing is answered, the target is not dialled again. The same
/// recording against a fresh server process is accepted and dials: the filter lives in the
/// process's memory (as in kcptun-libev) and guarantees only that the last 2^20 (up to 2^21)
/// nonces that process accepted are refused.
#[test]
fn recorded_conversation_replayed_is_dropped_while_the_filter_holds_it() {
    let echo = echo_server();
    let kcp_bind: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let scfg = {
        let mut c = server_config(kcp_bind, echo.addr);
        c["time_wait"] = 5.into();
        c
    };
    let mut server = start("server", &scfg);
    let relay = Relay::start_on(
        "127.0.0.1:0".parse().unwrap(),
        kcp_bind,
        Impair::default(),
        Impair::default(),
        1,
        true,
    );
    let listen: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let mut client = start("client", &client_config(listen, relay.addr));
    {
        let mut c = connect(listen);
        c.write_all(b"replay me").unwrap();
        let mut buf = [0u8; 9];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"replay me");
    }
    // Let the conversation close on both sides and leave TIME_WAIT (5 s).
    thread::sleep(Duration::from_secs(7));
    stop_and_count(&mut client);
    let recorded = relay.recorded.lock().unwrap().clone();
    let dials_before = echo.accepted.load(Ordering::Relaxed);
    assert_eq!(dials_before, 1);
    assert!(
        recorded.len() >= 3,
        "only {} datagrams recorded",
        recorded.len()
    );

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in &recorded {
        sock.send_to(d, kcp_bind).unwrap();
    }
    let got = drain(&sock, Duration::from_millis(500));
    assert!(got.is_empty(), "{} answers to replays", got.len());
    let c = stop_and_count(&mut server);
    assert_eq!(get(&c, "drop_replay"), recorded.len() as u64, "{c:?}");
    assert_eq!(get(&c, "sessions_opened"), 1, "{c:?}");
    assert_eq!(echo.accepted.load(Ordering::Relaxed), 1);

    // A fresh process has an empty filter: the recorded DIAL opens a conversation again.
    let mut fresh = start("fresh-server", &scfg);
    for d in &recorded {
        sock.send_to(d, kcp_bind).unwrap();
    }
    drain(&sock, Duration::from_millis(500));
    let c = stop_and_count(&mut fresh);
    assert_eq!(get(&c, "drop_replay"), 0, "{c:?}");
    assert!(get(&c, "sessions_opened") >= 1, "{c:?}");
}

// --------------------------------------------------------------------------------- floods

#[derive(Clone, Copy, Debug, PartialEq)]
enum Flood {
    /// Random bytes of random length 1..=1500.
    Garbage,
    /// Full-size datagrams (1372 bytes, the default for kcp.mtu 1400) sealed under another
    /// key: the server runs the whole AEAD before it can refuse them.
    WrongKey,
}

/// Sends `kind` datagrams at `to` until `stop`, as fast as one thread can or at `rate`
/// datagrams a second; returns how many were sent and how many answers came back.
fn flooder(
    kind: Flood,
    to: SocketAddr,
    rate: Option<u64>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(u64, usize)> {
    thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(to).unwrap();
        let mut rng = Rng(0xf100d ^ kind as u64);
        let mut wrong = Framer::new(
            Method::XChaCha20Poly1305Ietf,
            Some(Key::from_bytes([9; 32])),
        )
        .unwrap();
        let pool: Vec<Vec<u8>> = (0..256)
            .map(|_| match kind {
                Flood::Garbage => {
                    let n = 1 + (rng.next() % 1500) as usize;
                    (0..n).map(|_| rng.next() as u8).collect()
                }
                Flood::WrongKey => {
                    let mut buf = vec![0u8; 2048];
                    for b in &mut buf[..1332] {
                        *b = rng.next() as u8;
                    }
                    let n = wrong.seal(&mut buf, 1332, 1332);
                    buf.truncate(n);
                    buf
                }
            })
            .collect();
        let mut sent = 0u64;
        let start = Instant::now();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                if sock.send(&pool[i % pool.len()]).is_ok() {
                    sent += 1;
                }
                i += 1;
            }
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(sent as f64 / r as f64);
                if let Some(ahead) = due.checked_sub(start.elapsed()) {
                    thread::sleep(ahead);
                }
            }
        }
        (sent, drain(&sock, Duration::from_millis(300)).len())
    })
}

/// A target that reads one stream to its end and reports whether it was exactly `len`
/// bytes of stream `seed`.
fn checking_sink(len: usize, seed: u64) -> (SocketAddr, mpsc::Receiver<Result<usize, String>>) {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    let addr = scripted_server(move |mut c: TcpStream| {
        let r = expect_stream(&mut c, seed, len);
        let _ = tx.lock().unwrap().send(r);
    });
    (addr, rx)
}

/// A writer that keeps to `rate` bytes a second (a sender behind a link of that rate).
struct Paced<W> {
    inner: W,
    rate: f64,
    start: Instant,
    written: usize,
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let due = Duration::from_secs_f64(self.written as f64 / self.rate);
        if let Some(ahead) = due.checked_sub(self.start.elapsed()) {
            thread::sleep(ahead);
        }
        let n = self.inner.write(buf)?;
        self.written += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Pushes `len` bytes through the tunnel to a checking sink, at most `pace` bytes a second
/// if given; returns goodput in MB/s.
fn push_through(
    listen: SocketAddr,
    rx: &mpsc::Receiver<Result<usize, String>>,
    len: usize,
    seed: u64,
    pace: Option<f64>,
) -> f64 {
    let t = Instant::now();
    let c = connect(listen);
    let mut c = Paced {
        inner: c,
        rate: pace.unwrap_or(f64::INFINITY),
        start: t,
        written: 0,
    };
    if let Err(e) = send_stream(&mut c, seed, len) {
        panic!("push failed after {:?}: {e}", t.elapsed());
    }
    c.inner.shutdown(Shutdown::Write).unwrap();
    let r = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("sink finished");
    assert_eq!(r, Ok(len));
    len as f64 / t.elapsed().as_secs_f64() / 1e6
}

const FLOOD_BYTES: usize = 32 << 20;

/// Floods and CPU figures run one at a time: two floods at once measure each other.
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_flood() -> std::sync::MutexGuard<'static, ()> {
    ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner())
}

fn goodput_under_flood(kind: Flood, rate: Option<u64>, pace: Option<f64>, min: f64) {
    let _one = one_flood();
    // One stream seed for all runs: the sink checks every byte of each.
    let (target, rx) = checking_sink(FLOOD_BYTES, 5);
    // HOSTILE_PEER_SOCKETS=0 turns the flood isolation off, for before/after figures.
    let peer_sockets: Option<u64> = std::env::var("HOSTILE_PEER_SOCKETS")
        .ok()
        .and_then(|v| v.parse().ok());
    let mut t = tunnel_with(
        target,
        Impair::default(),
        Impair::default(),
        3,
        |s| {
            if let Some(n) = peer_sockets {
                s["udp"]["peer_sockets"] = serde_json::json!(n);
            }
        },
        |_| {},
    );
    // Median of three each way, interleaved, so that a busy neighbour hurts both alike.
    let mut base = Vec::new();
    let mut flooded = Vec::new();
    let mut sent = 0;
    for _ in 0..3 {
        base.push(push_through(t.listen, &rx, FLOOD_BYTES, 5, pace));
        let stop = Arc::new(AtomicBool::new(false));
        let f = flooder(kind, t.kcp_bind, rate, stop.clone());
        thread::sleep(Duration::from_millis(200));
        flooded.push(push_through(t.listen, &rx, FLOOD_BYTES, 5, pace));
        stop.store(true, Ordering::Relaxed);
        let (n, answers) = f.join().unwrap();
        assert_eq!(answers, 0, "the server answered the flood");
        sent += n;
    }
    base.sort_by(f64::total_cmp);
    flooded.sort_by(f64::total_cmp);
    let c = stop_and_count(&mut t.server);
    let dropped = get(&c, "drop_auth") + get(&c, "drop_short");
    eprintln!(
        "flood {kind:?} at {rate:?}/s, transfer paced at {pace:?} B/s: goodput {:.1} MB/s without, {:.1} MB/s under flood ({:.0}%); \
         {sent} datagrams sent, {dropped} seen and dropped by the server; counters {c:?}",
        base[1],
        flooded[1],
        100.0 * flooded[1] / base[1]
    );
    assert_eq!(get(&c, "resets_sent"), 0, "RESET sent to a flooder: {c:?}");
    assert!(dropped > 0, "the flood never reached the server");
    // The relay, and only the relay, got a socket of its own (the flood never authenticated).
    let want = if peer_sockets == Some(0) { 0 } else { 1 };
    assert_eq!(get(&c, "peer_sockets_opened"), want, "{c:?}");
    assert!(
        flooded[1] >= min * base[1],
        "goodput under a {kind:?} flood {:.1} MB/s < {:.0}% of {:.1} MB/s",
        flooded[1],
        100.0 * min,
        base[1]
    );
}

/// A peer that authenticated gets a UDP socket of its own (connected, in the main socket's
/// SO_REUSEPORT group), so its datagrams queue apart from a flood; garbage from another
/// address never earns one; `udp.peer_sockets: 0` turns the feature off. Traffic keeps
/// flowing byte-exact either way.
#[test]
fn known_peers_get_their_own_socket() {
    for (cap, want) in [(None, 1), (Some(0), 0)] {
        let echo = echo_server();
        let mut t = tunnel_with(
            echo.addr,
            Impair::default(),
            Impair::default(),
            11,
            |s| {
                if let Some(c) = cap {
                    s["udp"]["peer_sockets"] = serde_json::json!(c);
                }
            },
            |_| {},
        );
        let garbage = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..100u8 {
            garbage.send_to(&[i; 200], t.kcp_bind).unwrap();
        }
        echo_roundtrip(t.listen, 1, 100_000);
        // The second transfer runs through the peer's own socket when there is one.
        echo_roundtrip(t.listen, 2, 1 << 20);
        for i in 0..100u8 {
            garbage.send_to(&[i; 200], t.kcp_bind).unwrap();
        }
        echo_roundtrip(t.listen, 3, 1000);
        assert!(drain(&garbage, Duration::from_millis(200)).is_empty());
        let c = stop_and_count(&mut t.server);
        assert_eq!(get(&c, "peer_sockets_opened"), want, "cap {cap:?}: {c:?}");
        assert_eq!(get(&c, "drop_auth"), 200, "cap {cap:?}: {c:?}");
    }
}

/// Peer sockets need the main socket in a SO_REUSEPORT group; a second server started on
/// the same port must still fail, not silently share the port's traffic.
#[test]
fn a_second_server_on_the_same_port_fails_to_start() {
    let echo = echo_server();
    let (_first, kcp_bind) = server_for(echo.addr, |_| {});
    let dir = tmpdir("second-server");
    let cfg = dir.join("config.json");
    let json = serde_json::to_vec(&server_config(kcp_bind, echo.addr)).unwrap();
    std::fs::write(&cfg, json).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kcptun-rs"))
        .arg("-c")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("a second server on {kcp_bind} kept running");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("in use"), "no clear error: {err}");
}

/// Datagrams a second of the paced floods in CI: about 70 MB/s of garbage, a fifth of what
/// the server can reject on one core (measured: about 2.3 us per datagram), so the test
/// measures the cost of rejecting, not a starved machine.
const PACED: u64 = 50_000;

/// The goodput kept under a paced flood is a figure (printed), not a timing assertion: on
/// a shared CI machine the ratio swings with the neighbours. CI only checks for collapse
/// (25% by default); `HOSTILE_PACED_MIN_GOODPUT=0.8` asks for the bar on a quiet box.
fn paced_floor() -> f64 {
    std::env::var("HOSTILE_PACED_MIN_GOODPUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.25)
}

#[test]
fn paced_garbage_flood_keeps_goodput_and_gets_no_answer() {
    goodput_under_flood(Flood::Garbage, Some(PACED), None, paced_floor());
}

#[test]
fn paced_wrong_key_flood_keeps_goodput_and_gets_no_answer() {
    goodput_under_flood(Flood::WrongKey, Some(PACED), None, paced_floor());
}

/// The flood: one thread sending as fast as it can, garbage and then full-size
/// forgeries, at the server's port while a transfer runs. The server isolates it: the
/// relay (the client's address as the server sees it) has a socket of its own, and while the
/// main socket's batches are mostly unauthentic they get one turn a millisecond (64,000
/// datagrams a second); the kernel drops the rest of the flood, uncharged to the server.
/// Before that isolation: 29-46% goodput and one 120 s stall.
///
/// The transfer is paced at 20 MB/s (160 Mbit/s, a link's rate) so that the test measures
/// isolation, not CPU: unpaced, the tunnel itself needs both cores of a 2-core machine and
/// the flooder takes one of them whatever the server does (`HOSTILE_FLOOD_PACE=0` runs it
/// unpaced; measured 67-81% for garbage then). Not in CI (it saturates the machine);
/// `HOSTILE_MIN_GOODPUT` sets the bar (default 0.8, the figure).
#[test]
#[ignore = "saturates the machine; needs spare cores for the flooder, server, client and relay"]
fn unpaced_floods_keep_goodput() {
    let min = std::env::var("HOSTILE_MIN_GOODPUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.8);
    let pace = std::env::var("HOSTILE_FLOOD_PACE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(20e6);
    let pace = (pace > 0.0).then_some(pace);
    goodput_under_flood(Flood::Garbage, None, pace, min);
    goodput_under_flood(Flood::WrongKey, None, pace, min);
}

/// CPU the server spends per hostile datagram (user + system, recvmmsg included), for each
/// kind of flood. The bound is generous (a shared CI machine); the figure is printed.
#[test]
fn cpu_per_hostile_datagram() {
    let _one = one_flood();
    for kind in [Flood::Garbage, Flood::WrongKey] {
        let (mut server, kcp_bind) = server_for("127.0.0.1:9".parse().unwrap(), |_| {});
        let cpu0 = cpu_time(server.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let f = flooder(kind, kcp_bind, None, stop.clone());
        thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        let (sent, answers) = f.join().unwrap();
        let cpu = cpu_time(server.pid()) - cpu0;
        let c = stop_and_count(&mut server);
        let seen = get(&c, "udp_rx_datagrams");
        let per = cpu.as_secs_f64() * 1e6 / seen.max(1) as f64;
        eprintln!(
            "{kind:?}: {sent} sent, {seen} processed by the server, {:.2} s CPU: {per:.2} us per datagram",
            cpu.as_secs_f64()
        );
        assert_eq!(answers, 0);
        assert_eq!(get(&c, "udp_tx_datagrams"), 0, "{c:?}");
        assert_eq!(get(&c, "drop_auth") + get(&c, "drop_short"), seen, "{c:?}");
        assert!(seen > 10_000, "only {seen} datagrams reached the server");
        assert!(per < 50.0, "{per:.1} us per {kind:?} datagram");
    }
}
