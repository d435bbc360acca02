//! The KCP engine under arbitrary input: a live conversation (a few segments exchanged with an
//! honest peer first) receives datagrams from the input, raw or built from header fields near
//! its sequence numbers, interleaved with flushes, receives, sends and time steps. It must
//! never panic, every packet it emits must be at most its mtu and parse as segments of its
//! conversation, and its queues stay within the windows.
#![no_main]

use kcptun::kcp::{ByteOrder, Kcp, KcpConfig, SegmentHeader, OVERHEAD};
use kcptun_rs_fuzz::Input;
use libfuzzer_sys::fuzz_target;

const CONV: u32 = 0x1a2b_3c4d;

fn check_packets(pkts: &[Vec<u8>], mtu: usize) {
    for p in pkts {
        assert!(p.len() <= mtu, "packet of {} bytes over mtu {mtu}", p.len());
        let mut rest = &p[..];
        while !rest.is_empty() {
            let h = SegmentHeader::parse(rest, ByteOrder::Big).expect("emitted segment parses");
            assert_eq!(h.conv, CONV);
            rest = &rest[OVERHEAD + h.len as usize..];
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let cfg = KcpConfig {
        rate_control: inp.u8() & 1 == 1,
        sndwnd: 32,
        rcvwnd: 128,
        ..KcpConfig::default()
    };
    let mtu = cfg.mtu;
    let mut now: u32 = inp.u32();
    let mut peer = Kcp::new(CONV, &cfg);
    let mut k = Kcp::new(CONV, &cfg);
    // Prelude: a little data both ways, so sequence numbers and RTT state are live.
    let mut buf = vec![0u8; 64 * 1024];
    peer.send(&[1u8; 3000]);
    k.send(&[2u8; 2000]);
    for _ in 0..4 {
        let mut to_k = Vec::new();
        peer.flush(now, |p| to_k.push(p.to_vec()));
        for p in &to_k {
            let _ = k.input(now, p);
        }
        let mut to_peer = Vec::new();
        k.flush(now, |p| to_peer.push(p.to_vec()));
        for p in &to_peer {
            let _ = peer.input(now, p);
        }
        now = now.wrapping_add(20);
    }
    k.recv(&mut buf);
    let mut ops = 0;
    while !inp.is_empty() && ops < 256 {
        ops += 1;
        match inp.u8() % 8 {
            0 => {
                let mut d = inp.chunk(2000).to_vec();
                if d.len() >= 4 && inp.u8() & 1 == 1 {
                    d[..4].copy_from_slice(&CONV.to_be_bytes());
                }
                let _ = k.input(now, &d);
            }
            1 => {
                // One to three segments built from fields near the live sequence numbers.
                let mut d = Vec::new();
                for _ in 0..1 + inp.u8() % 3 {
                    let cmd = 81 + inp.u8() % 5; // 85 is not a command
                    let frg = if inp.u8().is_multiple_of(8) {
                        inp.u8()
                    } else {
                        0
                    };
                    let wnd = inp.u16();
                    let ts = now.wrapping_sub(inp.u16() as u32);
                    let sn = (inp.u16() as i16) as i32 as u32;
                    let una = (inp.u16() as i16) as i32 as u32;
                    let len = inp.u16() as usize % 1500;
                    let payload = inp.bytes(len);
                    let claimed = if inp.u8().is_multiple_of(16) {
                        inp.u32()
                    } else {
                        payload.len() as u32
                    };
                    d.extend_from_slice(&CONV.to_be_bytes());
                    d.extend_from_slice(&[cmd, frg]);
                    d.extend_from_slice(&wnd.to_be_bytes());
                    for v in [ts, sn, una, claimed] {
                        d.extend_from_slice(&v.to_be_bytes());
                    }
                    d.extend_from_slice(payload);
                }
                let _ = k.input(now, &d);
            }
            2 => {
                let mut out = Vec::new();
                k.flush(now, |p| out.push(p.to_vec()));
                check_packets(&out, mtu);
                if inp.u8() & 1 == 1 {
                    for p in &out {
                        let _ = peer.input(now, p);
                    }
                }
            }
            3 => {
                let n = inp.u16() as usize % buf.len();
                k.recv(&mut buf[..n]);
            }
            4 => {
                let n = inp.u16() as usize;
                k.send(&buf[..n.min(buf.len())]);
            }
            5 => now = now.wrapping_add(inp.u16() as u32),
            6 => {
                let mut out = Vec::new();
                peer.flush(now, |p| out.push(p.to_vec()));
                for p in &out {
                    let _ = k.input(now, p);
                }
            }
            _ => {
                let mut out = Vec::new();
                k.update(now, |p| out.push(p.to_vec()));
                check_packets(&out, mtu);
                let _ = k.check(now);
            }
        }
        // The flight is bounded by the send window (with rate control too) and the queue by
        // one send window: one window each.
        let cap = 2 * 32;
        assert!(
            k.waitsnd() <= cap + 1,
            "send queues beyond the cap: {}",
            k.waitsnd()
        );
        assert!(
            k.peek_size() <= 128 * 16 * 1024,
            "receive queue beyond the window"
        );
    }
});
