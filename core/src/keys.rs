//! Key material: the cluster secret and what derives from it (the dedup key),
//! the cluster's X25519 data key pair, and the key encapsulation that wraps a
//! chunk's data key for each recipient.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rand::{CryptoRng, RngCore};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::hash::Hash;
use crate::model::{KeyIndex, SealedSecret, SliceSeal, WrappedKey};

const DEDUP_KEY_CONTEXT: &str = "ouroboros 2026-11 chunk dedup key v1";
const KEY_WRAP_CONTEXT: &str = "ouroboros 2026-11 data key wrap v1";
const GOSSIP_KEY_CONTEXT: &str = "ouroboros 2026-11 gossip packet key v1";
const TRANSPORT_PSK_CONTEXT: &str = "ouroboros 2026-11 node transport psk v1";

/// The shared secret of a cluster: authenticates members and derives the
/// dedup key. Never leaves the cluster.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct ClusterSecret([u8; 32]);

impl ClusterSecret {
    pub fn generate() -> Self // PA
    {
        let mut bytes = [0u8; 32];
        fill_secret(&mut bytes, rand::rngs::OsRng);
        ClusterSecret(bytes)
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self // PA
    {
        ClusterSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] // PA
    {
        &self.0
    }

    /// The key for chunk ids: equal content dedups inside this cluster, but an
    /// outsider cannot test whether a known file is stored.
    pub fn dedup_key(&self) -> [u8; 32] // PA
    {
        blake3::derive_key(DEDUP_KEY_CONTEXT, &self.0)
    }

    /// The key that seals every gossip packet (ChaCha20-Poly1305): a packet
    /// from outside the cluster does not open and is never parsed.
    pub fn gossip_key(&self) -> [u8; 32] // PA
    {
        blake3::derive_key(GOSSIP_KEY_CONTEXT, &self.0)
    }

    /// The pre-shared key of every Noise handshake between nodes: a peer
    /// without the secret cannot finish one.
    pub fn transport_psk(&self) -> [u8; 32] // PA
    {
        blake3::derive_key(TRANSPORT_PSK_CONTEXT, &self.0)
    }
}

/// ChaCha20-Poly1305 (RFC 8439) with one key. The implementation is ring's,
/// whose assembly runs about 1.65× the portable RustCrypto crate on this
/// project's machines (1.8 against 1.1 GB/s); the format is the same.
pub struct Cipher(LessSafeKey);

/// Bytes the Poly1305 tag adds to every sealed message.
pub const TAG_LEN: usize = 16;

/// The AEAD refused: a tag that does not verify, or a message too long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AeadError;

impl Cipher {
    pub fn new(key: &[u8; 32]) -> Self // PA
    {
        // ring refuses only keys of the wrong length; ours are 32 bytes by type.
        match UnboundKey::new(&CHACHA20_POLY1305, key) {
            Ok(key) => Cipher(LessSafeKey::new(key)),
            Err(_) => unreachable!("ChaCha20-Poly1305 takes any 32-byte key"),
        }
    }

    /// Encrypt `buf` in place and append the tag. Each (key, nonce) pair must
    /// be used once.
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), AeadError> // PA
    {
        self.0.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf).map_err(|_| AeadError)
    }

    /// Verify and decrypt `buf` (ciphertext then tag) in place; on success
    /// `buf` holds the plaintext only.
    pub fn open(&self, nonce: [u8; 12], aad: &[u8], buf: &mut Vec<u8>) -> Result<(), AeadError> // PA
    {
        let plain_len = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(aad), buf)
            .map_err(|_| AeadError)?
            .len();
        buf.truncate(plain_len);
        Ok(())
    }

    /// Verify and decrypt `buf` in place against a tag kept apart from it.
    pub fn open_detached(&self, seal: &SliceSeal, aad: &[u8], buf: &mut [u8]) -> Result<(), AeadError> // PA
    {
        let (nonce, tag) = (Nonce::assume_unique_for_key(seal.nonce), Tag::from(seal.tag));
        self.0.open_in_place_separate_tag(nonce, Aad::from(aad), tag, buf, 0..).map(|_| ()).map_err(|_| AeadError)
    }
}

/// A per-chunk symmetric key that encrypts the chunk's slices.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey(pub(crate) [u8; 32]);

impl DataKey {
    pub fn generate() -> Self // PA
    {
        let mut bytes = [0u8; 32];
        fill_secret(&mut bytes, rand::thread_rng());
        DataKey(bytes)
    }

