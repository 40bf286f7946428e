//! SWIM gossip over UDP with foca. Every packet is sealed with
//! ChaCha20-Poly1305 under a key derived from the cluster secret, as Serf
//! and memberlist do with their keyring: a packet that does not open is
//! dropped and counted, never parsed. One task owns foca and feeds it
//! packets, commands and timers; timers wait in one ordered queue, so they
//! reach foca in the order they fall due (foca issue #26).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use foca_rand::rngs::SmallRng;
use foca_rand::SeedableRng;
use ouroboros_core::keys::Cipher;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::members::{Liveness, Members, Peer};

const PACKET_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;
const OVERHEAD: usize = 1 + NONCE_LEN + ouroboros_core::keys::TAG_LEN;
/// The largest sealed packet; under a typical 1500-byte MTU.
const MAX_PACKET: usize = 1400;
const AAD: &[u8] = b"ouroboros gossip";

/// SWIM's clocks. The defaults are memberlist's LAN settings; tests
/// shorten them.
#[derive(Debug, Clone, Copy)]
pub struct GossipTiming {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    /// How long a suspected node has to refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// How often a node announces again to the seeds it does not see alive.
    pub rejoin_every: Duration,
}

impl Default for GossipTiming {
    fn default() -> Self // A
    {
        GossipTiming {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            suspect_to_down_after: Duration::from_secs(5),
            rejoin_every: Duration::from_secs(5),
        }
    }
}

/// Where a node announces itself, and how fast gossip runs.
pub struct Seeds {
    /// `HOST:PORT` of any members, resolved at each announce.
    pub seeds: Vec<String>,
    pub timing: GossipTiming,
}

/// Counts of what gossip refused, for status and tests.
#[derive(Debug, Default)]
pub struct GossipCounters {
    /// Packets that did not open with the cluster key.
    pub refused_packets: AtomicU64,
    /// Packets that opened but foca could not use.
    pub rejected_packets: AtomicU64,
}

enum Command {
    Leave(oneshot::Sender<()>),
}

/// The running gossip task.
pub struct Gossip {
    commands: mpsc::Sender<Command>,
    pub counters: Arc<GossipCounters>,
    task: tokio::task::JoinHandle<()>,
}

/// Seal a packet for the wire: version, random nonce, ciphertext and tag.
pub fn seal_packet(cipher: &Cipher, plain: &[u8]) -> Option<Vec<u8>> // PA
{
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut body = plain.to_vec();
    cipher.seal(nonce, &aad(), &mut body).ok()?;
    let mut packet = Vec::with_capacity(OVERHEAD + plain.len());
    packet.push(PACKET_VERSION);
    packet.extend_from_slice(&nonce);
    packet.extend_from_slice(&body);
    Some(packet)
}

/// Open a packet from the wire; `None` for anything not sealed by a member.
pub fn open_packet(cipher: &Cipher, packet: &[u8]) -> Option<Vec<u8>> // PA
{
    let (&version, rest) = packet.split_first()?;
    if version != PACKET_VERSION || rest.len() < NONCE_LEN + ouroboros_core::keys::TAG_LEN {
        return None;
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let mut nonce_bytes = [0u8; NONCE_LEN];
    nonce_bytes.copy_from_slice(nonce);
    let mut body = sealed.to_vec();
    cipher.open(nonce_bytes, &aad(), &mut body).ok()?;
    Some(body)
}

fn aad() -> [u8; AAD.len() + 1] // PA
{
    let mut aad = [0u8; AAD.len() + 1];
    aad[..AAD.len()].copy_from_slice(AAD);
    aad[AAD.len()] = PACKET_VERSION;
    aad
}

fn foca_config(timing: &GossipTiming) -> foca::Config // PA
{
    let mut config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(7));
    config.probe_period = timing.probe_period;
    config.probe_rtt = timing.probe_rtt;
    config.suspect_to_down_after = timing.suspect_to_down_after;
    config.max_packet_size = std::num::NonZeroUsize::MIN.saturating_add(MAX_PACKET - OVERHEAD - 1);
    config.notify_down_members = true;
    config
}

/// Seed addresses as written (host names resolve at each announce, so a
/// container that comes back on a new address is still found).
async fn resolve(seeds: &[String]) -> Vec<SocketAddr> // A
{
    let mut out = Vec::new();
    for seed in seeds {
        match tokio::net::lookup_host(seed.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(error) => tracing::debug!(seed, %error, "seed does not resolve yet"),
        }
    }
    out
}

impl Gossip {
    /// Start gossip on `socket` as the table's local node, announcing to
    /// the seeds.
    pub fn start(socket: UdpSocket, members: Arc<Members>, cipher: Cipher, seeds: Seeds) -> Gossip // PA
    {
        let Seeds { seeds, timing } = seeds;
        let local = members.local().clone();
        let (commands, receiver) = mpsc::channel(8);
        let counters = Arc::new(GossipCounters::default());
        let rng = SmallRng::seed_from_u64(rand::random());
        let foca = Foca::new(local, foca_config(&timing), rng, PostcardCodec);
        let task = GossipTask {
            foca,
            runtime: AccumulatingRuntime::new(),
            socket: Arc::new(socket),
            cipher,
            members,
            seeds,
            timing,
            timers: BTreeMap::new(),
            timer_seq: 0,
            counters: counters.clone(),
            leaving: false,
        };
        let task = tokio::spawn(task.run(receiver));
        Gossip { commands, counters, task }
    }

    /// Tell the cluster this node is leaving, so it is marked down at once
    /// instead of after the suspicion timeout.
    pub async fn leave(&self) // A
    {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
    }
}

