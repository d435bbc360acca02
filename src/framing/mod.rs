//! Framing: turns one packet `P` (KCP packet or session-0 message) into one UDP datagram and
//! back, byte-exact with kcptun-libev v2 (WIRE.md §1 and §2).
//!
//! ```text
//! datagram = AEAD(P || pad) || tag (16) || nonce (N)      AD = "kcptun-libev\0"
//! ```
//!
//! Owns the methods ([`Method`]), sealing and opening in place in buffers the caller owns (no
//! allocation per datagram), padding, nonces (random for 24-byte nonces, a little-endian counter
//! from a random start for 12-byte ones), the replay filter ([`ReplayFilter`]) and keys
//! ([`Key`], [`key_from_psk`], [`key_from_password`], [`genpsk`]). libsodium is reached only
//! through `sodium.rs`.

mod keys;
mod replay;
mod sodium;

/// Fills `buf` from libsodium's internal CSPRNG (ChaCha20, seeded once from the OS; each call
/// costs one `getpid()` for fork detection, so batch per-packet needs, as [`Framer`] does).
///
/// # Panics
/// If libsodium cannot initialise (no entropy source at all).
pub fn random_bytes(buf: &mut [u8]) {
    assert!(sodium::init(), "libsodium failed to initialise");
    sodium::random_bytes(buf);
}

pub use keys::{genpsk, key_from_password, key_from_psk, Key, KeyError, KEY_LEN};
pub use replay::ReplayFilter;

use sodium::Aead;
use std::fmt;

/// Associated data of every AEAD method: "kcptun-libev" and a NUL byte.
pub const AD: &[u8; 13] = b"kcptun-libev\0";
/// Tag length of every encrypted method.
pub const TAG_LEN: usize = sodium::TAG_LEN;
/// Largest padding a sender adds (each pad byte equals the pad length).
pub const MAX_PAD: usize = 15;

/// Initialises libsodium once per process, installing its internal ChaCha20 CSPRNG first so that
/// random nonces cost no system call each. Idempotent and thread-safe; everything in this module
/// calls it, so calling it explicitly only moves the (rare) failure to a place of your choosing.
pub fn init() -> Result<(), InitError> {
    if sodium::init() {
        Ok(())
    } else {
        Err(InitError)
    }
}

/// libsodium could not initialise (no usable entropy source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitError;

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("libsodium failed to initialise")
    }
}
impl std::error::Error for InitError {}

/// The `method` config values. `None` means no `method` key: plaintext datagrams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Method {
    None,
    #[default]
    XChaCha20Poly1305Ietf,
    ChaCha20Poly1305Ietf,
    XSalsa20Poly1305,
    Aes256Gcm,
}

/// A `method` string that names no method, or one this CPU cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodError {
    Unknown,
    /// aes256gcm without hardware AES-GCM support.
    Unavailable,
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MethodError::Unknown => {
                "unknown method (expected one of xchacha20poly1305_ietf, \
                                     chacha20poly1305_ietf, xsalsa20poly1305, aes256gcm)"
            }
            MethodError::Unavailable => {
                "aes256gcm needs hardware AES-GCM support (AES-NI and PCLMUL), which this CPU lacks"
            }
        })
    }
}
impl std::error::Error for MethodError {}

impl Method {
    /// The encrypted methods, in `--list-methods` order (the default first).
    pub const ALL: [Method; 4] = [
        Method::XChaCha20Poly1305Ietf,
        Method::ChaCha20Poly1305Ietf,
        Method::XSalsa20Poly1305,
        Method::Aes256Gcm,
    ];

