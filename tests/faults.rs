//! Faults through the real binary (issue 8): slow and stopped targets, a server killed with
//! SIGKILL and restarted, a client restarted, and a peer silent for longer than every timeout.
//! After each, state must be freed and new connections must work.

mod harness;
mod hostile_common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use hostile_common::*;

/// A half-closed upload to a target that stops reading for longer than `linger` (5 s) and
/// then reads on: every byte must arrive. The conversation is not idle (the server holds
/// the data and answers window probes); only the target is slow.
#[test]
fn slow_target_after_half_close_gets_the_whole_tail() {
    const LEN: usize = 8 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |mut c: TcpStream| {
        let mut first = vec![0u8; 1 << 20];
        let r = c.read_exact(&mut first);
        // Stop reading for longer than linger: the tunnel's buffers fill up and the window
        // closes; nothing moves on the wire but window probes.
        thread::sleep(Duration::from_secs(8));
        let rest = r.map_err(|e| e.to_string()).and_then(|_| {
            let mut all = first.clone();
            c.read_to_end(&mut all)
                .map_err(|e| format!("after {} bytes: {e}", all.len()))?;
            Ok(all)
        });
        let _ = tx.lock().unwrap().send(rest);
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 11);
    let mut c = connect(t.listen);
    let start = Instant::now();
    send_stream(&mut c, 77, LEN).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("target done");
    let got = got.unwrap_or_else(|e| panic!("target read failed {e} after {:?}", start.elapsed()));
    assert_eq!(got.len(), LEN, "tail lost");
    assert_eq!(expect_stream(&mut &got[..], 77, LEN), Ok(LEN));
}

/// Large half-closed uploads, back to back: the client queues most of each in KCP before
/// the application's EOF, so the half-closed conversation drains for seconds; every byte must
/// arrive (a linger timeout while data is still moving would cut the tail).
#[test]
fn large_half_closed_uploads_arrive_whole() {
    const LEN: usize = 32 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |mut c: TcpStream| {
        let _ = tx.lock().unwrap().send(expect_stream(&mut c, 5, LEN));
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 12);
    for i in 0..3 {
        let start = Instant::now();
        let mut c = connect(t.listen);
        send_stream(&mut c, 5, LEN).unwrap();
        let sent_in = start.elapsed();
        c.shutdown(Shutdown::Write).unwrap();
        let r = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("target done");
        assert_eq!(
            r,
            Ok(LEN),
            "upload {i}: written in {sent_in:?}, ended after {:?}",
            start.elapsed()
        );
    }
}

/// Reads until EOF or error within `limit`; true if the connection ended.
fn ends_within(c: &mut TcpStream, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
    false
}

