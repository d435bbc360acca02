//! Interoperability at the session level, from the kcptun-libev captures in
//! `../shared/vectors/`: the client datagrams a real kcptun-libev client sent are replayed,
//! as recorded (same keys, nonces, padding, ACKs and retransmissions), into a kcptun-rs
//! server, whose target must receive exactly the TCP payload the recorded client carried.
//! The PINGs the reference server accepted must be answered with the matching PONG.

mod harness;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use harness::*;
use kcptun::framing::{self, Framer, Method};
use kcptun::proto::Session0;
use serde_json::Value;

fn vectors_dir() -> Option<PathBuf> {
    let d = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors"));
    if d.is_dir() {
        Some(d)
    } else {
        eprintln!("skipping: ../shared/vectors not found");
        None
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn method_files() -> Vec<Value> {
    let Some(dir) = vectors_dir() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for name in [
        "xchacha20poly1305_ietf-psk.json",
        "xchacha20poly1305_ietf-password.json",
        "chacha20poly1305_ietf-psk.json",
        "xsalsa20poly1305-psk.json",
        "aes256gcm-psk.json",
    ] {
        let v: Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        let m = Method::from_name(v["method"].as_str().unwrap()).unwrap();
        if !m.available() {
            eprintln!("skipping {name}: this CPU lacks the instructions {m} needs");
            continue;
        }
        out.push(v);
    }
    out
}

/// A kcptun-rs server configured with the vector file's method and key.
fn server_for(file: &Value, target: SocketAddr) -> (Proc, SocketAddr) {
    let kcp_bind: SocketAddr = format!("127.0.0.1:{}", free_udp_port()).parse().unwrap();
    let mut cfg = serde_json::json!({
        "kcp_bind": kcp_bind.to_string(),
        "connect": target.to_string(),
        "method": file["method"],
        "loglevel": 6,
        "linger": 5,
        "time_wait": 10,
    });
    match file["key_mode"].as_str().unwrap() {
        "psk" => cfg["psk"] = file["psk"].clone(),
        _ => cfg["password"] = file["password"].clone(),
    }
    (start("server", &cfg), kcp_bind)
}

/// A target that streams what each connection sends: `Some(chunk)`, then `None` at EOF.
fn recording_target() -> (SocketAddr, mpsc::Receiver<Option<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let mut buf = [0u8; 65536];
                while let Ok(n) = c.read(&mut buf) {
                    if n == 0 {
                        let _ = tx.send(None);
                        return;
                    }
                    let _ = tx.send(Some(buf[..n].to_vec()));
                }
            });
        }
    });
    (addr, rx)
}