    /// Parses a config `method` value. Availability is checked by [`Framer::new`], not here,
    /// so a config naming aes256gcm can still be parsed and reported on any machine.
    pub fn from_name(name: &str) -> Result<Method, MethodError> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == name)
            .ok_or(MethodError::Unknown)
    }

    /// The config spelling; "none" for [`Method::None`].
    pub fn name(self) -> &'static str {
        match self {
            Method::None => "none",
            Method::XChaCha20Poly1305Ietf => "xchacha20poly1305_ietf",
            Method::ChaCha20Poly1305Ietf => "chacha20poly1305_ietf",
            Method::XSalsa20Poly1305 => "xsalsa20poly1305",
            Method::Aes256Gcm => "aes256gcm",
        }
    }

    fn aead(self) -> Option<Aead> {
        match self {
            Method::None => None,
            Method::XChaCha20Poly1305Ietf => Some(Aead::XChaCha20Poly1305Ietf),
            Method::ChaCha20Poly1305Ietf => Some(Aead::ChaCha20Poly1305Ietf),
            Method::XSalsa20Poly1305 => Some(Aead::XSalsa20Poly1305),
            Method::Aes256Gcm => Some(Aead::Aes256Gcm),
        }
    }

    /// Nonce bytes at the end of each datagram: 24, 12, or 0 for `None`.
    pub fn nonce_len(self) -> usize {
        self.aead().map_or(0, Aead::nonce_len)
    }

    /// Bytes a datagram carries besides `P || pad`: tag + nonce (40 or 28), 0 for `None`.
    pub fn overhead(self) -> usize {
        self.aead().map_or(0, |a| TAG_LEN + a.nonce_len())
    }

    /// Whether this machine can run the method (false only for aes256gcm without hardware
    /// support, or if libsodium cannot initialise).
    pub fn available(self) -> bool {
        match self {
            Method::Aes256Gcm => sodium::aes256gcm_available(),
            _ => sodium::init(),
        }
    }

    /// Counter nonces (12 bytes) must never repeat under one key; 24-byte ones are random.
    fn counter_nonce(self) -> bool {
        self.nonce_len() == 12
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a [`Framer`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramerError {
    /// An encrypted method without a key (kcptun-libev would silently use a constant key).
    MissingKey,
    /// A key for `Method::None`: the configuration is contradictory.
    UnexpectedKey,
    /// aes256gcm without hardware support.
    Unavailable,
    Init,
}

impl fmt::Display for FramerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FramerError::MissingKey => "method is set but neither psk nor password is given",
            FramerError::UnexpectedKey => "psk or password is given but no method is set",
            FramerError::Unavailable => {
                "aes256gcm needs hardware AES-GCM support (AES-NI and PCLMUL), which this CPU lacks"
            }
            FramerError::Init => "libsodium failed to initialise",
        })
    }
}
impl std::error::Error for FramerError {}

/// Why a received datagram was dropped. Remote input: count it, never log it above debug.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenError {
    /// Not longer than tag + nonce (an encrypted datagram holds at least one byte), or empty.
    Length,
    /// The tag does not verify: wrong key, corrupted, or forged.
    Auth,
    /// Authentic, but its nonce was accepted before.
    Replay,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OpenError::Length => "datagram too short",
            OpenError::Auth => "datagram failed authentication",
            OpenError::Replay => "datagram is a replay",
        })
    }
}
impl std::error::Error for OpenError {}

/// Random bytes drawn from libsodium in batches. libsodium's internal CSPRNG calls `getpid()`
/// (a real system call) on every `randombytes_buf`, so asking it for 24 bytes per datagram
/// would cost a syscall per datagram; one refill of this pool serves 42 random nonces. The
/// bytes are not secret (nonces and pad lengths go on the wire), so leftovers need no wiping.
struct RandomPool {
    buf: [u8; 1008],
    pos: usize,
}

