//! Engine throughput on a lossless loopback pair: segments processed per second by
//! `input` + `flush` (PUSH segments at the receiver plus ACK segments at the sender), with
//! kcptun-libev settings. No clock reads inside the engine; one `Instant` around the loop.
//!
//! Run: `cargo bench --bench kcp`. The goodput table against reference ikcp is a test:
//! `cargo test --release --test kcp_ref -- --nocapture`.

use std::hint::black_box;
use std::time::Instant;

use kcptun::kcp::{Kcp, KcpConfig};

/// Packets of one flush, stored back to back to avoid an allocation per packet.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Wire {
    fn push(&mut self, p: &[u8]) {
        self.bytes.extend_from_slice(p);
        self.ends.push(self.bytes.len());
    }

    fn deliver(&mut self, k: &mut Kcp, now: u32) -> u64 {
        let mut start = 0;
        for &end in &self.ends {
            k.input(now, &self.bytes[start..end])
                .expect("loopback packet refused");
            start = end;
        }
        let n = self.ends.len() as u64;
        self.bytes.clear();
        self.ends.clear();
        n
    }
}

fn run(total_bytes: usize, cfg: &KcpConfig) -> (f64, u64, u64) {
    let mut a = Kcp::new(1, cfg);
    let mut b = Kcp::new(1, cfg);
    let chunk = vec![0x5au8; 16 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut to_b, mut to_a) = (Wire::default(), Wire::default());
    let (mut sent, mut got, mut now) = (0usize, 0usize, 0u32);
    let start = Instant::now();
    while got < total_bytes {
        now = now.wrapping_add(1);
        while sent < total_bytes {
            let n = a.send(&chunk[..chunk.len().min(total_bytes - sent)]);
            if n == 0 {
                break;
            }
            sent += n;
        }
        a.flush(now, |p| to_b.push(p));
        to_b.deliver(&mut b, now);
        b.flush(now, |p| to_a.push(p));
        loop {
            let n = b.recv(&mut buf);
            if n == 0 {
                break;
            }
            got += n;
        }
        to_a.deliver(&mut a, now);
    }
    let secs = start.elapsed().as_secs_f64();
    let segs = b.stats().segs_recv + a.stats().acks_recv;
    black_box(&buf);
    (secs, segs, b.stats().pkts_in + a.stats().pkts_in)
}

fn main() {
    // Rate control on (the default) and off (ikcp's logic): its cost per segment.
    for rate_control in [true, false] {
        let cfg = KcpConfig {
            rate_control,
            ..KcpConfig::default()
        };
        // Warm up, then measure.
        run(10_000_000, &cfg);
        let total = 200_000_000;
        let (secs, segs, pkts) = run(total, &cfg);
        println!(
            "kcp loopback, mtu {}, wnd {}/{}, rate control {}: {:.0} segments/s ({:.0} packets/s), \
             {:.0} MB/s payload",
            cfg.mtu,
            cfg.sndwnd,
            cfg.rcvwnd,
            if rate_control { "on " } else { "off" },
            segs as f64 / secs,
            pkts as f64 / secs,
            total as f64 / secs / 1e6
        );
    }
}
