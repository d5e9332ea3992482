//! Encryption of tokens at rest: AES-256-GCM with the credential key as associated data, under a key ring of one
//! current key (that every save uses) and previous keys (that still open rows, during a key rotation); and the
//! stored form of a token that every store shares ([`seal_column`], [`open_column`]), so that a token reads the
//! same, and a row is refused for the same reasons, in SQL and in Redis.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretString};

use crate::error::StoreError;

/// The `token` column (or Redis field) of a cleared row. No login hands out an empty token (the sources refuse
/// one), and with encryption a real row holds base64 of at least the 16-byte tag.
pub(super) const TOMBSTONE: &str = "";

/// The `nonce` of a plaintext token stored as base64 because it holds a NUL byte, which PostgreSQL's `TEXT` cannot
/// hold (every store keeps such a token this way, so that a row reads the same everywhere). No real nonce looks like
/// it: those are base64 of 12 bytes. A version of this library that does not know the mark reads the row as
/// "encrypted without a key", that is as absent, and logs in again.
const PLAIN_BASE64: &str = "plaintext-base64";

/// A token as it is stored: sealed under the current key of `ring` if there is one, else in plaintext (base64 with
/// the [`PLAIN_BASE64`] mark when it holds a NUL byte). Returns the `token` and `nonce` columns.
pub(super) fn seal_column(
    ring: Option<&KeyRing>,
    store_key: &str,
    plaintext: &str,
) -> Result<(String, Option<String>), aes_gcm::Error> {
    Ok(match ring {
        Some(ring) => {
            let sealed = ring.seal(store_key, plaintext)?;
            (sealed.ciphertext, Some(sealed.nonce))
        }
        None if plaintext.contains('\0') => {
            (STANDARD.encode(plaintext), Some(PLAIN_BASE64.to_owned()))
        }
        None => (plaintext.to_owned(), None),
    })
}

/// The token of a stored row, opened with `ring` when the row is sealed, and the row's nonce when it opened only
/// under a previous key (to seal it again under the current one); or why the row cannot be used (never the token,
/// the nonce or a key).
pub(super) fn open_column(
    ring: Option<&KeyRing>,
    store_key: &str,
    token: String,
    nonce: Option<&str>,
) -> Result<(SecretString, Option<String>), &'static str> {
    match (nonce, ring) {
        (Some(nonce), None) if nonce == PLAIN_BASE64 => {
            let decoded = STANDARD
                .decode(token.as_bytes())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            match decoded {
                Some(token) => Ok((SecretString::from(token), None)),
                None => Err("it is marked as base64 plaintext but is not base64 of UTF-8 text"),
            }
        }
        // As a plaintext row without a nonce: nothing authenticates it.
        (Some(nonce), Some(_)) if nonce == PLAIN_BASE64 => Err(
            "it is in plaintext (base64) although an encryption key is configured, so nothing \
             authenticates it",
        ),
        (Some(nonce), Some(ring)) => match ring.open(store_key, &token, nonce) {
            Opened::Current(token) => Ok((token, None)),
            Opened::Previous(token) => Ok((token, Some(nonce.to_owned()))),
            Opened::Unauthenticated => Err(
                "it does not decrypt with the encryption key or a previous one (another key, a tampered \
                 row, or a row copied from another store key)",
            ),
        },
        (Some(_), None) => Err("it is encrypted but no encryption key is configured"),
        // With a key configured, a row without a nonce has no authentication at all: anyone able to write the
        // table could plant a token this way, so it is never trusted.
        (None, Some(_)) => Err(
            "it is in plaintext (no nonce) although an encryption key is configured, so nothing \
             authenticates it",
        ),
        (None, None) => Ok((SecretString::from(token), None)),
    }
}

