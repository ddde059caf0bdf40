//! Opaque tokens: page tokens (expire after an hour) and block tokens (bound to one
//! snapshot and index, expire after 7 days). Both carry an HMAC under a per-store key,
//! so a forged or altered token is refused.

use super::{BlockToken, PageToken, SnapshotId, StoreError, StoreResult, ValidationReason};
use crate::block::BlockIndex;
// The service model's pattern for both kinds is `^[A-Za-z0-9+/=]+$`: the standard
// alphabet. Tokens made before it was used (URL-safe, no padding) are still read.
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as OLD_B64};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(crate) const PAGE_TOKEN_LIFETIME: Duration = Duration::from_secs(60 * 60);
pub(crate) const BLOCK_TOKEN_LIFETIME: Duration = Duration::from_secs(7 * 24 * 60 * 60);
const MAC_LEN: usize = 16;

#[derive(Clone)]
pub(crate) struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source works");
        TokenKey(key)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        TokenKey(bytes)
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, scope: &str, payload: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        mac.update(scope.as_bytes());
        mac.update(&[0]);
        mac.update(payload);
        mac.finalize().into_bytes()[..MAC_LEN]
            .try_into()
            .expect("16 bytes")
    }

    /// Encodes `index` and an expiry time, sealed for `scope`.
    fn seal(&self, scope: &str, index: BlockIndex, expiry: SystemTime) -> String {
        let mut payload = Vec::with_capacity(16 + MAC_LEN);
        payload.extend_from_slice(&index.0.to_le_bytes());
        payload.extend_from_slice(&epoch_secs(expiry).to_le_bytes());
        let mac = self.mac(scope, &payload);
        payload.extend_from_slice(&mac);
        B64.encode(payload)
    }

    /// The index inside a token sealed for `scope`, if the token is genuine and unexpired.
    fn open(&self, scope: &str, token: &str) -> Option<BlockIndex> {
        let raw = B64.decode(token).or_else(|_| OLD_B64.decode(token)).ok()?;
        if raw.len() != 16 + MAC_LEN {
            return None;
        }
        let (payload, mac) = raw.split_at(16);
        // Constant-time comparison of the tag.
        let mut check = Hmac::<Sha256>::new_from_slice(&self.0).expect("any key length");
        check.update(scope.as_bytes());
        check.update(&[0]);
        check.update(payload);
        check.verify_truncated_left(mac).ok()?;
        let index = u64::from_le_bytes(payload[..8].try_into().ok()?);
        let expiry = u64::from_le_bytes(payload[8..].try_into().ok()?);
        (epoch_secs(SystemTime::now()) <= expiry).then_some(BlockIndex(index))
    }

    pub fn block_token(&self, id: &SnapshotId, index: BlockIndex) -> BlockToken {
        let expiry = SystemTime::now() + BLOCK_TOKEN_LIFETIME;
        BlockToken(self.seal(&format!("block/{id}"), index, expiry))
    }

    /// Refuses a token that was not issued for this snapshot and index.
    pub fn check_block_token(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<()> {
        match self.open(&format!("block/{id}"), &token.0) {
            Some(i) if i == index => Ok(()),
            _ => Err(StoreError::invalid(
                ValidationReason::InvalidBlockToken,
                format!("the block token is not valid for block {index} of {id}"),
            )),
        }
    }

    pub fn page_token(&self, scope: &str, next: BlockIndex) -> PageToken {
        let expiry = SystemTime::now() + PAGE_TOKEN_LIFETIME;
        PageToken(self.seal(&format!("page/{scope}"), next, expiry))
    }

    pub fn open_page_token(&self, scope: &str, token: &PageToken) -> StoreResult<BlockIndex> {
        self.open(&format!("page/{scope}"), &token.0)
            .ok_or_else(|| {
                StoreError::invalid(
                    ValidationReason::InvalidPageToken,
                    "the page token is invalid or has expired",
                )
            })
    }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_tokens_are_bound_to_snapshot_and_index() {
        let key = TokenKey::random();
        let a = SnapshotId::generate();
        let b = SnapshotId::generate();
        let t = key.block_token(&a, BlockIndex(7));
        key.check_block_token(&a, BlockIndex(7), &t).unwrap();
        assert!(key.check_block_token(&a, BlockIndex(8), &t).is_err());
        assert!(key.check_block_token(&b, BlockIndex(7), &t).is_err());
        assert!(TokenKey::random()
            .check_block_token(&a, BlockIndex(7), &t)
            .is_err());
        let mut forged = t.0.clone().into_bytes();
        forged[0] = if forged[0] == b'A' { b'B' } else { b'A' };
        let forged = BlockToken(String::from_utf8(forged).unwrap());
        assert!(key.check_block_token(&a, BlockIndex(7), &forged).is_err());
    }

    #[test]
    fn page_tokens_are_bound_to_their_scope() {
        let key = TokenKey::random();
        let t = key.page_token("blocks/x", BlockIndex(100));
        assert_eq!(
            key.open_page_token("blocks/x", &t).unwrap(),
            BlockIndex(100)
        );
        let err = key.open_page_token("blocks/y", &t).unwrap_err();
        assert_eq!(err.reason(), Some(ValidationReason::InvalidPageToken));
        assert!(key
            .open_page_token("blocks/x", &PageToken("garbage".into()))
            .is_err());
    }

    #[test]
    fn tokens_match_the_service_models_pattern() {
        let key = TokenKey::random();
        let id = SnapshotId::generate();
        for i in [0, 1, 62, 63, 1 << 20, u64::from(u32::MAX)] {
            let token = key.block_token(&id, BlockIndex(i)).0;
            assert!(token.len() <= 256, "{token}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
                "{token}"
            );
        }
    }
}
