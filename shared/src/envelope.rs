//! Convox's encrypted env file: a JSON object whose `k` is a KMS-encrypted data key and whose
//! `c` is the text sealed with NaCl secretbox under that key and the nonce `n`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use crypto_secretbox::aead::{Aead, AeadCore, KeyInit, OsRng};
use crypto_secretbox::{Key, Nonce, XSalsa20Poly1305};
use serde::{Deserialize, Serialize};

use crate::backend::KeyService;
use crate::error::{Error, Result};

const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;

#[derive(Serialize, Deserialize)]
struct Envelope {
    c: String,
    k: String,
    n: String,
}

/// Whether the object is meant to be an envelope. Plain env text cannot start with `{` and
/// still mean anything (such a line has no key Convox would read), so anything that does is
/// treated as an envelope and must open, never read as plain text.
pub fn looks_sealed(object: &[u8]) -> bool {
    object
        .iter()
        .find(|byte| !byte.is_ascii_whitespace())
        .is_some_and(|&byte| byte == b'{')
}

/// Returns the env text of `object`: as it is when plain, opened when it is an envelope.
/// `what` names the app and release in every error.
pub async fn open_object(kms: &dyn KeyService, object: &[u8], what: &str) -> Result<Vec<u8>> {
    if !looks_sealed(object) {
        return Ok(object.to_vec());
    }

    let bad = |reason: &str| Error::Permanent(format!("the env file of {what} {reason}"));
    let envelope: Envelope = serde_json::from_slice(object)
        .map_err(|_| bad("starts like an encrypted envelope but is not one (c, k, n)"))?;
    let sealed = BASE64
        .decode(&envelope.c)
        .map_err(|_| bad("has a `c` that is not base64"))?;
    let wrapped_key = BASE64
        .decode(&envelope.k)
        .map_err(|_| bad("has a `k` that is not base64"))?;
    let nonce = BASE64
        .decode(&envelope.n)
        .map_err(|_| bad("has an `n` that is not base64"))?;
    if nonce.len() != NONCE_BYTES {
        return Err(bad("has a nonce that is not 24 bytes"));
    }

    let data_key = kms.decrypt(&wrapped_key).await.map_err(|err| {
        Error::from_aws(format!("KMS could not decrypt the data key of {what}"), err)
    })?;
    if data_key.len() != KEY_BYTES {
        return Err(bad("has a data key that is not 32 bytes"));
    }

    open_secretbox(&data_key, &nonce, &sealed)
        .ok_or_else(|| bad("does not open with its data key (tampered or truncated)"))
}

/// Seals `text` as Convox does: a fresh data key from KMS under `key_id`, a random nonce.
pub async fn seal(kms: &dyn KeyService, key_id: &str, text: &[u8]) -> Result<Vec<u8>> {
    let (data_key, wrapped_key) = kms.generate_data_key(key_id).await.map_err(|err| {
        Error::from_aws(format!("KMS could not make a data key with {key_id}"), err)
    })?;
    let nonce = XSalsa20Poly1305::generate_nonce(&mut OsRng);
    let sealed = seal_secretbox(&data_key, &nonce, text);

    let envelope = Envelope {
        c: BASE64.encode(sealed),
        k: BASE64.encode(wrapped_key),
        n: BASE64.encode(nonce),
    };
    Ok(serde_json::to_vec(&envelope).expect("an envelope always serialises"))
}

/// secretbox open: `sealed` is the 16-byte tag followed by the ciphertext.
fn open_secretbox(key: &[u8], nonce: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = XSalsa20Poly1305::new(Key::from_slice(key));
    cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()
}

fn seal_secretbox(key: &[u8], nonce: &[u8], text: &[u8]) -> Vec<u8> {
    let cipher = XSalsa20Poly1305::new(Key::from_slice(key));
    cipher
        .encrypt(Nonce::from_slice(nonce), text)
        .expect("secretbox encryption of a buffer in memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Vectors {
        vectors: Vec<Vector>,
    }

    #[derive(Deserialize)]
    struct Vector {
        key_b64: String,
        nonce_b64: String,
        plaintext_b64: String,
        sealed_b64: String,
    }

    fn vectors() -> Vec<Vector> {
        let text = include_str!("../../tests/fixtures/secretbox.json");
        serde_json::from_str::<Vectors>(text).unwrap().vectors
    }

    fn decode(text: &str) -> Vec<u8> {
        BASE64.decode(text).unwrap()
    }

    #[test]
    fn libsodium_vectors_open_and_seal_to_the_same_bytes() {
        let vectors = vectors();
        assert_eq!(vectors.len(), 3);
        for vector in vectors {
            let (key, nonce) = (decode(&vector.key_b64), decode(&vector.nonce_b64));
            let (plain, sealed) = (decode(&vector.plaintext_b64), decode(&vector.sealed_b64));
            assert_eq!(open_secretbox(&key, &nonce, &sealed).unwrap(), plain);
            assert_eq!(seal_secretbox(&key, &nonce, &plain), sealed);
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_key_does_not_open() {
        let vector = &vectors()[1];
        let (key, nonce) = (decode(&vector.key_b64), decode(&vector.nonce_b64));
        let mut sealed = decode(&vector.sealed_b64);
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(open_secretbox(&key, &nonce, &sealed).is_none());

        let sealed = decode(&vector.sealed_b64);
        let mut wrong = key.clone();
        wrong[0] ^= 1;
        assert!(open_secretbox(&wrong, &nonce, &sealed).is_none());
    }

    #[test]
    fn only_text_starting_with_a_brace_is_taken_for_an_envelope() {
        assert!(looks_sealed(b"  \n{\"c\":\"\"}"));
        assert!(!looks_sealed(b"A=1\n{B=2}\n"));
        assert!(!looks_sealed(b""));
    }
}