/// The key ring of `options`, if tokens are to be encrypted; previous keys without a current one are refused, since
/// rows under them would be read and new ones written in plaintext.
pub(super) fn key_ring(options: &super::StoreOptions) -> Result<Option<KeyRing>, StoreError> {
    match &options.encryption_key {
        Some(current) => {
            KeyRing::from_base64(current, &options.previous_encryption_keys).map(Some)
        }
        None if !options.previous_encryption_keys.is_empty() => Err(StoreError::Config(
            "previous_encryption_keys are set but encryption_key is not: rows under a previous key would be \
             read and new ones written in plaintext"
                .into(),
        )),
        None => Ok(None),
    }
}

/// A token as it is written to the `token` and `nonce` columns.
pub(super) struct Sealed {
    /// Base64 of the ciphertext and its tag.
    pub(super) ciphertext: String,
    /// Base64 of the 96-bit nonce.
    pub(super) nonce: String,
}

/// The configured encryption key. Deliberately not `Debug`.
#[derive(Clone)]
pub(super) struct Cipher(Aes256Gcm);

impl Cipher {
    /// Parses a key given as standard base64 of exactly 32 bytes. Surrounding whitespace is ignored, since keys
    /// read from files and environment variables often end with a newline.
    pub(super) fn from_base64(key: &SecretString) -> Result<Self, StoreError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(key.expose_secret().trim())
                // The decoder's message names the offending byte, which is part of the key: leave it out.
                .map_err(|_| {
                    StoreError::Config(
                        "encryption key must be base64 of 32 bytes, got invalid base64".into(),
                    )
                })?,
        );
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| {
            StoreError::Config(format!(
                "encryption key must be base64 of 32 bytes, got {} bytes",
                bytes.len()
            ))
        })?;
        Ok(Self(cipher))
    }

    /// Encrypts `token` for `store_key` with a fresh random nonce.
    pub(super) fn seal(&self, store_key: &str, token: &str) -> Result<Sealed, aes_gcm::Error> {
        // A random 96-bit nonce per save: with one save per refresh, the 2^32 messages per key that random nonces
        // allow are out of reach.
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self.0.encrypt(
            &nonce,
            Payload {
                msg: token.as_bytes(),
                aad: store_key.as_bytes(),
            },
        )?;
        Ok(Sealed {
            ciphertext: STANDARD.encode(ciphertext),
            nonce: STANDARD.encode(nonce),
        })
    }

    /// Decrypts a stored token of `store_key`; `None` for anything that does not authenticate (wrong key,
    /// tampered row, row copied from another credential key, malformed base64).
    pub(super) fn open(
        &self,
        store_key: &str,
        ciphertext: &str,
        nonce: &str,
    ) -> Option<SecretString> {
        let nonce = STANDARD.decode(nonce).ok()?;
        if nonce.len() != 12 {
            return None;
        }
        let ciphertext = STANDARD.decode(ciphertext).ok()?;
        let plaintext = Zeroizing::new(
            self.0
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &ciphertext,
                        aad: store_key.as_bytes(),
                    },
                )
                .ok()?,
        );
        let token = std::str::from_utf8(&plaintext).ok()?;
        Some(SecretString::from(token))
    }
}

/// What [`KeyRing::open`] found.
pub(super) enum Opened {
    /// The row authenticates under the current key.
    Current(SecretString),
    /// The row authenticates under a previous key: usable, and to be sealed again under the current one.
    Previous(SecretString),
    /// The row authenticates under no key of the ring (another key, a tampered row, a row copied from another
    /// credential key, malformed base64).
    Unauthenticated,
}

/// The current key and the previous ones. Deliberately not `Debug`.
#[derive(Clone)]
pub(super) struct KeyRing {
    current: Cipher,
    previous: Vec<Cipher>,
}

