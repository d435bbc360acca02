//! End-to-end forwarding through the real binary: server and client processes on 127.0.0.1
//! with an in-test UDP relay between them that drops, duplicates, reorders and delays
//! datagrams. Every transfer is checked byte for byte against a deterministic stream.

mod harness;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use harness::*;

const MIB: usize = 1024 * 1024;

#[test]
fn bulk_64mib_each_way_clean() {
    let echo = echo_server();
    let t = tunnel_to(echo.addr, Impair::default(), Impair::default(), 1);
    let start = Instant::now();
    echo_roundtrip(t.listen, 11, 64 * MIB);
    eprintln!("64 MiB each way, clean: {:?}", start.elapsed());
    assert_eq!(echo.accepted.load(Ordering::Relaxed), 1);
}

#[test]
fn bulk_64mib_each_way_5pct_loss_with_dup_and_reorder() {
    let echo = echo_server();
    let imp = Impair {
        loss: 0.05,
        dup: 0.01,
        reorder: 0.01,
        delay: Duration::ZERO,
    };
    let t = tunnel_to(echo.addr, imp.clone(), imp, 2);
    let start = Instant::now();
    echo_roundtrip(t.listen, 12, 64 * MIB);
    eprintln!(
        "64 MiB each way, 5% loss: {:?}, relay dropped {} datagrams",
        start.elapsed(),
        t.relay.counters.dropped.load(Ordering::Relaxed)
    );
    assert!(t.relay.counters.dropped.load(Ordering::Relaxed) > 1000);
}

#[test]
fn concurrent_200_connections_256kib_each() {
    let echo = echo_server();
    let imp = Impair {
        loss: 0.01,
        ..Impair::default()
    };
    let t = tunnel_to(echo.addr, imp.clone(), imp, 3);
    let listen = t.listen;
    let handles: Vec<_> = (0..200u64)
        .map(|i| thread::spawn(move || echo_roundtrip(listen, 1000 + i, 256 * 1024)))
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(echo.accepted.load(Ordering::Relaxed), 200);
}

/// The case kcptun-libev gets wrong: the client half-closes, and the target keeps sending
/// after it has seen EOF. Every byte must arrive, then EOF.
#[test]
fn half_close_keeps_the_other_direction_open() {
    let target = scripted_server(|mut c| {
        // Read the request to EOF, then answer with 3 MiB, then close.
        let mut req = Vec::new();
        c.read_to_end(&mut req).unwrap();
        assert_eq!(req, b"request, then half-close");
        thread::sleep(Duration::from_millis(200)); // well after the EOF went through
        send_stream(&mut c, 77, 3 * MIB).unwrap();
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 4);
    let mut c = connect(t.listen);
    c.write_all(b"request, then half-close").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(expect_stream(&mut c, 77, 3 * MIB), Ok(3 * MIB));
}

/// The same with loss in both directions, in both roles: the target half-closes first and
/// the client keeps sending.
#[test]
fn half_close_from_target_side_under_loss() {
    let target = scripted_server(|mut c| {
        c.write_all(b"banner").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        // Keep reading what the client sends after our EOF.
        let got = expect_stream(&mut c, 78, 2 * MIB);
        c.write_all(&[]).ok();
        assert_eq!(got, Ok(2 * MIB));
    });
    let imp = Impair {
        loss: 0.03,
        ..Impair::default()
    };
    let t = tunnel_to(target, imp.clone(), imp, 5);
    let mut c = connect(t.listen);
    let mut banner = Vec::new();
    c.read_to_end(&mut banner).unwrap(); // EOF arrives after the banner
    assert_eq!(banner, b"banner");
    send_stream(&mut c, 78, 2 * MIB).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    // The target's assertion runs in its thread; wait for the conversation to end cleanly:
    // our read side sees nothing more than EOF.
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    wait_for_log(&t.server, "closed", Duration::from_secs(20));
}

#[test]
fn target_closes_first_after_sending() {
    let target = scripted_server(|mut c| {
        send_stream(&mut c, 79, MIB).unwrap();
        // full close right away
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 6);
    let mut c = connect(t.listen);
    assert_eq!(expect_stream(&mut c, 79, MIB), Ok(MIB));
}

#[test]
fn refused_target_closes_the_client_connection() {
    let dead: SocketAddr = format!("127.0.0.1:{}", free_tcp_port()).parse().unwrap();
    let t = tunnel_to(dead, Impair::default(), Impair::default(), 7);
    let start = Instant::now();
    let mut c = connect(t.listen);
    c.write_all(b"hello?").unwrap();
    let mut buf = [0u8; 16];
    let r = c.read(&mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "expected EOF or reset, got {r:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    wait_for_log(&t.server, "DialFailed", Duration::from_secs(5));
}

#[test]
fn reset_by_target_mid_stream_resets_the_client() {
    let target = scripted_server(|mut c| {
        let mut buf = vec![0u8; 100_000];
        c.read_exact(&mut buf).unwrap();
        abortive_close(c);
    });
    let t = tunnel_to(target, Impair::default(), Impair::default(), 8);
    let c = connect(t.listen);
    let mut w = c.try_clone().unwrap();
    // Keep writing until the tunnel gives up on us.
    let writer = thread::spawn(move || send_stream(&mut w, 80, 64 * MIB).is_err());
    let mut r = c;
    let mut sink = vec![0u8; 65536];
    let start = Instant::now();
    loop {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(
        writer.join().unwrap(),
        "the writer must see an error, not finish"
    );
    wait_for_log(&t.server, "TcpError", Duration::from_secs(5));
}

#[test]
fn peer_mode_forwards_both_ways() {
    let one = scripted_server(|mut c| {
        c.write_all(b"ONE:").unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let two = scripted_server(|mut c| {
        c.write_all(b"TWO:").unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || c.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let (udp_a, udp_b) = (free_udp_port(), free_udp_port());
    let (tcp_a, tcp_b) = (free_tcp_port(), free_tcp_port());
    let peer = |udp_self: u16, udp_other: u16, listen: u16, target: SocketAddr| {
        serde_json::json!({
            "kcp_bind": format!("127.0.0.1:{udp_self}"),
            "kcp_connect": format!("127.0.0.1:{udp_other}"),
            "listen": format!("127.0.0.1:{listen}"),
            "connect": target.to_string(),
            "method": "xchacha20poly1305_ietf",
            "psk": PSK,
            "loglevel": 6,
        })
    };
    let _a = start("peer-a", &peer(udp_a, udp_b, tcp_a, one));
    let _b = start("peer-b", &peer(udp_b, udp_a, tcp_b, two));
    // A's listener leads to B's target and the other way round.
    for (port, banner) in [(tcp_a, b"TWO:"), (tcp_b, b"ONE:")] {
        let mut c = connect(format!("127.0.0.1:{port}").parse().unwrap());
        c.write_all(b"ping through the peer").unwrap();
        let mut got = [0u8; 25];
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got[..4], banner);
        assert_eq!(&got[4..], b"ping through the peer");
    }
}

/// Waits until the process log contains `needle`.
fn wait_for_log(p: &Proc, needle: &str, limit: Duration) {
    let t = Instant::now();
    while t.elapsed() < limit {
        if p.log_text().contains(needle) {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    panic!("{} log never said {needle:?}", p.name);
}

/// Closes with RST (SO_LINGER 0) instead of FIN.
fn abortive_close(c: TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized linger struct.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(c);
}