#[test]
fn recorded_client_conversations_reach_the_target_byte_exact() {
    let mut checked = 0;
    for file in method_files() {
        for sc in file["scenarios"].as_array().unwrap() {
            let name = sc["name"].as_str().unwrap();
            // One conversation from a fresh client, carried to its end.
            if ![
                "a_hello",
                "b_5000",
                "c_halfclose",
                "g_server_close",
                "h_session_keepalive",
            ]
            .contains(&name)
            {
                continue;
            }
            let conv = &sc["conversations"][0];
            let mut want = Vec::new();
            for t in conv["c2s"]["tlvs"].as_array().unwrap() {
                if t["msg_name"] == "PUSH" {
                    want.extend(hex(t["payload_hex"].as_str().unwrap()));
                }
            }
            let (target, received) = recording_target();
            let (_server, kcp_bind) = server_for(&file, target);
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            for d in sc["datagrams"].as_array().unwrap() {
                if d["direction"] == "c2s" {
                    sock.send_to(&hex(d["datagram_hex"].as_str().unwrap()), kcp_bind)
                        .unwrap();
                    thread::sleep(Duration::from_millis(2));
                }
            }
            let has_eof = conv["c2s"]["tlvs"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["msg_name"] == "EOF");
            let mut got = Vec::new();
            let mut eof = false;
            while got.len() < want.len() || (has_eof && !eof) {
                match received.recv_timeout(Duration::from_secs(20)) {
                    Ok(Some(chunk)) => got.extend(chunk),
                    Ok(None) => {
                        eof = true;
                        if got.len() < want.len() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            assert_eq!(eof, has_eof, "{} {name}: EOF at the target", file["method"]);
            assert_eq!(
                got, want,
                "{} / {} {name}: payload at the target",
                file["method"], file["key_mode"]
            );
            checked += 1;
        }
    }
    if vectors_dir().is_some() {
        assert!(checked >= 17, "only {checked} scenarios checked");
    }
}

#[test]
fn accepted_pings_from_the_captures_are_answered_with_pong() {
    for file in method_files() {
        let (target, _rx) = recording_target();
        let (_server, kcp_bind) = server_for(&file, target);
        let method = Method::from_name(file["method"].as_str().unwrap()).unwrap();
        let key =
            framing::Key::from_bytes(hex(file["key_hex"].as_str().unwrap()).try_into().unwrap());
        let mut framer = Framer::new(method, Some(key)).unwrap();
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let injected = file["positive_injected"].as_array().unwrap();
        assert!(!injected.is_empty());
        for p in injected {
            let dgram = hex(p["datagram_hex"].as_str().unwrap());
            let plain = hex(p["plaintext_hex"].as_str().unwrap());
            let Ok(Session0::Ping(ts)) = Session0::parse(&plain) else {
                panic!("injected vector is not a PING");
            };
            sock.send_to(&dgram, kcp_bind).unwrap();
            let mut buf = [0u8; 2048];
            let (n, _) = sock
                .recv_from(&mut buf)
                .expect("no answer to an accepted PING");
            let m = framer
                .open(&mut buf[..n])
                .expect("the answer authenticates");
            assert_eq!(Session0::parse(&buf[..m]), Ok(Session0::Pong(ts)));
            // The same bytes again are a replay: no answer.
            sock.send_to(&dgram, kcp_bind).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            assert!(
                sock.recv_from(&mut buf).is_err(),
                "a replayed PING was answered"
            );
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        }
    }
}

/// Scenario h: the recorded client sends an in-stream KEEPALIVE after a quiet minute; a
/// current kcptun-libev server echoes it. Replayed into our server, the byte stream our
/// server sends back must carry the echo, in a well-formed message stream.
#[test]
fn recorded_keepalive_is_echoed_in_stream() {
    use kcptun::kcp::{ByteOrder, SegmentHeader, CMD_PUSH, OVERHEAD};
    use kcptun::proto::{Frame, TlvDecoder};
    use std::collections::BTreeMap;

    let Some(file) = method_files()
        .into_iter()
        .find(|f| f["method"] == "xchacha20poly1305_ietf" && f["key_mode"] == "psk")
    else {
        return;
    };
    let sc = file["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "h_session_keepalive")
        .expect("scenario h");
    let target = scripted_server(|mut c| {
        // Echo, like the recorded target did.
        let mut buf = [0u8; 4096];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 || std::io::Write::write_all(&mut c, &buf[..n]).is_err() {
                break;
            }
        }
    });
    let (_server, kcp_bind) = server_for(&file, target);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for d in sc["datagrams"].as_array().unwrap() {
        if d["direction"] == "c2s" {
            sock.send_to(&hex(d["datagram_hex"].as_str().unwrap()), kcp_bind)
                .unwrap();
            thread::sleep(Duration::from_millis(20));
        }
    }
    // Collect what the server says for a while (it retransmits what the recorded ACKs
    // do not cover) and rebuild its byte stream by sequence number.
    let key = framing::Key::from_bytes(hex(file["key_hex"].as_str().unwrap()).try_into().unwrap());
    let mut framer = Framer::new(Method::XChaCha20Poly1305Ietf, Some(key)).unwrap();
    let mut by_sn = BTreeMap::new();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(3);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < end {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let m = framer
            .open(&mut buf[..n])
            .expect("server datagrams authenticate");
        let mut p = &buf[..m];
        while let Some(h) = SegmentHeader::parse(p, ByteOrder::Big) {
            let len = h.len as usize;
            if h.conv == 0 || p.len() < OVERHEAD + len {
                break;
            }
            if h.cmd == CMD_PUSH {
                by_sn.insert(h.sn, p[OVERHEAD..OVERHEAD + len].to_vec());
            }
            p = &p[OVERHEAD + len..];
        }
    }
    let mut stream = Vec::new();
    for (i, (sn, data)) in by_sn.iter().enumerate() {
        assert_eq!(*sn as usize, i, "a gap in the server's stream");
        stream.extend_from_slice(data);
    }
    let mut dec = TlvDecoder::new();
    let mut frames = Vec::new();
    let mut off = 0;
    while off < stream.len() {
        let (used, f) = dec.decode(&stream[off..]).expect("well-formed messages");
        off += used;
        match f {
            Some(Frame::Keepalive) => frames.push("KEEPALIVE"),
            Some(Frame::Eof) => frames.push("EOF"),
            Some(Frame::Dial) => frames.push("DIAL"),
            Some(Frame::Data(_)) if frames.last() != Some(&"PUSH") => frames.push("PUSH"),
            Some(Frame::Data(_)) | None => {}
        }
    }
    assert!(
        frames.contains(&"KEEPALIVE"),
        "no KEEPALIVE echo in {frames:?}"
    );
    assert!(
        !frames.contains(&"DIAL"),
        "a server never sends DIAL: {frames:?}"
    );
}
