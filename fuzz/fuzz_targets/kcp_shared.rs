//! Model-based, several conversations on one shared path: three pairs of KCP engines whose
//! senders share rate control per direction (`PathControl`, as the event loop's conversations
//! with one peer do), over a network the input controls (send, flush, update, deliver, drop,
//! duplicate, reorder, receive, advance the clock, and end a conversation mid-transfer: it is
//! dropped and a fresh one joins the path). At every step each receiver holds a prefix of what
//! its sender sent, and the path's backlog counts exactly the conversations with data queued.
//! At the end the network heals: every stream completes (rate control must not stall), the
//! path's flight drains to zero, and once all engines are gone nothing is left on it.
#![no_main]

use std::collections::VecDeque;

use kcptun::kcp::{Kcp, KcpConfig, PathControl};
use kcptun_rs_fuzz::{stream_byte, Input};
use libfuzzer_sys::fuzz_target;

const PAIRS: usize = 3;
/// Bytes one conversation may queue in one run.
const MAX_SEND: u64 = 64 * 1024;

struct Side {
    kcp: Kcp,
    sent: u64,
    received: u64,
    base: u64,
}

impl Side {
    fn new(conv: u32, cfg: &KcpConfig, path: &PathControl, base: u64) -> Side {
        let mut kcp = Kcp::new(conv, cfg);
        kcp.join_path(path);
        // As the event loop sets it: ACKs of short messages may wait 2 ms for a reply.
        kcp.set_ack_hold(2);
        Side {
            kcp,
            sent: 0,
            received: 0,
            base,
        }
    }

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

/// One conversation: `ab[0]` is the client end (its path: `paths[0]`), `ab[1]` the server end.
struct Pair {
    conv: u32,
    ab: [Side; 2],
}

impl Pair {
    fn new(conv: u32, cfg: &KcpConfig, paths: &[PathControl; 2]) -> Pair {
        let base = u64::from(conv) << 40;
        Pair {
            conv,
            ab: [
                Side::new(conv, cfg, &paths[0], base),
                Side::new(conv, cfg, &paths[1], base | 1 << 39),
            ],
        }
    }

    /// Receives at end `to` and checks the bytes against what the other end sent.
    fn recv(&mut self, to: usize, max: usize) {
        let (from_base, from_sent) = (self.ab[1 - to].base, self.ab[1 - to].sent);
        let s = &mut self.ab[to];
        let mut buf = vec![0u8; max.max(1)];
        loop {
            let n = s.kcp.recv(&mut buf);
            if n == 0 {
                break;
            }
            for (i, &b) in buf[..n].iter().enumerate() {
                assert_eq!(b, stream_byte(from_base + s.received + i as u64));
            }
            s.received += n as u64;
            assert!(s.received <= from_sent, "received more than was sent");
        }
    }

