//! One authenticated, encrypted node-to-node connection: the Noise
//! `XXpsk3` handshake over TCP, then whole messages split into Noise frames.
//!
//! On the socket a frame is a 2-byte big-endian length and a Noise message
//! of at most 65,535 bytes (65,519 of plaintext). A message is a 4-byte
//! length and its bytes, spread over as many frames as it needs. The PSK
//! comes from the cluster secret, so a peer without it cannot finish the
//! handshake; the static keys are node identities, and the initiator checks
//! that the responder's key hashes to the node id it meant to reach.

use std::time::Duration;

use ouroboros_core::{Hash, NodeId};
use snow::params::NoiseParams;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const NOISE_PARAMS: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
/// The largest Noise message, ciphertext and tag.
const MAX_FRAME: usize = 65_535;
const TAG_LEN: usize = 16;
/// Plaintext bytes one frame carries at most.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;
/// The largest message either side accepts; a longer declared length is
/// refused before anything is allocated for it.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;
/// Sent by the responder as its first message: the handshake took, so the
/// initiator knows its PSK was accepted before it sends a request.
const ACCEPTED: &[u8] = b"ouroboros/1 accepted";

/// Why a connection could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake refused: {0}")]
    Handshake(snow::Error),
    #[error("peer closed the connection during the handshake (wrong cluster secret?)")]
    HandshakeClosed,
    #[error("peer is node {actual:?}, not the node {expected:?} that was dialled")]
    WrongPeer { expected: NodeId, actual: NodeId },
    #[error("frame does not decrypt: {0}")]
    Frame(snow::Error),
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    #[error("peer closed the connection")]
    Closed,
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("no address is known for that node")]
    UnknownNode,
}

pub type NoiseResult<T> = Result<T, NoiseError>;

/// The keys a node brings to every handshake.
#[derive(Clone)]
pub struct NoiseKeys {
    /// This node's X25519 static secret; its public key names the node.
    pub static_secret: [u8; 32],
    /// Derived from the cluster secret.
    pub psk: [u8; 32],
}

/// The node id a static public key names.
pub fn node_id_of(public: &[u8]) -> NodeId // PA
{
    Hash::of(public)
}

fn params() -> NoiseParams // PA
{
    // A constant that parses; checked by the tests.
    match NOISE_PARAMS.parse() {
        Ok(params) => params,
        Err(error) => unreachable!("{NOISE_PARAMS} does not parse: {error}"),
    }
}

fn handshake_state(keys: &NoiseKeys, initiator: bool) -> NoiseResult<snow::HandshakeState> // PA
{
    let builder = snow::Builder::new(params())
        .local_private_key(&keys.static_secret)
        .and_then(|b| b.psk(3, &keys.psk))
        .map_err(NoiseError::Handshake)?;
    let state = if initiator { builder.build_initiator() } else { builder.build_responder() };
    state.map_err(NoiseError::Handshake)
}

/// An open connection after its handshake.
pub struct NoiseStream<S> {
    stream: S,
    state: snow::TransportState,
    peer: NodeId,
    frame: Vec<u8>,
}

async fn write_frame<S: AsyncWrite + Unpin>(stream: &mut S, frame: &[u8]) -> NoiseResult<()> // PA
{
    let len = u16::try_from(frame.len()).map_err(|_| NoiseError::TooLarge(frame.len()))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(frame).await?;
    Ok(())
}

/// Read one frame into `buf`; `Closed` on a clean end of stream before it.
async fn read_frame<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> NoiseResult<()> // PA
{
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(NoiseError::Closed),
        Err(error) => return Err(error.into()),
    }
    buf.resize(u16::from_be_bytes(len) as usize, 0);
    stream.read_exact(buf).await?;
    Ok(())
}

