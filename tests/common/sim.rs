//! A deterministic lossy network on a virtual clock, for KCP engines (ours and the reference
//! ikcp.c). Each direction is a [`Link`] with delay, jitter, Bernoulli and burst loss
//! (Gilbert-Elliott), reordering, duplication and a bandwidth limit with a drop-tail queue.
//! [`run`] drives two [`Endpoint`]s through a pair of links until both byte streams arrived
//! intact and both ends are idle; it sleeps exactly until the next packet or engine deadline.
#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use kcptun::kcp::{Kcp, KcpConfig};

/// kcptun-rs's KCP defaults (config.rs): mtu 1400 less IP/UDP and framing, windows 2048,
/// nodelay 1, interval 100, no fast resend; `rate_control` as given. A dead link never ends
/// a simulated transfer.
pub fn forwarder_defaults(rate_control: bool) -> KcpConfig {
    KcpConfig {
        mtu: 1400 - 28 - 40,
        sndwnd: 2048,
        rcvwnd: 2048,
        rate_control,
        dead_link: 1000,
        ..KcpConfig::default()
    }
}

/// splitmix64: small, seedable, good enough for a simulator.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// One direction of the network.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    /// One-way delay and uniform jitter on top of it, in ms.
    pub delay: u64,
    pub jitter: u64,
    /// Jitter never reorders (the netlab emulator's default `order=keep`): a packet leaves no
    /// earlier than the one before it, so in a busy stream most wait for the slowest draw.
    pub keep_order: bool,
    /// Bernoulli loss probability in the good state.
    pub loss: f64,
    /// Gilbert-Elliott burst loss: enter / leave the bad state per packet; loss while bad.
    pub burst_enter: f64,
    pub burst_exit: f64,
    pub burst_loss: f64,
    /// Probability that a packet is held back by `reorder_extra` ms (lets later ones pass).
    pub reorder: f64,
    pub reorder_extra: u64,
    /// Probability that a packet skips the delay and jitter (netem's and the netlab
    /// emulator's `reorder`: it overtakes everything in flight).
    pub express: f64,
    /// Probability that a packet is delivered twice.
    pub dup: f64,
    /// Bytes per ms (0 = unlimited) and the drop-tail queue in front of it, in bytes.
    pub bandwidth: u64,
    pub queue: u64,
}

impl LinkConfig {
    pub fn clean(delay: u64) -> LinkConfig {
        LinkConfig {
            delay,
            jitter: 0,
            keep_order: false,
            loss: 0.0,
            burst_enter: 0.0,
            burst_exit: 1.0,
            burst_loss: 0.0,
            reorder: 0.0,
            reorder_extra: 0,
            express: 0.0,
            dup: 0.0,
            bandwidth: 0,
            queue: 0,
        }
    }

    pub fn lossy(delay: u64, loss: f64) -> LinkConfig {
        LinkConfig {
            loss,
            ..LinkConfig::clean(delay)
        }
    }

    /// A random hostile-but-working link for seed sweeps.
    pub fn random(rng: &mut Rng) -> LinkConfig {
        let bandwidth = [0, 200, 1000, 5000][rng.below(4) as usize];
        LinkConfig {
            delay: 1 + rng.below(80),
            jitter: rng.below(20),
            keep_order: false,
            loss: [0.0, 0.01, 0.05, 0.15][rng.below(4) as usize],
            burst_enter: [0.0, 0.01, 0.03][rng.below(3) as usize],
            burst_exit: 0.3,
            burst_loss: 0.8,
            reorder: [0.0, 0.02, 0.1][rng.below(3) as usize],
            reorder_extra: 5 + rng.below(40),
            express: 0.0,
            dup: [0.0, 0.01, 0.05][rng.below(3) as usize],
            bandwidth,
            queue: 16_000 + rng.below(100_000),
        }
    }
}

pub struct Link {
    cfg: LinkConfig,
    rng: Rng,
    bad: bool,
    /// When the bottleneck finishes serialising what it holds, in µs.
    busy_until_us: u64,
    /// When the last packet is delivered (for `keep_order`), in ms.
    last_at: u64,
    seq: u64,
    in_flight: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    pub sent: u64,
    pub dropped: u64,
}

