//! No allocation per packet in steady state: a counting global allocator (this test binary
//! only) watches a bulk transfer between two engines (rate control on, the default, and off),
//! the framing layer sealing and opening every packet, and the TLV decoder reading the
//! delivered stream. After a warm-up (pools, queues and the replay filter reach their working
//! size) the allocation count must not move while thousands of packets pass.
//!
//! One test function only: the counter is process-wide, and the harness runs tests on threads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use kcptun::framing::{Framer, Key, Method, ReplayFilter};
use kcptun::kcp::{Kcp, KcpConfig};
use kcptun::proto::{encode_header, Frame, TlvDecoder, MSG_PUSH};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const DATAGRAM: usize = 1400;

/// Datagrams of one flush, back to back in one buffer that keeps its capacity.
#[derive(Default)]
struct Wire {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

/// Two engines, a framer each way, a TLV decoder at the receiver; `a` sends PUSH messages.
struct Pair {
    a: Kcp,
    b: Kcp,
    tx: Framer,
    rx: Framer,
    dec: TlvDecoder,
    to_b: Wire,
    to_a: Wire,
    chunk: Vec<u8>,
    buf: Vec<u8>,
    dgram: Vec<u8>,
    now: u32,
    payload: u64,
    packets: u64,
}

impl Pair {
    fn new(cfg: &KcpConfig) -> Pair {
        let method = Method::XChaCha20Poly1305Ietf;
        let key = Some(Key::from_bytes([7; 32]));
        let mut chunk = vec![0x5a; 4 + 8000];
        chunk[..4].copy_from_slice(&encode_header(MSG_PUSH, 8000));
        Pair {
            a: Kcp::new(1, cfg),
            b: Kcp::new(1, cfg),
            tx: Framer::new(method, key.clone()).expect("framer"),
            rx: Framer::with_replay_filter(method, key, ReplayFilter::server_default())
                .expect("framer"),
            dec: TlvDecoder::new(),
            to_b: Wire::default(),
            to_a: Wire::default(),
            chunk,
            buf: vec![0; 64 * 1024],
            dgram: vec![0; DATAGRAM + 64],
            now: 1,
            payload: 0,
            packets: 0,
        }
    }

    /// Seals each packet of `w` and opens it again, then gives it to `k`.
    fn deliver(
        w: &mut Wire,
        k: &mut Kcp,
        tx: &mut Framer,
        rx: &mut Framer,
        dgram: &mut [u8],
        now: u32,
    ) -> u64 {
        let mut start = 0;
        let max_plain = DATAGRAM - tx.overhead();
        for &end in &w.ends {
            let p = &w.bytes[start..end];
            dgram[..p.len()].copy_from_slice(p);
            let n = tx.seal(dgram, p.len(), max_plain);
            let m = rx.open(&mut dgram[..n]).expect("open");
            k.input(now, &dgram[..m]).expect("input");
            start = end;
        }
        let n = w.ends.len() as u64;
        w.bytes.clear();
        w.ends.clear();
        n
    }

    /// One ms of a bulk transfer a -> b.
    fn step(&mut self) {
        self.now += 1;
        while self.a.send_capacity() >= self.chunk.len() {
            let took = self.a.send(&self.chunk);
            assert_eq!(took, self.chunk.len());
        }
        let (to_b, to_a) = (&mut self.to_b, &mut self.to_a);
        self.a.flush(self.now, |p| {
            to_b.bytes.extend_from_slice(p);
            to_b.ends.push(to_b.bytes.len());
        });
        self.packets += Self::deliver(
            to_b,
            &mut self.b,
            &mut self.tx,
            &mut self.rx,
            &mut self.dgram,
            self.now,
        );
        self.b.flush(self.now, |p| {
            to_a.bytes.extend_from_slice(p);
            to_a.ends.push(to_a.bytes.len());
        });
        loop {
            let n = self.b.recv(&mut self.buf);
            if n == 0 {
                break;
            }
            let mut input = &self.buf[..n];
            while !input.is_empty() {
                let (used, frame) = self.dec.decode(input).expect("tlv");
                if let Some(Frame::Data(piece)) = frame {
                    self.payload += piece.len() as u64;
                }
                input = &input[used..];
            }
        }
        self.packets += Self::deliver(
            to_a,
            &mut self.a,
            &mut self.tx,
            &mut self.rx,
            &mut self.dgram,
            self.now,
        );
    }
}

#[test]
fn no_allocation_per_packet_in_steady_state() {
    kcptun::framing::init().expect("libsodium");
    for rate_control in [true, false] {
        let cfg = KcpConfig {
            mtu: DATAGRAM - 28 - Method::XChaCha20Poly1305Ietf.overhead(),
            rate_control,
            ..KcpConfig::default()
        };
        let mut pair = Pair::new(&cfg);
        for _ in 0..1500 {
            pair.step();
        }
        let (allocs, packets, payload) =
            (ALLOCS.load(Ordering::Relaxed), pair.packets, pair.payload);
        for _ in 0..1500 {
            pair.step();
        }
        let allocs = ALLOCS.load(Ordering::Relaxed) - allocs;
        let packets = pair.packets - packets;
        let payload = pair.payload - payload;
        assert!(
            packets > 10_000,
            "too few packets to mean anything: {packets}"
        );
        assert!(payload > 10_000_000, "too little payload: {payload}");
        println!("rate_control {rate_control}: {allocs} allocations, {packets} packets");
        // Rate control (the default) reaches a fixed working set: none at all. ikcp's own
        // window logic still moves a high-water mark now and then (a buffer doubling, not a
        // per-packet cost): allow that, a thousand times below one per packet.
        let limit = if rate_control { 0 } else { packets / 1000 };
        assert!(
            allocs <= limit,
            "rate_control {rate_control}: {allocs} allocations for {packets} packets"
        );
    }
}
