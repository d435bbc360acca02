//! TLV decoding cost (WIRE.md §4): the receive path parses every byte KCP delivers. Measured
//! with std::time only: `cargo bench --bench proto`.
//!
//! `push 14880` is a stream of maximal PUSH messages fed in 64 KiB reads (the loop's scratch
//! size); `push 64` small messages (interactive traffic); `mixed` alternates PUSH sizes with
//! KEEPALIVEs and feeds the stream in odd-sized pieces, so headers straddle reads.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kcptun::proto::{encode_header, Frame, TlvDecoder, MAX_PUSH, MSG_KEEPALIVE, MSG_PUSH};

const BUDGET: Duration = Duration::from_millis(700);

fn stream(sizes: &[usize], total: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(total + MAX_PUSH + 8);
    let mut i = 0;
    while v.len() < total {
        let n = sizes[i % sizes.len()];
        i += 1;
        if n == 0 {
            v.extend_from_slice(&encode_header(MSG_KEEPALIVE, 0));
        } else {
            v.extend_from_slice(&encode_header(MSG_PUSH, n));
            v.resize(v.len() + n, 0x5a);
        }
    }
    v
}

/// Decodes `data` in pieces of `piece` bytes until the budget is spent; returns (ns per
/// message, MB/s of stream).
fn measure(data: &[u8], piece: usize) -> (f64, f64) {
    let mut msgs = 0u64;
    let mut bytes = 0u64;
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        let mut dec = TlvDecoder::new();
        for chunk in data.chunks(piece) {
            let mut input = chunk;
            while !input.is_empty() {
                let (used, frame) = dec.decode(black_box(input)).expect("valid stream");
                match frame {
                    Some(Frame::Data(p)) => {
                        black_box(p);
                        if dec.at_boundary() {
                            msgs += 1; // the PUSH's last piece
                        }
                    }
                    Some(_) => msgs += 1,
                    None => {}
                }
                input = &input[used..];
            }
        }
        bytes += data.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    (secs * 1e9 / msgs.max(1) as f64, bytes as f64 / secs / 1e6)
}

fn main() {
    let total = 8 << 20;
    for (name, sizes, piece) in [
        ("push 14880", vec![MAX_PUSH], 64 * 1024),
        ("push 64", vec![64], 64 * 1024),
        ("mixed", vec![1, 1400, 0, 64, 9000, 0, 14880, 300], 1397),
    ] {
        let data = stream(&sizes, total);
        let (ns, mb_s) = measure(&data, piece);
        println!("tlv {name:<12} {ns:>8.1} ns/message {mb_s:>9.1} MB/s");
    }
}