impl Link {
    pub fn new(cfg: LinkConfig, seed: u64) -> Link {
        Link {
            cfg,
            rng: Rng::new(seed),
            bad: false,
            busy_until_us: 0,
            last_at: 0,
            seq: 0,
            in_flight: BinaryHeap::new(),
            sent: 0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now: u64, pkt: &[u8]) {
        self.sent += 1;
        let c = &self.cfg;
        if self.bad {
            if self.rng.chance(c.burst_exit) {
                self.bad = false;
            }
        } else if self.rng.chance(c.burst_enter) {
            self.bad = true;
        }
        let p = if self.bad { c.burst_loss } else { c.loss };
        if self.rng.chance(p) {
            self.dropped += 1;
            return;
        }
        let now_us = now * 1000;
        let mut depart_us = now_us;
        if c.bandwidth > 0 {
            let start = self.busy_until_us.max(now_us);
            let backlog = (start - now_us) * c.bandwidth / 1000;
            if backlog + pkt.len() as u64 > c.queue {
                self.dropped += 1;
                return;
            }
            self.busy_until_us = start + (pkt.len() as u64 * 1000).div_ceil(c.bandwidth);
            depart_us = self.busy_until_us;
        }
        let copies = if self.rng.chance(c.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = depart_us.div_ceil(1000) + c.delay;
            if c.jitter > 0 {
                at += self.rng.below(c.jitter + 1);
            }
            if c.keep_order {
                at = at.max(self.last_at);
                self.last_at = at;
            }
            if self.rng.chance(c.reorder) {
                at += c.reorder_extra;
            }
            if c.express > 0.0 && self.rng.chance(c.express) {
                at = depart_us.div_ceil(1000);
            }
            self.seq += 1;
            self.in_flight.push(Reverse((at, self.seq, pkt.to_vec())));
        }
    }

    pub fn next_time(&self) -> Option<u64> {
        self.in_flight.peek().map(|Reverse((t, _, _))| *t)
    }

    pub fn pop_due(&mut self, now: u64) -> Option<Vec<u8>> {
        if self.next_time()? <= now {
            self.in_flight.pop().map(|Reverse((_, _, p))| p)
        } else {
            None
        }
    }

    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }
}

/// What the simulator needs from a KCP implementation.
pub trait Endpoint {
    fn send(&mut self, data: &[u8]) -> usize;
    fn recv(&mut self, buf: &mut [u8]) -> usize;
    fn input(&mut self, now: u32, pkt: &[u8]);
    /// Emit what is due now (called right after `send` and `input`).
    fn flush(&mut self, now: u32, out: &mut Vec<Vec<u8>>);
    /// Timer callback, called when `check` says so.
    fn update(&mut self, now: u32, out: &mut Vec<Vec<u8>>);
    fn check(&self, now: u32) -> u32;
    /// Nothing in flight or queued.
    fn is_idle(&self) -> bool;
}

impl Endpoint for Kcp {
    fn send(&mut self, data: &[u8]) -> usize {
        Kcp::send(self, data)
    }
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        Kcp::recv(self, buf)
    }
    fn input(&mut self, now: u32, pkt: &[u8]) {
        Kcp::input(self, now, pkt).expect("well-formed packet refused");
    }
    fn flush(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        Kcp::flush(self, now, |p| out.push(p.to_vec()));
    }
    fn update(&mut self, now: u32, out: &mut Vec<Vec<u8>>) {
        Kcp::update(self, now, |p| out.push(p.to_vec()));
    }
    fn check(&self, now: u32) -> u32 {
        Kcp::check(self, now)
    }
    fn is_idle(&self) -> bool {
        Kcp::is_idle(self) && self.peek_size() == 0
    }
}

/// Result of one simulated exchange; times in virtual ms since the start.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the last byte of a→b / b→a arrived (0 if nothing was sent that way).
    pub done_ab: u64,
    pub done_ba: u64,
    /// When both ends were idle with the links empty.
    pub end: u64,
    pub wakeups: u64,
    pub pkts_ab: u64,
    pub pkts_ba: u64,
}

pub struct Side<'a> {
    pub ep: &'a mut dyn Endpoint,
    /// Bytes this side writes.
    pub data: &'a [u8],
    sent: usize,
    got: Vec<u8>,
    out: Vec<Vec<u8>>,
}

impl<'a> Side<'a> {
    pub fn new(ep: &'a mut dyn Endpoint, data: &'a [u8]) -> Side<'a> {
        Side {
            ep,
            data,
            sent: 0,
            got: Vec::new(),
            out: Vec::new(),
        }
    }
}

