//! Encryption of blocks at rest (docs/store-format.md, "Encryption").
//!
//! A block of an encrypted snapshot is stored as AES-256-GCM ciphertext (aws-lc-rs)
//! in its pack slot; its 96-bit random nonce and its tag go to the pack's `.aead`
//! sidecar. Its identity, the digest that maps, journals and pack indexes hold (and
//! that dedup looks up), is its SHA-256 *sealed*: put through a keyed permutation, so
//! equal blocks under one key share a slot, but blocks under two keys (or encrypted
//! and plain ones) never do, and nothing on disk can be checked against a guess of
//! the plaintext without the key. The permutation is invertible with the key, which
//! gives back the SHA-256 the API answers with (GetSnapshotBlock's checksum, the
//! LINEAR aggregate) without hashing the data again.

use super::map::Location;
use crate::block::Digest;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes per slot in a pack's `.aead` file: magic, nonce, tag.
pub(crate) const AEAD_ENTRY_LEN: usize = 32;
const AEAD_MAGIC: &[u8; 4] = b"EBA1";
const TAG_LEN: usize = 16;
/// Rounds of the Feistel network that seals digests: four make it a strong
/// pseudorandom permutation (Luby–Rackoff) from a pseudorandom round function.
const FEISTEL_ROUNDS: u8 = 4;

/// What a slot's ciphertext is opened with: its nonce and tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AeadEntry {
    pub nonce: [u8; NONCE_LEN],
    pub tag: [u8; TAG_LEN],
}

impl AeadEntry {
    pub fn encode(&self) -> [u8; AEAD_ENTRY_LEN] {
        let mut out = [0u8; AEAD_ENTRY_LEN];
        out[..4].copy_from_slice(AEAD_MAGIC);
        out[4..16].copy_from_slice(&self.nonce);
        out[16..].copy_from_slice(&self.tag);
        out
    }

    /// `None` for an entry never written (a hole reads as zeros) or damaged.
    pub fn decode(raw: &[u8; AEAD_ENTRY_LEN]) -> Option<AeadEntry> {
        (&raw[..4] == AEAD_MAGIC).then(|| AeadEntry {
            nonce: raw[4..16].try_into().expect("12 bytes"),
            tag: raw[16..].try_into().expect("16 bytes"),
        })
    }
}

/// The block encryption of one key: its AEAD key and its digest-sealing key, both
/// derived from the key file's secret, never the secret itself.
pub(crate) struct BlockKey {
    aead: LessSafeKey,
    /// HMAC keyed with the sealing key, cloned for each Feistel round: keying it
    /// anew would hash the key again in every round of every seal.
    sealing: Hmac<Sha256>,
    id: [u8; 16],
}

impl std::fmt::Debug for BlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockKey({})", hex::encode(self.id))
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

impl BlockKey {
    pub fn new(secret: &[u8; 32], key_id: &str) -> BlockKey {
        let aead_key = hmac(secret, &[b"ebsnap block encryption v1"]);
        let unbound = UnboundKey::new(&AES_256_GCM, &aead_key).expect("a 32-byte key");
        let mut id = [0u8; 16];
        hex::decode_to_slice(key_id, &mut id).expect("a key id is 16 bytes in hex");
        BlockKey {
            aead: LessSafeKey::new(unbound),
            sealing: Hmac::<Sha256>::new_from_slice(&hmac(secret, &[b"ebsnap digest sealing v1"]))
                .expect("any key length"),
            id,
        }
    }

    fn round(&self, round: u8, half: &[u8]) -> [u8; 16] {
        let mut mac = self.sealing.clone();
        mac.update(&[round]);
        mac.update(half);
        mac.finalize().into_bytes()[..16]
            .try_into()
            .expect("16 bytes")
    }

    /// The identity a block with SHA-256 `plain` is stored under with this key.
    pub fn seal_digest(&self, plain: &Digest) -> Digest {
        let (mut l, mut r) = split(plain);
        for i in 0..FEISTEL_ROUNDS {
            let f = self.round(i, &r);
            (l, r) = (r, xor(&l, &f));
        }
        join(&l, &r)
    }

