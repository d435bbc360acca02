//! Memory through the real binary (issue 8): a target that never reads while the client
//! pushes up to 1 GiB (backpressure must bound both processes), and 10,000 conversations
//! opened and closed in rounds (RSS must come back to its plateau once TIME_WAIT is over).
//! The figures are printed; the bounds asserted are generous multiples of what was measured.

mod harness;
mod hostile_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::*;
use hostile_common::*;

const MIB: u64 = 1024;

#[test]
fn non_reading_target_bounds_rss_of_both_processes() {
    // The target accepts and holds the connection without ever reading.
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    let h = held.clone();
    let target = scripted_server(move |c| h.lock().unwrap().push(c));
    let t = tunnel_to(target, Impair::default(), Impair::default(), 21);
    let (cpid, spid) = (t.client.pid(), t.server.pid());
    let (c0, s0) = (rss_kib(cpid), rss_kib(spid));
    let pushed = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let mut c = connect(t.listen);
    c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = {
        let (pushed, done) = (pushed.clone(), done.clone());
        thread::spawn(move || {
            let buf = vec![0x5a; 256 * 1024];
            // Up to 1 GiB; the write blocks (and times out) once every buffer is full.
            while pushed.load(Ordering::Relaxed) < 1 << 30 {
                match c.write(&buf) {
                    Ok(n) => pushed.fetch_add(n as u64, Ordering::Relaxed),
                    Err(_) => break,
                };
            }
            done.store(true, Ordering::Relaxed);
            c
        })
    };
    let (mut cmax, mut smax) = (0, 0);
    let start = Instant::now();
    while !done.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
        cmax = cmax.max(rss_kib(cpid));
        smax = smax.max(rss_kib(spid));
        thread::sleep(Duration::from_millis(100));
    }
    let _conn = writer.join().unwrap();
    let pushed = pushed.load(Ordering::Relaxed);
    eprintln!(
        "non-reading target: {:.1} MiB accepted before backpressure; RSS client {} -> max {} KiB, \
         server {} -> max {} KiB",
        pushed as f64 / (1 << 20) as f64,
        c0,
        cmax,
        s0,
        smax
    );
    assert!(pushed < 256 << 20, "{pushed} bytes taken: no backpressure");
    assert!(
        held.lock().unwrap().len() == 1,
        "the target was not dialled"
    );
    assert!(cmax < 96 * MIB, "client RSS {cmax} KiB");
    assert!(smax < 96 * MIB, "server RSS {smax} KiB");
}

/// One connection through the tunnel: write, read the echo, close.
fn one_echo(listen: SocketAddr, i: u64) -> bool {
    let Ok(mut c) = TcpStream::connect(listen) else {
        return false;
    };
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let msg = i.to_le_bytes();
    if c.write_all(&msg).is_err() {
        return false;
    }
    let mut buf = [0u8; 8];
    c.read_exact(&mut buf).is_ok() && buf == msg
}

/// Opens and closes `n` conversations, `par` at a time; returns the failures.
fn churn(listen: SocketAddr, n: u64, par: u64) -> u64 {
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..par)
        .map(|p| {
            let failed = failed.clone();
            thread::spawn(move || {
                for i in (p..n).step_by(par as usize) {
                    if !one_echo(listen, i) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    failed.load(Ordering::Relaxed)
}

#[test]
fn conversation_churn_returns_rss_to_its_plateau() {
    let n: u64 = std::env::var("MEMORY_CONVS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let echo = echo_server();
    let short = |c: &mut serde_json::Value| {
        c["time_wait"] = 5.into();
        c["loglevel"] = 4.into();
    };
    let mut t = tunnel_with(
        echo.addr,
        Impair::default(),
        Impair::default(),
        22,
        short,
        short,
    );
    let (cpid, spid) = (t.client.pid(), t.server.pid());
    let mut rows = Vec::new();
    for round in 0..3 {
        let start = Instant::now();
        let failed = churn(t.listen, n, 32);
        let took = start.elapsed();
        let peak = (rss_kib(cpid), rss_kib(spid));
        // TIME_WAIT (5 s) over: every conversation of the round is forgotten.
        thread::sleep(Duration::from_secs(7));
        let after = (rss_kib(cpid), rss_kib(spid));
        eprintln!(
            "round {round}: {n} conversations in {took:?}, {failed} failed; RSS KiB client {} \
             (after TIME_WAIT {}), server {} (after {})",
            peak.0, after.0, peak.1, after.1
        );
        assert_eq!(failed, 0, "round {round}");
        rows.push(after);
    }
    let cc = stop_and_count(&mut t.client);
    let sc = stop_and_count(&mut t.server);
    assert_eq!(get(&cc, "sessions_opened"), 3 * n, "{cc:?}");
    assert_eq!(get(&sc, "sessions_opened"), 3 * n, "{sc:?}");
    // The plateau: the last round ends where the earlier ones did, give or take allocator
    // slack. The first round alone may stay under it (with the path's rate shared, its
    // conversations overlap less while the pacer finds the rate), so the plateau is the
    // higher of the first two.
    let (c1, s1) = (rows[0].0.max(rows[1].0), rows[0].1.max(rows[1].1));
    let (c3, s3) = rows[2];
    assert!(
        c3 <= c1 + c1 / 10 + 2 * MIB,
        "client RSS grew {c1} -> {c3} KiB"
    );
    assert!(
        s3 <= s1 + s1 / 10 + 2 * MIB,
        "server RSS grew {s1} -> {s3} KiB"
    );
}
