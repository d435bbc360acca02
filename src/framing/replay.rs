//! The replay filter: two bloom filters that take turns (WIRE.md §1, "Replay rejection"), as
//! kcptun-libev keeps them. A nonce is a replay if either filter holds it; otherwise it goes
//! into the current one; after `capacity` insertions the other filter is cleared and becomes
//! current. So the last `capacity`..`2*capacity` accepted nonces are remembered, and memory is
//! fixed. The hashing (SipHash-1-3 in the `bloomfilter` crate) is keyed with a random 32-byte
//! seed, so a peer cannot choose nonces that collide in our bitmaps.
//!
//! Memory (bitmap bytes from `bloomfilter`'s sizing, `n * ln(p) / (-8 * ln(2)^2)`, plus a
//! 45-byte header per filter; measured by `replay::tests::default_sizes`):
//!
//! | default | capacity @ fp rate | k | one filter | both filters |
//! |---|---|---|---|---|
//! | [`server_default`](ReplayFilter::server_default) | 2^20 @ 2^-20 | 20 | 3,781,939 B | 7.2 MiB |
//! | [`client_default`](ReplayFilter::client_default) | 2^14 @ 2^-30 | 30 | 88,640 B | 173.1 KiB |
//!
//! Measured false-positive rate of one full filter (10^8 fresh random nonces probed after
//! `capacity` insertions, same crate, release build): server sizing 9.9e-7 (nominal 9.5e-7);
//! client sizing 1.4e-7, well above its nominal 9.3e-10. The crate derives its 30 probes by
//! double hashing reduced modulo the 709,120-bit map, which puts a floor near 1e-7 under small
//! maps; the server's 30M-bit map stays under it. A false positive drops one honest datagram,
//! which KCP retransmits, so the client figure costs nothing visible.

use bloomfilter::Bloom;
use std::fmt;

/// A nonce log with a bounded false-positive rate and bounded memory. Only nonces of datagrams
/// that authenticated may be inserted (the framer checks after opening), so forged traffic
/// cannot fill it.
pub struct ReplayFilter {
    filters: [Bloom<[u8]>; 2],
    /// Index of the filter that receives insertions.
    current: usize,
    /// Insertions into `filters[current]` since it became current.
    inserted: usize,
    capacity: usize,
    fp_rate: f64,
}

impl ReplayFilter {
    /// kcptun-libev's server setting: 2^20 nonces at a false-positive rate of 2^-20.
    pub const SERVER: (usize, f64) = (1 << 20, 1.0 / (1u64 << 20) as f64);
    /// kcptun-libev's client setting: 2^14 nonces at a false-positive rate of 2^-30.
    pub const CLIENT: (usize, f64) = (1 << 14, 1.0 / (1u64 << 30) as f64);

    /// Two filters of `capacity` nonces each at `fp_rate`, keyed with a fresh random seed.
    ///
    /// # Panics
    /// If `capacity` is 0, `fp_rate` is not in (0, 1), or libsodium cannot initialise.
    pub fn new(capacity: usize, fp_rate: f64) -> ReplayFilter {
        assert!(super::sodium::init(), "libsodium failed to initialise");
        let mut seed = [0u8; 32];
        super::sodium::random_bytes(&mut seed);
        let f = ReplayFilter::with_seed(capacity, fp_rate, &seed);
        super::sodium::memzero(&mut seed);
        f
    }

    /// As [`new`](Self::new) with a given seed: deterministic, for tests. The two 16-byte
    /// halves must differ (they key the two SipHash functions of the double hashing).
    ///
    /// # Panics
    /// If `capacity` is 0 or `fp_rate` is not in (0, 1).
    pub fn with_seed(capacity: usize, fp_rate: f64, seed: &[u8; 32]) -> ReplayFilter {
        assert!(capacity > 0, "replay filter capacity must be positive");
        assert!(
            fp_rate > 0.0 && fp_rate < 1.0,
            "replay filter fp rate must be in (0, 1)"
        );
        let make = || {
            Bloom::new_for_fp_rate_with_seed(capacity, fp_rate, seed)
                .expect("bloom filter parameters were checked")
        };
        ReplayFilter {
            filters: [make(), make()],
            current: 0,
            inserted: 0,
            capacity,
            fp_rate,
        }
    }

    /// [`SERVER`](Self::SERVER) sizing: about 7.2 MiB in all.
    pub fn server_default() -> ReplayFilter {
        ReplayFilter::new(Self::SERVER.0, Self::SERVER.1)
    }

    /// [`CLIENT`](Self::CLIENT) sizing: about 173 KiB in all.
    pub fn client_default() -> ReplayFilter {
        ReplayFilter::new(Self::CLIENT.0, Self::CLIENT.1)
    }