impl KeyRing {
    /// Parses the current key and the previous ones (each standard base64 of 32 bytes).
    pub(super) fn from_base64(
        current: &SecretString,
        previous: &[SecretString],
    ) -> Result<Self, StoreError> {
        let current = Cipher::from_base64(current)?;
        let previous = previous
            .iter()
            .enumerate()
            .map(|(index, key)| {
                // Which entry, never its value.
                Cipher::from_base64(key).map_err(|error| {
                    StoreError::Config(format!("previous_encryption_keys[{index}]: {error}"))
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { current, previous })
    }

    /// Encrypts under the current key.
    pub(super) fn seal(&self, store_key: &str, token: &str) -> Result<Sealed, aes_gcm::Error> {
        self.current.seal(store_key, token)
    }

    /// Decrypts under the current key, else under the first previous key that authenticates the row.
    pub(super) fn open(&self, store_key: &str, ciphertext: &str, nonce: &str) -> Opened {
        if let Some(token) = self.current.open(store_key, ciphertext, nonce) {
            return Opened::Current(token);
        }
        self.previous
            .iter()
            .find_map(|cipher| cipher.open(store_key, ciphertext, nonce))
            .map_or(Opened::Unauthenticated, Opened::Previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretString {
        STANDARD.encode([byte; 32]).into()
    }

    #[test]
    fn round_trip_and_binding() {
        let cipher = Cipher::from_base64(&key(1)).unwrap();
        let sealed = cipher.seal("a", "token-value").unwrap();
        let opened = cipher.open("a", &sealed.ciphertext, &sealed.nonce).unwrap();
        assert_eq!(opened.expose_secret(), "token-value");
        assert!(
            cipher
                .open("b", &sealed.ciphertext, &sealed.nonce)
                .is_none()
        );
        let other = Cipher::from_base64(&key(2)).unwrap();
        assert!(other.open("a", &sealed.ciphertext, &sealed.nonce).is_none());
        assert!(cipher.open("a", "not base64!", &sealed.nonce).is_none());
        assert!(cipher.open("a", &sealed.ciphertext, "AAAA").is_none());
    }

    #[test]
    fn key_ring_opens_under_previous_keys_and_seals_under_the_current_one() {
        let old = Cipher::from_base64(&key(1)).unwrap();
        let ring = KeyRing::from_base64(&key(2), &[key(3), key(1)]).unwrap();
        let under_old = old.seal("a", "token").unwrap();
        assert!(matches!(
            ring.open("a", &under_old.ciphertext, &under_old.nonce),
            Opened::Previous(t) if t.expose_secret() == "token"
        ));
        let under_new = ring.seal("a", "token").unwrap();
        assert!(matches!(
            ring.open("a", &under_new.ciphertext, &under_new.nonce),
            Opened::Current(t) if t.expose_secret() == "token"
        ));
        assert!(
            old.open("a", &under_new.ciphertext, &under_new.nonce)
                .is_none()
        );
        let stranger = Cipher::from_base64(&key(4))
            .unwrap()
            .seal("a", "token")
            .unwrap();
        assert!(matches!(
            ring.open("a", &stranger.ciphertext, &stranger.nonce),
            Opened::Unauthenticated
        ));
        let error = KeyRing::from_base64(&key(2), &[key(3), STANDARD.encode([0u8; 8]).into()])
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("previous_encryption_keys[1]") && error.contains("got 8 bytes"),
            "{error}"
        );
    }

    #[test]
    fn nonces_differ() {
        let cipher = Cipher::from_base64(&key(1)).unwrap();
        let a = cipher.seal("a", "t").unwrap();
        let b = cipher.seal("a", "t").unwrap();
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn key_validation() {
        let short: SecretString = STANDARD.encode([0u8; 16]).into();
        let err = Cipher::from_base64(&short).err().unwrap().to_string();
        assert!(err.contains("got 16 bytes"), "{err}");
        let bad: SecretString = "%%%".into();
        assert!(Cipher::from_base64(&bad).is_err());
        let padded: SecretString = format!("{}\n", STANDARD.encode([7u8; 32])).into();
        assert!(Cipher::from_base64(&padded).is_ok());
    }
}