fn echo_once(listen: SocketAddr, msg: &[u8]) {
    let mut c = connect(listen);
    c.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

/// The server dies (SIGKILL: no RESET) and comes back on the same port. The client's old
/// conversation is answered with RESET by the new server and its TCP connection closes; new
/// connections work at once.
#[test]
fn server_killed_and_restarted() {
    let echo = echo_server();
    let mut t = tunnel_to(echo.addr, Impair::default(), Impair::default(), 31);
    let mut old = connect(t.listen);
    old.write_all(b"before").unwrap();
    let mut buf = [0u8; 6];
    old.read_exact(&mut buf).unwrap();
    t.server.child.kill().unwrap();
    t.server.child.wait().unwrap();
    let mut server = start("server2", &server_config(t.kcp_bind, echo.addr));
    // The old conversation speaks: the new server does not know it and says so. It may
    // already have spoken: the ACK of "before" can wait up to 2 ms for a reply (the ACK
    // hold) and reach the new server, whose RESET then closes the connection under this
    // write.
    if let Err(e) = old.write_all(b"after") {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(
        ends_within(&mut old, Duration::from_secs(15)),
        "the old connection survived the server's restart"
    );
    echo_once(t.listen, b"new connection");
    let sc = stop_and_count(&mut server);
    assert!(get(&sc, "resets_sent") >= 1, "{sc:?}");
    assert_eq!(get(&sc, "sessions_opened"), 1, "{sc:?}");
    assert!(t.client.log_text().contains("reset by peer"));
}

/// The client dies (SIGKILL) and a new one starts on the same listen address with a new UDP
/// port. The server's conversation for the old client keeps sending (its target talks); the
/// new client answers RESET, so the server closes it and the target's connection ends.
#[test]
fn client_killed_and_restarted() {
    let (tx, rx) = mpsc::channel::<TcpStream>();
    let tx = Mutex::new(tx);
    // A target that greets, then talks every 200 ms until its connection breaks.
    let target = scripted_server(move |mut c: TcpStream| {
        let _ = tx.lock().unwrap().send(c.try_clone().unwrap());
        while c.write_all(b".").is_ok() {
            thread::sleep(Duration::from_millis(200));
        }
    });
    let mut t = tunnel_to(target, Impair::default(), Impair::default(), 32);
    let mut old = connect(t.listen);
    let mut buf = [0u8; 1];
    old.read_exact(&mut buf).unwrap();
    let mut target_side = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    t.client.child.kill().unwrap();
    t.client.child.wait().unwrap();
    drop(old);
    let client = start("client2", &client_config(t.listen, t.relay.addr));
    // Its start-up PING tells the relay (our stand-in for a NAT) where it is; the target
    // writes into the old conversation, which now reaches the new client: it answers RESET
    // and the server closes the target's connection. (Before the PING left at start-up, this
    // needed a new connection first.)
    assert!(
        ends_within(&mut target_side, Duration::from_secs(20)),
        "the server kept the old client's conversation"
    );
    echo_once_target_talks(t.listen);
    drop(client);
    let sc = stop_and_count(&mut t.server);
    assert!(get(&sc, "sessions_opened") >= 2, "{sc:?}");
}

/// With the talking target, a new connection reads the greeting.
fn echo_once_target_talks(listen: SocketAddr) {
    let mut c = connect(listen);
    let mut buf = [0u8; 1];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b".");
}

/// Counts the target's open connections: +1 on accept, -1 when the connection ends.
fn counting_echo() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicI64>) {
    use std::sync::atomic::{AtomicI64, Ordering};
    let open = std::sync::Arc::new(AtomicI64::new(0));
    let o = open.clone();
    let addr = scripted_server(move |mut c: TcpStream| {
        o.fetch_add(1, Ordering::SeqCst);
        let mut buf = [0u8; 4096];
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if c.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        o.fetch_sub(1, Ordering::SeqCst);
    });
    (addr, open)
}

