//! Datagram framing and replay protection, as a model: the input is a program of seal/open
//! operations under one key. Datagrams sealed here open to exactly their plaintext once and
//! are replays after that, for as long as the filter must remember them (the last `capacity`
//! accepted nonces); a sealed datagram with any change (a flipped bit, a cut, an extra byte)
//! or arbitrary bytes from the input never open. The method is chosen by the first byte.
#![no_main]

use std::collections::VecDeque;

use kcptun::framing::{self, Framer, Key, Method, OpenError, ReplayFilter, TAG_LEN};
use kcptun_rs_fuzz::Input;
use libfuzzer_sys::fuzz_target;

/// Small enough that the programs reach the filter's rotation.
const CAPACITY: usize = 64;

fuzz_target!(|data: &[u8]| {
    framing::init().unwrap();
    let mut inp = Input::new(data);
    let method = match inp.u8() % 5 {
        0 => Method::None,
        1 => Method::XChaCha20Poly1305Ietf,
        2 => Method::ChaCha20Poly1305Ietf,
        3 => Method::XSalsa20Poly1305,
        _ => Method::Aes256Gcm,
    };
    if !method.available() {
        return;
    }
    let key = (method != Method::None).then(|| Key::from_bytes([7; 32]));
    let seed: [u8; 32] = std::array::from_fn(|i| i as u8);
    let filter = ReplayFilter::with_seed(CAPACITY, 1e-9, &seed);
    let mut f = Framer::with_replay_filter(method, key, filter).unwrap();
    let nlen = method.nonce_len();
    // (datagram, plaintext) sealed so far, and the nonces accepted, newest last.
    let mut sealed: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut accepted: VecDeque<Vec<u8>> = VecDeque::new();
    let mut buf = vec![0u8; 2048];
    let mut ops = 0;
    while !inp.is_empty() && ops < 200 {
        ops += 1;
        match inp.u8() % 4 {
            0 => {
                // Seal a plaintext with a nonce from the input.
                let plain = inp.chunk(1400).to_vec();
                let mut nonce = inp.bytes(nlen).to_vec();
                nonce.resize(nlen, 0);
                buf[..plain.len()].copy_from_slice(&plain);
                let n = f.seal_with_nonce(&mut buf, plain.len(), &nonce);
                assert_eq!(n, plain.len() + f.overhead());
                sealed.push((buf[..n].to_vec(), plain));
            }
            1 if !sealed.is_empty() => {
                // Open a sealed datagram as it is.
                let (d, plain) = &sealed[inp.u8() as usize % sealed.len()];
                let mut b = d.clone();
                let r = f.open(&mut b);
                if method == Method::None {
                    if plain.is_empty() {
                        assert_eq!(r, Err(OpenError::Length));
                    } else {
                        assert_eq!(r, Ok(plain.len()));
                        assert_eq!(&b[..plain.len()], &plain[..]);
                    }
                    continue;
                }
                let nonce = d[d.len() - nlen..].to_vec();
                if plain.is_empty() {
                    assert_eq!(r, Err(OpenError::Length));
                } else if accepted.contains(&nonce) {
                    assert_eq!(r, Err(OpenError::Replay), "replay of a remembered nonce");
                } else if r != Err(OpenError::Replay) {
                    // A nonce older than the window may still be remembered (or be a rare
                    // false positive); otherwise it must open to exactly the plaintext.
                    assert_eq!(r, Ok(plain.len()));
                    assert_eq!(&b[..plain.len()], &plain[..]);
                    accepted.push_back(nonce);
                    if accepted.len() > CAPACITY {
                        accepted.pop_front();
                    }
                }
            }
            2 if !sealed.is_empty() && method != Method::None => {
                // A changed copy never opens.
                let (d, _) = &sealed[inp.u8() as usize % sealed.len()];
                let mut b = d.clone();
                let at = inp.u16() as usize;
                match inp.u8() % 3 {
                    0 => {
                        let i = at % b.len();
                        b[i] ^= 1 << (inp.u8() % 8);
                    }
                    1 => b.truncate(at % b.len()),
                    _ => b.insert(at % (b.len() + 1), inp.u8()),
                }
                let r = f.open(&mut b);
                assert!(r.is_err(), "a changed datagram opened");
                if b.len() <= TAG_LEN + nlen {
                    assert_eq!(r, Err(OpenError::Length));
                }
            }
            _ => {
                // Arbitrary bytes.
                let mut b = inp.chunk(1500).to_vec();
                let r = f.open(&mut b);
                if method != Method::None {
                    assert!(r.is_err(), "arbitrary bytes opened");
                }
            }
        }
    }
});