    fn complete(&self) -> bool {
        self.ab[1].received == self.ab[0].sent
            && self.ab[0].received == self.ab[1].sent
            && self.ab[0].kcp.is_idle()
            && self.ab[1].kcp.is_idle()
    }
}

/// Packets in flight in one direction, with the conversation they belong to.
type Net = VecDeque<(u32, Vec<u8>)>;

fn deliver(pairs: &mut [Pair], to: usize, now: u32, conv: u32, p: &[u8]) {
    // A conversation that ended: its late packets go nowhere.
    if let Some(pair) = pairs.iter_mut().find(|x| x.conv == conv) {
        let r = &mut pair.ab[to].kcp;
        r.input(now, p).expect("an honest packet is accepted");
    }
}

fn check_backlog(pairs: &[Pair], paths: &[PathControl; 2]) {
    for (end, path) in paths.iter().enumerate() {
        let queued = pairs.iter().filter(|x| x.ab[end].kcp.queued() > 0).count();
        assert_eq!(path.backlogged(), queued, "backlog of path {end}");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let mtu = 64 + (inp.u8() as usize) * 4;
    let sndwnd = 16 + (inp.u8() % 64) as u16;
    let rcvwnd = 16 + (inp.u8() % 64) as u16;
    // The top bit of the nodelay byte turns on ACK copies (the corpus keeps its layout).
    let nodelay = inp.u8();
    let cfg = KcpConfig {
        mtu,
        sndwnd,
        rcvwnd,
        nodelay: (nodelay % 3) as u32,
        interval: 10 + (inp.u8() as u32 % 100),
        rate_control: true,
        ack_copies: 1 + (nodelay >> 7),
        ..KcpConfig::default()
    };
    let mut now: u32 = inp.u32();
    let paths = [PathControl::new(cfg.mtu), PathControl::new(cfg.mtu)];
    let mut next_conv = 1u32;
    let mut pairs: Vec<Pair> = (0..PAIRS)
        .map(|_| {
            next_conv += 1;
            Pair::new(next_conv, &cfg, &paths)
        })
        .collect();
    // net[0]: client ends -> server ends, net[1]: back.
    let mut net: [Net; 2] = [VecDeque::new(), VecDeque::new()];
    let mut ops = 0;
    while !inp.is_empty() && ops < 400 {
        ops += 1;
        let op = inp.u8();
        let dir = (op >> 7) as usize;
        let i = (op >> 4) as usize % PAIRS;
        match op % 13 {
            0 => {
                let n = inp.u16() as usize % 20000;
                pairs[i].ab[dir].send(n);
            }
            1 | 2 => {
                let q = &mut net[dir];
                let conv = pairs[i].conv;
                let k = &mut pairs[i].ab[dir].kcp;
                if op % 13 == 1 {
                    k.flush(now, |p| q.push_back((conv, p.to_vec())));
                } else {
                    k.update(now, |p| q.push_back((conv, p.to_vec())));
                }
            }
            3 | 4 => {
                if let Some((conv, p)) = net[dir].pop_front() {
                    deliver(&mut pairs, 1 - dir, now, conv, &p);
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
                let q = &mut net[dir];
                if let Some(p) = q.pop_front() {
                    let at = (inp.u8() as usize % 9).min(q.len());
                    q.insert(at, p);
                }
            }
            8 => now = now.wrapping_add(inp.u16() as u32 % 5000),
            9 => {
                let max = inp.u16() as usize % 8192;
                pairs[i].recv(1 - dir, max);
            }
            10 => {
                while let Some((conv, p)) = net[dir].pop_front() {
                    deliver(&mut pairs, 1 - dir, now, conv, &p);
                }
            }
            11 => {
                // The conversation ends mid-transfer (a reset, or the loop dropping it); a
                // fresh one takes its place on the same paths.
                next_conv += 1;
                if inp.u8() & 1 == 1 {
                    pairs[i].ab[0].kcp.leave_path();
                    pairs[i].ab[1].kcp.leave_path();
                }
                pairs[i] = Pair::new(next_conv, &cfg, &paths);
            }
            _ => {
                for x in &pairs {
                    let _ = x.ab[0].kcp.check(now);
                    let _ = x.ab[1].kcp.check(now);
                }
            }
        }
        check_backlog(&pairs, &paths);
    }
    // Heal: a perfect network, 50 ms steps, until every stream is complete.
    for _ in 0..4000 {
        if pairs
            .iter()
            .any(|x| x.ab[0].kcp.is_dead() || x.ab[1].kcp.is_dead())
        {
            return;
        }
        if pairs.iter().all(Pair::complete) {
            break;
        }
        now = now.wrapping_add(50);
        for dir in 0..2 {
            let q = &mut net[dir];
            for x in pairs.iter_mut() {
                let conv = x.conv;
                x.ab[dir]
                    .kcp
                    .update(now, |p| q.push_back((conv, p.to_vec())));
            }
            while let Some((conv, p)) = net[dir].pop_front() {
                deliver(&mut pairs, 1 - dir, now, conv, &p);
            }
        }
        for x in pairs.iter_mut() {
            x.recv(0, 65536);
            x.recv(1, 65536);
        }
        check_backlog(&pairs, &paths);
    }
    if pairs
        .iter()
        .any(|x| x.ab[0].kcp.is_dead() || x.ab[1].kcp.is_dead())
    {
        return;
    }
    for (n, x) in pairs.iter().enumerate() {
        assert!(
            x.complete(),
            "pair {n} made no progress after healing: sent {}/{} received {}/{}, waitsnd {}/{}\n \
             client: {}\n server: {}",
            x.ab[0].sent,
            x.ab[1].sent,
            x.ab[1].received,
            x.ab[0].received,
            x.ab[0].kcp.waitsnd(),
            x.ab[1].kcp.waitsnd(),
            x.ab[0].kcp.describe(),
            x.ab[1].kcp.describe()
        );
    }
    // Everything acknowledged: nothing of anyone's is in flight on either path.
    assert_eq!((paths[0].inflight(), paths[1].inflight()), (0, 0));
    assert_eq!((paths[0].active(), paths[1].active()), (0, 0));
    drop(pairs);
    for p in &paths {
        assert_eq!(
            (p.inflight(), p.backlogged(), p.active(), p.handles()),
            (0, 0, 0, 1)
        );
    }
});
