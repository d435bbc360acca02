//! The framing layer against datagrams captured from kcptun-libev (../shared/vectors): every
//! datagram opens to its recorded plaintext, re-sealing reproduces it byte for byte, every
//! single-byte corruption fails, every negative vector fails for its recorded reason, and the
//! key derivations match kdf.json.

use kcptun::framing::{
    key_from_password, key_from_psk, Framer, Key, KeyError, Method, OpenError, ReplayFilter,
};
use serde_json::Value;
use std::path::{Path, PathBuf};

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/vectors");

fn vectors_dir() -> Option<PathBuf> {
    let p = Path::new(VECTORS);
    if p.is_dir() {
        Some(p.to_path_buf())
    } else {
        eprintln!("skipping: ../shared/vectors not found");
        None
    }
}

fn load(name: &str) -> Option<Value> {
    let dir = vectors_dir()?;
    let text = std::fs::read_to_string(dir.join(name)).expect("read vector file");
    Some(serde_json::from_str(&text).expect("parse vector file"))
}

/// Fixed replay-filter seed (distinct halves): tests must not depend on a random seed, since
/// the filter's real false-positive floor (~1e-7 for small maps, see replay.rs) is not zero.
const FILTER_SEED: [u8; 32] = *b"kcptun-rs framing tests seed 01!";

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn hexfield(v: &Value, field: &str) -> Vec<u8> {
    hex(v[field]
        .as_str()
        .unwrap_or_else(|| panic!("missing {field}")))
}

fn key32(bytes: &[u8]) -> Key {
    Key::from_bytes(bytes.try_into().expect("32-byte key"))
}

/// A receiver with a small replay filter (the vectors hold < 1000 datagrams per file).
fn receiver(method: Method, key: &Key) -> Framer {
    Framer::with_replay_filter(
        method,
        Some(key.clone()),
        ReplayFilter::with_seed(1 << 12, 1e-12, &FILTER_SEED),
    )
    .expect("framer")
}

/// Opens `dg` with a fresh receiver and returns the plaintext, or the error.
fn open_fresh(method: Method, key: &Key, dg: &[u8]) -> Result<Vec<u8>, OpenError> {
    let mut buf = dg.to_vec();
    let n = receiver(method, key).open(&mut buf)?;
    Ok(buf[..n].to_vec())
}

/// Every check that one recorded datagram must pass; `rx` is the receiver of its direction.
fn check_datagram(where_: &str, method: Method, key: &Key, rx: &mut Framer, rec: &Value) {
    let dg = hexfield(rec, "datagram_hex");
    let plain = hexfield(rec, "plaintext_hex");
    let nonce = hexfield(rec, "nonce_hex");
    let n = method.nonce_len();
    assert_eq!(&dg[dg.len() - n..], &nonce[..], "{where_}: nonce trailer");
    assert_eq!(
        dg.len(),
        plain.len() + method.overhead(),
        "{where_}: length"
    );

    // Opens, with its padding still in place.
    let mut buf = dg.clone();
    let got = rx
        .open(&mut buf)
        .unwrap_or_else(|e| panic!("{where_}: does not open: {e}"));
    assert_eq!(&buf[..got], &plain[..], "{where_}: plaintext");
    let pad = rec["padding_len"].as_u64().unwrap() as usize;
    assert!(
        plain[plain.len() - pad..]
            .iter()
            .all(|&b| b as usize == pad),
        "{where_}: pad"
    );

    // A second delivery is a replay.
    let mut again = dg.clone();
    assert_eq!(
        rx.open(&mut again),
        Err(OpenError::Replay),
        "{where_}: second delivery"
    );

    // Re-sealing the plaintext with the recorded nonce gives the same bytes.
    let sealer = Framer::with_replay_filter(
        method,
        Some(key.clone()),
        ReplayFilter::with_seed(1, 0.5, &FILTER_SEED),
    )
    .expect("framer");
    let mut out = vec![0u8; dg.len()];
    out[..plain.len()].copy_from_slice(&plain);
    let len = sealer.seal_with_nonce(&mut out, plain.len(), &nonce);
    assert_eq!(out[..len], dg[..], "{where_}: re-seal differs");

    // Every single corrupted byte is caught (fresh receivers: no replay state involved).
    let mut probe = receiver(method, key);
    for i in 0..dg.len() {
        let mut bad = dg.clone();
        bad[i] ^= 0x01;
        assert_eq!(
            probe.open(&mut bad),
            Err(OpenError::Auth),
            "{where_}: flipped byte {i}"
        );
    }
}

