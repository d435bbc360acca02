//! The only door to libsodium: every foreign call of the framing layer lives here, behind safe
//! functions that check lengths before they hand pointers to C.
//!
//! Initialisation installs libsodium's internal ChaCha20 CSPRNG
//! (`randombytes_internal_implementation`) before `sodium_init`. libsodium's default on Linux is
//! `randombytes_sysrandom`, which makes one `getrandom(2)` call per request; the internal one is
//! seeded once from the OS and then only runs ChaCha20 in user space. It still calls `getpid()`
//! on every `randombytes_buf` (fork detection), which is why the framer draws its nonces from a
//! pool of about one kilobyte (`super::RandomPool`): one refill, and so one `getpid`, per 42
//! datagrams. Measured with `strace -f -c -e trace=getrandom,getpid` over the framing bench
//! (several hundred thousand random-nonce seals): 3 `getrandom` calls in the whole run, and
//! 13,260 `getpid`, one per pool refill.
#![allow(unsafe_code)]

use libsodium_sys as ffi;
use std::sync::OnceLock;

/// AEAD tag and secretbox MAC length of every method.
pub(crate) const TAG_LEN: usize = 16;

/// Runs `sodium_init` once per process, with the internal CSPRNG installed first.
/// Returns false when libsodium could not initialise (no entropy source).
pub(crate) fn init() -> bool {
    static INIT: OnceLock<bool> = OnceLock::new();
    *INIT.get_or_init(|| {
        // SAFETY: `randombytes_internal_implementation` is a static table of function pointers
        // that libsodium only reads; we pass its address, never a reference. The call happens
        // once, inside OnceLock, before sodium_init, as libsodium's documentation requires.
        let set = unsafe {
            ffi::randombytes_set_implementation(&raw const ffi::randombytes_internal_implementation)
        };
        // SAFETY: sodium_init takes no arguments and is thread-safe; 1 means "already done".
        let r = unsafe { ffi::sodium_init() };
        set == 0 && r >= 0
    })
}

/// Whether libsodium has a hardware AES-GCM (x86 AES-NI + PCLMUL, or ARM crypto extensions).
pub(crate) fn aes256gcm_available() -> bool {
    // sodium_init fills in the CPU feature flags that this function reads.
    // SAFETY: no arguments; reads flags written by sodium_init (which `init` ran).
    init() && unsafe { ffi::crypto_aead_aes256gcm_is_available() } == 1
}

/// Fills `buf` from libsodium's CSPRNG. Call `init` first (every caller in this layer does).
pub(crate) fn random_bytes(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    unsafe { ffi::randombytes_buf(buf.as_mut_ptr().cast(), buf.len()) }
}

/// Overwrites `buf` with zeros in a way the optimiser may not remove.
pub(crate) fn memzero(buf: &mut [u8]) {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    unsafe { ffi::sodium_memzero(buf.as_mut_ptr().cast(), buf.len()) }
}

/// Constant-time equality of two equally long byte strings.
pub(crate) fn memeq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // SAFETY: both arrays are valid for reads of 32 bytes.
    unsafe { ffi::sodium_memcmp(a.as_ptr().cast(), b.as_ptr().cast(), 32) == 0 }
}

/// libsodium's little-endian increment (byte 0 moves fastest); the reference for our own.
#[cfg(test)]
pub(crate) fn increment(n: &mut [u8]) {
    // SAFETY: `n` is valid for reads and writes of `n.len()` bytes.
    unsafe { ffi::sodium_increment(n.as_mut_ptr(), n.len()) }
}

/// The constructions behind the encrypted methods.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Aead {
    XChaCha20Poly1305Ietf,
    ChaCha20Poly1305Ietf,
    XSalsa20Poly1305,
    Aes256Gcm,
}

impl Aead {
    pub(crate) fn nonce_len(self) -> usize {
        match self {
            Aead::XChaCha20Poly1305Ietf | Aead::XSalsa20Poly1305 => 24,
            Aead::ChaCha20Poly1305Ietf | Aead::Aes256Gcm => 12,
        }
    }
}

