//! The TLV decoder and the session-0 parser against the streams and datagrams captured from
//! kcptun-libev (../shared/vectors), fed in every way a byte stream can be cut; plus random input
//! that must never panic.

use kcptun::proto::{Frame, Session0, TlvDecoder, TlvError, MAX_MSG, MSG_PUSH};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn vectors_dir() -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"));
    if dir.is_dir() {
        Some(dir.to_path_buf())
    } else {
        eprintln!("skipping: ../shared/vectors not found");
        None
    }
}

/// Every method file (the ones with scenarios), parsed.
fn method_files() -> Vec<(String, Value)> {
    let Some(dir) = vectors_dir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    for p in names {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        if v.get("scenarios").is_some() {
            out.push((p.file_name().unwrap().to_string_lossy().into_owned(), v));
        }
    }
    assert!(!out.is_empty(), "no method files in {}", dir.display());
    out
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// splitmix64: a tiny seeded generator, so every run cuts the streams the same way.
struct SplitMix(u64);
impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Msg {
    msg: u16,
    payload: Vec<u8>,
}

/// Decodes a stream cut into the given chunks and rebuilds whole messages, checking on the way
/// that every PUSH piece is a slice of the chunk it came from.
fn decode_chunks(chunks: &[&[u8]]) -> Result<(Vec<Msg>, bool), TlvError> {
    let mut dec = TlvDecoder::new();
    let mut out: Vec<Msg> = Vec::new();
    let mut in_push = false;
    for chunk in chunks {
        let mut input: &[u8] = chunk;
        while !input.is_empty() {
            let (n, frame) = dec.decode(input)?;
            assert!(n <= input.len());
            assert!(frame.is_some() || n == input.len());
            let consumed = &input[..n];
            input = &input[n..];
            match frame {
                None => {}
                Some(Frame::Data(piece)) => {
                    // Zero copy: the piece lies inside what this call consumed.
                    let (lo, hi) = (consumed.as_ptr() as usize, consumed.as_ptr() as usize + n);
                    let p = piece.as_ptr() as usize;
                    assert!(piece.is_empty() || (p >= lo && p + piece.len() <= hi));
                    if !in_push {
                        out.push(Msg {
                            msg: MSG_PUSH,
                            payload: Vec::new(),
                        });
                    }
                    out.last_mut().unwrap().payload.extend_from_slice(piece);
                    in_push = dec.push_remaining() > 0;
                }
                Some(f) => {
                    assert!(!in_push);
                    let msg = match f {
                        Frame::Dial => 0,
                        Frame::Eof => 2,
                        Frame::Keepalive => 3,
                        Frame::Data(_) => unreachable!(),
                    };
                    out.push(Msg {
                        msg,
                        payload: Vec::new(),
                    });
                }
            }
        }
    }
    Ok((out, dec.at_boundary()))
}

struct Stream {
    name: String,
    bytes: Vec<u8>,
    want: Vec<Msg>,
}

fn streams() -> Vec<Stream> {
    let mut out = Vec::new();
    for (file, v) in method_files() {
        for sc in v["scenarios"].as_array().unwrap() {
            let sname = sc["name"].as_str().unwrap();
            for (ci, conv) in sc["conversations"].as_array().unwrap().iter().enumerate() {
                for dir in ["c2s", "s2c"] {
                    let d = &conv[dir];
                    if d.is_null() {
                        continue;
                    }
                    assert_eq!(d["trailing_hex"].as_str().unwrap_or(""), "");
                    let want = d["tlvs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|t| {
                            let payload = unhex(t["payload_hex"].as_str().unwrap());
                            assert_eq!(t["len"].as_u64().unwrap() as usize, payload.len() + 4);
                            Msg {
                                msg: t["msg"].as_u64().unwrap() as u16,
                                payload,
                            }
                        })
                        .collect();
                    out.push(Stream {
                        name: format!("{file} {sname} conv#{ci} {dir}"),
                        bytes: unhex(d["stream_hex"].as_str().unwrap()),
                        want,
                    });
                }
            }
        }
    }
    out
}

#[test]
fn vector_streams_whole() {
    let streams = streams();
    if streams.is_empty() {
        return;
    }
    let mut msgs = 0;
    for s in &streams {
        let (got, clean) = decode_chunks(&[&s.bytes]).unwrap();
        assert_eq!(got, s.want, "{}", s.name);
        assert!(clean, "{}: stream ends inside a message", s.name);
        msgs += got.len();
    }
    eprintln!("{} streams, {} messages", streams.len(), msgs);
    assert!(msgs > 100);
}