    /// Whether `nonce` was seen (or is a false positive), without recording it.
    pub fn contains(&self, nonce: &[u8]) -> bool {
        self.filters[0].check(nonce) || self.filters[1].check(nonce)
    }

    /// Returns true if `nonce` is a replay; otherwise records it and returns false.
    pub fn check_and_insert(&mut self, nonce: &[u8]) -> bool {
        let cur = self.current;
        if self.filters[1 - cur].check(nonce) {
            return true;
        }
        // check_and_set sets only bits that were clear, so a "found" answer changed nothing.
        if self.filters[cur].check_and_set(nonce) {
            return true;
        }
        self.inserted += 1;
        if self.inserted >= self.capacity {
            self.filters[1 - cur].clear();
            self.current = 1 - cur;
            self.inserted = 0;
        }
        false
    }

    /// Nonces each filter holds before the turn passes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of bitmap in both filters together (what the filter costs in memory, less a
    /// 45-byte header per filter and the struct itself).
    pub fn bitmap_bytes(&self) -> usize {
        self.filters.iter().map(|f| (f.len() / 8) as usize).sum()
    }

    /// Hash functions per lookup in one filter.
    pub fn hash_functions(&self) -> u32 {
        self.filters[0].number_of_hash_functions()
    }
}

/// Shows the sizing, never the seed (the `bloomfilter` crate's own Debug prints it).
impl fmt::Debug for ReplayFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayFilter")
            .field("capacity", &self.capacity)
            .field("fp_rate", &self.fp_rate)
            .field("bitmap_bytes", &self.bitmap_bytes())
            .field("current", &self.current)
            .field("inserted", &self.inserted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed seed whose two SipHash keys differ: with equal halves the crate's double hashing
    /// degenerates (measured: 0.3 % false positives at a nominal 1e-9).
    fn seed(x: u8) -> [u8; 32] {
        std::array::from_fn(|i| (i as u8).wrapping_mul(73).wrapping_add(x))
    }

    fn nonce(i: u64) -> [u8; 24] {
        let mut n = [0u8; 24];
        n[..8].copy_from_slice(&i.to_le_bytes());
        n[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        n
    }

    #[test]
    fn default_sizes() {
        let s = ReplayFilter::server_default();
        let c = ReplayFilter::client_default();
        eprintln!("server {s:?} k={}", s.hash_functions());
        eprintln!("client {c:?} k={}", c.hash_functions());
        assert_eq!(s.bitmap_bytes(), 2 * 3_781_939);
        assert_eq!(c.bitmap_bytes(), 2 * 88_640);
        assert_eq!(s.hash_functions(), 20);
        assert_eq!(c.hash_functions(), 30);
        assert!(!format!("{s:?}").contains("seed"));
    }

    #[test]
    fn second_insert_is_a_replay() {
        let mut f = ReplayFilter::with_seed(16, 1e-6, &seed(7));
        assert!(!f.check_and_insert(&nonce(1)));
        assert!(f.check_and_insert(&nonce(1)));
        assert!(f.contains(&nonce(1)));
        assert!(!f.contains(&nonce(2)));
    }

    #[test]
    fn rotation_remembers_between_capacity_and_twice_capacity() {
        let cap = 64;
        let mut f = ReplayFilter::with_seed(cap, 1e-9, &seed(3));
        // Fill the first filter exactly: the turn passes, nothing is forgotten yet.
        for i in 0..cap as u64 {
            assert!(!f.check_and_insert(&nonce(i)), "false positive at {i}");
        }
        assert_eq!((f.current, f.inserted), (1, 0));
        for i in 0..cap as u64 {
            assert!(f.contains(&nonce(i)));
        }
        // Fill the second: at the next turn the first (oldest nonces) is cleared.
        for i in cap as u64..2 * cap as u64 {
            assert!(!f.check_and_insert(&nonce(i)));
        }
        assert_eq!((f.current, f.inserted), (0, 0));
        for i in 0..cap as u64 {
            assert!(
                !f.contains(&nonce(i)),
                "nonce {i} should have been forgotten"
            );
        }
        for i in cap as u64..2 * cap as u64 {
            assert!(f.contains(&nonce(i)), "nonce {i} forgotten too early");
        }
    }

    #[test]
    fn no_false_negatives_over_three_capacities() {
        let cap = 1000;
        let mut f = ReplayFilter::with_seed(cap, 1e-9, &seed(9));
        for i in 0..3 * cap as u64 {
            assert!(!f.check_and_insert(&nonce(i)), "false positive at {i}");
            // Every nonce still inside the window must be caught as a replay.
            let window_start = i.saturating_sub(cap as u64 - 1);
            for j in [window_start, (window_start + i) / 2, i] {
                assert!(f.check_and_insert(&nonce(j)), "replay of {j} missed at {i}");
            }
        }
    }
}