impl<S: AsyncRead + AsyncWrite + Unpin> NoiseStream<S> {
    /// Dial side: run the handshake and check the peer is `expected` (when
    /// the caller knows whom it dialled; a seed address names no node).
    pub async fn initiate(mut stream: S, keys: &NoiseKeys, expected: Option<NodeId>) -> NoiseResult<Self> // PA
    {
        let mut state = handshake_state(keys, true)?;
        let mut out = vec![0u8; MAX_FRAME];
        let mut frame = Vec::new();
        // -> e
        let len = state.write_message(&[], &mut out).map_err(NoiseError::Handshake)?;
        write_frame(&mut stream, &out[..len]).await?;
        // <- e, ee, s, es
        read_frame(&mut stream, &mut frame).await.map_err(closed_as_refused)?;
        state.read_message(&frame, &mut out).map_err(NoiseError::Handshake)?;
        // -> s, se, psk
        let len = state.write_message(&[], &mut out).map_err(NoiseError::Handshake)?;
        write_frame(&mut stream, &out[..len]).await?;
        let peer = remote_id(&state)?;
        if let Some(expected) = expected {
            if expected != peer {
                return Err(NoiseError::WrongPeer { expected, actual: peer });
            }
        }
        let state = state.into_transport_mode().map_err(NoiseError::Handshake)?;
        let mut connection = NoiseStream { stream, state, peer, frame };
        match connection.receive().await {
            Ok(message) if message == ACCEPTED => Ok(connection),
            Ok(_) => Err(NoiseError::HandshakeClosed),
            Err(NoiseError::Closed | NoiseError::Io(_)) => Err(NoiseError::HandshakeClosed),
            Err(error) => Err(error),
        }
    }

    /// Listen side: run the handshake; the peer is whoever holds the key it
    /// proved, as long as it also proved the cluster's PSK.
    pub async fn respond(mut stream: S, keys: &NoiseKeys) -> NoiseResult<Self> // PA
    {
        let mut state = handshake_state(keys, false)?;
        let mut out = vec![0u8; MAX_FRAME];
        let mut frame = Vec::new();
        read_frame(&mut stream, &mut frame).await?;
        state.read_message(&frame, &mut out).map_err(NoiseError::Handshake)?;
        let len = state.write_message(&[], &mut out).map_err(NoiseError::Handshake)?;
        write_frame(&mut stream, &out[..len]).await?;
        read_frame(&mut stream, &mut frame).await?;
        state.read_message(&frame, &mut out).map_err(NoiseError::Handshake)?;
        let peer = remote_id(&state)?;
        let state = state.into_transport_mode().map_err(NoiseError::Handshake)?;
        let mut connection = NoiseStream { stream, state, peer, frame };
        connection.send(ACCEPTED).await?;
        Ok(connection)
    }

    /// The node at the other end, proven by the handshake.
    pub fn peer(&self) -> NodeId // A
    {
        self.peer
    }