impl RandomPool {
    fn new() -> RandomPool {
        RandomPool {
            buf: [0; 1008],
            pos: 1008,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        debug_assert!(n <= self.buf.len());
        if self.buf.len() - self.pos < n {
            sodium::random_bytes(&mut self.buf);
            self.pos = 0;
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        out
    }
}

/// Little-endian increment with carry, byte 0 fastest: what `sodium_increment` does.
fn increment_le(n: &mut [u8]) {
    for b in n {
        *b = b.wrapping_add(1);
        if *b != 0 {
            return;
        }
    }
}

/// A 12-byte little-endian counter nonce as a number (the increment is little-endian).
fn le96(b: &[u8]) -> u128 {
    let mut v = [0u8; 16];
    v[..12].copy_from_slice(&b[..12]);
    u128::from_le_bytes(v)
}

/// Seals and opens datagrams under one key. One per process (one key, one nonce counter, one
/// replay filter); not `Clone`, so a counter nonce cannot be duplicated by copying the framer.
pub struct Framer {
    method: Method,
    aead: Option<Aead>,
    key: Option<Key>,
    /// Next counter nonce (12-byte methods); unused otherwise.
    counter: [u8; 12],
    /// The first counter nonce we sealed, and how many we have sealed since: the range of
    /// our own 12-byte nonces.
    counter_start: u128,
    sealed: u128,
    /// The first 8 bytes of every 24-byte nonce we seal (random per process); the other 16
    /// are random per datagram.
    salt: [u8; 8],
    pool: RandomPool,
    replay: Option<ReplayFilter>,
}

impl fmt::Debug for Framer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framer")
            .field("method", &self.method)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

impl Framer {
    /// A framer with the server-sized replay filter ([`ReplayFilter::server_default`], about
    /// 7.2 MiB). Clients should prefer [`with_replay_filter`](Self::with_replay_filter) with
    /// [`ReplayFilter::client_default`] (about 173 KiB), as kcptun-libev does.
    pub fn new(method: Method, key: Option<Key>) -> Result<Framer, FramerError> {
        let replay = (method != Method::None).then(ReplayFilter::server_default);
        Framer::build(method, key, replay)
    }

    /// A framer with a replay filter of the caller's choosing (ignored for `Method::None`).
    pub fn with_replay_filter(
        method: Method,
        key: Option<Key>,
        replay: ReplayFilter,
    ) -> Result<Framer, FramerError> {
        Framer::build(method, key, (method != Method::None).then_some(replay))
    }

    fn build(
        method: Method,
        key: Option<Key>,
        replay: Option<ReplayFilter>,
    ) -> Result<Framer, FramerError> {
        if !sodium::init() {
            return Err(FramerError::Init);
        }
        match (method, &key) {
            (Method::None, Some(_)) => return Err(FramerError::UnexpectedKey),
            (Method::None, None) => {}
            (_, None) => return Err(FramerError::MissingKey),
            (Method::Aes256Gcm, Some(_)) if !sodium::aes256gcm_available() => {
                return Err(FramerError::Unavailable)
            }
            _ => {}
        }
        let mut pool = RandomPool::new();
        let mut counter = [0u8; 12];
        // A random start, so that a restarted process does not walk the nonces of the last one
        // under the same key.
        counter.copy_from_slice(pool.take(12));
        let mut salt = [0u8; 8];
        salt.copy_from_slice(pool.take(8));
        Ok(Framer {
            method,
            aead: method.aead(),
            key,
            counter_start: le96(&counter),
            sealed: 0,
            counter,
            salt,
            pool,
            replay,
        })
    }

    pub fn method(&self) -> Method {
        self.method
    }

    /// Tag + nonce bytes per datagram (0 for `Method::None`).
    pub fn overhead(&self) -> usize {
        self.method.overhead()
    }

    /// Seals `buf[..plain_len]` (one packet `P`) in place into a datagram and returns its
    /// length. Adds 0..=15 bytes of padding, each equal to the pad length, chosen at random but
    /// only while `plain_len < max_plain` and never beyond `max_plain` (as kcptun-libev does:
    /// full-size packets go out unpadded). Picks a fresh nonce: random for 24-byte nonces, the
    /// next counter value for 12-byte ones. `Method::None` returns `plain_len` untouched.
    ///
    /// # Panics
    /// If `buf` is shorter than `plain_len + pad + overhead` (give it `max_plain + overhead`).
    pub fn seal(&mut self, buf: &mut [u8], plain_len: usize, max_plain: usize) -> usize {
        let Some(aead) = self.aead else {
            return plain_len;
        };
        let n = aead.nonce_len();
        let mut pad = 0;
        if plain_len < max_plain {
            let r = self.pool.take(1)[0] as usize & MAX_PAD;
            pad = r.min(max_plain - plain_len);
        }
        assert!(
            buf.len() >= plain_len + pad + TAG_LEN + n,
            "seal: buffer too small"
        );
        buf[plain_len..plain_len + pad].fill(pad as u8);
        let mut nonce = [0u8; 24];
        if self.method.counter_nonce() {
            nonce[..12].copy_from_slice(&self.counter);
            increment_le(&mut self.counter);
            self.sealed += 1;
        } else {
            // Receivers never interpret the nonce: 8 bytes that mark it as ours (see
            // `is_own_nonce`) and 16 random ones, unique per datagram.
            nonce[..8].copy_from_slice(&self.salt);
            nonce[8..].copy_from_slice(self.pool.take(16));
        }
        self.seal_with_nonce(buf, plain_len + pad, &nonce[..n])
    }

    /// Seals `buf[..plain_len]` as it is (no padding added) with the given nonce and returns the
    /// datagram length. For tests and vectors: reusing a nonce under one key is catastrophic.
    ///
    /// # Panics
    /// If `nonce` has the wrong length for the method or `buf` is too short.
    pub fn seal_with_nonce(&self, buf: &mut [u8], plain_len: usize, nonce: &[u8]) -> usize {
        let (Some(aead), Some(key)) = (self.aead, &self.key) else {
            return plain_len;
        };
        let n = aead.nonce_len();
        assert_eq!(nonce.len(), n, "seal: nonce length");
        let total = plain_len + TAG_LEN + n;
        assert!(buf.len() >= total, "seal: buffer too small");
        let (msg, rest) = buf[..total].split_at_mut(plain_len);
        let (tag, trailer) = rest.split_at_mut(TAG_LEN);
        let tag: &mut [u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        sodium::seal_detached(aead, key.as_bytes(), msg, tag, AD, nonce);
        trailer.copy_from_slice(nonce);
        total
    }

    /// Opens the datagram `buf` (exactly the received bytes) in place. On success the plaintext,
    /// padding included, is `buf[..n]`; receivers never strip padding (KCP and session-0 parsers
    /// ignore trailing bytes). The nonce enters the replay filter only after the datagram
    /// authenticated. On error the contents of `buf` are unspecified.
    pub fn open(&mut self, buf: &mut [u8]) -> Result<usize, OpenError> {
        let (Some(aead), Some(key)) = (self.aead, &self.key) else {
            return if buf.is_empty() {
                Err(OpenError::Length)
            } else {
                Ok(buf.len())
            };
        };
        let n = aead.nonce_len();
        if buf.len() <= TAG_LEN + n {
            return Err(OpenError::Length);
        }
        let plain_len = buf.len() - TAG_LEN - n;
        let (msg, rest) = buf.split_at_mut(plain_len);
        let (tag, nonce) = rest.split_at(TAG_LEN);
        let tag: &[u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        if !sodium::open_detached(aead, key.as_bytes(), msg, tag, AD, nonce) {
            return Err(OpenError::Auth);
        }
        // Both directions share the key and the wire has no direction bit, so one of our own
        // datagrams sent back to us would authenticate (and fake ACKs or data). It is a
        // replay of ours: dropped without touching the filter.
        if self.is_own_nonce(nonce) {
            return Err(OpenError::Replay);
        }
        if let Some(replay) = &mut self.replay {
            if replay.check_and_insert(nonce) {
                return Err(OpenError::Replay);
            }
        }
        Ok(plain_len)
    }

    /// Whether `nonce` is one this framer sealed (or will seal): its salt for 24-byte nonces,
    /// inside the range of its counter for 12-byte ones. A peer's random nonce matches by
    /// chance with probability 2^-64 (salt) or about sealed/2^96 (counter).
    fn is_own_nonce(&self, nonce: &[u8]) -> bool {
        if self.method.counter_nonce() {
            let v = le96(nonce);
            (v.wrapping_sub(self.counter_start) & ((1u128 << 96) - 1)) < self.sealed
        } else {
            nonce.len() >= 8 && nonce[..8] == self.salt
        }
    }

    /// The replay filter, for statistics (none for `Method::None`).
    pub fn replay_filter(&self) -> Option<&ReplayFilter> {
        self.replay.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' key (none for `Method::None`).
    fn test_key(method: Method) -> Option<Key> {
        (method != Method::None).then(|| Key::from_bytes([0x42; 32]))
    }

    fn framer(method: Method) -> Framer {
        Framer::with_replay_filter(
            method,
            test_key(method),
            ReplayFilter::with_seed(1024, 1e-9, b"kcptun-rs framing unit test key!"),
        )
        .unwrap()
    }

    fn methods() -> Vec<Method> {
        let mut v = vec![Method::None];
        v.extend(Method::ALL.into_iter().filter(|m| m.available()));
        v
    }

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()), Ok(m));
        }
        assert_eq!(Method::from_name("none"), Err(MethodError::Unknown));
        assert_eq!(Method::from_name("AES256GCM"), Err(MethodError::Unknown));
        assert_eq!(Method::default(), Method::XChaCha20Poly1305Ietf);
    }

    #[test]
    fn overheads() {
        assert_eq!(Method::XChaCha20Poly1305Ietf.overhead(), 40);
        assert_eq!(Method::XSalsa20Poly1305.overhead(), 40);
        assert_eq!(Method::ChaCha20Poly1305Ietf.overhead(), 28);
        assert_eq!(Method::Aes256Gcm.overhead(), 28);
        assert_eq!(Method::None.overhead(), 0);
    }

    #[test]
    fn increment_matches_sodium() {
        assert!(sodium::init());
        for start in [
            [0u8; 12],
            [0xff; 12],
            [0xff, 0xff, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
        ] {
            let (mut a, mut b) = (start, start);
            for _ in 0..300 {
                increment_le(&mut a);
                sodium::increment(&mut b);
                assert_eq!(a, b);
            }
        }
    }

    #[test]
    fn key_rules() {
        assert_eq!(
            Framer::new(Method::XChaCha20Poly1305Ietf, None).err(),
            Some(FramerError::MissingKey)
        );
        assert_eq!(
            Framer::new(Method::None, Some(Key::from_bytes([1; 32]))).err(),
            Some(FramerError::UnexpectedKey)
        );
        if !Method::Aes256Gcm.available() {
            assert_eq!(
                Framer::new(Method::Aes256Gcm, Some(Key::from_bytes([1; 32]))).err(),
                Some(FramerError::Unavailable)
            );
        }
    }

    /// A receiver without a replay filter, for tests that open thousands of datagrams: the
    /// test filter's false positives (about 1e-6 per datagram at its size, measured with the
    /// `bloomfilter` crate) failed such a test in about one run of 150.
    fn opener(method: Method) -> Framer {
        Framer::build(method, test_key(method), None).unwrap()
    }

    #[test]
    fn padding_is_self_describing_and_bounded() {
        for m in methods().into_iter().filter(|&m| m != Method::None) {
            let mut tx = framer(m);
            let mut rx = opener(m);
            let mut seen = [false; 16];
            for i in 0..2000 {
                let plain_len = 24 + i % 50;
                let max_plain = plain_len + i % 20; // sometimes no room at all
                let mut buf = vec![0xaa; max_plain + m.overhead()];
                let len = tx.seal(&mut buf, plain_len, max_plain);
                let pad = len - m.overhead() - plain_len;
                assert!(pad <= MAX_PAD && plain_len + pad <= max_plain);
                let n = rx.open(&mut buf[..len]).unwrap();
                assert_eq!(n, plain_len + pad);
                assert!(buf[plain_len..n].iter().all(|&b| b as usize == pad));
                seen[pad] = true;
            }
            assert!(
                seen.iter().all(|&s| s),
                "{m}: not every pad length occurred"
            );
        }
    }

    #[test]
    fn full_size_packets_are_not_padded() {
        let mut tx = framer(Method::XChaCha20Poly1305Ietf);
        let mut buf = [0u8; 1372];
        for _ in 0..100 {
            assert_eq!(tx.seal(&mut buf, 1332, 1332), 1372);
        }
    }

    #[test]
    fn none_is_plaintext() {
        let mut f = framer(Method::None);
        let mut buf = *b"hello world";
        assert_eq!(f.seal(&mut buf, 5, 11), 5);
        assert_eq!(&buf, b"hello world");
        assert_eq!(f.open(&mut buf), Ok(11));
        assert_eq!(
            f.open(&mut buf),
            Ok(11),
            "no replay filter without a method"
        );
        assert_eq!(f.open(&mut []), Err(OpenError::Length));
        assert!(f.replay_filter().is_none());
    }

    #[test]
    fn counter_nonces_step_by_one() {
        let mut tx = framer(Method::ChaCha20Poly1305Ietf);
        let mut prev: Option<[u8; 12]> = None;
        for _ in 0..100 {
            let mut buf = [0u8; 64];
            let len = tx.seal(&mut buf, 24, 24);
            let nonce: [u8; 12] = buf[len - 12..len].try_into().unwrap();
            if let Some(mut p) = prev {
                increment_le(&mut p);
                assert_eq!(p, nonce);
            }
            prev = Some(nonce);
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let f = framer(Method::XChaCha20Poly1305Ietf);
        let s = format!("{f:?}");
        assert!(!s.contains("key") && !s.contains("seed"), "{s}");
    }
}

#[cfg(test)]
mod reflection_tests {
    use super::*;

    /// One of our own datagrams sent back to us authenticates (one key both ways) but is
    /// refused; the peer, with the same key, opens it.
    #[test]
    fn own_datagrams_are_refused_as_reflections() {
        for method in [
            Method::XChaCha20Poly1305Ietf,
            Method::ChaCha20Poly1305Ietf,
            Method::XSalsa20Poly1305,
        ] {
            let key = Key::from_bytes([7; 32]);
            let mut us = Framer::new(method, Some(key.clone())).unwrap();
            let mut peer = Framer::new(method, Some(key)).unwrap();
            for i in 0..200u32 {
                let mut buf = [0u8; 256];
                buf[..4].copy_from_slice(&i.to_be_bytes());
                let n = us.seal(&mut buf, 4, 100);
                let mut echo = buf;
                assert_eq!(
                    us.open(&mut echo[..n]),
                    Err(OpenError::Replay),
                    "{method} {i}"
                );
                let m = peer.open(&mut buf[..n]).unwrap();
                assert_eq!(&buf[..4], &i.to_be_bytes(), "{method}");
                assert!(m >= 4);
                // And the peer's own datagrams reach us.
                let mut back = [0u8; 256];
                back[..4].copy_from_slice(&i.to_le_bytes());
                let n = peer.seal(&mut back, 4, 4);
                assert_eq!(us.open(&mut back[..n]), Ok(4), "{method} {i}");
            }
        }
    }
}