/// Encrypts `msg` in place and writes its tag. `ad` is ignored by secretbox (it has none).
///
/// # Panics
/// If `nonce` is not `aead.nonce_len()` bytes long.
pub(crate) fn seal_detached(
    aead: Aead,
    key: &[u8; 32],
    msg: &mut [u8],
    tag: &mut [u8; TAG_LEN],
    ad: &[u8],
    nonce: &[u8],
) {
    assert_eq!(nonce.len(), aead.nonce_len(), "nonce length");
    let m = msg.as_mut_ptr();
    let mlen = msg.len() as u64;
    let (ad_p, adlen) = (ad.as_ptr(), ad.len() as u64);
    let (n, k, t) = (nonce.as_ptr(), key.as_ptr(), tag.as_mut_ptr());
    // SAFETY (all arms): `m` is valid for reads and writes of `mlen` bytes and libsodium's
    // detached functions allow c == m (in-place); `t` is valid for 16 bytes of writes, disjoint
    // from `msg` (a separate &mut); `ad_p`/`adlen` describe a live slice; `n` holds exactly the
    // construction's nonce length (asserted above) and `k` 32 bytes. maclen_p and nsec may be
    // NULL per the API.
    let r = unsafe {
        match aead {
            Aead::XChaCha20Poly1305Ietf => {
                ffi::crypto_aead_xchacha20poly1305_ietf_encrypt_detached(
                    m,
                    t,
                    std::ptr::null_mut(),
                    m,
                    mlen,
                    ad_p,
                    adlen,
                    std::ptr::null(),
                    n,
                    k,
                )
            }
            Aead::ChaCha20Poly1305Ietf => ffi::crypto_aead_chacha20poly1305_ietf_encrypt_detached(
                m,
                t,
                std::ptr::null_mut(),
                m,
                mlen,
                ad_p,
                adlen,
                std::ptr::null(),
                n,
                k,
            ),
            Aead::Aes256Gcm => ffi::crypto_aead_aes256gcm_encrypt_detached(
                m,
                t,
                std::ptr::null_mut(),
                m,
                mlen,
                ad_p,
                adlen,
                std::ptr::null(),
                n,
                k,
            ),
            Aead::XSalsa20Poly1305 => ffi::crypto_secretbox_detached(m, t, m, mlen, n, k),
        }
    };
    // Encryption fails only on misuse (oversized message, missing AES hardware), which the
    // framer rules out when it is built.
    assert_eq!(r, 0, "libsodium refused to seal");
}

/// Verifies `tag` over `msg` and decrypts `msg` in place. On failure the contents of `msg` are
/// unspecified (AES-GCM zeroes them).
///
/// # Panics
/// If `nonce` is not `aead.nonce_len()` bytes long.
pub(crate) fn open_detached(
    aead: Aead,
    key: &[u8; 32],
    msg: &mut [u8],
    tag: &[u8; TAG_LEN],
    ad: &[u8],
    nonce: &[u8],
) -> bool {
    assert_eq!(nonce.len(), aead.nonce_len(), "nonce length");
    let m = msg.as_mut_ptr();
    let mlen = msg.len() as u64;
    let (ad_p, adlen) = (ad.as_ptr(), ad.len() as u64);
    let (n, k, t) = (nonce.as_ptr(), key.as_ptr(), tag.as_ptr());
    // SAFETY (all arms): as in `seal_detached`; the *_decrypt_detached and
    // secretbox_open_detached functions also allow m == c.
    let r = unsafe {
        match aead {
            Aead::XChaCha20Poly1305Ietf => {
                ffi::crypto_aead_xchacha20poly1305_ietf_decrypt_detached(
                    m,
                    std::ptr::null_mut(),
                    m,
                    mlen,
                    t,
                    ad_p,
                    adlen,
                    n,
                    k,
                )
            }
            Aead::ChaCha20Poly1305Ietf => ffi::crypto_aead_chacha20poly1305_ietf_decrypt_detached(
                m,
                std::ptr::null_mut(),
                m,
                mlen,
                t,
                ad_p,
                adlen,
                n,
                k,
            ),
            Aead::Aes256Gcm => ffi::crypto_aead_aes256gcm_decrypt_detached(
                m,
                std::ptr::null_mut(),
                m,
                mlen,
                t,
                ad_p,
                adlen,
                n,
                k,
            ),
            Aead::XSalsa20Poly1305 => ffi::crypto_secretbox_open_detached(m, m, t, mlen, n, k),
        }
    };
    r == 0
}