#[test]
fn vector_streams_byte_by_byte() {
    for s in streams() {
        let chunks: Vec<&[u8]> = s.bytes.chunks(1).collect();
        assert_eq!(decode_chunks(&chunks).unwrap().0, s.want, "{}", s.name);
    }
}

#[test]
fn vector_streams_every_split_point() {
    for s in streams() {
        for cut in 0..=s.bytes.len() {
            let (a, b) = s.bytes.split_at(cut);
            assert_eq!(
                decode_chunks(&[a, b]).unwrap().0,
                s.want,
                "{} cut {cut}",
                s.name
            );
        }
    }
}

#[test]
fn vector_streams_random_chunks() {
    let mut rng = SplitMix(0x6b63_7074_756e);
    for s in streams() {
        for _ in 0..50 {
            let mut chunks = Vec::new();
            let mut rest: &[u8] = &s.bytes;
            while !rest.is_empty() {
                // Mostly small pieces, sometimes large ones, sometimes empty ones.
                let max = if rng.below(4) == 0 { 5000 } else { 9 };
                let n = rng.below(max + 1).min(rest.len());
                let (a, b) = rest.split_at(n);
                chunks.push(a);
                rest = b;
            }
            assert_eq!(decode_chunks(&chunks).unwrap().0, s.want, "{}", s.name);
        }
    }
}

#[test]
fn vector_session0_datagrams() {
    let mut seen = 0;
    for (file, v) in method_files() {
        for sc in v["scenarios"].as_array().unwrap() {
            for dg in sc["datagrams"].as_array().unwrap() {
                if dg["kind"] != "session0" {
                    continue;
                }
                let p = unhex(dg["plaintext_hex"].as_str().unwrap());
                let s0 = &dg["session0"];
                let what = s0["what"].as_u64().unwrap() as u16;
                let payload = unhex(s0["payload_hex"].as_str().unwrap());
                let got = Session0::parse(&p).unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(got.what(), what, "{file} #{}", dg["index"]);
                let value = u32::from_be_bytes(payload[..4].try_into().unwrap());
                let want = match what {
                    0 => Session0::Ping(value),
                    1 => Session0::Pong(value),
                    2 => Session0::Reset(value),
                    _ => panic!("unexpected what {what}"),
                };
                assert_eq!(got, want);
                // emit reproduces the message part of the plaintext (before the padding).
                let mut buf = [0u8; 16];
                let n = got.emit(&mut buf);
                let pad = dg["padding_len"].as_u64().unwrap() as usize;
                assert_eq!(&buf[..n], &p[..p.len() - pad], "{file} #{}", dg["index"]);
                seen += 1;
            }
        }
    }
    if seen > 0 {
        eprintln!("{seen} session-0 datagrams");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = SplitMix(42);
    let mut buf = vec![0u8; 20000];
    for round in 0..3000 {
        let len = rng.below(if round % 10 == 0 { buf.len() } else { 64 });
        for b in &mut buf[..len] {
            *b = rng.next() as u8;
        }
        // Bias toward plausible headers so the deep paths run too.
        if len >= 4 && round % 2 == 0 {
            buf[0] = 0;
            buf[1] = rng.below(5) as u8;
            let l = rng.below(MAX_MSG + 10) as u16;
            buf[2..4].copy_from_slice(&l.to_be_bytes());
        }
        let data = &buf[..len];
        let mut dec = TlvDecoder::new();
        let mut rest = data;
        while !rest.is_empty() {
            let cut = 1 + rng.below(rest.len());
            let mut piece = &rest[..cut];
            rest = &rest[cut..];
            let mut failed = false;
            while !piece.is_empty() {
                match dec.decode(piece) {
                    Ok((n, f)) => {
                        assert!(n <= piece.len() && (f.is_some() || n == piece.len()));
                        piece = &piece[n..];
                    }
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        // Session-0: random bytes, and random bytes behind a zero conv.
        let _ = Session0::parse(data);
        if len >= 4 {
            buf[..4].fill(0);
            let _ = Session0::parse(&buf[..len]);
        }
    }
}