    pub(crate) fn cipher(&self) -> Cipher // PA
    {
        Cipher::new(&self.0)
    }
}

/// The X25519 key pair whose public half receives every chunk's data key.
/// Clones share its cache of key-encryption keys.
#[derive(Clone)]
pub struct DataKeyPair {
    secret: StaticSecret,
    public: PublicKey,
    /// Key-encryption keys by sender ephemeral key: a sender wraps many
    /// chunks under one ephemeral key, and one X25519 agreement serves them.
    keks: Arc<Mutex<VecDeque<Kek>>>,
}

/// A key-encryption key and the sender ephemeral key (or, for a sender, the
/// recipient key) it was agreed with.
type Kek = ([u8; 32], Zeroizing<[u8; 32]>);

/// Sender ephemeral keys whose key-encryption keys a pair keeps.
const CACHED_KEKS: usize = 64;

impl DataKeyPair {
    pub fn generate() -> Self // PA
    {
        Self::from_secret_bytes(random_static_secret().to_bytes())
    }

    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self // PA
    {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        DataKeyPair { secret, public, keks: Arc::default() }
    }

    /// The key-encryption key agreed with a sender's ephemeral key.
    fn kek_from(&self, ephemeral: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, UnwrapError> // PA
    {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*ephemeral));
        if !shared.was_contributory() {
            return Err(UnwrapError::Degenerate(self.recipient_id()));
        }
        Ok(derive_kek(shared.as_bytes(), ephemeral, self.public.as_bytes()))
    }

    /// `kek_from`, remembered for the last `CACHED_KEKS` sender keys.
    fn cached_kek_from(&self, ephemeral: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, UnwrapError> // PA
    {
        let cached =
            |keks: &VecDeque<Kek>| keks.iter().find(|(sender, _)| sender == ephemeral).map(|(_, kek)| kek.clone());
        if let Some(kek) = cached(&self.keks.lock().unwrap_or_else(PoisonError::into_inner)) {
            return Ok(kek);
        }
        let kek = self.kek_from(ephemeral)?;
        let mut keks = self.keks.lock().unwrap_or_else(PoisonError::into_inner);
        if cached(&keks).is_none() {
            if keks.len() == CACHED_KEKS {
                keks.pop_front();
            }
            keks.push_back((*ephemeral, kek.clone()));
        }
        Ok(kek)
    }

    pub fn secret_bytes(&self) -> [u8; 32] // PA
    {
        self.secret.to_bytes()
    }

    pub fn public(&self) -> PublicKey // PA
    {
        self.public
    }

    /// The id a key index uses for this pair's public key.
    pub fn recipient_id(&self) -> Hash // PA
    {
        recipient_id(&self.public)
    }
}

/// What this node needs to seal and open chunks.
#[derive(Clone)]
pub struct NodeKeys {
    /// Keys chunk ids (derived from the cluster secret).
    pub dedup_key: [u8; 32],
    /// Opens chunks on read.
    pub data_pair: DataKeyPair,
    /// Every chunk's data key is wrapped for each of these.
    pub recipients: Vec<PublicKey>,
}

pub fn recipient_id(public: &PublicKey) -> Hash // PA
{
    Hash::of(public.as_bytes())
}

/// The AEAD refused to wrap a data key (never expected for 32-byte keys).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a chunk data key could not be wrapped")]
pub struct WrapError;

/// Why a wrapped data key could not be recovered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnwrapError {
    #[error("no wrapped key for recipient {0}")]
    NoKeyForRecipient(Hash),
    #[error("wrapped key for recipient {0} failed authentication")]
    Authentication(Hash),
    #[error("wrapped key for recipient {0} has a degenerate ephemeral key")]
    Degenerate(Hash),
}

