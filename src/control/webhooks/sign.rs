//! Standard Webhooks signing: `whsec_` secrets and the `webhook-signature` header
//! (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body`, keyed with the secret's
//! base64-decoded part). During a rotation the header carries one signature per
//! secret, separated by a space.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// The prefix of every secret keygate shows.
pub(crate) const SECRET_PREFIX: &str = "whsec_";
/// Bytes of randomness in a new secret (the spec asks for 24 to 64).
const SECRET_BYTES: usize = 32;

/// A signing secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SigningSecret(String);

impl std::fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningSecret(<redacted>)")
    }
}

impl SigningSecret {
    /// A new random `whsec_` secret.
    pub(crate) fn generate() -> Result<Self, String> {
        let mut b = [0u8; SECRET_BYTES];
        getrandom::fill(&mut b).map_err(|e| format!("no randomness: {e}"))?;
        Ok(Self(format!("{SECRET_PREFIX}{}", STANDARD.encode(b))))
    }

    /// Checks a stored or given `whsec_…` value.
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        let b64 = s
            .strip_prefix(SECRET_PREFIX)
            .ok_or("a webhook secret starts with whsec_")?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| "a webhook secret is whsec_ followed by base64")?;
        if key.is_empty() {
            return Err("a webhook secret must not be empty".into());
        }
        Ok(Self(s.to_string()))
    }

    /// The value in the clear, for the one moment it is shown and for storage.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    fn key(&self) -> hmac::Key {
        let b64 = self.0.strip_prefix(SECRET_PREFIX).unwrap_or(&self.0);
        let raw = STANDARD.decode(b64).unwrap_or_default();
        hmac::Key::new(hmac::HMAC_SHA256, &raw)
    }

    /// One `v1,<base64>` signature of `id.timestamp.body`.
    pub(crate) fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut ctx = hmac::Context::with_key(&self.key());
        ctx.update(id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.to_string().as_bytes());
        ctx.update(b".");
        ctx.update(body);
        format!("v1,{}", STANDARD.encode(ctx.sign().as_ref()))
    }

    /// Does any `v1` signature in `header` match (constant-time)?
    #[cfg(test)]
    pub(crate) fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let mut msg = Vec::with_capacity(id.len() + body.len() + 24);
        msg.extend_from_slice(id.as_bytes());
        msg.push(b'.');
        msg.extend_from_slice(timestamp.to_string().as_bytes());
        msg.push(b'.');
        msg.extend_from_slice(body);
        let key = self.key();
        header.split(' ').any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b| STANDARD.decode(b).ok())
                .is_some_and(|tag| hmac::verify(&key, &msg, &tag).is_ok())
        })
    }
}

/// The `webhook-signature` value: one signature per secret in force.
pub(crate) fn signature_header(
    secrets: &[&SigningSecret],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> String {
    secrets
        .iter()
        .map(|s| s.sign(id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The published example of the Standard Webhooks reference libraries (and of
    // the Svix documentation): secret, id, timestamp, body, signature.
    const VECTOR_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TS: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_test_vector() {
        let s = SigningSecret::parse(VECTOR_SECRET).unwrap();
        assert_eq!(s.sign(VECTOR_ID, VECTOR_TS, VECTOR_BODY), VECTOR_SIG);
        assert!(s.verify(VECTOR_ID, VECTOR_TS, VECTOR_BODY, VECTOR_SIG));
        assert!(!s.verify(VECTOR_ID, VECTOR_TS + 1, VECTOR_BODY, VECTOR_SIG));
        assert!(!s.verify(VECTOR_ID, VECTOR_TS, b"{}", VECTOR_SIG));
    }

    #[test]
    fn rotation_header_carries_both_signatures() {
        let old = SigningSecret::parse(VECTOR_SECRET).unwrap();
        let new = SigningSecret::generate().unwrap();
        let h = signature_header(&[&new, &old], VECTOR_ID, VECTOR_TS, VECTOR_BODY);
        assert_eq!(h.split(' ').count(), 2);
        assert!(h.ends_with(VECTOR_SIG));
        assert!(new.verify(VECTOR_ID, VECTOR_TS, VECTOR_BODY, &h));
        assert!(old.verify(VECTOR_ID, VECTOR_TS, VECTOR_BODY, &h));
    }

    #[test]
    fn secrets_are_whsec_base64_and_redacted() {
        let s = SigningSecret::generate().unwrap();
        assert!(s.expose().starts_with("whsec_"));
        assert!(SigningSecret::parse(s.expose()).is_ok());
        assert!(SigningSecret::parse("nope").is_err());
        assert!(SigningSecret::parse("whsec_!!").is_err());
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
