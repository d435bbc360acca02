//! Seal and open cost per method for 1400-byte datagrams (the default kcp.mtu), measured with
//! std::time only: `cargo bench --bench framing`.
//!
//! seal: in place, no padding (a full-size packet), a fresh nonce each time.
//! open: in place, accepted (fresh nonce), with the server-sized replay filter (2^20 @ 2^-20).
//! Opening consumes the datagram, so each step seals one and opens it; the seal time measured
//! alone is subtracted. `replay` lines time the filter alone per accepted 24-byte nonce.

use kcptun::framing::{Framer, Key, Method, ReplayFilter};
use std::hint::black_box;
use std::time::{Duration, Instant};

const DATAGRAM: usize = 1400;
const ROUND: usize = 1024;
const BUDGET: Duration = Duration::from_millis(700);

/// Calls `f` in rounds until `BUDGET` is spent (after one warm-up round); ns per call.
fn measure(mut f: impl FnMut()) -> f64 {
    for _ in 0..ROUND {
        f();
    }
    let start = Instant::now();
    let mut calls = 0u64;
    while start.elapsed() < BUDGET {
        for _ in 0..ROUND {
            f();
        }
        calls += ROUND as u64;
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn report(what: &str, name: &str, ns: f64) {
    let mb_s = DATAGRAM as f64 / ns * 1e3; // bytes/ns = GB/s; * 1e3 = MB/s
    println!("{what:<6} {name:<24} {ns:>8.1} ns/op {mb_s:>9.1} MB/s");
}

fn main() {
    for method in [Method::None].into_iter().chain(Method::ALL) {
        if !method.available() {
            println!("skip   {:<24} not available on this CPU", method.name());
            continue;
        }
        let key = (method != Method::None).then(|| Key::from_bytes([0x42; 32]));
        let plain = DATAGRAM - method.overhead();
        let mut tx = Framer::new(method, key.clone()).expect("framer");
        let mut rx = Framer::with_replay_filter(method, key, ReplayFilter::server_default())
            .expect("framer");
        let mut buf = [0x17u8; DATAGRAM];

        let seal_ns = measure(|| {
            black_box(tx.seal(black_box(&mut buf), plain, plain));
        });
        report("seal", method.name(), seal_ns);

        let mut rejected = 0u64;
        let both_ns = measure(|| {
            buf[..plain].fill(0x17);
            let n = tx.seal(black_box(&mut buf), plain, plain);
            if rx.open(black_box(&mut buf[..n])).is_err() {
                rejected += 1;
            }
        });
        assert_eq!(rejected, 0, "{method}: an honest datagram was rejected");
        report("open", method.name(), both_ns - seal_ns);
    }

    for (name, filter) in [
        ("server_default 2^20", ReplayFilter::server_default()),
        ("client_default 2^14", ReplayFilter::client_default()),
    ] {
        let mut f = filter;
        let mut ctr = 0u64;
        let ns = measure(|| {
            ctr = ctr.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut nonce = [0u8; 24];
            nonce[..8].copy_from_slice(&ctr.to_le_bytes());
            nonce[8..16].copy_from_slice(&ctr.rotate_left(17).to_le_bytes());
            black_box(f.check_and_insert(&nonce));
        });
        println!(
            "replay {name:<24} {ns:>8.1} ns/op ({} bitmap bytes)",
            f.bitmap_bytes()
        );
    }
}