fn derive_kek(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> Zeroizing<[u8; 32]> // PA
{
    let mut material = Zeroizing::new([0u8; 96]);
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(ephemeral);
    material[64..].copy_from_slice(recipient);
    Zeroizing::new(blake3::derive_key(KEY_WRAP_CONTEXT, &material[..]))
}

/// A wrapped key as first written: one fresh ephemeral key per wrap, so the
/// key-encryption key was used once and the nonce is zero.
const WRAPPED_ONCE_LEN: usize = 32 + TAG_LEN;
/// A wrapped key under a shared sender key: a random nonce, then the sealed key.
const WRAPPED_WITH_NONCE_LEN: usize = NONCE_LEN + 32 + TAG_LEN;
const NONCE_LEN: usize = 12;

/// A sender draws a fresh ephemeral key after this many wraps or this long,
/// whichever comes first. With random 96-bit nonces a key-encryption key
/// could take 2^32 wraps; the limits keep an ephemeral secret short-lived.
const SENDER_KEY_WRAPS: u32 = 1 << 16;
const SENDER_KEY_LIFETIME: Duration = Duration::from_secs(60);

/// This process's current ephemeral key and the key-encryption keys it has
/// agreed with each recipient. Sharing one ephemeral key over many chunks
/// saves two X25519 operations per chunk when sealing and, through
/// `DataKeyPair`'s cache, one when opening.
struct SenderKey {
    secret: StaticSecret,
    public: PublicKey,
    keks: Vec<Kek>,
    wraps: u32,
    born: Instant,
}

static SENDER_KEY: Mutex<Option<SenderKey>> = Mutex::new(None);

#[cfg(feature = "simulation")]
thread_local! {
    /// A simulation's sender key: its own, so that another run in the same
    /// process does not change when it is replaced.
    static SIMULATED_SENDER_KEY: std::cell::RefCell<Option<SenderKey>> = const { std::cell::RefCell::new(None) };
}

/// Start a simulation's run with no sender key (`simulation::enter`).
#[cfg(feature = "simulation")]
pub(crate) fn forget_simulated_sender_key() // PA
{
    SIMULATED_SENDER_KEY.with(|slot| *slot.borrow_mut() = None);
}

/// Fill `bytes` with secret randomness from `rng`; in a simulation, from its
/// seed (`simulation`), so that a run replays.
fn fill_secret(bytes: &mut [u8], mut rng: impl RngCore + CryptoRng) // PA
{
    #[cfg(feature = "simulation")]
    if crate::simulation::fill_secret(bytes) {
        return;
    }
    rng.fill_bytes(bytes);
}

/// A new X25519 secret from the operating system's randomness (in a
/// simulation, from its seed).
fn random_static_secret() -> StaticSecret // PA
{
    let mut bytes = Zeroizing::new([0u8; 32]);
    fill_secret(bytes.as_mut_slice(), rand::rngs::OsRng);
    StaticSecret::from(*bytes)
}

/// The current sender ephemeral key and its key-encryption key for `recipient`.
fn sender_kek(recipient: &PublicKey) -> Result<([u8; 32], Zeroizing<[u8; 32]>), WrapError> // PA
{
    #[cfg(feature = "simulation")]
    if crate::simulation::active() {
        return SIMULATED_SENDER_KEY.with(|slot| kek_from(&mut slot.borrow_mut(), recipient));
    }
    kek_from(&mut SENDER_KEY.lock().unwrap_or_else(PoisonError::into_inner), recipient)
}

/// The key-encryption key for `recipient` under the sender key in `slot`,
/// which is replaced first when it has had its wraps or its time.
fn kek_from(slot: &mut Option<SenderKey>, recipient: &PublicKey) -> Result<([u8; 32], Zeroizing<[u8; 32]>), WrapError> // PA
{
    // A simulation's clock is its own: only the wraps count there.
    let young = |sender: &SenderKey| sender.born.elapsed() < SENDER_KEY_LIFETIME || crate::compute::deterministic();
    let sender = match slot {
        Some(sender) if sender.wraps < SENDER_KEY_WRAPS && young(sender) => sender,
        stale => {
            let secret = random_static_secret();
            let public = PublicKey::from(&secret);
            stale.insert(SenderKey { secret, public, keks: Vec::new(), wraps: 0, born: Instant::now() })
        }
    };
    sender.wraps += 1;
    let ephemeral = *sender.public.as_bytes();
    if let Some((_, kek)) = sender.keks.iter().find(|(to, _)| to == recipient.as_bytes()) {
        return Ok((ephemeral, kek.clone()));
    }
    let shared = sender.secret.diffie_hellman(recipient);
    // A low-order recipient key would make the shared secret public.
    if !shared.was_contributory() {
        return Err(WrapError);
    }
    let kek = derive_kek(shared.as_bytes(), &ephemeral, recipient.as_bytes());
    sender.keks.push((*recipient.as_bytes(), kek.clone()));
    Ok((ephemeral, kek))
}

/// Wrap `data_key` once for each recipient, under this process's current
/// ephemeral key with a random nonce; the chunk id is the associated data.
pub fn wrap_data_key(data_key: &DataKey, chunk_id: &Hash, recipients: &[PublicKey]) -> Result<KeyIndex, WrapError> // PA
{
    let wrapped: Result<Vec<_>, WrapError> = recipients
        .iter()
        .map(|recipient| {
            let (ephemeral, kek) = sender_kek(recipient)?;
            let mut nonce = [0u8; NONCE_LEN];
            fill_secret(&mut nonce, rand::thread_rng());
            // Room for the tag up front: growing the vector would leave a
            // copy of the plaintext key behind in freed memory.
            let mut sealed = Zeroizing::new(Vec::with_capacity(WRAPPED_ONCE_LEN));
            sealed.extend_from_slice(&data_key.0);
            Cipher::new(&kek).seal(nonce, chunk_id.as_bytes(), &mut sealed).map_err(|_| WrapError)?;
            let sealed_key = [&nonce[..], &sealed[..]].concat();
            Ok(WrappedKey { recipient: recipient_id(recipient), ephemeral, sealed_key })
        })
        .collect();
    Ok(KeyIndex(wrapped?))
}

/// Recover the data key from the key index with this node's key pair. Reads
/// both wrapping forms: the first (one ephemeral key per wrap, zero nonce)
/// and the current (shared ephemeral key, nonce first).
pub fn unwrap_data_key(index: &KeyIndex, chunk_id: &Hash, pair: &DataKeyPair) -> Result<DataKey, UnwrapError> // PA
{
    let me = pair.recipient_id();
    let wrapped = index.0.iter().find(|w| w.recipient == me).ok_or(UnwrapError::NoKeyForRecipient(me))?;
    let (kek, nonce, sealed) = match wrapped.sealed_key.len() {
        WRAPPED_ONCE_LEN => (pair.kek_from(&wrapped.ephemeral)?, [0; NONCE_LEN], &wrapped.sealed_key[..]),
        WRAPPED_WITH_NONCE_LEN => {
            let (nonce, sealed) = wrapped.sealed_key.split_at(NONCE_LEN);
            let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| UnwrapError::Authentication(me))?;
            (pair.cached_kek_from(&wrapped.ephemeral)?, nonce, sealed)
        }
        _ => return Err(UnwrapError::Authentication(me)),
    };
    let mut plain = sealed.to_vec();
    Cipher::new(&kek).open(nonce, chunk_id.as_bytes(), &mut plain).map_err(|_| UnwrapError::Authentication(me))?;
    let key = <[u8; 32]>::try_from(plain.as_slice()).map_err(|_| UnwrapError::Authentication(me));
    plain.zeroize();
    key.map(DataKey)
}

