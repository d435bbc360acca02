//! Key material: the 32-byte [`Key`] (zeroed on drop, never printed), the two ways to get one
//! (`psk`: strict base64, `password`: Argon2id with kcptun-libev's parameters, WIRE.md §2), and
//! [`genpsk`].

use super::sodium;
use std::fmt;

/// Length of every method's key.
pub const KEY_LEN: usize = 32;

/// Salt of the password KDF: BLAKE2b-128 over these 12 bytes (no NUL).
const SALT_INPUT: &[u8] = b"kcptun-libev";

/// A 32-byte symmetric key. Boxed so that moving a `Key` moves a pointer, not the secret; the
/// bytes are wiped with `sodium_memzero` when it drops. `Debug` prints `Key(..)`.
pub struct Key(Box<[u8; KEY_LEN]>);

impl Key {
    /// Wraps raw key bytes (tests and callers that already hold a key).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Key {
        Key(Box::new(bytes))
    }

    /// The raw bytes, for the sealing code only.
    pub(crate) fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn zeroed() -> Key {
        Key(Box::new([0u8; KEY_LEN]))
    }
}

impl Clone for Key {
    fn clone(&self) -> Key {
        let mut k = Key::zeroed();
        k.0.copy_from_slice(&self.0[..]);
        k
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        sodium::memzero(&mut self.0[..]);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Constant-time comparison (so tests may compare keys without exposing the bytes).
impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        sodium::memeq(&self.0, &other.0)
    }
}
impl Eq for Key {}

/// Why key material was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// `psk` is not standard padded base64 of exactly 32 bytes.
    InvalidPsk,
    /// `password` contains a NUL byte (kcptun-libev would hash only the part before it).
    PasswordNul,
    /// libsodium could not initialise or could not run the KDF (out of memory).
    Sodium,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::InvalidPsk => "psk must be standard base64 (with '=' padding) of 32 bytes",
            KeyError::PasswordNul => "password contains a nul byte",
            KeyError::Sodium => "libsodium failed to derive the key",
        })
    }
}

impl std::error::Error for KeyError {}

/// Decodes a `psk`: RFC 4648 standard alphabet, `=` padding, no whitespace, canonical (unused
/// bits zero), exactly 32 bytes, i.e. exactly 44 characters ending in one `=`.
pub fn key_from_psk(psk: &str) -> Result<Key, KeyError> {
    if !super::sodium::init() {
        return Err(KeyError::Sodium);
    }
    // libsodium with ignore = NULL and b64_end = NULL is already strict (it rejects whitespace,
    // the URL-safe alphabet, missing or extra '=', non-zero unused bits, and more than 32 bytes
    // via bin_maxlen). The length check and the re-encoding below are belt and braces: they pin
    // the accepted language to "the 44-character output of genpsk" whatever libsodium does.
    if psk.len() != 44 {
        return Err(KeyError::InvalidPsk);
    }
    let mut key = Key::zeroed();
    let decoded = sodium::base64_decode(psk, &mut key.0[..]);
    // Re-encode on the stack (the text is the key), compare, wipe.
    let mut text = [0u8; 45];
    sodium::base64_encode32_into(&key.0, &mut text);
    let canonical = &text[..44] == psk.as_bytes();
    sodium::memzero(&mut text);
    match decoded {
        Some(KEY_LEN) if canonical => Ok(key),
        _ => Err(KeyError::InvalidPsk),
    }
}

/// Derives the key from a `password`: Argon2id v1.3, opslimit 2, memlimit 8192 bytes, 32-byte
/// output, salt = BLAKE2b-128("kcptun-libev"). The empty password is valid (as in kcptun-libev).
pub fn key_from_password(password: &str) -> Result<Key, KeyError> {
    if password.as_bytes().contains(&0) {
        return Err(KeyError::PasswordNul);
    }
    if !super::sodium::init() {
        return Err(KeyError::Sodium);
    }
    let salt = sodium::generichash16(SALT_INPUT);
    let mut key = Key::zeroed();
    if sodium::argon2id(&mut key.0, password.as_bytes(), &salt) {
        Ok(key)
    } else {
        Err(KeyError::Sodium)
    }
}

/// A fresh pre-shared key: 32 random bytes as 44 characters of standard padded base64.
///
/// # Panics
/// If libsodium cannot initialise (no entropy source at all).
pub fn genpsk() -> String {
    assert!(super::sodium::init(), "libsodium failed to initialise");
    let mut key = Key::zeroed();
    sodium::random_bytes(&mut key.0[..]);
    sodium::base64_encode32(&key.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_matches_wire_md() {
        assert!(sodium::init());
        let salt = sodium::generichash16(SALT_INPUT);
        let hex: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "cda3b50aab79e7418260651fbde98edc");
    }

    #[test]
    fn genpsk_round_trips_and_differs() {
        let a = genpsk();
        let b = genpsk();
        assert_eq!(a.len(), 44);
        assert!(a.ends_with('=') && !a.ends_with("=="));
        assert_ne!(a, b);
        assert!(key_from_psk(&a).is_ok());
    }

    #[test]
    fn psk_accepts_canonical_and_rejects_lookalikes() {
        let good = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let k = key_from_psk(good).unwrap();
        let want: [u8; 32] = std::array::from_fn(|i| i as u8);
        assert_eq!(k, Key::from_bytes(want));
        for bad in [
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=", // non-canonical last character
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 ", // space instead of '='
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh\08=", // embedded NUL
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\0",
            "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-__v8=",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8==",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            "",
        ] {
            assert_eq!(key_from_psk(bad), Err(KeyError::InvalidPsk), "{bad:?}");
        }
    }

    #[test]
    fn libsodium_alone_is_strict_enough() {
        // The extra checks in key_from_psk are not load-bearing today; this pins that.
        assert!(sodium::init());
        let mut out = [0u8; 32];
        for bad in [
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh9=",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8==",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
            " AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-_-__v8=",
            concat!(
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g",
                "ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
            ),
        ] {
            assert_eq!(sodium::base64_decode(bad, &mut out), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_hides_the_key() {
        let k = Key::from_bytes([0x41; 32]);
        assert_eq!(format!("{k:?}"), "Key(..)");
        assert_eq!(format!("{:?}", k.clone()), "Key(..)");
    }

    #[test]
    fn password_with_nul_is_refused() {
        assert_eq!(key_from_password("ab\0cd"), Err(KeyError::PasswordNul));
    }
}