impl Drop for Gossip {
    fn drop(&mut self) // A
    {
        self.task.abort();
    }
}

type PeerFoca = Foca<Peer, PostcardCodec, SmallRng, foca::NoCustomBroadcast>;

struct GossipTask {
    foca: PeerFoca,
    runtime: AccumulatingRuntime<Peer>,
    socket: Arc<UdpSocket>,
    cipher: Cipher,
    members: Arc<Members>,
    seeds: Vec<String>,
    timing: GossipTiming,
    /// Due time and arrival order: equal deadlines keep their order.
    timers: BTreeMap<(Instant, u64), Timer<Peer>>,
    timer_seq: u64,
    counters: Arc<GossipCounters>,
    /// Set once this node says goodbye: being marked down is then expected.
    leaving: bool,
}

impl GossipTask {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) // PA
    {
        let mut buf = vec![0u8; 64 * 1024];
        let mut rejoin = tokio::time::interval(self.timing.rejoin_every);
        rejoin.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_timer = self.timers.keys().next().map(|(at, _)| *at);
            let timer_due = async {
                match next_timer {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.receive(&buf[..len], from),
                    Err(error) => tracing::debug!(%error, "gossip socket receive failed"),
                },
                () = timer_due => {
                    let now = Instant::now();
                    while let Some(entry) = self.timers.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let timer = entry.remove();
                        if let Err(error) = self.foca.handle_timer(timer, &mut self.runtime) {
                            tracing::debug!(%error, "gossip timer");
                        }
                    }
                }
                _ = rejoin.tick() => self.announce_to_the_unseen().await,
                command = commands.recv() => match command {
                    Some(Command::Leave(done)) => {
                        self.leaving = true;
                        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
                            tracing::debug!(%error, "gossip leave");
                        }
                        self.drain().await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
            }
            self.drain().await;
        }
    }

    /// Announce again to every seed not seen alive, and, when nobody is
    /// alive but us, to every member known from before a restart (foca
    /// #15). Nodes that started while a shared seed was not up yet, and so
    /// found only each other, thereby merge with the seed's group once it
    /// is up, and a node started without --join finds its cluster too.
    async fn announce_to_the_unseen(&mut self) // PA
    {
        let mut targets = resolve(&self.seeds).await;
        let seen: Vec<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.state() != foca::State::Down)
            .map(|member| member.id().addr)
            .collect();
        targets.retain(|addr| !seen.contains(addr));
        if self.foca.num_members() == 0 {
            targets.extend(self.members.snapshot().into_iter().map(|m| m.peer.addr));
        }
        targets.sort();
        targets.dedup();
        let local = self.foca.identity().addr;
        for addr in targets.into_iter().filter(|a| *a != local && !a.ip().is_unspecified()) {
            let _ = self.foca.announce(Peer::seed(addr), &mut self.runtime);
        }
    }

    fn receive(&mut self, packet: &[u8], from: SocketAddr) // PA
    {
        let Some(plain) = open_packet(&self.cipher, packet) else {
            self.counters.refused_packets.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, len = packet.len(), "gossip packet refused: not sealed with the cluster key");
            return;
        };
        if let Err(error) = self.foca.handle_data(&plain, &mut self.runtime) {
            self.counters.rejected_packets.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, %error, "gossip packet rejected");
        }
    }

    /// Send what foca queued, schedule its timers, and bring the member
    /// table up to date.
    async fn drain(&mut self) // PA
    {
        while let Some((to, data)) = self.runtime.to_send() {
            if let Some(packet) = seal_packet(&self.cipher, &data) {
                if let Err(error) = self.socket.send_to(&packet, to.addr).await {
                    tracing::debug!(to = ?to, %error, "gossip send failed");
                }
            }
        }
        let now = Instant::now();
        while let Some((delay, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + delay, self.timer_seq), timer);
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(peer) => {
                    tracing::info!(node = ?peer, "member up");
                }
                OwnedNotification::MemberDown(peer) => {
                    tracing::warn!(node = ?peer, "member down");
                }
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(old = ?old, new = ?new, "member restarted");
                }
                OwnedNotification::Idle => tracing::warn!("no other member is alive"),
                OwnedNotification::Defunct if self.leaving => {}
                OwnedNotification::Defunct => {
                    // Declared down by the others: come back as a new generation.
                    tracing::warn!("this node was declared down; rejoining");
                    let _ = self.foca.reuse_down_identity();
                }
                _ => {}
            }
        }
        // Suspicion raises no notification: read every member's state.
        self.refresh_members();
    }

    fn refresh_members(&self) // PA
    {
        for member in self.foca.iter_membership_state() {
            let liveness = match member.state() {
                foca::State::Alive => Liveness::Alive,
                foca::State::Suspect => Liveness::Suspect,
                foca::State::Down => Liveness::Down,
            };
            self.members.observe(member.id(), liveness);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_open_only_under_the_key_they_were_sealed_with() // A
    {
        let ours = Cipher::new(&[1; 32]);
        let theirs = Cipher::new(&[2; 32]);
        let packet = seal_packet(&ours, b"ping").expect("seal");
        assert_eq!(open_packet(&ours, &packet).as_deref(), Some(&b"ping"[..]));
        assert_eq!(open_packet(&theirs, &packet), None);
        let mut flipped = packet.clone();
        flipped[20] ^= 1;
        assert_eq!(open_packet(&ours, &flipped), None);
        for garbage in [&[][..], &[1][..], &[1; 28][..], &[2; 100][..]] {
            assert_eq!(open_packet(&ours, garbage), None);
        }
    }
}
