//! Unit tests of the engine, grouped by behaviour. Packets are moved by hand so each test
//! controls exactly what is lost, reordered or forged.

use super::*;

const CONV: u32 = 0x1a2b_3c4d;

/// ikcp's behaviour exactly (these tests pin it down); rate control has its own section.
fn classic() -> KcpConfig {
    KcpConfig {
        rate_control: false,
        ..KcpConfig::default()
    }
}

fn small() -> KcpConfig {
    // mss 26: easy to count segments.
    KcpConfig {
        mtu: 50,
        ..classic()
    }
}

fn flush(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    k.flush(now, |p| v.push(p.to_vec()));
    v
}

fn update(k: &mut Kcp, now: u32) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    k.update(now, |p| v.push(p.to_vec()));
    v
}

fn headers(pkts: &[Vec<u8>], order: ByteOrder) -> Vec<SegmentHeader> {
    pkts.iter()
        .flat_map(|p| {
            Segments::new(p, order)
                .map(|r| r.unwrap().0)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn pushes(pkts: &[Vec<u8>]) -> Vec<u32> {
    headers(pkts, ByteOrder::Big)
        .iter()
        .filter(|h| h.cmd == CMD_PUSH)
        .map(|h| h.sn)
        .collect()
}

fn seg(cmd: u8, sn: u32, ts: u32, una: u32, wnd: u16, payload: &[u8]) -> Vec<u8> {
    let h = SegmentHeader {
        conv: CONV,
        cmd,
        frg: 0,
        wnd,
        ts,
        sn,
        una,
        len: payload.len() as u32,
    };
    let mut v = vec![0; OVERHEAD];
    h.emit(&mut v, ByteOrder::Big);
    v.extend_from_slice(payload);
    v
}

fn input_all(k: &mut Kcp, now: u32, pkts: &[Vec<u8>]) {
    for p in pkts {
        k.input(now, p).unwrap();
    }
}

fn recv_all(k: &mut Kcp) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 97];
    loop {
        let n = k.recv(&mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Runs a pair on a 1 ms link until both are idle; `drop(n)` decides the fate of the n-th
/// packet. Returns what `b` received.
fn exchange(a: &mut Kcp, b: &mut Kcp, start: u32, mut drop: impl FnMut(usize) -> bool) -> Vec<u8> {
    let mut now = start;
    let mut n = 0;
    let mut got = Vec::new();
    let mut to_b: Vec<Vec<u8>> = flush(a, now);
    let mut to_a: Vec<Vec<u8>> = Vec::new();
    for _ in 0..100_000 {
        now = now.wrapping_add(1);
        for p in std::mem::take(&mut to_b) {
            n += 1;
            if !drop(n) {
                b.input(now, &p).unwrap();
            }
        }
        to_a.extend(flush(b, now));
        got.extend(recv_all(b));
        for p in std::mem::take(&mut to_a) {
            n += 1;
            if !drop(n) {
                a.input(now, &p).unwrap();
            }
        }
        to_b.extend(flush(a, now));
        if a.is_idle() && b.is_idle() && to_a.is_empty() && to_b.is_empty() {
            return got;
        }
        // Sleep until the earlier deadline when nothing is on the wire.
        if to_a.is_empty() && to_b.is_empty() {
            let next = [a.check(now), b.check(now)]
                .into_iter()
                .min_by_key(|t| t.wrapping_sub(now))
                .unwrap();
            now = next.wrapping_sub(1);
            to_b.extend(update(a, next));
            to_a.extend(update(b, next));
        }
    }
    panic!("exchange did not finish: {a:?} {b:?}");
}

// ============================================================================ send / recv

/// A conversation that is over gives its buffers back at once (TIME_WAIT keeps the engine
/// to answer late packets; with 2048-segment windows a busy past can be megabytes).
#[test]
fn release_memory_after_a_bulk_transfer() {
    let cfg = KcpConfig {
        sndwnd: 2048,
        rcvwnd: 2048,
        ..KcpConfig::default()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i * 7) as u8).collect();
    let mut off = 0;
    while off < data.len() {
        let n = a.send(&data[off..]);
        if n == 0 {
            break;
        }
        off += n;
    }
    let got = exchange(&mut a, &mut b, 0, |n| n % 50 == 0);
    assert_eq!(got, &data[..off]);
    assert!(off > 1_000_000, "only {off} bytes queued");
    let (before_a, before_b) = (a.heap_bytes(), b.heap_bytes());
    assert!(before_a > 500_000, "sender holds {before_a} B");
    a.release_memory();
    b.release_memory();
    assert!(
        a.heap_bytes() < 8_192,
        "sender still holds {} B",
        a.heap_bytes()
    );
    assert!(
        b.heap_bytes() < 8_192,
        "receiver still holds {} B",
        b.heap_bytes()
    );
    eprintln!(
        "heap: sender {before_a} -> {} B, receiver {before_b} -> {} B",
        a.heap_bytes(),
        b.heap_bytes()
    );
    // Still a working engine: more data goes through.
    assert_eq!(a.send(b"after"), 5);
    assert_eq!(exchange(&mut a, &mut b, 1_000_000, |_| false), b"after");
}

#[test]
fn roundtrip_and_partial_recv() {
    let mut a = Kcp::new(CONV, &small());
    let mut b = Kcp::new(CONV, &small());
    let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    assert_eq!(a.send(&data), 1000);
    let pkts = flush(&mut a, 0);
    assert!(pkts.iter().all(|p| p.len() <= 50));
    input_all(&mut b, 1, &pkts);
    assert_eq!(b.peek_size(), 1000);
    let mut buf = [0u8; 7];
    assert_eq!(b.recv(&mut buf), 7);
    assert_eq!(&buf, &data[..7]);
    assert_eq!(b.peek_size(), 993);
    let rest = recv_all(&mut b);
    assert_eq!(rest, &data[7..]);
    assert_eq!(b.peek_size(), 0);
    assert_eq!(b.stats().data_bytes_recv, 1000);
}

#[test]
fn send_capacity_is_backpressure() {
    let cfg = KcpConfig {
        sndwnd: 4,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    assert_eq!(a.send_capacity(), 4 * 26);
    assert_eq!(a.send(&[1; 200]), 104);
    assert_eq!(a.send_capacity(), 0);
    assert_eq!(a.send(&[1; 10]), 0);
    assert_eq!(a.waitsnd(), 4);
    // The flush moves one window into flight; the queue has room again.
    flush(&mut a, 0);
    assert_eq!(a.send_capacity(), 104);
    assert_eq!(a.waitsnd(), 4);
}

#[test]
fn message_mode_keeps_boundaries() {
    let cfg = KcpConfig {
        stream: false,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    let big: Vec<u8> = (0..3 * 26 + 1).map(|i| i as u8).collect();
    assert_eq!(a.send(b"hello"), 5);
    assert_eq!(a.send(&big), big.len());
    assert_eq!(a.send(&vec![0; 200 * 26]), 0, "more than 127 fragments");
    input_all(&mut b, 1, &flush(&mut a, 0));
    assert_eq!(b.peek_size(), 5);
    let mut buf = [0u8; 200];
    assert_eq!(b.recv(&mut buf[..3]), 0, "buffer too small for the message");
    assert_eq!(b.recv(&mut buf), 5);
    assert_eq!(&buf[..5], b"hello");
    assert_eq!(b.peek_size(), big.len());
    assert_eq!(b.recv(&mut buf), big.len());
    assert_eq!(&buf[..big.len()], &big[..]);
}

// ========================================================================= stream merging

#[test]
fn small_writes_merge_into_one_segment() {
    let mut a = Kcp::new(CONV, &small());
    a.send(b"ab");
    a.send(b"cd");
    a.send(&[7; 30]); // fills the segment to 26 and starts another
    assert_eq!(a.waitsnd(), 2);
    let pkts = flush(&mut a, 0);
    let h = headers(&pkts, ByteOrder::Big);
    assert_eq!(h.iter().map(|h| h.len).collect::<Vec<_>>(), [26, 8]);
    assert!(h.iter().all(|h| h.frg == 0));
    // Data already in flight is not appended to.
    a.send(b"x");
    assert_eq!(pushes(&flush(&mut a, 1)), [2]);
}

// ======================================================================== ACK / una handling

#[test]
fn acks_and_una_release_segments() {
    let mut a = Kcp::new(CONV, &small());
    a.send(&[0; 26 * 5]);
    let pkts = flush(&mut a, 0);
    assert_eq!(pushes(&pkts), [0, 1, 2, 3, 4]);
    assert_eq!(a.waitsnd(), 5);
    // Out-of-order ACK: counted, but snd_una stays.
    a.input(10, &seg(CMD_ACK, 2, 0, 0, 128, &[])).unwrap();
    assert_eq!(a.waitsnd(), 4);
    // Duplicate and out-of-window ACKs change nothing.
    a.input(10, &seg(CMD_ACK, 2, 0, 0, 128, &[])).unwrap();
    a.input(10, &seg(CMD_ACK, 99, 0, 0, 128, &[])).unwrap();
    assert_eq!(a.waitsnd(), 4);
    // una = 4 releases 0..=3 at once (2 was already gone).
    a.input(11, &seg(CMD_ACK, 0, 0, 4, 128, &[])).unwrap();
    assert_eq!(a.waitsnd(), 1);
    a.input(12, &seg(CMD_ACK, 4, 0, 5, 128, &[])).unwrap();
    assert!(a.is_idle());
    assert_eq!(a.stats().acks_recv, 5);
    // Every released buffer went back to the pool.
    assert_eq!(a.test_sizes()[5], 5);
}

#[test]
fn receiver_acks_every_push_with_its_ts() {
    let mut b = Kcp::new(CONV, &small());
    b.input(5, &seg(CMD_PUSH, 1, 77, 0, 128, b"x")).unwrap();
    b.input(5, &seg(CMD_PUSH, 0, 66, 0, 128, b"y")).unwrap();
    b.input(5, &seg(CMD_PUSH, 0, 55, 0, 128, b"y")).unwrap(); // duplicate
    assert_eq!(b.check(5), 5, "pending ACKs are due now");
    let h = headers(&flush(&mut b, 5), ByteOrder::Big);
    let acks: Vec<_> = h.iter().map(|h| (h.cmd, h.sn, h.ts, h.una)).collect();
    assert_eq!(
        acks,
        [
            (CMD_ACK, 1, 77, 2),
            (CMD_ACK, 0, 66, 2),
            (CMD_ACK, 0, 55, 2)
        ]
    );
    assert_eq!(recv_all(&mut b), b"yx");
    assert!(b.is_idle());
}

#[test]
fn acks_wait_briefly_for_a_reply_to_a_message() {
    let mut b = Kcp::new(CONV, &classic());
    b.set_ack_hold(2);
    let seen = |pkts: &[Vec<u8>]| -> Vec<(u8, u32, u32)> {
        headers(pkts, ByteOrder::Big)
            .iter()
            .map(|h| (h.cmd, h.sn, h.ts))
            .collect()
    };
    // A short message: its ACK waits, and the reply carries it, in one packet.
    b.input(10, &seg(CMD_PUSH, 0, 7, 0, 128, b"ping")).unwrap();
    assert!(flush(&mut b, 10).is_empty(), "the ACK waits for a reply");
    assert_eq!((b.check(10), b.check(11)), (12, 12));
    assert_eq!(recv_all(&mut b), b"ping");
    b.send(b"pong");
    let pkts = flush(&mut b, 11);
    assert_eq!(pkts.len(), 1, "ACK and reply share a packet");
    assert_eq!(seen(&pkts), [(CMD_ACK, 0, 7), (CMD_PUSH, 0, 11)]);

    // No reply: the ACK leaves alone when the hold is over.
    b.input(300, &seg(CMD_ACK, 0, 11, 1, 128, &[])).unwrap();
    b.input(300, &seg(CMD_PUSH, 1, 8, 1, 128, b"ping")).unwrap();
    assert!(flush(&mut b, 300).is_empty());
    assert!(flush(&mut b, 301).is_empty());
    assert_eq!(b.check(301), 302);
    assert_eq!(seen(&flush(&mut b, 302)), [(CMD_ACK, 1, 8)]);

    // Acknowledged at once: a full segment (bulk data), a hole, data of ours in flight.
    b.input(400, &seg(CMD_PUSH, 2, 9, 1, 128, &vec![0; b.mss()]))
        .unwrap();
    assert_eq!(b.check(400), 400);
    assert_eq!(seen(&flush(&mut b, 400)), [(CMD_ACK, 2, 9)]);
    b.input(410, &seg(CMD_PUSH, 4, 10, 1, 128, b"x")).unwrap();
    assert_eq!(seen(&flush(&mut b, 410)), [(CMD_ACK, 4, 10)]);
    b.input(420, &seg(CMD_PUSH, 3, 11, 1, 128, b"x")).unwrap();
    assert_eq!(b.check(420), 420, "the hole filled: the ACK tells at once");
    assert_eq!(seen(&flush(&mut b, 420)), [(CMD_ACK, 3, 11)]);
    b.send(b"data");
    assert_eq!(seen(&flush(&mut b, 430)), [(CMD_PUSH, 1, 430)]);
    b.input(440, &seg(CMD_PUSH, 5, 12, 1, 128, b"x")).unwrap();
    assert_eq!(seen(&flush(&mut b, 440)), [(CMD_ACK, 5, 12)]);
}

/// `ack_copies`: behind a hole (the cumulative `una` cannot stand in for a lost ACK) each
/// datagram of ACKs goes out twice, on its own; without a hole, or by default, once.
#[test]
fn acks_go_twice_behind_a_hole_with_ack_copies() {
    let cfg = KcpConfig {
        ack_copies: 2,
        ..small()
    };
    let mut b = Kcp::new(CONV, &cfg);
    let acks = |pkts: &[Vec<u8>]| -> Vec<Vec<u32>> {
        pkts.iter()
            .map(|p| {
                headers(std::slice::from_ref(p), ByteOrder::Big)
                    .iter()
                    .map(|h| {
                        assert_eq!(h.cmd, CMD_ACK);
                        h.sn
                    })
                    .collect()
            })
            .collect()
    };
    b.input(10, &seg(CMD_PUSH, 0, 1, 0, 128, b"a")).unwrap();
    assert_eq!(acks(&flush(&mut b, 10)), [vec![0]], "in order: once");
    // sn 1 lost; 2, 3 and 4 arrive: mtu 50 holds two ACKs per packet.
    for sn in 2..5 {
        b.input(20, &seg(CMD_PUSH, sn, sn, 0, 128, b"x")).unwrap();
    }
    let pkts = flush(&mut b, 20);
    assert_eq!(acks(&pkts), [vec![2, 3], vec![2, 3], vec![4], vec![4]]);
    assert_eq!((pkts[0] == pkts[1], pkts[2] == pkts[3]), (true, true));
    assert_eq!(b.stats().ack_copies_sent, 2);
    // Our own data does not ride in an ACK packet that is sent twice.
    b.send(b"reply");
    b.input(30, &seg(CMD_PUSH, 5, 5, 0, 128, b"x")).unwrap();
    let pkts = flush(&mut b, 30);
    assert_eq!(pkts.len(), 3);
    assert_eq!(acks(&pkts[..2]), [vec![5], vec![5]]);
    assert_eq!(pushes(&pkts[2..]), [0]);
    // The hole fills: the ACK's `una` covers everything, once is enough.
    b.input(40, &seg(CMD_PUSH, 1, 6, 0, 128, b"x")).unwrap();
    assert_eq!(acks(&flush(&mut b, 40)), [vec![1]]);
    assert_eq!(b.stats().ack_copies_sent, 3);

    // By default (ikcp's behaviour) once, hole or not.
    let mut b = Kcp::new(CONV, &small());
    for sn in 2..5 {
        b.input(20, &seg(CMD_PUSH, sn, sn, 0, 128, b"x")).unwrap();
    }
    assert_eq!(acks(&flush(&mut b, 20)), [vec![2, 3], vec![4]]);
    assert_eq!(b.stats().ack_copies_sent, 0);
}

/// A copy of an ACK packet is no second packet of RTT samples for rate control: two packets'
/// samples set the path's minimum RTT, and a copy of one that came through fast would do
/// that alone.
#[test]
fn a_copy_of_an_ack_packet_is_no_second_rtt_sample() {
    let mut a = Kcp::new(CONV, &rc_cfg());
    let mut b = Kcp::new(CONV, &rc_cfg());
    let now = warm_up(&mut a, &mut b, 1000);
    let min_rtt = |a: &Kcp| a.rate_estimate().and_then(|(_, m, _, _)| m);
    let before = min_rtt(&a).unwrap();
    assert!((99..=101).contains(&before), "min RTT {before}");
    a.send(&[5u8; 1000]);
    let pkts = flush(&mut a, now);
    input_all(&mut b, now + 40, &pkts);
    let acks = flush(&mut b, now + 40);
    assert_eq!(acks.len(), 1);
    // 80 ms: fast, but within the jitter a sample may show.
    a.input(now + 80, &acks[0]).unwrap();
    a.input(now + 80, &acks[0]).unwrap();
    assert_eq!(min_rtt(&a), Some(before));
}

// ========================================================================== RTO and backoff

fn retransmit_times(nodelay: u32) -> Vec<u32> {
    let cfg = KcpConfig {
        nodelay,
        dead_link: 100,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(b"lost");
    assert_eq!(a.check(0), 0, "new data is due immediately");
    assert_eq!(pushes(&flush(&mut a, 0)), [0]);
    let mut times = Vec::new();
    let mut now = 0;
    for _ in 0..4 {
        let next = a.check(now);
        // Nothing happens before the deadline.
        assert!(update(&mut a, next - 1).is_empty());
        now = next;
        assert_eq!(pushes(&update(&mut a, now)), [0]);
        times.push(now);
    }
    assert_eq!(a.stats().retrans_timeout, 4);
    times
}

#[test]
fn rto_backoff_follows_nodelay() {
    // Initial RTO 200 ms. nodelay 0: +rto/8 on the first send, then doubling.
    assert_eq!(retransmit_times(0), [225, 625, 1425, 3025]);
    // nodelay 1: x1.5 per retransmission.
    assert_eq!(retransmit_times(1), [200, 500, 950, 1625]);
    // nodelay 2: + half the current estimate each time.
    assert_eq!(retransmit_times(2), [200, 500, 900, 1400]);
}

#[test]
fn rto_estimate_is_bounded() {
    let mut a = Kcp::new(CONV, &small());
    a.send(b"x");
    flush(&mut a, 0);
    // An ACK echoing a ts from long ago (a hostile or very late one): RTO capped at 4 s.
    a.input(100_000, &seg(CMD_ACK, 0, 0, 1, 128, &[])).unwrap();
    assert_eq!(a.rto(), 4000);
    let cfg = KcpConfig {
        rto_max: 60_000,
        ..small()
    };
    let mut r = Kcp::new(CONV, &cfg);
    r.send(b"x");
    flush(&mut r, 0);
    r.input(100_000, &seg(CMD_ACK, 0, 0, 1, 128, &[])).unwrap();
    assert_eq!(r.rto(), 60_000);
    // An ACK from the future is no RTT sample.
    let mut f = Kcp::new(CONV, &small());
    f.send(b"x");
    flush(&mut f, 0);
    f.input(10, &seg(CMD_ACK, 0, 500, 1, 128, &[])).unwrap();
    assert_eq!((f.rtt(), f.rto()), (0, 200));
}

#[test]
fn rtt_converges() {
    let mut a = Kcp::new(CONV, &small());
    let mut now = 0;
    for i in 0..50 {
        a.send(b"x");
        flush(&mut a, now);
        now += 40;
        a.input(now, &seg(CMD_ACK, i, now - 40, i + 1, 128, &[]))
            .unwrap();
    }
    assert_eq!(a.rtt(), 40);
    // srtt + max(interval, 4 rttvar) with rttvar decayed to 0.
    assert_eq!(a.rto(), 140);
}

#[test]
fn dead_link_after_xmit_limit() {
    let cfg = KcpConfig {
        dead_link: 3,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(b"x");
    flush(&mut a, 0);
    let mut now = 0;
    for _ in 0..2 {
        assert!(!a.is_dead());
        now = a.check(now);
        update(&mut a, now);
    }
    assert!(a.is_dead());
}

/// With rate control a segment's timer backs off only up to the RTO bound (`rto_max`): a
/// conversation whose retransmissions met a few full queues keeps trying every few seconds
/// instead of going quiet for minutes (seen as starved connections among 1,000 active ones).
#[test]
fn rate_control_backoff_stops_at_rto_max() {
    let cfg = KcpConfig {
        rate_control: true,
        rto_max: 4000,
        dead_link: 1000,
        ..KcpConfig::default()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(b"lost forever");
    let mut sent_at = Vec::new();
    let mut now = 0u32;
    for _ in 0..200 {
        let pkts = update(&mut a, now);
        if pushes(&pkts).contains(&0) {
            sent_at.push(now);
        }
        now = a.check(now).max(now + 1);
        if now > 120_000 {
            break;
        }
    }
    let gaps: Vec<u32> = sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.len() >= 25,
        "only {} retransmissions in 120 s: {gaps:?}",
        gaps.len()
    );
    assert!(
        gaps.iter().all(|&g| g <= 4000),
        "a gap beyond rto_max: {gaps:?}"
    );
    // The classic engine backs off past it (ikcp; capped at 120 s only).
    let mut b = Kcp::new(
        CONV,
        &KcpConfig {
            rate_control: false,
            ..cfg
        },
    );
    b.send(b"lost forever");
    let (mut now, mut last, mut widest) = (0u32, 0u32, 0u32);
    while now < 120_000 {
        if pushes(&update(&mut b, now)).contains(&0) {
            widest = widest.max(now - last);
            last = now;
        }
        now = b.check(now).max(now + 1);
    }
    assert!(widest > 4000, "classic backoff stopped at {widest} ms");
}

/// With rate control a dead link takes `dead_link` transmissions *and* five minutes: the
/// capped backoff reaches 20 transmissions in about a minute, too soon for a client whose NAT
/// mapping vanished to notice and come back.
#[test]
fn rate_control_dead_link_waits_five_minutes() {
    let cfg = KcpConfig {
        rate_control: true,
        rto_max: 4000,
        dead_link: 20,
        ..KcpConfig::default()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(b"unanswered");
    let mut now = 0u32;
    let mut dead_at = None;
    while now < 400_000 {
        update(&mut a, now);
        if a.is_dead() {
            dead_at = Some(now);
            break;
        }
        now = a.check(now).max(now + 1);
    }
    let at = dead_at.expect("never declared dead");
    assert!((300_000..310_000).contains(&at), "dead at {at} ms");
}

// ======================================================================= fast retransmit

/// A sender with `resend` 2 sends four segments, each in its own packet (mtu 50); sn 0 is
/// lost. Returns the sender and the receiver's three ACK packets, not yet delivered.
fn first_of_four_lost() -> (Kcp, Vec<Vec<u8>>) {
    let cfg = KcpConfig {
        resend: 2,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    a.send(&[5; 26 * 4]);
    let pkts = flush(&mut a, 0);
    assert_eq!(pkts.len(), 4);
    let mut acks = Vec::new();
    for p in &pkts[1..] {
        b.input(10, p).unwrap();
        let mut ack = flush(&mut b, 10);
        assert_eq!(ack.len(), 1);
        acks.push(ack.remove(0));
    }
    (a, acks)
}

#[test]
fn fast_retransmit_after_resend_acks() {
    let (mut a, acks) = first_of_four_lost();
    a.input(20, &acks[0]).unwrap();
    assert_ne!(a.check(20), 20);
    a.input(20, &acks[1]).unwrap();
    assert_eq!(a.check(20), 20, "two later ACKs: fast retransmit is due");
    assert_eq!(pushes(&flush(&mut a, 20)), [0]);
    assert_eq!((a.stats().retrans_fast, a.stats().retrans_timeout), (1, 0));
}

/// A copy of an ACK packet (a peer with `ack_copies`) is no second piece of evidence: it
/// counts once towards a fast retransmit (and, see below, gives rate control no second
/// packet of RTT samples).
#[test]
fn a_copy_of_an_ack_packet_counts_once_for_fast_retransmit() {
    let (mut a, acks) = first_of_four_lost();
    a.input(20, &acks[0]).unwrap();
    a.input(20, &acks[0]).unwrap();
    assert_ne!(
        a.check(20),
        20,
        "one ACK packet and its copy: one later ACK"
    );
    a.input(21, &acks[1]).unwrap();
    assert_eq!(a.check(21), 21, "two later ACKs: fast retransmit is due");
    assert_eq!(pushes(&flush(&mut a, 21)), [0]);
}

#[test]
fn conservative_fast_ack_ignores_older_acks() {
    let cfg = KcpConfig {
        resend: 1,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    a.send(&[5; 26 * 3]);
    let pkts = flush(&mut a, 0);
    let mut acks = Vec::new();
    for p in &pkts[1..] {
        b.input(10, p).unwrap();
        acks.extend(flush(&mut b, 10));
    }
    // Before those ACKs arrive, sn 0 times out and goes again with ts 200.
    assert_eq!(pushes(&update(&mut a, 200)), [0, 1, 2]);
    for p in &acks {
        a.input(210, p).unwrap();
    }
    // The ACKs were for segments sent before sn 0's retransmission: they do not count.
    assert_ne!(a.check(210), 210);
    assert!(flush(&mut a, 210).is_empty());
    assert_eq!(a.stats().retrans_fast, 0);
}

// ===================================================================== windows and probing

#[test]
fn zero_window_is_probed() {
    let mut a = Kcp::new(CONV, &small());
    a.input(0, &seg(CMD_WINS, 0, 0, 0, 0, &[])).unwrap();
    assert_eq!(a.remote_wnd(), 0);
    a.send(b"data");
    assert!(
        pushes(&flush(&mut a, 0)).is_empty(),
        "nothing may go into a zero window"
    );
    assert_eq!(a.check(0), 7000);
    assert!(update(&mut a, 6999).is_empty());
    let h = headers(&update(&mut a, 7000), ByteOrder::Big);
    assert_eq!(h.iter().map(|h| h.cmd).collect::<Vec<_>>(), [CMD_WASK]);
    assert_eq!(
        a.check(7000),
        7000 + 10_500,
        "probe interval backs off x1.5"
    );
    // The answer reopens the window and the data leaves at the next flush.
    a.input(7100, &seg(CMD_WINS, 0, 0, 0, 128, &[])).unwrap();
    assert_eq!(a.check(7100), 7100);
    assert_eq!(pushes(&flush(&mut a, 7100)), [0]);
    assert_eq!(a.stats().probes_sent, 1);
}

#[test]
fn wask_is_answered_with_wins() {
    let mut b = Kcp::new(CONV, &small());
    b.input(0, &seg(CMD_WASK, 0, 0, 0, 128, &[])).unwrap();
    assert_eq!(b.check(0), 0);
    let h = headers(&flush(&mut b, 0), ByteOrder::Big);
    assert_eq!((h[0].cmd, h[0].wnd), (CMD_WINS, 256));
    assert!(b.is_idle());
}

#[test]
fn full_receive_window_reopens_with_wins() {
    let cfg = KcpConfig {
        sndwnd: 400,
        rcvwnd: 128,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    a.send(&[9; 26 * 300]);
    // a may only fill the 128 segments b announced by default.
    input_all(&mut b, 1, &flush(&mut a, 0));
    assert_eq!(b.test_sizes()[2..4], [0, 128]);
    // b's application reads nothing: its ACKs close the window.
    let acks = flush(&mut b, 1);
    let h = headers(&acks, ByteOrder::Big);
    assert_eq!(h.len(), 128);
    assert_eq!(h.last().unwrap().wnd, 0);
    input_all(&mut a, 2, &acks);
    assert_eq!(a.remote_wnd(), 0);
    assert!(pushes(&flush(&mut a, 2)).is_empty());
    assert_eq!(b.peek_size(), 128 * 26);
    assert_eq!(recv_all(&mut b).len(), 128 * 26);
    assert_eq!(b.check(3), 3, "the reopened window is announced at once");
    let wins = flush(&mut b, 3);
    let h = headers(&wins, ByteOrder::Big);
    assert_eq!((h[0].cmd, h[0].wnd), (CMD_WINS, 128));
    input_all(&mut a, 4, &wins);
    assert_eq!(pushes(&flush(&mut a, 4)).len(), 128);
}

#[test]
fn send_window_limits_flight() {
    let cfg = KcpConfig {
        sndwnd: 8,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(&[0; 26 * 8]);
    flush(&mut a, 0);
    a.send(&[0; 26 * 8]);
    assert!(pushes(&flush(&mut a, 1)).is_empty());
    a.input(5, &seg(CMD_ACK, 0, 0, 3, 128, &[])).unwrap();
    assert_eq!(pushes(&flush(&mut a, 5)), [8, 9, 10]);
}

#[test]
fn congestion_window_slow_start() {
    let cfg = KcpConfig {
        nc: false,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.send(&[0; 26 * 20]);
    assert_eq!(pushes(&flush(&mut a, 0)), [0], "cwnd starts at 1");
    a.input(10, &seg(CMD_ACK, 0, 0, 1, 128, &[])).unwrap();
    assert_eq!(pushes(&flush(&mut a, 10)), [1, 2]);
    // A timeout collapses the window to one segment.
    let t = a.check(10);
    assert_eq!(pushes(&update(&mut a, t)), [1, 2]);
    assert_eq!(a.cwnd(), 1);
}

// =================================================================== wraparound at 2^32

#[test]
fn sequence_numbers_wrap() {
    let mut a = Kcp::new(CONV, &small());
    let mut b = Kcp::new(CONV, &small());
    a.test_set_seq(u32::MAX - 10, 0);
    b.test_set_seq(0, u32::MAX - 10);
    let data: Vec<u8> = (0..26 * 40).map(|i| (i * 7) as u8).collect();
    a.send(&data);
    // Lose every 5th packet in both directions.
    let got = exchange(&mut a, &mut b, 1000, |n| n % 5 == 0);
    assert_eq!(got, data);
    assert!(a.stats().retrans_timeout + a.stats().retrans_fast > 0);
}

#[test]
fn timestamps_wrap() {
    let mut a = Kcp::new(CONV, &small());
    let mut b = Kcp::new(CONV, &small());
    let data: Vec<u8> = (0..26 * 60).map(|i| (i * 3) as u8).collect();
    a.send(&data);
    let got = exchange(&mut a, &mut b, u32::MAX - 150, |n| n % 7 == 0);
    assert_eq!(got, data);
    assert!(
        a.rto() < 1000,
        "a wrapped clock must not look like a huge RTT: {}",
        a.rto()
    );
}

// ===================================================================== check and idle

#[test]
fn check_deadlines() {
    let mut a = Kcp::new(CONV, &small());
    assert!(a.is_idle());
    assert_eq!(a.check(123), 123 + IDLE_CHECK);
    assert_eq!(a.check(u32::MAX), (u32::MAX).wrapping_add(IDLE_CHECK));
    a.send(b"x");
    assert!(!a.is_idle());
    assert_eq!(a.check(123), 123);
    flush(&mut a, 123);
    assert_eq!(
        a.check(124),
        323,
        "exact RTO deadline, not an interval tick"
    );
    a.input(150, &seg(CMD_ACK, 0, 123, 1, 128, &[])).unwrap();
    assert!(a.is_idle());
    assert_eq!(a.check(150), 150 + IDLE_CHECK);
}

// ===================================================================== malformed input

#[test]
fn malformed_input_is_refused() {
    let mut k = Kcp::new(CONV, &small());
    assert_eq!(k.input(0, &[]), Err(InputError::Short));
    assert_eq!(k.input(0, &[0; 23]), Err(InputError::Short));
    let mut other = seg(CMD_PUSH, 0, 0, 0, 128, b"x");
    other[3] ^= 1;
    assert_eq!(k.input(0, &other), Err(InputError::Conv));
    assert_eq!(
        k.input(0, &seg(99, 0, 0, 0, 128, &[])),
        Err(InputError::Cmd)
    );
    let mut absurd = seg(CMD_PUSH, 0, 0, 0, 128, b"abc");
    absurd[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(k.input(0, &absurd), Err(InputError::Length));
    let mut short = seg(CMD_PUSH, 0, 0, 0, 128, b"abc");
    short.pop();
    assert_eq!(k.input(0, &short), Err(InputError::Length));
    assert_eq!(k.peek_size(), 0);
    assert_eq!(k.stats().input_errors, 6);
    // Little-endian bytes are another conversation to a big-endian engine.
    let mut le = vec![0; OVERHEAD];
    SegmentHeader {
        conv: CONV,
        cmd: CMD_ACK,
        ..Default::default()
    }
    .emit(&mut le, ByteOrder::Little);
    assert_eq!(k.input(0, &le), Err(InputError::Conv));
}

#[test]
fn trailing_bytes_are_ignored() {
    let mut k = Kcp::new(CONV, &small());
    let mut p = seg(CMD_PUSH, 0, 0, 0, 128, b"ok");
    p.extend_from_slice(&[0xff; 23]);
    assert_eq!(k.input(0, &p), Ok(()));
    assert_eq!(recv_all(&mut k), b"ok");
}

#[test]
fn segments_before_a_bad_one_count() {
    let mut k = Kcp::new(CONV, &small());
    let mut p = seg(CMD_PUSH, 0, 0, 0, 128, b"ok");
    p.extend_from_slice(&seg(77, 0, 0, 0, 128, &[]));
    assert_eq!(k.input(0, &p), Err(InputError::Cmd));
    assert_eq!(recv_all(&mut k), b"ok");
}

#[test]
fn far_sequence_numbers_cost_nothing() {
    let mut k = Kcp::new(CONV, &small());
    for sn in [256, 1000, u32::MAX / 2, u32::MAX / 2 + 1, u32::MAX] {
        k.input(0, &seg(CMD_PUSH, sn, 0, 0, 128, b"zz")).unwrap();
    }
    // sn u32::MAX is "before" rcv_nxt 0: an old duplicate, acked but not stored.
    assert_eq!(k.test_sizes(), [0, 0, 0, 0, 1, 0]);
    // A una far ahead with nothing in flight, and an ACK for nothing: no effect.
    k.input(0, &seg(CMD_ACK, 12345, 0, 0x8000_0000, 128, &[]))
        .unwrap();
    assert_eq!(k.waitsnd(), 0);
}

#[test]
fn random_garbage_never_panics_and_stays_bounded() {
    let cfg = KcpConfig {
        rcvwnd: 128,
        ..small()
    };
    let mut k = Kcp::new(CONV, &cfg);
    k.send(&[1; 26 * 10]);
    flush(&mut k, 0);
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut max_sizes = [0usize; 6];
    for i in 0..20_000u32 {
        let len = (rnd() % 300) as usize;
        let mut p: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        // Most packets get a valid conv and cmd so they reach the deeper paths.
        let mut off = 0;
        while off + OVERHEAD <= p.len() && rnd() % 4 != 0 {
            p[off..off + 4].copy_from_slice(&CONV.to_be_bytes());
            p[off + 4] = CMD_PUSH + (rnd() % 4) as u8;
            let small_sn = (rnd() % 300) as u32;
            p[off + 12..off + 16].copy_from_slice(&small_sn.to_be_bytes());
            let l = (rnd() % 40) as u32;
            p[off + 20..off + 24].copy_from_slice(&l.to_be_bytes());
            off += OVERHEAD + l as usize;
        }
        let _ = k.input(i, &p);
        if i % 3 == 0 {
            flush(&mut k, i);
        }
        if i % 5 == 0 {
            recv_all(&mut k);
        }
        let _ = k.check(i);
        for (m, s) in max_sizes.iter_mut().zip(k.test_sizes()) {
            *m = (*m).max(s);
        }
    }
    let [sq, sb, rb, rq, acks, pool] = max_sizes;
    assert!(sq <= 10 && sb <= 10, "{max_sizes:?}");
    assert!(rb <= 128 && rq <= 128, "{max_sizes:?}");
    assert!(acks <= 4 * 128, "{max_sizes:?}");
    assert!(pool <= 2 * (256 + 128), "{max_sizes:?}");
}

// ========================================================================== wire header

#[test]
fn header_roundtrip_both_orders() {
    let h = SegmentHeader {
        conv: 0x0102_0304,
        cmd: CMD_PUSH,
        frg: 5,
        wnd: 0x0a0b,
        ts: 0x1112_1314,
        sn: 0x2122_2324,
        una: 0x3132_3334,
        len: 0x4142_4344,
    };
    let mut be = [0u8; OVERHEAD];
    h.emit(&mut be, ByteOrder::Big);
    assert_eq!(&be[..8], &[1, 2, 3, 4, 81, 5, 0x0a, 0x0b]);
    let mut le = [0u8; OVERHEAD];
    h.emit(&mut le, ByteOrder::Little);
    assert_eq!(&le[..8], &[4, 3, 2, 1, 81, 5, 0x0b, 0x0a]);
    assert_eq!(SegmentHeader::parse(&be, ByteOrder::Big), Some(h));
    assert_eq!(SegmentHeader::parse(&le, ByteOrder::Little), Some(h));
    assert_eq!(SegmentHeader::parse(&be[..23], ByteOrder::Big), None);
    assert_eq!(packet_conv(&be, ByteOrder::Big), Some(0x0102_0304));
    assert_eq!(packet_conv(&be[..3], ByteOrder::Big), None);
}

#[test]
fn little_endian_engines_talk() {
    let cfg = KcpConfig {
        byte_order: ByteOrder::Little,
        ..small()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    a.send(b"little");
    let pkts = flush(&mut a, 0);
    assert_eq!(packet_conv(&pkts[0], ByteOrder::Little), Some(CONV));
    input_all(&mut b, 1, &pkts);
    assert_eq!(recv_all(&mut b), b"little");
}

// ------------------------------------------------------------------ shared rate control

fn rc_cfg() -> KcpConfig {
    KcpConfig {
        rate_control: true,
        ..KcpConfig::default()
    }
}

/// Conversations on one path count in its flight and backlog while they send, and leave
/// nothing behind when they end (closed or dropped), or the survivors would be held back by
/// ghosts.
#[test]
fn shared_path_forgets_conversations_that_end() {
    let (path, mut a, mut b) = two_on_a_path();
    assert_eq!(path.handles(), 3);
    // More than the initial window: both keep data queued after their first flush.
    let data = vec![7u8; 200 * 1400];
    a.send(&data);
    b.send(&data);
    assert_eq!(path.backlogged(), 2);
    let (pa, pb) = (flush(&mut a, 0), flush(&mut b, 0));
    assert!(!pa.is_empty() && !pb.is_empty());
    let sent: usize = pa.iter().chain(&pb).map(Vec::len).sum();
    assert_eq!(path.inflight(), sent, "first transmissions of both count");
    assert_eq!((path.backlogged(), path.active()), (2, 2));
    // One ends mid-transfer (reset): its flight and queue stop counting at once.
    a.leave_path();
    assert_eq!(path.inflight(), pb.iter().map(Vec::len).sum::<usize>());
    assert_eq!((path.backlogged(), path.active()), (1, 1));
    assert_eq!(
        a.rate_estimate(),
        None,
        "a closed conversation runs without rate control"
    );
    // The other is dropped without closing (the loop freeing its slot).
    drop(b);
    assert_eq!(
        (path.inflight(), path.backlogged(), path.active()),
        (0, 0, 0)
    );
    assert_eq!(path.handles(), 1);
}

/// The pacing rate is split between the conversations with data queued: with two backlogged,
/// each may send about half of what one alone could in the same time.
#[test]
fn shared_path_splits_the_pacing_rate() {
    let sent_in = |n: usize| -> usize {
        // Seeded at 100 B/ms (cruising at that rate) on a 1 s path, so neither the pacing
        // floor (32 packets per RTT) nor the in-flight cap binds.
        let hint = PathHint {
            bw: 100.0,
            min_rtt: 1000,
            ..PathHint::default()
        };
        let path = PathControl::seeded(rc_cfg().mtu, hint);
        let mut ks: Vec<Kcp> = (0..n as u32).map(|i| Kcp::new(i + 1, &rc_cfg())).collect();
        for k in &mut ks {
            k.join_path(&path);
            k.send(&vec![1u8; 1000 * 1400]);
        }
        // 200 ms of pacing.
        let mut bytes = vec![0usize; n];
        for now in 0..200u32 {
            for (i, k) in ks.iter_mut().enumerate() {
                bytes[i] += flush(k, now).iter().map(Vec::len).sum::<usize>();
            }
        }
        bytes[0]
    };
    let alone = sent_in(1);
    let shared = sent_in(2);
    assert!(alone > 0);
    let ratio = shared as f64 / alone as f64;
    assert!(
        (0.4..0.6).contains(&ratio),
        "alone {alone} B, shared {shared} B ({ratio:.2})"
    );
}

/// Only a fresh conversation joins a path: one that already sent keeps its own model.
#[test]
fn join_path_only_before_sending() {
    let path = PathControl::new(rc_cfg().mtu);
    let mut a = Kcp::new(1, &rc_cfg());
    a.send(b"early");
    flush(&mut a, 0);
    a.join_path(&path);
    assert_eq!(path.handles(), 1);
    let mut off = Kcp::new(2, &classic());
    off.join_path(&path);
    assert_eq!(path.handles(), 1, "no rate control, nothing to share");
}

/// A pacing debt is paid off as time passes: retransmissions charged at a tiny rate once left
/// a release time that moved away as fast as the clock (the elapsed time was capped at 10 s),
/// and 16 queued segments never left a healed path (fuzz: kcp_shared). And it is bounded by
/// one minimum RTT of pacing: a storm of retransmissions once held new data back for 50 s
/// (fuzz: kcp_model).
#[test]
fn pacer_debt_is_paid_off() {
    let mut rc = rate::RateControl::new(1400);
    // 0.01 B/ms over a 10 s path: the pacing floor (32 packets per min RTT) rules, 4.48 B/ms.
    rc.seed(PathHint {
        bw: 0.02,
        min_rtt: 10_000,
        ..PathHint::default()
    });
    let mut p = rate::Pacer::default();
    for _ in 0..100 {
        rc.on_transmit(&mut p, 0, 1400, false, false);
    }
    // 140 kB charged, but the debt stops at 10 s x 4.48 B/ms = 44.8 kB.
    let at = rc.release_time(&p, 0);
    assert!((9_000..=10_001).contains(&at), "release at {at} ms");
    assert_eq!(rc.release_time(&p, at), at, "due when it said");
    assert!(rc.can_send(&p, at, 1400, 0));
}

/// With rate control a first transmission's timer is bounded by `rto_max` like the estimate:
/// a smoothed RTT of 100 s (after an outage) once set a first retransmission 215 s out
/// (fuzz: kcp_model).
#[test]
fn rate_control_first_rto_is_bounded() {
    let cfg = KcpConfig {
        rate_control: true,
        rto_max: 4000,
        ..KcpConfig::default()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    a.send(b"first");
    let pkts = flush(&mut a, 0);
    // Delivered and acknowledged 100 s later: one RTT sample of 100 s.
    input_all(&mut b, 100_000, &pkts);
    input_all(&mut a, 100_000, &flush(&mut b, 100_000));
    assert_eq!(a.waitsnd(), 0);
    assert!(a.rtt() >= 100_000);
    a.send(b"second");
    let now = 100_000;
    assert!(!flush(&mut a, now).is_empty());
    let wait = a.check(now).wrapping_sub(now);
    assert!(wait <= 4000, "first retransmission in {wait} ms");
}

/// RTT samples of 0 ms (same-millisecond ACKs on a fast path) count: refusing them as
/// "under 70% of the smoothed RTT" (1 ms) kept a stale minimum of 58 s for good, and the
/// pacing floor (32 packets per minimum RTT) then let one packet out every few seconds
/// (fuzz: kcp_shared).
#[test]
fn zero_ms_rtt_samples_replace_a_stale_minimum() {
    // One RTT sample per input packet.
    let packet = |rc: &mut rate::RateControl, t: u32, rtt: u32, srtt: u32, var: u32| {
        rc.on_rtt(t, rtt, srtt, var);
        rc.on_input_done(t, 0);
    };
    let mut rc = rate::RateControl::new(1400);
    packet(&mut rc, 0, 58_584, 50_000, 0);
    packet(&mut rc, 1, 58_584, 58_000, 0);
    assert_eq!(rc.min_rtt(), Some(58_584));
    packet(&mut rc, 2, 0, 1, 0);
    packet(&mut rc, 3, 0, 1, 0);
    assert_eq!(rc.min_rtt(), Some(0), "two samples of 0 ms in a row");
    // After an outage the smoothed RTT falls back faster than plausible samples arrive:
    // once it has stood under half the minimum for 8 samples, the minimum restarts from it.
    let mut rc = rate::RateControl::new(1400);
    packet(&mut rc, 0, 59_933, 50_000, 0);
    packet(&mut rc, 1, 59_933, 59_000, 0);
    for t in 2..9 {
        packet(&mut rc, t, 0, 23, 0);
    }
    assert_eq!(rc.min_rtt(), Some(59_933), "seven samples: not yet");
    packet(&mut rc, 9, 0, 23, 0);
    assert_eq!(rc.min_rtt(), Some(23));
    // ... but a young conversation's smoothed RTT, its first sample from a packet that
    // skipped the path's delay, is not the path's (netlab `reorder`: it made the shared
    // minimum 21-29 ms on a 45-60 ms path and cut every conversation's rate).
    let mut rc = rate::RateControl::new(1400);
    packet(&mut rc, 0, 50, 50, 0);
    packet(&mut rc, 1, 50, 50, 0);
    packet(&mut rc, 2, 21, 22, 8);
    packet(&mut rc, 3, 50, 24, 8);
    assert_eq!(rc.min_rtt(), Some(50));
    // Two samples of one packet are no pair: an ACK packet that skipped the path's delay
    // carries several (netlab `reorder`: a minimum of 24-27 ms on a 45-60 ms path).
    let mut rc = rate::RateControl::new(1400);
    packet(&mut rc, 0, 50, 50, 0);
    packet(&mut rc, 1, 50, 50, 0);
    rc.on_rtt(2, 36, 50, 5);
    rc.on_rtt(2, 37, 50, 5);
    rc.on_input_done(2, 0);
    packet(&mut rc, 3, 50, 48, 5);
    assert_eq!(rc.min_rtt(), Some(50));
    // A packet that skipped a 100 ms path's delay is still no sample.
    let mut rc = rate::RateControl::new(1400);
    packet(&mut rc, 0, 100, 100, 0);
    packet(&mut rc, 1, 20, 100, 0);
    assert_eq!(rc.min_rtt(), Some(100));
}

/// Two fresh conversations with rate control on one new path.
fn two_on_a_path() -> (PathControl, Kcp, Kcp) {
    let path = PathControl::new(rc_cfg().mtu);
    let mut a = Kcp::new(1, &rc_cfg());
    let mut b = Kcp::new(2, &rc_cfg());
    a.join_path(&path);
    b.join_path(&path);
    (path, a, b)
}

/// The first of [`two_on_a_path`] sends `first` packets' worth, fills the in-flight cap (the initial
/// window: 32 packets) and hears nothing back; then the second, with 400 packets queued,
/// flushes every ms for 200 ms. Returns the packets the second sent, and how many
/// conversations had data queued after the first one's flush.
fn second_on_a_full_path(first: usize) -> (usize, usize) {
    let (path, mut a, mut b) = two_on_a_path();
    a.send(&vec![3u8; first * a.mss()]);
    assert_eq!(flush(&mut a, 0).len(), 32);
    let backlogged = path.backlogged();
    b.send(&vec![4u8; 400 * b.mss()]);
    let sent = (1..200u32).map(|now| flush(&mut b, now).len()).sum();
    (sent, backlogged)
}

/// A conversation whose flight will never be acknowledged (its peer restarted) does not hold
/// the others on the path to one segment per round trip: each may fill its even share of the
/// in-flight cap.
#[test]
fn shared_path_dead_flight_does_not_starve_others() {
    let (sent, backlogged) = second_on_a_full_path(400);
    assert_eq!(backlogged, 1, "the dead one keeps data queued");
    // Its share: half the cap (16 packets), not the single packet the exemption allows.
    assert!(sent >= 15, "the live conversation sent {sent} packets");
    assert!(sent <= 17, "beyond its share: {sent} packets");
}

/// The in-flight cap is shared by the conversations with data in flight, not only by those
/// with data queued: an echoing server's conversations have nothing queued most of the time,
/// and each could fill the whole cap on top of the others' flights. On netlab `reorder`
/// (50 echoing connections) the path's flight grew to 4.9 MB under a cap of 2.0, and two
/// thirds of what the server sent in that round were retransmissions.
#[test]
fn shared_path_caps_the_flight_of_conversations_with_nothing_queued() {
    // The first sends all it had: nothing of it stays queued.
    let (sent, backlogged) = second_on_a_full_path(32);
    assert_eq!(backlogged, 0, "the first has nothing queued");
    // Half the cap (16 packets), not a whole cap of its own.
    assert!(sent >= 15, "the second sent {sent} packets");
    assert!(sent <= 17, "beyond its share: {sent} packets");
}

/// The state line for a log says "never" for a conversation that has heard nothing from its
/// peer (it printed a wrapped distance of about -3e8 ms), and the real distance after data.
#[test]
fn describe_says_when_the_peer_was_last_heard() {
    let mut a = Kcp::new(CONV, &classic());
    let mut b = Kcp::new(CONV, &classic());
    assert!(
        a.describe().contains("segs in 0 last in never;"),
        "{}",
        a.describe()
    );
    b.send(b"hello");
    input_all(&mut a, 1000, &flush(&mut b, 1000));
    flush(&mut a, 1250);
    assert!(
        a.describe().contains("segs in 1 last in 250 ms ago;"),
        "{}",
        a.describe()
    );
}

/// Drives one rate-control model through `ms` ms of a steady flow: a 1400-byte packet every
/// ms, every `resend_every`-th a retransmission, each acknowledged `rtt` ms after it left.
fn steady_flow(rc: &mut rate::RateControl, start: u32, ms: u32, resend_every: u32, rtt: u32) {
    let mut p = rate::Pacer::default();
    let mut flight = std::collections::VecDeque::new();
    for now in start..start + ms {
        let first = now % resend_every != 0;
        flight.push_back((now, rc.on_transmit(&mut p, now, 1400, first, false)));
        while let Some(&(sent, stamp)) = flight.front() {
            if now.wrapping_sub(sent) < rtt {
                break;
            }
            flight.pop_front();
            rc.on_rtt(now, rtt, rtt, 1);
            rc.on_acked(now, 1400, &stamp, None, 1);
            rc.on_input_done(now, 0);
        }
    }
}

/// A model seeded at 1400 B/ms and a minimum RTT of 100 ms.
fn seeded_model() -> rate::RateControl {
    let mut rc = rate::RateControl::new(1400);
    rc.seed(PathHint {
        bw: 1400.0,
        min_rtt: 100,
        ..PathHint::default()
    });
    rc
}

/// [`seeded_model`] after 3 s of a lossless steady flow at 100 ms.
fn after_bulk() -> rate::RateControl {
    let mut rc = seeded_model();
    steady_flow(&mut rc, 0, 3000, 1000, 100);
    rc
}

/// The pacing rate makes up for random loss: the bandwidth estimate counts what arrived, so
/// pacing at it alone left the bottleneck idle for the lost share (netlab `bad`, 10% loss:
/// 92% of the link carried). Our own standing queue takes the compensation away again.
#[test]
fn pacing_makes_up_for_random_loss_but_not_for_a_queue() {
    let mut rc = seeded_model();
    // 10% of transmissions are retransmissions, no queue: about 0.1 after 5 s (50 rounds).
    steady_flow(&mut rc, 0, 5000, 10, 100);
    let loss = rc.loss();
    assert!((0.08..=0.11).contains(&loss), "loss {loss:.3}");
    let rate = rc.pacing_rate().unwrap();
    let expected = rc.bw() / (1.0 - loss);
    assert!(
        (expected * 0.74..=expected * 1.26).contains(&rate),
        "pacing {rate:.0} B/ms, bw {:.0} B/ms, loss {loss:.3}",
        rc.bw()
    );
    // The same flow through a standing queue of 18 ms: over an eighth of the minimum RTT,
    // under the quarter at which the rate itself is cut.
    steady_flow(&mut rc, 5000, 2000, 10, 118);
    assert!(
        rc.loss() < loss / 4.0,
        "loss {:.3} under a queue",
        rc.loss()
    );
    // Capped: a path losing half its packets is congested, not noisy.
    let mut rc = rate::RateControl::new(1400);
    rc.seed(PathHint {
        bw: 1400.0,
        min_rtt: 100,
        loss: 0.5,
        ..PathHint::default()
    });
    assert!((rc.loss() - 0.2).abs() < 1e-9, "seeded loss {}", rc.loss());
}

/// Drives a model through `ms` ms of a flow that loses every `lose_every`-th packet: one new
/// 1400-byte packet a ms, each acknowledged `rtt` ms after it left; a lost one is resent an
/// RTT after it left, and that copy is acknowledged.
fn lossy_flow(rc: &mut rate::RateControl, start: u32, ms: u32, lose_every: u32, rtt: u32) {
    let lost = |now: u32, _| now.is_multiple_of(lose_every).then_some(rtt);
    flow(rc, start, ms, |_| rtt, |_| 1, lost);
}

/// Drives a model through `ms` ms of a flow of `per_ms(now)` new 1400-byte packets a ms,
/// each acknowledged `rtt(now)` ms after it left (`rtt` must not fall), except the `k`-th
/// of a ms for which `lost(now, k)` says after how long it is resent (that copy is
/// acknowledged). Returns the largest flight.
fn flow(
    rc: &mut rate::RateControl,
    start: u32,
    ms: u32,
    rtt: impl Fn(u32) -> u32,
    per_ms: impl Fn(u32) -> u32,
    lost: impl Fn(u32, u32) -> Option<u32>,
) -> usize {
    let mut p = rate::Pacer::default();
    // (ack time, send time, stamp, transmissions)
    let mut acks = std::collections::VecDeque::new();
    let mut repairs = std::collections::VecDeque::new();
    let mut peak = 0;
    for now in start..start + ms {
        while repairs.front().is_some_and(|&t| t <= now) {
            repairs.pop_front();
            let stamp = rc.on_transmit(&mut p, now, 1400, false, false);
            acks.push_back((now + rtt(now), now, stamp, 2));
        }
        for k in 0..per_ms(now) {
            let stamp = rc.on_transmit(&mut p, now, 1400, true, false);
            match lost(now, k) {
                Some(after) => repairs.push_back(now + after),
                None => acks.push_back((now + rtt(now), now, stamp, 1)),
            }
        }
        peak = peak.max(rc.inflight());
        while acks.front().is_some_and(|&(t, _, _, _)| t <= now) {
            let Some((_, sent, stamp, xmit)) = acks.pop_front() else {
                break;
            };
            rc.on_rtt(now, now - sent, now - sent, 1);
            rc.on_acked(now, 1400, &stamp, None, xmit);
            rc.on_input_done(now, 0);
        }
    }
    peak
}

/// A round that resends far more than the path's random loss while a queue stands all round
/// overflowed the bottleneck: the flight is capped below what it was (BBRv2's inflight_hi).
/// The same resends without a standing queue are random loss, and the cap stays.
#[test]
fn a_round_that_overflows_the_queue_caps_the_flight() {
    // A fifth of the packets lost, no queue: noise; the cap stays two BDPs.
    let mut rc = after_bulk();
    lossy_flow(&mut rc, 3000, 1000, 5, 100);
    let bdp = rc.bdp().unwrap();
    assert!(rc.cwnd() >= 2 * bdp, "cap {} B, BDP {bdp} B", rc.cwnd());
    assert_eq!(rc.inflight_hi(), None);
    // One packet in 25 lost through a standing queue, and no random loss measured (an
    // echoing server's rounds are app-limited, and only other rounds measure it): noise too.
    // A margin of 3% took it for overflow and cost the 50-connection echo soak on netlab
    // `lossy` (2% loss each way) 5% of its goodput.
    let mut rc = after_bulk();
    lossy_flow(&mut rc, 3000, 1000, 25, 130);
    assert_eq!(rc.inflight_hi(), None);
    // A fifth lost through the same queue: the bottleneck overflowed. The flight
    // (this flow does not wait for the cap) is capped at 0.7 of itself.
    let mut rc = after_bulk();
    lossy_flow(&mut rc, 3000, 1000, 5, 130);
    let flight = rc.inflight() as f64;
    let hi = rc.inflight_hi().expect("capped") as f64;
    assert!(
        (0.65 * flight..=0.75 * flight).contains(&hi),
        "cap {hi} B, flight {flight} B"
    );
    assert!(rc.cwnd() as f64 <= hi, "cwnd {} B over the cap", rc.cwnd());
    // Rounds that reach the cap (a queue, but nothing resent) let it grow back.
    lossy_flow(&mut rc, 4000, 3000, u32::MAX, 200);
    let grown = rc.inflight_hi().expect("still capped") as f64;
    assert!(
        grown > 1.3 * hi,
        "cap {grown} B after 3 s of clean rounds, {hi} B before"
    );
}

/// Startup overshoots by design and drops what the bottleneck's queue cannot hold; drain
/// and the first cruising round repair the drops, at a flight of their own much smaller.
/// The cap that follows is a share of the flight the drops left in: a share of the one
/// that carried the repairs held the flight under one BDP (sim `reorder`, fresh transfer:
/// 78.5% of the limit against 83.0%). After a cruising round the cap stays a share of the
/// congested round's own flight (with two rounds' largest flight there, an echo soak on
/// netlab `reorder` echoed 5-10% less).
#[test]
fn the_cap_after_startup_is_a_share_of_startups_flight() {
    // Startup at 1400 B/ms and 100 ms; one round trip at twice the rate through a queue
    // (130 ms), losing every fifth packet, the losses found only two round trips later (as
    // behind a reordering window); half the rate for a round trip, which drains the queue
    // and ends drain; then the rate again with nothing lost.
    // Every fifth packet of the two a ms sent in `span`, resent 260 ms after it left.
    let lost_in = |span: std::ops::Range<u32>| {
        move |now: u32, k: u32| {
            (span.contains(&now) && (2 * now + k).is_multiple_of(5)).then_some(260)
        }
    };
    let rtt = |now| if now < 250 { 100 } else { 130 };
    let per_ms = |now: u32| match now {
        250..380 => 2,
        380..510 => now % 2,
        _ => 1,
    };
    let mut rc = rate::RateControl::new(1400);
    let peak = flow(&mut rc, 0, 1500, rtt, per_ms, lost_in(250..380)) as f64;
    let hi = rc.inflight_hi().expect("capped") as f64;
    assert!(
        (0.65 * peak..=0.75 * peak).contains(&hi),
        "cap {hi} B, peak flight {peak} B"
    );
    // The same overshoot and late repairs while cruising (a measured path, no startup):
    // the rounds that resend are capped at a share of their own, smaller flights.
    let mut rc = after_bulk();
    let per_ms = |now| if now < 3130 { 2 } else { 1 };
    let peak = flow(&mut rc, 3000, 1000, |_| 130, per_ms, lost_in(3000..3130)) as f64;
    let hi = rc.inflight_hi().expect("capped") as f64;
    assert!(hi < 0.65 * peak, "cap {hi} B, peak flight {peak} B");
}

/// Rounds of small app-limited messages that wait in a queue (behind the other direction's
/// bulk, or behind the peer's paced answers) must not cut the bandwidth estimate: the next
/// bulk transfer on the path would start at the pacing floor (netlab `reorder`: an upload
/// at 10 of 100 Mbit/s, ramping for 3 s).
#[test]
fn app_limited_rounds_keep_the_bandwidth_estimate() {
    let mut rc = after_bulk();
    let bw = rc.bw();
    assert!(bw > 1000.0, "bulk estimate {bw:.0} B/ms");
    // Twelve 100-byte requests at a time, answered 150-161 ms later: every round of them
    // stands half a minimum RTT over it.
    let mut p = rate::Pacer::default();
    let mut now = 3000;
    for _ in 0..30 {
        let stamps: Vec<_> = (0..12)
            .map(|_| rc.on_transmit(&mut p, now, 100, true, true))
            .collect();
        for (i, st) in (0u32..).zip(&stamps) {
            let t = now + 150 + i;
            rc.on_rtt(t, 150 + i, 150, 5);
            rc.on_acked(t, 100, st, None, 1);
            rc.on_input_done(t, 0);
        }
        now += 200;
    }
    assert!(
        rc.bw() >= bw * 0.9,
        "estimate {:.0} B/ms after app-limited rounds, {bw:.0} before",
        rc.bw()
    );
}

/// The first round after the pipe ran empty "began" at the last round boundary, maybe a
/// minute ago, and carried one small flight: its average delivery rate is no measure of the
/// path, even when its RTTs stand over the minimum (a seeded model's first round began at
/// time 0).
#[test]
fn the_first_round_after_idle_keeps_the_bandwidth_estimate() {
    let mut rc = after_bulk();
    rc.forget_inflight(rc.inflight());
    let bw = rc.bw();
    assert!(bw > 1000.0, "bulk estimate {bw:.0} B/ms");
    // Bursts of ten segments after idle times, acknowledged 130-139 ms later (over the
    // minimum by more than a quarter): the second burst's round began at the first one's.
    let mut p = rate::Pacer::default();
    for t0 in [63_000, 68_000] {
        let stamps: Vec<_> = (0..10)
            .map(|_| rc.on_transmit(&mut p, t0, 1400, true, false))
            .collect();
        let t = t0 + 140;
        for (i, st) in (0u32..).zip(&stamps) {
            rc.on_rtt(t, 130 + i, 130, 5);
            rc.on_acked(t, 1400, st, None, 1);
        }
        rc.on_input_done(t, 0);
    }
    assert!(
        rc.bw() >= bw * 0.9,
        "estimate {:.0} B/ms after bursts, {bw:.0} before",
        rc.bw()
    );
}

/// Warms `a` -> `b` up on a lossless 100 ms path (50 ms each way) until `a` has an RTT
/// estimate; returns the time after the last exchange.
fn warm_up(a: &mut Kcp, b: &mut Kcp, mut now: u32) -> u32 {
    // A measured path (20 MB/s, 100 ms), so that pacing lets a flight out at once.
    let path = PathControl::seeded(
        rc_cfg().mtu,
        PathHint {
            bw: 20_000.0,
            min_rtt: 100,
            ..PathHint::default()
        },
    );
    a.join_path(&path);
    for _ in 0..8 {
        a.send(&[5u8; 1000]);
        let pkts = flush(a, now);
        input_all(b, now + 50, &pkts);
        recv_all(b);
        let acks = flush(b, now + 50);
        input_all(a, now + 100, &acks);
        now += 100;
    }
    assert!((95..=105).contains(&a.rtt()), "srtt {}", a.rtt());
    now
}

/// Steps `k`'s timers from `from` until a PUSH of `sn` leaves; returns when, and how many
/// copies. Panics if it does not within `limit` ms.
fn next_push_of(k: &mut Kcp, from: u32, sn: u32, limit: u32) -> (u32, usize) {
    let mut now = from;
    while now < from + limit {
        let ahead = |at: u32, now: u32| at.wrapping_sub(now) as i32 > 0;
        let at = k.check(now);
        if ahead(at, now) {
            now = at;
        }
        let copies = pushes(&update(k, now)).iter().filter(|&&s| s == sn).count();
        if copies > 0 {
            return (now, copies);
        }
        now += u32::from(!ahead(k.check(now), now));
    }
    panic!("no retransmission of sn {sn} within {limit} ms");
}

/// `pkts` left `a` at `t0`; all but the one with segment `lost` reach `b` 50 ms later and
/// its ACKs come back 50 ms after that. Returns how long after `t0` `a` resends `lost`,
/// and in how many copies.
fn lose_one(a: &mut Kcp, b: &mut Kcp, pkts: Vec<Vec<u8>>, lost: u32, t0: u32) -> (u32, usize) {
    let kept: Vec<Vec<u8>> = pkts
        .into_iter()
        .filter(|p| !pushes(std::slice::from_ref(p)).contains(&lost))
        .collect();
    input_all(b, t0 + 50, &kept);
    input_all(a, t0 + 100, &flush(b, t0 + 50));
    let (at, copies) = next_push_of(a, t0 + 100, lost, 1000);
    (at - t0, copies)
}

/// A warmed-up pair (see [`warm_up`]) and the packets of a flight of `n` full segments that
/// `a` sent at the returned time, with nothing queued behind it.
fn warm_flight(n: usize) -> (Kcp, Kcp, u32, Vec<Vec<u8>>) {
    let mut a = Kcp::new(CONV, &rc_cfg());
    let mut b = Kcp::new(CONV, &rc_cfg());
    let t0 = warm_up(&mut a, &mut b, 1000);
    let mss = rc_cfg().mtu - OVERHEAD;
    a.send(&vec![9u8; n * mss]);
    let pkts = flush(&mut a, t0);
    assert_eq!(pushes(&pkts).len(), n);
    (a, b, t0, pkts)
}

/// A lost segment went again `after` ms in `copies`: after the smoothed RTT (100) and its
/// swing (four mean deviations, at least 1/16 of the minimum), in two copies; the RTO would
/// be 200 or more.
fn assert_resent_after_a_round_trip(a: &Kcp, after: u32, copies: usize) {
    let srtt = a.rtt();
    assert!(
        (srtt + 4..=srtt + 40).contains(&after),
        "resent {after} ms after, srtt {srtt}"
    );
    assert_eq!(copies, 2);
}

/// The last segment of a transfer is lost: nothing sent after it can show the loss, so time
/// does (a smoothed RTT and the RTT's swing), in two copies, and not the RTO with its
/// backoff (netlab `bad`: 600-900 ms lost at the end of a transfer).
#[test]
fn a_lost_tail_segment_is_resent_after_a_round_trip_in_two_copies() {
    let (mut a, mut b, t0, pkts) = warm_flight(3);
    let last = pushes(&pkts)[2];
    let (after, copies) = lose_one(&mut a, &mut b, pkts, last, t0);
    assert_resent_after_a_round_trip(&a, after, copies);
}

/// A flight with nothing queued behind it whose ACKs are held up in a queue (none arrives
/// for a while) is not resent by time: only its tail is, which no later ACK can show lost.
/// Every segment was, at once (this test, with the old rule: all 20), which an echoing
/// server's conversations, always with nothing queued, did to a shared queue that grew.
#[test]
fn a_flight_whose_acks_wait_in_a_queue_is_not_resent_by_time() {
    let (mut a, _, t0, pkts) = warm_flight(20);
    let sns = pushes(&pkts);
    // No ACK for 150 ms: past the smoothed RTT (100) and its swing, before the RTO (200).
    let mut resent = std::collections::BTreeSet::new();
    for now in t0 + 1..t0 + 150 {
        resent.extend(pushes(&update(&mut a, now)));
    }
    assert_eq!(resent.into_iter().collect::<Vec<_>>(), sns[18..].to_vec());
}

/// A segment lost in the middle of a burst, with nothing queued: the ACKs of the segments
/// sent with it (in the same ms, so within the reordering window) overtake it, and time
/// repairs it after a round trip, not the RTO.
#[test]
fn a_segment_lost_in_a_burst_is_resent_after_a_round_trip() {
    let (mut a, mut b, t0, pkts) = warm_flight(20);
    let middle = pushes(&pkts)[10];
    let (after, copies) = lose_one(&mut a, &mut b, pkts, middle, t0);
    assert_resent_after_a_round_trip(&a, after, copies);
}

/// RACK's rule: a segment overtaken by the ACK of one sent with it counts as lost a
/// reordering window after that ACK came, not a smoothed RTT after it left. Here the path's
/// RTT grew by half (a queue) and the ACK of the flight's last segment came back 150 ms after
/// the flight left, 35 ms ahead of the others: they were late, not lost. By the smoothed RTT
/// (106 ms after that one sample, plus its swing of 70 ms) all of them were resent at once,
/// 176 ms after they left.
#[test]
fn an_overtaken_segment_is_lost_only_a_reordering_window_after_the_ack_that_overtook_it() {
    let (mut a, mut b, t0, mut pkts) = warm_flight(20);
    let sns = pushes(&pkts);
    let last = pkts.split_off(19);
    input_all(&mut b, t0 + 75, &last);
    let first_ack = flush(&mut b, t0 + 75);
    input_all(&mut b, t0 + 110, &pkts);
    let late_acks = flush(&mut b, t0 + 110);
    let mut resent = std::collections::BTreeSet::new();
    for now in t0 + 1..=t0 + 185 {
        match now - t0 {
            150 => input_all(&mut a, now, &first_ack),
            185 => input_all(&mut a, now, &late_acks),
            _ => {}
        }
        resent.extend(pushes(&update(&mut a, now)));
    }
    // The tail (the last two) goes by time after a round trip either way.
    let early: Vec<_> = resent.iter().filter(|sn| **sn < sns[18]).collect();
    assert!(early.is_empty(), "resent {resent:?}");
}

/// Once the flight spans half the window, the oldest segment holds the conversation back:
/// if it is lost it goes out again after a round trip, in two copies, even while data is
/// queued (a chain of losses of one segment stalled a 20 Mbit/s transfer for 0.4 s).
#[test]
fn the_oldest_segment_is_rushed_when_it_holds_the_window() {
    let cfg = KcpConfig {
        sndwnd: 32,
        rcvwnd: 32,
        ..rc_cfg()
    };
    let mut a = Kcp::new(CONV, &cfg);
    let mut b = Kcp::new(CONV, &cfg);
    let t0 = warm_up(&mut a, &mut b, 1000);
    // Writes as the session does: as much as the queue takes, then a flush.
    let data = vec![9u8; 100 * (cfg.mtu - OVERHEAD)];
    let mut written = 0;
    let mut pkts = Vec::new();
    for t in t0..t0 + 5 {
        written += a.send(&data[written..]);
        pkts.extend(flush(&mut a, t));
    }
    written += a.send(&data[written..]);
    assert!(written < data.len());
    let sns = pushes(&pkts);
    assert_eq!(sns.len(), 32, "the window's worth in flight");
    assert!(a.queued() > 0, "data still queued");
    let (after, copies) = lose_one(&mut a, &mut b, pkts, sns[0], t0);
    // Mid-transfer the swing is at least a quarter of the minimum RTT (25 ms).
    let srtt = a.rtt();
    assert!(
        (srtt + 22..=srtt + 40).contains(&after),
        "resent {after} ms after, srtt {srtt}"
    );
    assert_eq!(copies, 2);
}

/// A conversation joining a path the tunnel already measured starts with what it knows: the
/// peer's window (ikcp assumes 128 segments until the peer's first packet) and an RTO from
/// its RTT (the default 200 ms fired for the whole first flight on a 200 ms path).
#[test]
fn a_joining_conversation_expects_the_paths_window_and_rtt() {
    let path = PathControl::seeded(
        rc_cfg().mtu,
        PathHint {
            bw: 20_000.0,
            min_rtt: 200,
            peer_wnd: 1024,
            ..PathHint::default()
        },
    );
    let cfg = KcpConfig {
        sndwnd: 2048,
        ..rc_cfg()
    };
    let mut a = Kcp::new(CONV, &cfg);
    a.join_path(&path);
    let mss = cfg.mtu - OVERHEAD;
    a.send(&vec![1u8; 300 * mss]);
    let mut sent = Vec::new();
    for now in 0..390u32 {
        sent.extend(pushes(&flush(&mut a, now)));
    }
    assert_eq!(
        sent.len(),
        300,
        "all of it in the first round trip, none twice"
    );
    let (at, _) = next_push_of(&mut a, 390, 0, 1000);
    // Sent at 0 or 1 (the pacer's first tokens), resent 400 ms later.
    assert!(
        (400..=401).contains(&at),
        "first RTO at {at}, not twice the RTT"
    );
}

/// The reordering window stays at the clock's resolution until a packet is seen to overtake
/// another: then a later segment's ACK no longer counts against one sent just before it.
#[test]
fn reordering_is_learnt_from_acks_that_overtake() {
    let mut r = Reordering::new();
    assert!(!r.path.reorders(), "in-order ACKs show no reordering");
    // A segment whose ACK comes after those of two sent 10 and 11 ms after it.
    r.overtake(10, false);
    assert!(r.path.reorders());
}

/// Sends 100 bytes as one segment at `now`; returns its packets (a small tail segment leaves
/// in two copies) and its sn.
fn send_one(k: &mut Kcp, now: u32) -> (Vec<Vec<u8>>, u32) {
    k.send(&[7u8; 100]);
    let pkts = flush(k, now);
    let sn = *pushes(&pkts).first().expect("sent at once");
    (pkts, sn)
}

/// A pair on a path of 50 ms, `a` sending, `b` answering; `t` is the time of the next send.
struct Reordering {
    path: PathControl,
    a: Kcp,
    b: Kcp,
    t: u32,
}

impl Reordering {
    fn new() -> Reordering {
        let path = PathControl::new(rc_cfg().mtu);
        let mut a = Kcp::new(CONV, &rc_cfg());
        a.join_path(&path);
        let b = Kcp::new(CONV, &rc_cfg());
        let mut r = Reordering {
            path,
            a,
            b,
            t: 1000,
        };
        r.rounds();
        r
    }

    /// Eight round trips of one segment each, in order.
    fn rounds(&mut self) {
        for _ in 0..8 {
            let (pkts, _) = send_one(&mut self.a, self.t);
            input_all(&mut self.b, self.t + 25, &pkts);
            input_all(&mut self.a, self.t + 50, &flush(&mut self.b, self.t + 25));
            self.t += 100;
        }
    }

    /// Segment P is overtaken by two sent `lag` and `lag + 1` ms after it: their ACKs reach
    /// `a` in separate packets before P's. With `flush_first`, `a` flushes between those
    /// ACKs and P's. Returns whether that flush resent P.
    fn overtake(&mut self, lag: u32, flush_first: bool) -> bool {
        let t = self.t;
        let (a, b) = (&mut self.a, &mut self.b);
        let (p, p_sn) = send_one(a, t);
        let (q, _) = send_one(a, t + lag);
        let (r, _) = send_one(a, t + lag + 1);
        input_all(b, t + lag + 18, &q);
        let ack_q = flush(b, t + lag + 18);
        input_all(b, t + lag + 19, &r);
        let ack_r = flush(b, t + lag + 19);
        input_all(a, t + lag + 36, &ack_q);
        input_all(a, t + lag + 37, &ack_r);
        let resent = flush_first && pushes(&flush(a, t + lag + 37)).contains(&p_sn);
        input_all(b, t + lag + 40, &p);
        input_all(a, t + lag + 58, &flush(b, t + lag + 40));
        self.t += 200;
        resent
    }
}

/// Once the path has shown how far it reorders, the window spans that lag (up to a smoothed
/// RTT): a segment overtaken by less is no loss. A quarter of the minimum RTT alone made 12%
/// of all segments needless retransmissions on netlab `reorder`.
#[test]
fn the_reordering_window_spans_the_lag_the_path_showed() {
    for (seen, resent) in [(30, false), (10, true)] {
        let mut r = Reordering::new();
        r.overtake(seen, false);
        assert!(r.path.reorders());
        r.rounds();
        // The operator's view (debug logs): the window for ACKs spans the lag seen + 1 ms
        // (P was overtaken by the segment sent `seen + 1` ms after it).
        let d = r.a.describe();
        assert!(d.contains(&format!("(ACKs {} ms)", seen + 2)), "{d}");
        assert_eq!(
            r.overtake(20, true),
            resent,
            "overtaken by 20 ms on a path seen to lag {seen} ms"
        );
    }
}

/// A retransmission whose original is then acknowledged was needless, and the lag of that
/// original is the path's reordering too (such segments are the ones it delays most).
#[test]
fn a_needless_retransmission_shows_how_far_the_path_reorders() {
    let mut r = Reordering::new();
    assert!(r.overtake(30, true), "no reordering seen yet: resent");
    assert!(r.path.reorders());
    r.rounds();
    assert!(!r.overtake(20, true));
}

/// The lag is forgotten once the path stops showing it (two epochs of 16 round trips), so a
/// path that reordered once does not repair slowly for good.
#[test]
fn the_reordering_window_forgets_a_lag_not_seen_again() {
    let mut r = Reordering::new();
    r.overtake(30, false);
    r.rounds();
    assert!(!r.overtake(20, true), "still within the epochs");
    for _ in 0..5 {
        r.rounds();
    }
    assert!(r.overtake(20, true), "40 round trips later");
}