/// Runs until both streams are delivered and both ends idle. Panics on corruption, on a
/// stall past `limit` ms, or on a busy loop (an engine asking to run now without progress).
pub fn run<'s>(
    a: &mut Side<'s>,
    b: &mut Side<'s>,
    ab: &mut Link,
    ba: &mut Link,
    base: u32,
    seed: u64,
    limit: u64,
) -> Outcome {
    let mut rng = Rng::new(seed ^ 0xA5A5);
    let mut t: u64 = 0;
    let (mut done_ab, mut done_ba) = (0u64, 0u64);
    let mut wakeups = 0u64;
    let mut same_t = 0u32;
    let mut last_t = u64::MAX;
    let mut rbuf = vec![0u8; 70_000];
    loop {
        let now = base.wrapping_add(t as u32);
        wakeups += 1;
        if t == last_t {
            same_t += 1;
            assert!(same_t < 10_000, "busy loop at t={t}");
        } else {
            same_t = 0;
            last_t = t;
        }
        // Deliveries, then the receiver flushes (ACKs leave at once).
        for (link, side) in [(&mut *ab, &mut *b), (&mut *ba, &mut *a)] {
            let mut got_any = false;
            while let Some(pkt) = link.pop_due(t) {
                side.ep.input(now, &pkt);
                got_any = true;
            }
            if got_any {
                side.ep.flush(now, &mut side.out);
            }
        }
        // Applications: write in random-sized pieces, read with random-sized buffers.
        for side in [&mut *a, &mut *b] {
            let mut wrote = false;
            while side.sent < side.data.len() {
                let piece = 1 + rng.below(20_000) as usize;
                let end = (side.sent + piece).min(side.data.len());
                let n = side.ep.send(&side.data[side.sent..end]);
                if n == 0 {
                    break;
                }
                side.sent += n;
                wrote = true;
            }
            if wrote {
                side.ep.flush(now, &mut side.out);
            }
        }
        let (data_a, data_b) = (a.data, b.data);
        for (side, peer_data) in [(&mut *a, data_b), (&mut *b, data_a)] {
            loop {
                let want = 1 + rng.below(rbuf.len() as u64) as usize;
                let n = side.ep.recv(&mut rbuf[..want]);
                if n == 0 {
                    break;
                }
                let at = side.got.len();
                assert!(at + n <= peer_data.len(), "more bytes than sent");
                assert_eq!(
                    &rbuf[..n],
                    &peer_data[at..at + n],
                    "stream corrupted at {at}"
                );
                side.got.extend_from_slice(&rbuf[..n]);
            }
        }
        if done_ab == 0 && !a.data.is_empty() && b.got.len() == a.data.len() {
            done_ab = t;
        }
        if done_ba == 0 && !b.data.is_empty() && a.got.len() == b.data.len() {
            done_ba = t;
        }
        // Timers.
        for side in [&mut *a, &mut *b] {
            if (side.ep.check(now).wrapping_sub(now) as i32) <= 0 {
                side.ep.update(now, &mut side.out);
            }
        }
        for (link, side) in [(&mut *ab, &mut *a), (&mut *ba, &mut *b)] {
            for p in side.out.drain(..) {
                link.send(t, &p);
            }
        }
        let delivered = a.got.len() == b.data.len() && b.got.len() == a.data.len();
        if delivered && a.ep.is_idle() && b.ep.is_idle() && ab.is_empty() && ba.is_empty() {
            return Outcome {
                done_ab,
                done_ba,
                end: t,
                wakeups,
                pkts_ab: ab.sent,
                pkts_ba: ba.sent,
            };
        }
        assert!(
            t < limit,
            "stalled at t={t}: a got {}/{}, b got {}/{}",
            a.got.len(),
            b.data.len(),
            b.got.len(),
            a.data.len()
        );
        // Sleep until the next event.
        let mut next = u64::MAX;
        for l in [&*ab, &*ba] {
            if let Some(x) = l.next_time() {
                next = next.min(x);
            }
        }
        for side in [&*a, &*b] {
            let d = side.ep.check(now).wrapping_sub(now) as i32;
            next = next.min(t + d.max(0) as u64);
        }
        assert!(next != u64::MAX, "nothing scheduled");
        t = next.max(t);
    }
}
