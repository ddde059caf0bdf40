//! The rate accounting, on a simulated clock: clients of a link with the field's
//! latency take their turns from the buckets at the times the simulation says, so the
//! figures are exact and the tests take no real time.

use super::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const MIB: u64 = 1 << 20;
const WINDOW: Duration = Duration::from_secs(10);
/// What a request costs on the link, besides the limit: the field's 100 ms.
const LATENCY: Duration = Duration::from_millis(100);

/// A store that notes the bytes of each block request it gets, and stores nothing.
/// A get answers half a block: what the limiter settles afterwards.
#[derive(Debug, Default)]
struct Link {
    inner: MemoryStore,
    carried: Arc<Mutex<Vec<u64>>>,
}

#[async_trait]
impl StoreLayer for Link {
    type Inner = MemoryStore;

    fn inner(&self) -> &MemoryStore {
        &self.inner
    }

    async fn put_block(
        &self,
        _: &SnapshotId,
        _: BlockIndex,
        block: HashedBlock,
        _: Digest,
    ) -> StoreResult<()> {
        self.carried.lock().unwrap().push(block.data().len() as u64);
        Ok(())
    }

    async fn get_block(
        &self,
        _: &SnapshotId,
        _: BlockIndex,
        _: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let half = bytes::Bytes::from(vec![0; BLOCK_SIZE_U64 as usize / 2]);
        self.carried.lock().unwrap().push(half.len() as u64);
        Ok(FetchedBlock {
            checksum: Digest::of(&half),
            data: half,
        })
    }
}

#[tokio::test]
async fn puts_and_gets_through_the_store_are_charged_each_to_its_direction() {
    let bandwidth = Bandwidth::new(Some(1 << 30), Some(1 << 30));
    let link = Link::default();
    let carried = link.carried.clone();
    let store: &dyn SnapshotStore = &LimitedStore::new(link, bandwidth.clone());
    let before = Instant::now();
    let (id, block) = (SnapshotId::generate(), HashedBlock::zero());
    let digest = block.digest();
    store
        .put_block(&id, BlockIndex(0), block, digest)
        .await
        .unwrap();
    let token = BlockToken("t".into());
    store.get_block(&id, BlockIndex(0), &token).await.unwrap();
    assert_eq!(
        *carried.lock().unwrap(),
        [BLOCK_SIZE_U64, BLOCK_SIZE_U64 / 2]
    );
    // Each bucket's next turn lies past what its direction moved, at 1 GiB/s.
    let next = |t| bandwidth.bucket(t).unwrap().reserve(0, before) - before;
    assert!(
        next(Transfer::Put) >= Duration::from_micros(488),
        "{:?}",
        next(Transfer::Put)
    );
    assert!(
        next(Transfer::Get) >= Duration::from_micros(244),
        "{:?}",
        next(Transfer::Get)
    );
}

/// `clients` that each send one request after another, `requests` in all: each
/// takes its turn from `buckets` (client `i` from bucket `i % n`: the stores of one
/// process), then [`LATENCY`] on the link. Returns when each request went, and its
/// bytes, in time order. Requests reserve in the order they are made, as in the store.
fn simulate(buckets: &[&ByteBucket], clients: usize, requests: usize) -> Vec<(Instant, u64)> {
    let t0 = Instant::now();
    let mut ready: BinaryHeap<Reverse<(Instant, usize)>> =
        (0..clients).map(|c| Reverse((t0, c))).collect();
    let mut sent = Vec::with_capacity(requests);
    for _ in 0..requests {
        let Reverse((now, client)) = ready.pop().expect("clients");
        let turn = buckets[client % buckets.len()].reserve(BLOCK_SIZE_U64, now);
        sent.push((turn, BLOCK_SIZE_U64));
        ready.push(Reverse((turn + LATENCY, client)));
    }
    sent.sort();
    sent
}

/// The most and the fewest bytes sent in any window of [`WINDOW`] that starts at a
/// request and ends before the last one, in bytes per second.
fn window_rates(sent: &[(Instant, u64)]) -> (f64, f64) {
    let last = sent.last().expect("requests").0;
    let (mut most, mut fewest) = (0.0f64, f64::MAX);
    for (i, &(start, _)) in sent.iter().enumerate() {
        let bytes: u64 = sent[i..]
            .iter()
            .take_while(|(t, _)| *t < start + WINDOW)
            .map(|(_, b)| b)
            .sum();
        let rate = bytes as f64 / WINDOW.as_secs_f64();
        most = most.max(rate);
        if start + WINDOW <= last {
            fewest = fewest.min(rate);
        }
    }
    (most, fewest)
}

fn assert_within_five_percent(sent: &[(Instant, u64)], limit: u64) {
    let (most, fewest) = window_rates(sent);
    let limit = limit as f64;
    eprintln!(
        "{} requests: windows of 10 s from {:.3} to {:.3} MiB/s for a limit of {:.3}",
        sent.len(),
        fewest / MIB as f64,
        most / MIB as f64,
        limit / MIB as f64
    );
    assert!(most <= limit * 1.05, "{most} > {limit} + 5%");
    assert!(fewest >= limit * 0.95, "{fewest} < {limit} - 5%");
}

