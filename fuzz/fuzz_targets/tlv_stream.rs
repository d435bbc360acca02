//! The TLV stream parser (DIAL/PUSH/EOF/KEEPALIVE inside a conversation's byte stream) against
//! a one-shot reference decoder: the stream is fed in arbitrary pieces (the first bytes of the
//! input choose the cut points), and the incremental decoder must report exactly the messages,
//! push boundaries and error of the reference, consume every byte it is given, and hand out
//! payload as slices of its input at the right place.
#![no_main]

use kcptun::proto::{Frame, TlvDecoder, TlvError, MAX_MSG, TLV_HEADER};
use kcptun_rs_fuzz::Input;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq)]
enum Ev {
    Dial,
    Eof,
    Keepalive,
    /// A whole PUSH payload; `false` = still open at the end of the stream.
    Push(Vec<u8>, bool),
}

fn reference(s: &[u8]) -> (Vec<Ev>, Option<TlvError>) {
    let mut out = Vec::new();
    let mut at = 0;
    while s.len() - at >= TLV_HEADER {
        let msg = u16::from_be_bytes([s[at], s[at + 1]]);
        let len = u16::from_be_bytes([s[at + 2], s[at + 3]]);
        at += TLV_HEADER;
        match msg {
            0 | 2 | 3 if len as usize != TLV_HEADER => {
                return (out, Some(TlvError::BadLength { msg, len }))
            }
            0 => out.push(Ev::Dial),
            2 => out.push(Ev::Eof),
            3 => out.push(Ev::Keepalive),
            1 => {
                if (len as usize) < TLV_HEADER || len as usize > MAX_MSG {
                    return (out, Some(TlvError::BadLength { msg, len }));
                }
                let want = len as usize - TLV_HEADER;
                let have = want.min(s.len() - at);
                out.push(Ev::Push(s[at..at + have].to_vec(), have == want));
                at += have;
            }
            _ => return (out, Some(TlvError::UnknownMsg { msg, len })),
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input::new(data);
    let ncuts = inp.u8() as usize % 16;
    let cuts: Vec<usize> = (0..ncuts).map(|_| inp.u16() as usize).collect();
    let stream = inp.rest();
    let (want, want_err) = reference(stream);

    let mut dec = TlvDecoder::new();
    let mut got = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    let mut err = None;
    let mut pos = 0;
    let mut cut_i = 0;
    'outer: while pos < stream.len() {
        let piece_len = match cuts.get(cut_i) {
            Some(c) => 1 + c % (stream.len() - pos),
            None => stream.len() - pos,
        };
        cut_i += 1;
        let piece = &stream[pos..pos + piece_len];
        let mut used = 0;
        while used < piece.len() {
            match dec.decode(&piece[used..]) {
                Err(e) => {
                    err = Some(e);
                    break 'outer;
                }
                Ok((n, frame)) => {
                    assert!(n <= piece.len() - used, "consumed more than given");
                    if frame.is_none() {
                        assert_eq!(n, piece.len() - used, "None before the input was used up");
                    }
                    let end = used + n;
                    used = end;
                    match frame {
                        None => {}
                        Some(Frame::Dial) => got.push(Ev::Dial),
                        Some(Frame::Eof) => got.push(Ev::Eof),
                        Some(Frame::Keepalive) => got.push(Ev::Keepalive),
                        Some(Frame::Data(d)) => {
                            // The piece is the tail of what this call consumed.
                            assert_eq!(d, &piece[end - d.len()..end]);
                            open.get_or_insert_with(Vec::new).extend_from_slice(d);
                            if dec.push_remaining() == 0 {
                                got.push(Ev::Push(open.take().unwrap(), true));
                            }
                        }
                    }
                }
            }
        }
        pos += piece_len;
    }
    if err.is_none() && dec.push_remaining() > 0 {
        got.push(Ev::Push(open.take().unwrap_or_default(), false));
    }
    assert_eq!(err, want_err, "error differs");
    if want_err.is_none() {
        assert_eq!(got, want);
    } else {
        // Events before the error must agree (a PUSH cut by the error is not compared).
        let n = got.len().min(want.len());
        assert_eq!(got[..n], want[..n]);
    }
});