    /// The SHA-256 of the block stored under identity `sealed`.
    pub fn unseal_digest(&self, sealed: &Digest) -> Digest {
        let (mut l, mut r) = split(sealed);
        for i in (0..FEISTEL_ROUNDS).rev() {
            let f = self.round(i, &l);
            (l, r) = (xor(&r, &f), l);
        }
        join(&l, &r)
    }

    /// What the ciphertext is bound to: the key, the identity and the slot. A block
    /// moved to another slot, or a map record pointed at another block's slot, fails.
    fn aad(&self, sealed: &Digest, at: Location) -> [u8; 71] {
        let mut aad = [0u8; 71];
        aad[..15].copy_from_slice(b"ebsnap block v1");
        aad[15..31].copy_from_slice(&self.id);
        aad[31..63].copy_from_slice(&sealed.0);
        aad[63..67].copy_from_slice(&at.pack.to_le_bytes());
        aad[67..].copy_from_slice(&at.slot.to_le_bytes());
        aad
    }

    /// Encrypts `buf` in place with a fresh random nonce.
    pub fn encrypt(&self, buf: &mut [u8], sealed: &Digest, at: Location) -> AeadEntry {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the system's random source");
        let aad = Aad::from(self.aad(sealed, at));
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), aad, buf)
            .expect("AES-GCM seals any block");
        let tag = tag.as_ref().try_into().expect("a 16-byte tag");
        AeadEntry { nonce, tag }
    }

    /// Decrypts `buf` in place; `false` if it fails its tag (damaged, moved, or not
    /// encrypted with this key), and then `buf` holds nothing of the block.
    #[must_use]
    pub fn decrypt(&self, buf: &mut [u8], sealed: &Digest, at: Location, e: &AeadEntry) -> bool {
        let nonce = Nonce::assume_unique_for_key(e.nonce);
        let aad = Aad::from(self.aad(sealed, at));
        let opened = self
            .aead
            .open_in_place_separate_tag(nonce, aad, &e.tag, buf)
            .is_ok();
        if !opened {
            buf.fill(0); // never hand on unauthenticated plaintext
        }
        opened
    }
}

fn split(d: &Digest) -> ([u8; 16], [u8; 16]) {
    let l = d.0[..16].try_into().expect("16 bytes");
    let r = d.0[16..].try_into().expect("16 bytes");
    (l, r)
}

fn join(l: &[u8; 16], r: &[u8; 16]) -> Digest {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(l);
    out[16..].copy_from_slice(r);
    Digest(out)
}

fn xor(a: &[u8; 16], b: &[u8; 16]) -> [u8; 16] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> BlockKey {
        let secret = [byte; 32];
        BlockKey::new(&secret, &super::super::keys::key_id(&secret))
    }

    #[test]
    fn sealed_digests_differ_per_key_and_unseal_back() {
        let plain = Digest::of(b"block");
        let (a, b) = (key(1), key(2));
        let sealed = a.seal_digest(&plain);
        assert_ne!(sealed, plain);
        assert_ne!(sealed, b.seal_digest(&plain));
        assert_eq!(a.seal_digest(&plain), sealed, "deterministic: dedup works");
        assert_eq!(a.unseal_digest(&sealed), plain);
    }

    #[test]
    fn a_block_opens_only_where_and_as_it_was_sealed() {
        let k = key(1);
        let plain = vec![7u8; 4096];
        let sealed = k.seal_digest(&Digest::of(&plain));
        let at = Location { pack: 1, slot: 3 };
        let mut buf = plain.clone();
        let entry = k.encrypt(&mut buf, &sealed, at);
        assert!(!buf.windows(64).any(|w| w == &plain[..64]));
        let tries = [
            (key(2), at, entry, buf.clone()),
            (key(1), Location { pack: 1, slot: 4 }, entry, buf.clone()),
            (key(1), at, entry, {
                let mut b = buf.clone();
                b[100] ^= 1;
                b
            }),
        ];
        for (k2, at2, e2, mut b2) in tries {
            assert!(!k2.decrypt(&mut b2, &sealed, at2, &e2));
            assert!(
                b2.iter().all(|&x| x == 0),
                "nothing unauthenticated is left"
            );
        }
        assert!(k.decrypt(&mut buf, &sealed, at, &entry));
        assert_eq!(buf, plain);
    }
}
