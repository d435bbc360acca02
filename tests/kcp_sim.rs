//! The KCP engine against itself on the simulated network: byte-exact, in-order delivery in
//! both directions over many seeds and hostile links, and a clean idle state at the end.

#[path = "common/sim.rs"]
mod sim;

use kcptun::kcp::{ByteOrder, Kcp, KcpConfig, IDLE_CHECK};
use sim::{run, Link, LinkConfig, Rng, Side};

fn random_config(rng: &mut Rng) -> KcpConfig {
    KcpConfig {
        mtu: [200, 576, 1332, 1400][rng.below(4) as usize],
        sndwnd: [8, 32, 256][rng.below(3) as usize],
        rcvwnd: [16, 128, 512][rng.below(3) as usize],
        nodelay: rng.below(3) as u32,
        interval: [10, 20, 100][rng.below(3) as usize],
        resend: [0, 2, 3][rng.below(3) as usize],
        nc: rng.below(2) == 0,
        rto_max: [4000, 60_000][rng.below(2) as usize],
        dead_link: 1000, // the simulator decides when a run failed, not the engine
        byte_order: if rng.below(2) == 0 {
            ByteOrder::Big
        } else {
            ByteOrder::Little
        },
        stream: true,
        rate_control: rng.below(2) == 0,
        ack_copies: 1 + rng.below(2) as u8,
    }
}

fn assert_idle(k: &mut Kcp, now: u32) {
    assert!(k.is_idle(), "not idle: {k:?}");
    assert_eq!(k.waitsnd(), 0);
    assert_eq!(k.peek_size(), 0);
    // After a burst an idle engine wants one wakeup, within a second, to give its free
    // buffers back; it sends nothing then, and wants none after.
    let trim = k.check(now);
    let wait = trim.wrapping_sub(now);
    if wait != IDLE_CHECK {
        assert!(wait <= 1000, "idle engine wants a wakeup in {wait} ms");
        let mut sent = 0;
        k.update(trim, |_| sent += 1);
        assert_eq!(sent, 0, "the trim wakeup sent packets");
        assert!(
            k.heap_bytes() < 16_384,
            "{} B after the trim",
            k.heap_bytes()
        );
    }
    let now = if wait != IDLE_CHECK { trim } else { now };
    assert_eq!(
        k.check(now),
        now.wrapping_add(IDLE_CHECK),
        "idle engine wants a wakeup"
    );
}

#[test]
fn seed_sweep_bidirectional() {
    let seeds = if cfg!(debug_assertions) { 60 } else { 300 };
    for seed in 0..seeds {
        let mut rng = Rng::new(seed);
        let cfg = random_config(&mut rng);
        let conv = rng.next_u64() as u32;
        let mut a = Kcp::new(conv, &cfg);
        let mut b = Kcp::new(conv, &cfg);
        let (na, nb) = (rng.below(200_000) as usize, rng.below(200_000) as usize);
        let da = rng.bytes(na);
        let db = rng.bytes(nb);
        let mut ab = Link::new(LinkConfig::random(&mut rng), seed * 2 + 1);
        let mut ba = Link::new(LinkConfig::random(&mut rng), seed * 2 + 2);
        // Half the runs cross the u32 millisecond wrap during the transfer.
        let base = if seed % 2 == 0 {
            u32::MAX - rng.below(20_000) as u32
        } else {
            rng.next_u64() as u32
        };
        let out = {
            let mut sa = Side::new(&mut a, &da);
            let mut sb = Side::new(&mut b, &db);
            run(&mut sa, &mut sb, &mut ab, &mut ba, base, seed, 3_600_000)
        };
        let now = base.wrapping_add(out.end as u32);
        assert_idle(&mut a, now);
        assert_idle(&mut b, now);
        assert!(!a.is_dead() && !b.is_dead());
    }
}

#[test]
fn heavy_loss_still_delivers() {
    for seed in 0..6 {
        let cfg = KcpConfig {
            dead_link: 1000,
            ..KcpConfig::default()
        };
        let mut a = Kcp::new(7, &cfg);
        let mut b = Kcp::new(7, &cfg);
        let mut rng = Rng::new(seed + 100);
        let da = rng.bytes(100_000);
        let db = rng.bytes(30_000);
        let mut ab = Link::new(LinkConfig::lossy(30, 0.3), seed + 1);
        let mut ba = Link::new(LinkConfig::lossy(30, 0.3), seed + 2);
        let mut sa = Side::new(&mut a, &da);
        let mut sb = Side::new(&mut b, &db);
        run(&mut sa, &mut sb, &mut ab, &mut ba, 12345, seed, 3_600_000);
    }
}

#[test]
fn first_segment_leaves_immediately() {
    // Zero waiting: a fresh conversation's first write reaches the peer after exactly one
    // link delay, and the echo of a reply after one round trip.
    let cfg = KcpConfig::default();
    let mut a = Kcp::new(1, &cfg);
    let mut b = Kcp::new(1, &cfg);
    let da = b"hello".to_vec();
    let db = b"world!".to_vec();
    let mut ab = Link::new(LinkConfig::clean(25), 1);
    let mut ba = Link::new(LinkConfig::clean(25), 2);
    let mut sa = Side::new(&mut a, &da);
    let mut sb = Side::new(&mut b, &db);
    let out = run(&mut sa, &mut sb, &mut ab, &mut ba, 0, 1, 10_000);
    assert_eq!(out.done_ab, 25);
    assert_eq!(out.done_ba, 25);
    // One PUSH each way, sent twice (a small tail segment, rate control's default); the ACK
    // for it leaves with the first flush after input (the duplicate is acked again).
    assert!(out.pkts_ab <= 4 && out.pkts_ba <= 4, "{out:?}");
    assert_eq!((a.stats().dup_sent, b.stats().dup_sent), (1, 1));
    assert_eq!(out.end, 50);
    // Event driven: a handful of wakeups, not one per interval.
    assert!(out.wakeups < 10, "{out:?}");
}

#[test]
fn bulk_on_clean_bandwidth_limited_link() {
    let cfg = KcpConfig {
        sndwnd: 64,
        ..KcpConfig::default()
    };
    let mut a = Kcp::new(3, &cfg);
    let mut b = Kcp::new(3, &cfg);
    let mut rng = Rng::new(3);
    let da = rng.bytes(1_000_000);
    let link = LinkConfig {
        bandwidth: 1000,
        queue: 200_000,
        ..LinkConfig::clean(20)
    };
    let mut ab = Link::new(link.clone(), 1);
    let mut ba = Link::new(link, 2);
    let out = {
        let mut sa = Side::new(&mut a, &da);
        let mut sb = Side::new(&mut b, &[]);
        run(&mut sa, &mut sb, &mut ab, &mut ba, 0, 3, 600_000)
    };
    // 1 MB at 1 MB/s with a 64-segment window over 40 ms RTT: window-limited at about
    // 64 * 1308 B / 40 ms = 2 MB/s, so the link (plus header overhead) is the bottleneck.
    assert!(out.done_ab < 1300, "{out:?}");
    assert_eq!(a.stats().retrans_timeout + a.stats().retrans_fast, 0);
}