/// Counts of what one method file exercised, for the summary line.
#[derive(Default, Debug)]
struct Counts {
    datagrams: usize,
    injected: usize,
    negative: usize,
}

fn check_method_file(file: &str) -> Option<Counts> {
    let doc = load(file)?;
    let method = Method::from_name(doc["method"].as_str().unwrap()).expect("method name");
    if !method.available() {
        eprintln!("skipping {file}: this CPU has no hardware AES-GCM (AES-NI + PCLMUL)");
        return None;
    }
    assert_eq!(
        doc["nonce_len"].as_u64().unwrap() as usize,
        method.nonce_len()
    );
    let key = key32(&hexfield(&doc, "key_hex"));
    match doc["key_mode"].as_str().unwrap() {
        "psk" => assert_eq!(key_from_psk(doc["psk"].as_str().unwrap()), Ok(key.clone())),
        _ => assert_eq!(
            key_from_password(doc["password"].as_str().unwrap()),
            Ok(key.clone())
        ),
    }
    let mut counts = Counts::default();

    for sc in doc["scenarios"].as_array().unwrap() {
        let name = sc["name"].as_str().unwrap();
        // One receiver per direction: each end keeps its own replay filter.
        let mut c2s = receiver(method, &key);
        let mut s2c = receiver(method, &key);
        for rec in sc["datagrams"].as_array().unwrap() {
            let where_ = format!("{file}/{name}/#{}", rec["index"]);
            let rx = match rec["direction"].as_str().unwrap() {
                "c2s" => &mut c2s,
                _ => &mut s2c,
            };
            check_datagram(&where_, method, &key, rx, rec);
            counts.datagrams += 1;
        }
    }

    let injected = doc["positive_injected"].as_array().unwrap();
    for p in injected {
        let where_ = format!("{file}/positive_injected/{}", p["name"]);
        check_datagram(&where_, method, &key, &mut receiver(method, &key), p);
        counts.injected += 1;
    }

    for v in doc["negative_vectors"].as_array().unwrap() {
        let where_ = format!("{file}/negative/{}", v["name"].as_str().unwrap());
        let dg = hexfield(v, "datagram_hex");
        match v["reject_reason"].as_str().unwrap() {
            "auth" => assert_eq!(
                open_fresh(method, &key, &dg),
                Err(OpenError::Auth),
                "{where_}"
            ),
            "length" => {
                assert_eq!(
                    open_fresh(method, &key, &dg),
                    Err(OpenError::Length),
                    "{where_}"
                )
            }
            "replay" => {
                let ro = &v["replay_of"];
                let orig = if let Some(name) = ro["positive_injected"].as_str() {
                    injected
                        .iter()
                        .find(|p| p["name"] == name)
                        .expect("replay_of")
                } else {
                    let sc = doc["scenarios"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|s| s["name"] == ro["scenario"])
                        .expect("replay_of scenario");
                    &sc["datagrams"][ro["index"].as_u64().unwrap() as usize]
                };
                let mut rx = receiver(method, &key);
                let mut first = hexfield(orig, "datagram_hex");
                assert!(rx.open(&mut first).is_ok(), "{where_}: original must open");
                let mut replay = dg.clone();
                assert_eq!(rx.open(&mut replay), Err(OpenError::Replay), "{where_}");
            }
            other => panic!("{where_}: unknown reject_reason {other}"),
        }
        counts.negative += 1;
    }
    eprintln!("{file}: {counts:?}");
    Some(counts)
}