#[test]
fn two_stores_of_a_process_share_one_limit_within_five_percent_over_any_ten_seconds() {
    // A copy's two sides, say, with 32 requests at once: 30 s of data at 8 MiB/s.
    let bandwidth = Bandwidth::new(Some(8 * MIB), None);
    let other = bandwidth.clone();
    let buckets = [&bandwidth, &other].map(|b| b.bucket(Transfer::Put).unwrap());
    let sent = simulate(&buckets, 32, 30 * 16);
    let took = sent.last().unwrap().0 - sent[0].0;
    assert!((29.5..30.5).contains(&took.as_secs_f64()), "{took:?}");
    assert_within_five_percent(&sent, 8 * MIB);
}

#[test]
fn the_limit_holds_from_one_mebibyte_a_second_to_a_gibibyte() {
    // One MiB/s is two blocks a second: the coarsest a limit gets within 5%.
    for limit in [MIB, 3 * MIB / 2, 20 * MIB, 1 << 30] {
        let bandwidth = Bandwidth::new(None, Some(limit));
        let bucket = bandwidth.bucket(Transfer::Get).unwrap();
        // Enough in flight for the rate at 100 ms (Little's law), and some.
        let clients = (limit / BLOCK_SIZE_U64 / 5).max(4) as usize;
        let requests = (40 * limit / BLOCK_SIZE_U64) as usize;
        assert_within_five_percent(&simulate(&[bucket], clients, requests), limit);
    }
}

#[test]
fn too_few_in_flight_for_the_limit_go_at_the_link_s_pace() {
    // 2 requests of 100 ms at once carry 20 blocks a second: 10 MiB/s, under 40 MiB/s.
    let bandwidth = Bandwidth::new(Some(40 * MIB), None);
    let bucket = bandwidth.bucket(Transfer::Put).unwrap();
    let sent = simulate(&[bucket], 2, 200);
    let took = sent.last().unwrap().0 - sent[0].0;
    // The second client's first request waited for the first one's bytes, and none since.
    assert_eq!(took, LATENCY * 99 + bucket.span(BLOCK_SIZE_U64));
}

#[test]
fn turns_are_reserved_in_order_and_idle_time_is_not_saved_up() {
    let bucket = ByteBucket::new(NonZeroU64::new(MIB).unwrap());
    let t0 = Instant::now();
    let half = Duration::from_millis(500);
    assert_eq!(bucket.reserve(BLOCK_SIZE_U64, t0), t0);
    assert_eq!(bucket.reserve(BLOCK_SIZE_U64, t0), t0 + half);
    assert_eq!(bucket.reserve(BLOCK_SIZE_U64, t0), t0 + 2 * half);
    // Idle for ten seconds: the next goes at once, the one after half a second on.
    let later = t0 + Duration::from_secs(10);
    assert_eq!(bucket.reserve(BLOCK_SIZE_U64, later), later);
    assert_eq!(bucket.reserve(BLOCK_SIZE_U64, later), later + half);
}

#[test]
fn an_answer_shorter_than_reserved_gives_its_time_back() {
    let bucket = ByteBucket::new(NonZeroU64::new(MIB).unwrap());
    let t0 = Instant::now();
    bucket.reserve(BLOCK_SIZE_U64, t0);
    bucket.settle(BLOCK_SIZE_U64, BLOCK_SIZE_U64 / 2);
    assert_eq!(bucket.reserve(1, t0), t0 + Duration::from_millis(250));
    bucket.settle(0, BLOCK_SIZE_U64);
    assert_eq!(
        bucket.reserve(1, t0),
        t0 + Duration::from_millis(750) + bucket.span(1)
    );
}

#[test]
fn the_flow_is_told_the_limit_as_blocks_a_second_where_it_is_slower() {
    let bandwidth = Bandwidth::new(Some(20 * MIB), Some(100 << 10));
    let paced = PacedStore::new(MemoryStore::new(), std::num::NonZeroU32::new(30), 8);
    let store = LimitedStore::new(paced, bandwidth.clone());
    // 20 MiB/s is 40 blocks a second, more than the 30 requests paced.
    assert_eq!(SnapshotStore::pace(&store, Transfer::Put), Some(30));
    // 100 KiB/s: less than a block a second, which is one request a second at most.
    assert_eq!(SnapshotStore::pace(&store, Transfer::Get), Some(1));
    let unpaced = LimitedStore::new(MemoryStore::new(), bandwidth);
    assert_eq!(SnapshotStore::pace(&unpaced, Transfer::Put), Some(40));
    let unlimited = LimitedStore::new(MemoryStore::new(), Bandwidth::default());
    assert_eq!(SnapshotStore::pace(&unlimited, Transfer::Put), None);
}