/// Unkeyed BLAKE2b with a 16-byte output.
pub(crate) fn generichash16(input: &[u8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    // SAFETY: `out` is valid for 16 bytes of writes, `input` for `input.len()` bytes of reads;
    // a NULL key with length 0 means unkeyed. 16 is within BYTES_MIN..=BYTES_MAX.
    let r = unsafe {
        ffi::crypto_generichash(
            out.as_mut_ptr(),
            out.len(),
            input.as_ptr(),
            input.len() as u64,
            std::ptr::null(),
            0,
        )
    };
    assert_eq!(r, 0, "crypto_generichash");
    out
}

/// Argon2id v1.3 with kcptun-libev's parameters (opslimit 2, memlimit 8192 bytes) into `out`.
/// Returns false if libsodium fails (out of memory).
pub(crate) fn argon2id(out: &mut [u8; 32], password: &[u8], salt: &[u8; 16]) -> bool {
    // SAFETY: `out` is valid for 32 bytes of writes, `password` for its length in reads (the
    // length is passed, so embedded NULs would be hashed, not truncated), `salt` is the 16 bytes
    // crypto_pwhash_SALTBYTES requires. opslimit/memlimit are within Argon2id's bounds.
    let r = unsafe {
        ffi::crypto_pwhash(
            out.as_mut_ptr(),
            out.len() as u64,
            password.as_ptr().cast(),
            password.len() as u64,
            salt.as_ptr(),
            2,
            8192,
            ffi::crypto_pwhash_ALG_ARGON2ID13 as i32,
        )
    };
    r == 0
}

/// Decodes standard padded base64 (`sodium_base64_VARIANT_ORIGINAL`) into `out`, accepting no
/// ignored characters and no trailing text. Returns the decoded length, or None when libsodium
/// rejects the text (bad character, bad padding, non-zero unused bits, output overflow).
pub(crate) fn base64_decode(text: &str, out: &mut [u8]) -> Option<usize> {
    let mut len = 0usize;
    // SAFETY: `out` is valid for `out.len()` bytes of writes and libsodium never writes beyond
    // bin_maxlen; `text` is valid for `text.len()` bytes of reads (libsodium uses the length,
    // not a terminator); ignore = NULL and b64_end = NULL make it reject any leftover text.
    let r = unsafe {
        ffi::sodium_base642bin(
            out.as_mut_ptr(),
            out.len(),
            text.as_ptr().cast(),
            text.len(),
            std::ptr::null(),
            &mut len,
            std::ptr::null_mut(),
            ffi::sodium_base64_VARIANT_ORIGINAL as i32,
        )
    };
    (r == 0).then_some(len)
}

/// Encodes 32 bytes as standard padded base64: always 44 characters.
pub(crate) fn base64_encode32(bin: &[u8; 32]) -> String {
    let mut b64 = [0u8; 45];
    base64_encode32_into(bin, &mut b64);
    // The alphabet is ASCII, so this cannot fail.
    String::from_utf8(b64[..44].to_vec()).expect("base64 is ASCII")
}

/// As [`base64_encode32`] into a caller's buffer (44 characters and a NUL), so that secret
/// text can be wiped after use.
pub(crate) fn base64_encode32_into(bin: &[u8; 32], b64: &mut [u8; 45]) {
    // sodium_base64_ENCODED_LEN(32, ORIGINAL) = 44 characters + the NUL terminator.
    // SAFETY: `b64` is valid for 45 bytes of writes, which is exactly
    // sodium_base64_encoded_len(32, VARIANT_ORIGINAL); `bin` is valid for 32 bytes of reads.
    let p = unsafe {
        ffi::sodium_bin2base64(
            b64.as_mut_ptr().cast(),
            b64.len(),
            bin.as_ptr(),
            bin.len(),
            ffi::sodium_base64_VARIANT_ORIGINAL as i32,
        )
    };
    assert!(!p.is_null(), "sodium_bin2base64");
}