#[test]
fn xchacha20poly1305_ietf_psk() {
    check_method_file("xchacha20poly1305_ietf-psk.json");
}

#[test]
fn xchacha20poly1305_ietf_password() {
    check_method_file("xchacha20poly1305_ietf-password.json");
}

#[test]
fn chacha20poly1305_ietf_psk() {
    check_method_file("chacha20poly1305_ietf-psk.json");
}

#[test]
fn xsalsa20poly1305_psk() {
    check_method_file("xsalsa20poly1305-psk.json");
}

#[test]
fn aes256gcm_psk() {
    check_method_file("aes256gcm-psk.json");
}

/// A kdf.json witness: the first PING a reference client sent with that key material.
fn check_witness(where_: &str, key: &Key, w: &Value) {
    let method = Method::from_name(w["method"].as_str().unwrap()).unwrap();
    if !method.available() {
        eprintln!("skipping {where_}: this CPU has no hardware AES-GCM");
        return;
    }
    let plain = open_fresh(method, key, &hexfield(w, "datagram_hex"))
        .unwrap_or_else(|e| panic!("{where_}: witness does not open: {e}"));
    assert_eq!(plain, hexfield(w, "plaintext_hex"), "{where_}");
}

#[test]
fn kdf_passwords_derive_exactly() {
    let Some(doc) = load("kdf.json") else { return };
    let passwords = doc["passwords"].as_array().unwrap();
    assert!(!passwords.is_empty());
    for e in passwords {
        let pw = e["password"].as_str().unwrap();
        assert_eq!(pw.as_bytes(), &hexfield(e, "password_utf8_hex")[..]);
        let want = key32(&hexfield(e, "key_hex"));
        let key = key_from_password(pw).unwrap_or_else(|err| panic!("{pw:?}: {err}"));
        assert_eq!(key, want, "password {pw:?}");
        for w in e["witnesses"].as_array().unwrap() {
            check_witness(&format!("password {pw:?}"), &key, w);
        }
    }
}

#[test]
fn kdf_psks_decode_exactly() {
    let Some(doc) = load("kdf.json") else { return };
    for e in doc["psks"].as_array().unwrap() {
        let psk = e["psk"].as_str().unwrap();
        let key = key_from_psk(psk).unwrap_or_else(|err| panic!("{psk}: {err}"));
        assert_eq!(key, key32(&hexfield(e, "key_hex")), "psk {psk}");
        for w in e["witnesses"].as_array().unwrap() {
            check_witness(&format!("psk {psk}"), &key, w);
        }
    }
}

#[test]
fn kdf_invalid_inputs_are_refused() {
    let Some(doc) = load("kdf.json") else { return };
    let invalid = doc["invalid_psks"].as_array().unwrap();
    assert_eq!(invalid.len(), 11);
    for e in invalid {
        let psk = e["psk"].as_str().unwrap();
        assert_eq!(
            key_from_psk(psk),
            Err(KeyError::InvalidPsk),
            "{psk:?}: {}",
            e["note"]
        );
    }
    for e in doc["invalid_passwords"].as_array().unwrap() {
        let pw = e["password"].as_str().unwrap();
        assert_eq!(key_from_password(pw), Err(KeyError::PasswordNul), "{pw:?}");
    }
}

/// Informational: kcptun-libev's constant key (0xdb..) when no key is configured. We refuse
/// that configuration (Framer::new without a key), but the bytes still open with that key.
#[test]
fn kdf_quirk_constant_key_witness_opens() {
    let Some(doc) = load("kdf.json") else { return };
    for q in doc["quirks"].as_array().unwrap() {
        let key = key32(&hexfield(q, "effective_key_hex"));
        for w in q["witnesses"].as_array().unwrap() {
            check_witness("quirk", &key, w);
        }
    }
}
