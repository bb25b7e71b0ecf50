//! Sealed copies of keys keygate made (docs/security.md, "Key format"): AES-256-GCM (ring) under the
//! operator's seal key, with the key id as associated data, so only that seal key
//! reveals the value, and a sealed copy cannot be moved to another key id.
//!
//! Stored form: `v1:` + base64(12-byte nonce ‖ ciphertext ‖ tag).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::Secret;

const PREFIX: &str = "v1:";

/// The seal key from `KEYGATE_SEAL_KEY` (32 random bytes, base64) or the file named
/// by `KEYGATE_SEAL_KEY_FILE`.
pub(crate) struct SealKey(LessSafeKey);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

impl SealKey {
    pub(crate) fn from_base64(text: &str) -> Result<Self, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the seal key is not valid base64".to_string())?;
        if bytes.len() != 32 {
            return Err(format!(
                "the seal key must be 32 bytes (it has {}); make one with: head -c 32 /dev/urandom | base64",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| "bad seal key".to_string())?;
        Ok(Self(LessSafeKey::new(key)))
    }

    pub(crate) fn seal(&self, key_id: &str, secret: &Secret) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        let mut data = secret.expose().as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    pub(crate) fn open(&self, key_id: &str, sealed: &str) -> Result<Secret, String> {
        let wrong = || "the sealed copy does not open with this seal key".to_string();
        let b64 = sealed.strip_prefix(PREFIX).ok_or_else(wrong)?;
        let mut bytes = STANDARD.decode(b64).map_err(|_| wrong())?;
        if bytes.len() < NONCE_LEN {
            return Err(wrong());
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        let plain = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(key_id.as_bytes()),
                &mut bytes[NONCE_LEN..],
            )
            .map_err(|_| wrong())?;
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| wrong())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::from_base64(&STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let k = key(7);
        let secret = Secret::new("kg_example".into());
        let sealed = k.seal("kid1", &secret).unwrap();
        assert!(!sealed.contains("kg_example"));
        assert_eq!(k.open("kid1", &sealed).unwrap(), secret);
        assert!(k.open("kid2", &sealed).is_err(), "bound to the key id");
        assert!(
            key(8).open("kid1", &sealed).is_err(),
            "only this seal key opens it"
        );
    }

    #[test]
    fn bad_seal_keys() {
        assert!(SealKey::from_base64("not base64!").is_err());
        assert!(SealKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
    }
}
