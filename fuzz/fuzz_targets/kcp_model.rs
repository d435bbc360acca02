//! Model-based: two KCP engines joined by a network the input controls. Each operation sends,
//! flushes, updates, delivers, drops, duplicates or reorders a packet, receives, or advances
//! the clock (which starts anywhere in u32, so it wraps). At every step the bytes each side
//! has received must be a prefix of what the other side sent. At the end the network heals
//! (every packet delivered, time advancing): unless an engine declared its link dead, both
//! sides must then receive everything.
#![no_main]

use std::collections::VecDeque;

use kcptun::kcp::{Kcp, KcpConfig};
use kcptun_rs_fuzz::{stream_byte, Input};
use libfuzzer_sys::fuzz_target;

const CONV: u32 = 0x0bad_cafe;
/// Bytes one side may queue in one run: enough for several windows of small segments.
const MAX_SEND: u64 = 256 * 1024;

struct Side {
    kcp: Kcp,
    sent: u64,
    received: u64,
    /// Stream offset seed, so the two directions carry different bytes.
    base: u64,
}

impl Side {
    fn send(&mut self, n: usize) {
        let n = (n as u64).min(MAX_SEND - self.sent) as usize;
        let data: Vec<u8> = (0..n as u64)
            .map(|i| stream_byte(self.base + self.sent + i))
            .collect();
        let took = self.kcp.send(&data);
        assert!(took <= n);
        self.sent += took as u64;
    }
}

/// Receives into `to` and checks the bytes against what `from` sent.
fn recv(to: &mut Side, from_base: u64, from_sent: u64, max: usize) {
    let mut buf = vec![0u8; max.max(1)];
    loop {
        let n = to.kcp.recv(&mut buf);
        if n == 0 {
            break;
        }
        for (i, &b) in buf[..n].iter().enumerate() {
            assert_eq!(
                b,
                stream_byte(from_base + to.received + i as u64),
                "received byte {} differs",
                to.received + i as u64
            );
        }
        to.received += n as u64;
        assert!(to.received <= from_sent, "received more than was sent");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mut cfg = KcpConfig {
        mtu: 64 + (inp.u8() as usize) * 4,
        sndwnd: 16 + (inp.u8() % 64) as u16,
        rcvwnd: 16 + (inp.u8() % 64) as u16,
        nodelay: (inp.u8() % 3) as u32,
        resend: (inp.u8() % 3) as u32,
        nc: inp.u8() & 1 == 1,
        ..KcpConfig::default()
    };
    // One byte for both keeps the corpus' layout: bit 0 rate control, bit 1 ACK copies.
    let flags = inp.u8();
    cfg.rate_control = flags & 1 == 1;
    cfg.ack_copies = 1 + (flags >> 1 & 1);
    cfg.interval = 10 + (inp.u8() as u32 % 100);
    let mut now: u32 = inp.u32();
    let mut a = Side {
        kcp: Kcp::new(CONV, &cfg),
        sent: 0,
        received: 0,
        base: 0,
    };
    let mut b = Side {
        kcp: Kcp::new(CONV, &cfg),
        sent: 0,
        received: 0,
        base: 1 << 40,
    };
    // net[0]: a -> b, net[1]: b -> a.
    let mut net: [VecDeque<Vec<u8>>; 2] = [VecDeque::new(), VecDeque::new()];
    let mut ops = 0;
    while !inp.is_empty() && ops < 400 {
        ops += 1;
        let op = inp.u8();
        let dir = (op >> 7) as usize;
        match op % 12 {
            0 => {
                let n = inp.u16() as usize % 20000;
                if dir == 0 {
                    a.send(n)
                } else {
                    b.send(n)
                }
            }
            1 => {
                let q = &mut net[dir];
                let s = if dir == 0 { &mut a } else { &mut b };
                s.kcp.flush(now, |p| q.push_back(p.to_vec()));
            }
            2 => {
                let q = &mut net[dir];
                let s = if dir == 0 { &mut a } else { &mut b };
                s.kcp.update(now, |p| q.push_back(p.to_vec()));
            }
            3 | 4 => {
                // Deliver the front packet.
                if let Some(p) = net[dir].pop_front() {
                    let r = if dir == 0 { &mut b } else { &mut a };
                    r.kcp.input(now, &p).expect("an honest packet is accepted");
                }
            }
            5 => {
                net[dir].pop_front();
            }
            6 => {
                if let Some(p) = net[dir].front().cloned() {
                    net[dir].push_back(p);
                }
            }
            7 => {
                // Reorder: the front packet goes behind up to 8 others.
                let q = &mut net[dir];
                if let Some(p) = q.pop_front() {
                    let at = (inp.u8() as usize % 9).min(q.len());
                    q.insert(at, p);
                }
            }
            8 => now = now.wrapping_add(inp.u16() as u32 % 5000),
            9 => {
                let max = inp.u16() as usize % 8192;
                if dir == 0 {
                    recv(&mut b, a.base, a.sent, max);
                } else {
                    recv(&mut a, b.base, b.sent, max);
                }
            }
            10 => {
                // Deliver everything queued in this direction.
                while let Some(p) = net[dir].pop_front() {
                    let r = if dir == 0 { &mut b } else { &mut a };
                    r.kcp.input(now, &p).expect("an honest packet is accepted");
                }
            }
            _ => {
                let _ = a.kcp.check(now);
                let _ = b.kcp.check(now);
            }
        }
    }
    // Heal: a perfect network, 50 ms steps, until both streams are complete.
    for _ in 0..4000 {
        if a.kcp.is_dead() || b.kcp.is_dead() {
            return;
        }
        if b.received == a.sent && a.received == b.sent && a.kcp.is_idle() && b.kcp.is_idle() {
            break;
        }
        now = now.wrapping_add(50);
        #[allow(clippy::needless_range_loop)] // `dir` also picks the sides
        for dir in 0..2 {
            let q = &mut net[dir];
            let s = if dir == 0 { &mut a } else { &mut b };
            s.kcp.update(now, |p| q.push_back(p.to_vec()));
            while let Some(p) = net[dir].pop_front() {
                let r = if dir == 0 { &mut b } else { &mut a };
                r.kcp.input(now, &p).expect("an honest packet is accepted");
            }
        }
        recv(&mut b, a.base, a.sent, 65536);
        recv(&mut a, b.base, b.sent, 65536);
    }
    if a.kcp.is_dead() || b.kcp.is_dead() {
        return;
    }
    let state = |s: &Side| {
        format!(
            "sent {} received {} waitsnd {} cwnd {} rmt_wnd {} rto {} peek {} check in {} ms; {}",
            s.sent,
            s.received,
            s.kcp.waitsnd(),
            s.kcp.cwnd(),
            s.kcp.remote_wnd(),
            s.kcp.rto(),
            s.kcp.peek_size(),
            s.kcp.check(now).wrapping_sub(now),
            s.kcp.describe()
        )
    };
    assert!(
        b.received == a.sent && a.received == b.sent,
        "no progress after healing\n a: {}\n b: {}\n cfg: {cfg:?}",
        state(&a),
        state(&b)
    );
});