/// The path between client and server goes silent (the relay stops) for longer than every
/// timeout (timeout 60 s, linger 5 s, time_wait 5 s): both sides close every conversation,
/// the target's connections end, memory returns near where it started, and once the path is
/// back a new connection works.
#[test]
#[ignore = "takes about 90 s: the idle timeout cannot be set below 60 s"]
fn peer_silent_longer_than_every_timeout() {
    use std::sync::atomic::Ordering;
    let (target, open) = counting_echo();
    let short = |c: &mut serde_json::Value| {
        c["timeout"] = 60.into();
        c["linger"] = 5.into();
        c["time_wait"] = 5.into();
        c["keepalive"] = 10.into();
    };
    let mut t = tunnel_with(
        target,
        Impair::default(),
        Impair::default(),
        33,
        short,
        short,
    );
    let (cpid, spid) = (t.client.pid(), t.server.pid());
    let base = (rss_kib(cpid), rss_kib(spid));
    let mut conns: Vec<TcpStream> = (0..20).map(|_| connect(t.listen)).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = vec![i as u8; 100_000];
        c.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg);
    }
    assert_eq!(open.load(Ordering::SeqCst), 20);
    let relay_addr = t.relay.addr;
    t.relay.stop();
    let start = Instant::now();
    for c in &mut conns {
        assert!(
            ends_within(c, Duration::from_secs(90).saturating_sub(start.elapsed())),
            "a client connection outlived the timeouts"
        );
    }
    eprintln!("client connections closed after {:?}", start.elapsed());
    while open.load(Ordering::SeqCst) > 0 && start.elapsed() < Duration::from_secs(90) {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        open.load(Ordering::SeqCst),
        0,
        "target connections left open"
    );
    thread::sleep(Duration::from_secs(7)); // TIME_WAIT
    let after = (rss_kib(cpid), rss_kib(spid));
    eprintln!("RSS KiB before {base:?}, after the silence {after:?}");
    assert!(after.0 < base.0 + 8 * 1024 && after.1 < base.1 + 8 * 1024);
    // The path is back: a new relay on the same address.
    let _relay = Relay::start_on(
        relay_addr,
        t.kcp_bind,
        Impair::default(),
        Impair::default(),
        34,
        false,
    );
    let mut c = connect(t.listen);
    c.write_all(b"back").unwrap();
    let mut buf = [0u8; 4];
    c.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"back");
    let cl = t.client.log_text();
    let sl = t.server.log_text();
    let timeouts = |l: &str| {
        l.lines()
            .filter(|x| x.contains("timeout") || x.contains("link dead"))
            .count()
    };
    eprintln!(
        "timeout lines: client {}, server {}",
        timeouts(&cl),
        timeouts(&sl)
    );
    assert!(
        timeouts(&sl) >= 20,
        "server closed fewer than 20 conversations by timeout"
    );
}

/// A half-closed upload that needs longer than `linger` (5 s) to drain over a slow, lossy
/// path: the conversation is moving all the time, so linger must not cut it.
#[test]
fn slow_half_closed_upload_outlasting_linger_arrives_whole() {
    const LEN: usize = 24 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |mut c: TcpStream| {
        let _ = tx.lock().unwrap().send(expect_stream(&mut c, 6, LEN));
    });
    let path = Impair {
        loss: 0.01,
        delay: Duration::from_millis(30),
        ..Impair::default()
    };
    let t = tunnel_to(target, path.clone(), path, 13);
    let start = Instant::now();
    let mut c = connect(t.listen);
    send_stream(&mut c, 6, LEN).unwrap();
    let eof_at = start.elapsed();
    c.shutdown(Shutdown::Write).unwrap();
    let r = rx
        .recv_timeout(Duration::from_secs(180))
        .expect("target done");
    eprintln!("EOF after {eof_at:?}, done after {:?}", start.elapsed());
    assert_eq!(
        r,
        Ok(LEN),
        "EOF after {eof_at:?}, ended after {:?}",
        start.elapsed()
    );
}

/// A target that reads slowly (about 1.3 MB/s) while a half-closed upload drains for longer
/// than `linger`: data moves all the time, so every byte must arrive.
#[test]
fn throttled_target_after_half_close_gets_the_whole_tail() {
    const LEN: usize = 12 << 20;
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let target = scripted_server(move |c: TcpStream| {
        struct Slow(TcpStream);
        impl Read for Slow {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                thread::sleep(Duration::from_millis(50));
                let n = buf.len().min(64 * 1024);
                self.0.read(&mut buf[..n])
            }
        }
        let _ = tx.lock().unwrap().send(expect_stream(&mut Slow(c), 8, LEN));
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 14);
    let start = Instant::now();
    let mut c = connect(t.listen);
    send_stream(&mut c, 8, LEN).unwrap();
    let eof_at = start.elapsed();
    c.shutdown(Shutdown::Write).unwrap();
    let r = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("target done");
    eprintln!("EOF after {eof_at:?}, done after {:?}", start.elapsed());
    assert_eq!(
        r,
        Ok(LEN),
        "EOF after {eof_at:?}, ended after {:?}",
        start.elapsed()
    );
}
