//! API keys: 256 random bits shown once, stored only as SHA-256.
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "wav_";

/// A key as presented by a client. Never logged.
pub struct ApiKey(String);

impl ApiKey {
    pub fn generate() -> ApiKey {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        ApiKey(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    /// Any non-empty text is looked up; its shape is not checked, so a wrong
    /// key and a malformed one get the same answer.
    pub fn from_presented(text: &str) -> Option<ApiKey> {
        let text = text.trim();
        (!text.is_empty()).then(|| ApiKey(text.to_string()))
    }

    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_unique_and_hash_stably() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("wav_") && a.expose().len() == 68);
        assert_eq!(a.hash(), ApiKey::from_presented(a.expose()).unwrap().hash());
        assert_ne!(a.hash(), b.hash());
        assert_eq!(format!("{a:?}"), "ApiKey(***)");
    }
}