    /// Send one message, in as many frames as it takes.
    pub async fn send(&mut self, message: &[u8]) -> NoiseResult<()> // PA
    {
        if message.len() > MAX_MESSAGE {
            return Err(NoiseError::TooLarge(message.len()));
        }
        let length = (message.len() as u32).to_be_bytes();
        let mut out = vec![0u8; MAX_FRAME];
        let mut pending: &[u8] = message;
        let mut first = true;
        while first || !pending.is_empty() {
            let mut plain = Vec::with_capacity(MAX_FRAME_PLAINTEXT);
            if first {
                plain.extend_from_slice(&length);
                first = false;
            }
            let take = pending.len().min(MAX_FRAME_PLAINTEXT - plain.len());
            plain.extend_from_slice(&pending[..take]);
            pending = &pending[take..];
            let len = self.state.write_message(&plain, &mut out).map_err(NoiseError::Frame)?;
            write_frame(&mut self.stream, &out[..len]).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    /// Receive one whole message.
    pub async fn receive(&mut self) -> NoiseResult<Vec<u8>> // PA
    {
        let mut plain = vec![0u8; MAX_FRAME];
        let first = self.next_frame(&mut plain).await?;
        let Some(length) = plain.get(..4) else { return Err(NoiseError::Closed) };
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
        if length > MAX_MESSAGE {
            return Err(NoiseError::TooLarge(length));
        }
        // Grow as frames arrive: a declared length alone allocates nothing.
        let mut message = Vec::with_capacity(length.min(MAX_FRAME_PLAINTEXT));
        message.extend_from_slice(&plain[4..first]);
        while message.len() < length {
            let got = self.next_frame(&mut plain).await?;
            message.extend_from_slice(&plain[..got]);
        }
        if message.len() != length {
            return Err(NoiseError::Frame(snow::Error::Input));
        }
        Ok(message)
    }

    async fn next_frame(&mut self, plain: &mut [u8]) -> NoiseResult<usize> // PA
    {
        read_frame(&mut self.stream, &mut self.frame).await?;
        self.state.read_message(&self.frame, plain).map_err(NoiseError::Frame)
    }
}

fn remote_id(state: &snow::HandshakeState) -> NoiseResult<NodeId> // PA
{
    state.get_remote_static().map(node_id_of).ok_or(NoiseError::Handshake(snow::Error::Input))
}

fn closed_as_refused(error: NoiseError) -> NoiseError // A
{
    match error {
        NoiseError::Closed => NoiseError::HandshakeClosed,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8, psk: u8) -> NoiseKeys // A
    {
        NoiseKeys { static_secret: [seed; 32], psk: [psk; 32] }
    }

    fn public_id(keys: &NoiseKeys) -> NodeId // A
    {
        let secret = x25519_dalek::StaticSecret::from(keys.static_secret);
        node_id_of(x25519_dalek::PublicKey::from(&secret).as_bytes())
    }

    #[tokio::test]
    async fn messages_of_every_size_cross_and_peers_are_proven() // A
    {
        let (a, b) = tokio::io::duplex(1 << 20);
        let (client_keys, server_keys) = (keys(1, 9), keys(2, 9));
        let server_id = public_id(&server_keys);
        let server = tokio::spawn(async move {
            let mut connection = NoiseStream::respond(b, &server_keys).await?;
            let peer = connection.peer();
            while let Ok(message) = connection.receive().await {
                connection.send(&message).await?;
            }
            Ok::<_, NoiseError>(peer)
        });
        let mut client = NoiseStream::initiate(a, &client_keys, Some(server_id)).await.expect("handshake");
        for size in [0, 1, MAX_FRAME_PLAINTEXT - 4, MAX_FRAME_PLAINTEXT - 3, MAX_FRAME_PLAINTEXT, 3 * MAX_FRAME + 7] {
            let message: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            client.send(&message).await.expect("send");
            assert_eq!(client.receive().await.expect("echo"), message, "{size}-byte message");
        }
        drop(client);
        let seen = server.await.expect("join").expect("server");
        assert_eq!(seen, public_id(&client_keys));
    }

    #[tokio::test]
    async fn a_wrong_psk_finishes_no_handshake_on_either_side() // A
    {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { NoiseStream::respond(b, &keys(2, 9)).await.map(|c| c.peer()) });
        let client = NoiseStream::initiate(a, &keys(1, 8), None).await;
        assert!(matches!(client, Err(NoiseError::HandshakeClosed)), "client: {:?}", client.err());
        assert!(matches!(server.await.expect("join"), Err(NoiseError::Handshake(_))));
    }

    #[tokio::test]
    async fn the_dialled_node_must_be_the_one_that_answers() // A
    {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move { NoiseStream::respond(b, &keys(2, 9)).await.map(|c| c.peer()) });
        let impostor = Hash::of(b"someone else");
        let client = NoiseStream::initiate(a, &keys(1, 9), Some(impostor)).await;
        assert!(matches!(client, Err(NoiseError::WrongPeer { .. })), "{:?}", client.err());
    }

    #[tokio::test]
    async fn garbage_and_oversized_declarations_are_errors_not_panics() // A
    {
        // Garbage instead of a handshake.
        let (mut a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move { NoiseStream::respond(b, &keys(2, 9)).await.map(|c| c.peer()) });
        a.write_all(&[0, 5, 1, 2, 3, 4, 5, 0xff, 0xff]).await.expect("write");
        drop(a);
        assert!(server.await.expect("join").is_err());

        // A proper session whose peer then declares a 4 GiB message.
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = tokio::spawn(async move {
            let mut connection = NoiseStream::respond(b, &keys(2, 9)).await?;
            connection.receive().await
        });
        let mut client = NoiseStream::initiate(a, &keys(1, 9), None).await.expect("handshake");
        let mut out = vec![0u8; MAX_FRAME];
        let len = client.state.write_message(&u32::MAX.to_be_bytes(), &mut out).expect("encrypt");
        write_frame(&mut client.stream, &out[..len]).await.expect("write");
        assert!(matches!(server.await.expect("join"), Err(NoiseError::TooLarge(_))));
    }
}