/// Seal a small secret (an access key's) to `recipients`: a fresh data key
/// encrypts it, bound to `context`, and is wrapped as a chunk's is.
pub fn seal_secret(plain: &[u8], context: &Hash, recipients: &[PublicKey]) -> Result<SealedSecret, WrapError> // PA
{
    let data_key = DataKey::generate();
    let keys = wrap_data_key(&data_key, context, recipients)?;
    let mut nonce = [0u8; NONCE_LEN];
    fill_secret(&mut nonce, rand::rngs::OsRng);
    let mut ciphertext = Vec::with_capacity(plain.len() + TAG_LEN);
    ciphertext.extend_from_slice(plain);
    data_key.cipher().seal(nonce, context.as_bytes(), &mut ciphertext).map_err(|_| WrapError)?;
    Ok(SealedSecret { keys, nonce, ciphertext })
}

/// A secret opened, wiped from memory when dropped.
pub type OpenedSecret = Result<Zeroizing<Vec<u8>>, UnwrapError>;

/// Open a secret sealed by `seal_secret` for the same `context`.
pub fn open_secret(sealed: &SealedSecret, context: &Hash, pair: &DataKeyPair) -> OpenedSecret // PA
{
    let data_key = unwrap_data_key(&sealed.keys, context, pair)?;
    let mut plain = Zeroizing::new(sealed.ciphertext.clone());
    data_key
        .cipher()
        .open(sealed.nonce, context.as_bytes(), &mut plain)
        .map_err(|_| UnwrapError::Authentication(pair.recipient_id()))?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_recipient_unwraps_and_strangers_cannot() // A
    {
        let alice = DataKeyPair::generate();
        let bob = DataKeyPair::generate();
        let eve = DataKeyPair::generate();
        let chunk = Hash::of(b"chunk");
        let key = DataKey::generate();
        let index = wrap_data_key(&key, &chunk, &[alice.public(), bob.public()]).unwrap();
        assert_eq!(unwrap_data_key(&index, &chunk, &alice).unwrap().0, key.0);
        assert_eq!(unwrap_data_key(&index, &chunk, &bob).unwrap().0, key.0);
        assert_eq!(
            unwrap_data_key(&index, &chunk, &eve).err(),
            Some(UnwrapError::NoKeyForRecipient(eve.recipient_id()))
        );
        // Bound to its chunk: replaying the wrapped key for another chunk fails.
        assert!(matches!(unwrap_data_key(&index, &Hash::of(b"other"), &alice), Err(UnwrapError::Authentication(_))));
    }

    #[test]
    fn keys_wrapped_one_ephemeral_per_wrap_still_unwrap() // A
    {
        // The first form: a fresh ephemeral key per wrap and a zero nonce.
        let alice = DataKeyPair::generate();
        let chunk = Hash::of(b"written by an older build");
        let key = DataKey::generate();
        let ephemeral_secret = StaticSecret::random_from_rng(rand::rngs::OsRng);
        let ephemeral = *PublicKey::from(&ephemeral_secret).as_bytes();
        let shared = ephemeral_secret.diffie_hellman(&alice.public());
        let kek = derive_kek(shared.as_bytes(), &ephemeral, alice.public().as_bytes());
        let mut sealed_key = key.0.to_vec();
        Cipher::new(&kek).seal([0; 12], chunk.as_bytes(), &mut sealed_key).unwrap();
        assert_eq!(sealed_key.len(), WRAPPED_ONCE_LEN);
        let index = KeyIndex(vec![WrappedKey { recipient: alice.recipient_id(), ephemeral, sealed_key }]);
        assert_eq!(unwrap_data_key(&index, &chunk, &alice).unwrap().0, key.0);
        assert!(matches!(unwrap_data_key(&index, &Hash::of(b"other"), &alice), Err(UnwrapError::Authentication(_))));
    }

    #[test]
    fn a_shared_sender_key_never_repeats_a_nonce() // A
    {
        let alice = DataKeyPair::generate();
        let chunk = Hash::of(b"sealed twice");
        let (first, second) = (DataKey::generate(), DataKey::generate());
        let a = wrap_data_key(&first, &chunk, &[alice.public()]).unwrap();
        let b = wrap_data_key(&second, &chunk, &[alice.public()]).unwrap();
        // Same chunk, usually the same ephemeral key: the nonces still differ.
        assert_ne!(a.0[0].sealed_key[..NONCE_LEN], b.0[0].sealed_key[..NONCE_LEN]);
        assert_eq!(unwrap_data_key(&a, &chunk, &alice).unwrap().0, first.0);
        assert_eq!(unwrap_data_key(&b, &chunk, &alice).unwrap().0, second.0);
        // A nonce changed in storage fails authentication, cached key or not.
        let mut tampered = a.clone();
        tampered.0[0].sealed_key[0] ^= 1;
        assert!(matches!(unwrap_data_key(&tampered, &chunk, &alice), Err(UnwrapError::Authentication(_))));
    }

    #[test]
    fn tampered_wrapped_key_is_refused() // A
    {
        let alice = DataKeyPair::generate();
        let chunk = Hash::of(b"chunk");
        let mut index = wrap_data_key(&DataKey::generate(), &chunk, &[alice.public()]).unwrap();
        index.0[0].sealed_key[3] ^= 1;
        assert!(matches!(unwrap_data_key(&index, &chunk, &alice), Err(UnwrapError::Authentication(_))));
        index.0[0].sealed_key.truncate(5);
        assert!(matches!(unwrap_data_key(&index, &chunk, &alice), Err(UnwrapError::Authentication(_))));
    }

    #[test]
    fn a_sealed_secret_opens_only_with_the_data_key_and_its_context() // PA
    {
        let pair = DataKeyPair::generate();
        let context = Hash::of(b"OBKEYID");
        let sealed = seal_secret(b"the secret", &context, &[pair.public()]).unwrap();
        assert!(!sealed.ciphertext.windows(10).any(|w| w == b"the secret"));
        assert_eq!(&open_secret(&sealed, &context, &pair).unwrap()[..], b"the secret");
        assert!(open_secret(&sealed, &Hash::of(b"another id"), &pair).is_err(), "bound to its context");
        assert!(open_secret(&sealed, &context, &DataKeyPair::generate()).is_err(), "only the data key opens it");
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert!(open_secret(&tampered, &context, &pair).is_err());
    }
}
