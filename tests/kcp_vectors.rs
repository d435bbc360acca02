//! KCP segments captured from kcptun-libev (../shared/vectors/): every recorded segment parses
//! to exactly the recorded fields in big-endian mode, re-encodes to the same bytes, and every
//! conversation's captured PUSH stream, fed to a fresh engine, comes out byte for byte.

use std::path::Path;

use kcptun::kcp::{packet_conv, ByteOrder, Kcp, KcpConfig, SegmentHeader, Segments, OVERHEAD};
use serde_json::Value;

fn vectors_dir() -> Option<&'static Path> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: ../shared/vectors not found");
        None
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn method_files(dir: &Path) -> Vec<Value> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kdf.json"))
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect()
}

/// The KCP packet inside a datagram record: plaintext without its padding.
fn kcp_packet(dg: &Value) -> Option<Vec<u8>> {
    if dg["kind"] != "kcp" {
        return None;
    }
    let mut p = unhex(dg["plaintext_hex"].as_str()?);
    let pad = dg["padding_len"].as_u64().unwrap_or(0) as usize;
    p.truncate(p.len() - pad);
    Some(p)
}

fn field(v: &Value, name: &str) -> u64 {
    v[name].as_u64().unwrap_or_else(|| panic!("missing {name}"))
}

#[test]
fn segments_parse_and_reencode() {
    let Some(dir) = vectors_dir() else { return };
    let (mut packets, mut segments) = (0, 0);
    for file in method_files(dir) {
        for sc in file["scenarios"].as_array().unwrap() {
            for dg in sc["datagrams"].as_array().unwrap() {
                let Some(pkt) = kcp_packet(dg) else { continue };
                let want = dg["segments"].as_array().unwrap();
                let got: Vec<_> = Segments::new(&pkt, ByteOrder::Big)
                    .collect::<Result<_, _>>()
                    .expect("captured packet refused");
                assert_eq!(
                    got.len(),
                    want.len(),
                    "segment count, datagram {}",
                    dg["index"]
                );
                let mut rebuilt = Vec::new();
                for ((hdr, payload), w) in got.iter().zip(want) {
                    let expect = SegmentHeader {
                        conv: field(w, "conv") as u32,
                        cmd: field(w, "cmd") as u8,
                        frg: field(w, "frg") as u8,
                        wnd: field(w, "wnd") as u16,
                        ts: field(w, "ts") as u32,
                        sn: field(w, "sn") as u32,
                        una: field(w, "una") as u32,
                        len: field(w, "len") as u32,
                    };
                    assert_eq!(*hdr, expect);
                    assert_eq!(*payload, unhex(w["payload_hex"].as_str().unwrap()));
                    let mut h = [0u8; OVERHEAD];
                    hdr.emit(&mut h, ByteOrder::Big);
                    rebuilt.extend_from_slice(&h);
                    rebuilt.extend_from_slice(payload);
                    segments += 1;
                }
                // Every byte accounted for: no trailing garbage after the last segment.
                assert_eq!(
                    rebuilt, pkt,
                    "re-encoding differs, datagram {}",
                    dg["index"]
                );
                assert_eq!(packet_conv(&pkt, ByteOrder::Big), Some(got[0].0.conv));
                packets += 1;
            }
        }
    }
    eprintln!("{packets} kcp packets, {segments} segments checked");
    assert!(packets > 100 && segments > packets);
}

#[test]
fn captured_streams_reassemble() {
    let Some(dir) = vectors_dir() else { return };
    let mut streams = 0;
    for file in method_files(dir) {
        for sc in file["scenarios"].as_array().unwrap() {
            let datagrams = sc["datagrams"].as_array().unwrap();
            for conv_rec in sc["conversations"].as_array().unwrap() {
                let conv = field(conv_rec, "conv") as u32;
                for dir_name in ["c2s", "s2c"] {
                    let rec = &conv_rec[dir_name];
                    if rec["complete_from_sn0"] != true {
                        continue;
                    }
                    let want = unhex(rec["stream_hex"].as_str().unwrap());
                    let cfg = KcpConfig {
                        rcvwnd: 1024,
                        ..KcpConfig::default()
                    };
                    let mut k = Kcp::new(conv, &cfg);
                    let mut got = Vec::new();
                    let mut buf = [0u8; 4096];
                    for dg in datagrams.iter().filter(|d| d["direction"] == dir_name) {
                        let Some(pkt) = kcp_packet(dg) else { continue };
                        if packet_conv(&pkt, ByteOrder::Big) != Some(conv) {
                            continue;
                        }
                        let now = dg["t_ms"].as_f64().unwrap() as u32;
                        k.input(now, &pkt).expect("captured packet refused");
                        k.flush(now, |_| {});
                        loop {
                            let n = k.recv(&mut buf);
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                        }
                    }
                    assert_eq!(got, want, "conv {conv:#x} {dir_name} in {}", sc["name"]);
                    streams += 1;
                }
            }
        }
    }
    eprintln!("{streams} captured streams reassembled");
    assert!(streams > 10);
}
