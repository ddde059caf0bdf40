//! How many block requests a transfer keeps in flight: found by measuring, not set.
//!
//! At 100 ms a request, 1000 requests/s need about 100 in flight (Little's law); on
//! loopback a few dozen keep `ebsnap serve` busy; a WAN's bandwidth-delay product lies
//! anywhere between. So the limit starts small and adapts, round by round. A round lasts
//! about one request's latency: as many completions as the limit, and at least
//! [`ROUND_MIN`]. At the end of each round the controller compares the round's request
//! rate and mean latency with the rounds before:
//! - **startup**: the limit doubles (with a pace, up to four times, to what Little's
//!   law says the pace needs at the latency measured) while each step raises the rate
//!   by a fifth or more, the rate is below `max_rate`, and at least a quarter of the
//!   places hold a request (see below). A step whose rate fell is measured once more
//!   before it counts: that round stalled, for a link at its knee holds its rate;
//! - **steady**: every few rounds it probes. With latency flat and the rate below
//!   `max_rate`, a quarter more, kept only if the rate rises. With latency risen (or the
//!   rate at `max_rate`), a fifth less, kept if the rate holds: latency that rises while
//!   the rate does not means requests queue at a full link, and they only cost memory.
//!   At `max_rate`, no fewer than it needs at the link's latency, where rounds below
//!   it tell that latency;
//! - **held after the requests**: when fewer than half the places hold a request
//!   (Little's law: the rate times the latency), the others wait for the work that
//!   follows one (hashing, writing), and more of them may only hold more blocks: after
//!   a probe up that gained nothing, the next halves them, judged a round later, kept
//!   if the rate holds. On loopback, a restore that the client's CPU bounds ran with
//!   192 places and 4 requests. A round that includes idle time (a backup waiting for
//!   its disk, a mount between reads) counts the pause in its rate, so it looks held.
//!
//! Probes go no lower than [`MIN_CEILING`]: a probe below, or one slow write, would
//! cost a round's rate for a few blocks of memory. With a pace, the pace holds the
//! rate. A byte limit (`--limit-upload`, [`crate::store::LimitedStore`]) is such a
//! pace, and the time a request waits for its bytes' turn shows here as latency, as a
//! full link's queue does: the flow then keeps about what Little's law needs, not what
//! `--workers` allows.
//!
//! Rounds in which the work never filled the window (the disk is slower than the link)
//! say nothing about the link and change nothing. Throttling is answered by
//! [`crate::store::PacedStore`]'s window, which halves; here it shows as latency.
//! The ceiling (`--workers`) bounds memory: what is in flight is what is held.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};

mod priority;

/// Where the limit starts: enough for 300 requests/s at 100 ms, few enough that a
/// server on loopback is not flooded before the first round has been measured.
pub(crate) const INITIAL_LIMIT: usize = 32;
/// The shortest round: shorter ones count too few requests to measure a rate.
const ROUND_MIN: Duration = Duration::from_millis(50);
/// Rounds remembered for the base latency and the best rate.
const HISTORY: usize = 16;
/// Steady rounds between probes.
const PROBE_EVERY: u32 = 3;
/// Each probe down that loses the rate doubles the rounds before the next, up to
/// this many doublings: at the pace, fewer in flight than Little's law needs cost a
/// fifth of a round's rate each time, and the latency that says how many it needs
/// varies too much to aim below it.
const MAX_BACKOFF: u32 = 3;
/// How far past Little's law the ceiling lies: room for latency's jitter. Each block
/// in flight costs about 0.8 MiB (the block, and the HTTP client's buffer for it), so
/// at 100 ms and 1000 requests/s this keeps a transfer under 128 MiB: with 1.15, a
/// restore that reached the pace sooner peaked at 133 MiB.
const CEILING_MARGIN: f64 = 1.1;
/// The ceiling's floor: at a millisecond a request, Little's law allows two or three in
/// flight, and one slow write then costs a quarter of the rate (a restore to a disk on
/// loopback ran at 73% of the pace). Sixteen blocks are 8 MiB.
const MIN_CEILING: usize = 16;

/// What one round measured.
#[derive(Clone, Copy, Debug)]
struct Measure {
    rate: f64,
    latency: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Stepping up; the round before the last step: its rate and its limit; and
    /// whether the last step has been measured a second time already, after a round
    /// whose rate fell (see [`Controller::start_up`]).
    Startup {
        before: Option<(f64, usize)>,
        remeasured: bool,
    },
    Steady,
}

/// What a probe tries.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Move {
    /// A quarter more: the link may have room.
    Up,
    /// A fifth fewer: requests queue at a full link, or wait for the pace.
    Down,
    /// Half: most places wait for the work after their request, not for it.
    Halve,
}

/// A change being tried: the limit to go back to, what was tried, and whether its
/// first round is still to pass (see [`Controller::judge`]).
#[derive(Clone, Copy, Debug)]
struct Probe {
    previous: usize,
    tried: Move,
    rate_before: f64,
    settling: bool,
}

/// The round being measured.
#[derive(Debug)]
struct Round {
    started: Instant,
    completions: usize,
    latency: Duration,
    /// Whether a request had to wait for a place: only then is the window what limits.
    saturated: bool,
}

impl Round {
    fn new(now: Instant) -> Round {
        Round {
            started: now,
            completions: 0,
            latency: Duration::ZERO,
            saturated: false,
        }
    }
}

/// How many requests a round had in flight on average (Little's law).
fn in_requests(m: Measure) -> f64 {
    m.rate * m.latency.as_secs_f64()
}

/// The pure decision: fed completions and waits, it says what the limit is.
#[derive(Debug)]
pub(crate) struct Controller {
    limit: usize,
    max: usize,
    max_rate: Option<f64>,
    phase: Phase,
    round: Round,
    history: VecDeque<Measure>,
    probe: Option<Probe>,
    /// Whether the last probe judged went up and gained nothing.
    up_gained_nothing: bool,
    steady_rounds: u32,
    /// Doublings of [`PROBE_EVERY`] after probes down that lost the rate.
    backoff: u32,
    /// The least latency of any round below the pace, where no request waited for it
    /// (see [`Controller::link_latency`]).
    below_pace: Option<Duration>,
}

impl Controller {
    pub fn new(max: usize, max_rate: Option<u32>, now: Instant) -> Controller {
        let max = max.max(1);
        Controller {
            limit: INITIAL_LIMIT.min(max),
            max,
            max_rate: max_rate.map(f64::from),
            phase: Phase::Startup {
                before: None,
                remeasured: false,
            },
            round: Round::new(now),
            history: VecDeque::with_capacity(HISTORY),
            probe: None,
            up_gained_nothing: false,
            steady_rounds: 0,
            backoff: 0,
            below_pace: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The first request starts: the first round counts from here, not from the
    /// flow's creation (a restore lists blocks first, a resumed backup rereads what it
    /// put), so that its rate is the link's.
    pub fn first_request(&mut self, now: Instant) {
        self.round = Round::new(now);
    }

    /// A request found the window full.
    pub fn waited(&mut self) {
        self.round.saturated = true;
    }

    /// A request finished after `latency`; ends the round when it is due.
    pub fn finished(&mut self, latency: Duration, now: Instant) {
        self.round.completions += 1;
        self.round.latency += latency;
        let elapsed = now.saturating_duration_since(self.round.started);
        if self.round.completions < self.limit || elapsed < ROUND_MIN {
            return;
        }
        let round = std::mem::replace(&mut self.round, Round::new(now));
        if round.saturated {
            let latency = round.latency / round.completions as u32;
            let rate = round.completions as f64 / elapsed.as_secs_f64();
            self.decide(Measure { rate, latency });
        }
    }

    fn decide(&mut self, m: Measure) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(m);
        if !self.at_cap(m.rate) {
            self.below_pace = Some(self.below_pace.map_or(m.latency, |l| l.min(m.latency)));
        }
        let was = self.limit;
        match self.phase {
            Phase::Startup { before, remeasured } => self.start_up(m, before, remeasured),
            Phase::Steady => self.steady(m),
        }
        tracing::debug!(
            "flow: {:.0} requests/s at {:.0} ms with {was} in flight: {} from now on",
            m.rate,
            m.latency.as_secs_f64() * 1000.0,
            self.limit
        );
    }

    fn start_up(&mut self, m: Measure, before: Option<(f64, usize)>, remeasured: bool) {
        if self.at_cap(m.rate) {
            self.phase = Phase::Steady;
            // A step may have gone past what the pace needs at the latency now known.
            self.set(self.limit);
        } else if !remeasured && before.is_some_and(|(rate, _)| m.rate < rate * 0.9) {
            // More in flight carried fewer requests than fewer did. A link at its knee
            // holds its rate; a round that stalled (the host, the disk, a pause of the
            // server) loses it, and taken for the knee it would leave the limit low for
            // the whole transfer: at 100 ms, 48 in flight after one stall of 700 ms.
            // Measured once more at this limit before anything is concluded.
            self.phase = Phase::Startup {
                before,
                remeasured: true,
            };
        } else if let Some((_, limit)) = before.filter(|&(rate, _)| m.rate < rate * 1.2) {
            // The last step gained little: the knee lies between the two limits.
            self.phase = Phase::Steady;
            self.set((limit * 3 / 2).min(self.limit));
        } else if before.is_some() && self.share_in_requests(m) < 0.25 {
            // Three places in four wait for the work after their request: the link is
            // not what limits, and more places may only hold more blocks; the probes
            // up find out whether some help. Not one in two, as held_after: a round
            // leaves out the requests still in flight at its end, and with latencies
            // spread its Little's law sees fewer than there were. Never in the first
            // round, whose connections are still being made.
            self.phase = Phase::Steady;
        } else if self.limit < self.ceiling() {
            self.phase = Phase::Startup {
                before: Some((m.rate, self.limit)),
                remeasured: false,
            };
            self.set(self.step_up(m.latency));
        } else {
            self.phase = Phase::Steady;
        }
    }

    /// Startup's next limit: double, or with a pace what Little's law says the pace
    /// needs at the latency just measured, if that is more (at 300 ms and 1000
    /// requests/s, a round sooner), but never more than four times the limit: a link
    /// slower than the pace queues the requests and inflates their latency, and then
    /// Little's law asks too much.
    fn step_up(&self, latency: Duration) -> usize {
        (self.limit * 2).max(self.needed(latency).min(self.limit * 4))
    }

    /// What the pace needs in flight at `latency` (Little's law); 0 without a pace.
    fn needed(&self, latency: Duration) -> usize {
        self.max_rate
            .map_or(0, |rate| (rate * latency.as_secs_f64()).ceil() as usize)
    }

    fn steady(&mut self, m: Measure) {
        if let Some(probe) = self.probe.take() {
            return self.judge(probe, m);
        }
        self.steady_rounds += 1;
        let queueing = self.queueing(m.latency);
        let (tried, next) = if queueing || self.at_cap(m.rate) {
            let floor = self.down_floor(m.rate);
            (Move::Down, (self.limit * 4 / 5).max(floor).min(self.limit))
        } else if let Some(half) = self.halved(m) {
            (Move::Halve, half)
        } else {
            (Move::Up, (self.limit * 5 / 4).max(self.limit + 1))
        };
        // Only a probe down that may cost the rate (at the pace, or halving) waits out
        // the backoff: a queue building up is answered, and a link with room tried, as
        // soon as ever.
        let wait = match (tried, queueing) {
            (Move::Halve, _) | (Move::Down, false) => PROBE_EVERY << self.backoff,
            _ => PROBE_EVERY,
        };
        if self.steady_rounds < wait {
            return;
        }
        let previous = self.limit;
        self.set(next);
        if self.limit != previous {
            self.probe = Some(Probe {
                previous,
                tried,
                rate_before: m.rate,
                settling: tried == Move::Halve,
            });
        }
    }

    /// Whether fewer than half the places hold a request (Little's law: the rate times
    /// the latency): the others wait for the work after one (hashing, writing), and
    /// may only hold its block.
    fn held_after(&self, m: Measure) -> bool {
        self.share_in_requests(m) < 0.5
    }

    /// The share of the places that held a request in the round `m` measured.
    fn share_in_requests(&self, m: Measure) -> f64 {
        in_requests(m) / self.limit as f64
    }

    /// The limit a halving would try, if one is due: with the places [held
    /// after](Self::held_after) their requests, and only after a probe up gained
    /// nothing. Where more places do help (a disk whose writes scale with the queue),
    /// the probes up go on, and a halving kept at a cost of up to 5% never follows
    /// another. Down to twice what the requests hold, and the floor.
    fn halved(&self, m: Measure) -> Option<usize> {
        if !self.up_gained_nothing || !self.held_after(m) {
            return None;
        }
        let half = (self.limit / 2)
            .max((2.0 * in_requests(m)).ceil() as usize)
            .max(self.floor());
        (half < self.limit).then_some(half)
    }

    /// Keeps the probe's limit or goes back. A probe up is kept if the rate rose, one
    /// down if it held. A halving is judged a round late: the first round after it
    /// still counts the requests sent before, at the old rate.
    fn judge(&mut self, probe: Probe, m: Measure) {
        if probe.settling {
            self.probe = Some(Probe {
                settling: false,
                ..probe
            });
            return;
        }
        let kept = match probe.tried {
            Move::Up => m.rate >= probe.rate_before * 1.05,
            Move::Down | Move::Halve => m.rate >= self.best_rate() * 0.95,
        };
        if !kept {
            self.set(probe.previous);
        }
        self.backoff = match (probe.tried, kept) {
            (_, true) => 0,
            (Move::Up, false) => self.backoff,
            (Move::Down | Move::Halve, false) => (self.backoff + 1).min(MAX_BACKOFF),
        };
        self.up_gained_nothing = probe.tried == Move::Up && !kept;
        self.steady_rounds = 0;
    }

    fn set(&mut self, limit: usize) {
        self.limit = limit.clamp(1, self.ceiling());
    }

    /// The most worth having in flight: `--workers`, and with a pace, what that rate
    /// needs at the base latency (Little's law) and [`CEILING_MARGIN`] more. Beyond,
    /// requests only wait for the pace, holding their blocks.
    fn ceiling(&self) -> usize {
        let base = self.base_latency().as_secs_f64();
        match self.max_rate {
            Some(rate) if base > 0.0 => {
                let little = (rate * base * CEILING_MARGIN).ceil() as usize;
                little.clamp(MIN_CEILING.min(self.max), self.max)
            }
            _ => self.max,
        }
    }

    /// The fewest a probe tries, [`MIN_CEILING`]: below, the probes themselves cost
    /// the rate (a quarter of a probe round's rate at 4 in flight, for 8 MiB of memory
    /// saved), and so does one slow write.
    fn floor(&self) -> usize {
        MIN_CEILING.min(self.max)
    }

    /// The fewest a probe down tries after a round at `rate`: the [floor](Self::floor),
    /// and at the pace what the pace needs at the link's latency (Little's law), for
    /// fewer cannot carry it. Not the base latency: once at the pace, each round's
    /// latency also counts the wait for it, and under a byte limit (40 blocks/s) that
    /// is most of it. At 100 ms, a probe from 143 to 114 that a lucky round
    /// kept, and then one to 92, left a restore at 850 requests/s for the rest of it.
    fn down_floor(&self, rate: f64) -> usize {
        let paced = match (self.at_cap(rate), self.link_latency()) {
            (true, Some(latency)) => self.needed(latency),
            _ => 0,
        };
        self.floor().max(paced)
    }

    /// The link's own latency: the least of any round below the pace, where no
    /// request waited for it, unless that is well above the recent rounds' (a stall
    /// is below the pace too). Kept beyond the recent rounds: a transfer at the pace
    /// from its second round on has only its first to tell. None while every round
    /// ran at the pace: a byte limit reaches its pace in the first round.
    fn link_latency(&self) -> Option<Duration> {
        self.below_pace.filter(|&l| !self.queueing(l))
    }

    /// Whether `latency` is well above the base latency: requests queue somewhere.
    fn queueing(&self, latency: Duration) -> bool {
        latency.as_secs_f64() > self.base_latency().as_secs_f64() * 1.5
    }

    fn at_cap(&self, rate: f64) -> bool {
        self.max_rate.is_some_and(|cap| rate >= cap * 0.9)
    }

    fn best_rate(&self) -> f64 {
        self.history.iter().map(|m| m.rate).fold(0.0, f64::max)
    }

    /// What a request costs without queueing: the fastest recent round's mean.
    fn base_latency(&self) -> Duration {
        self.history
            .iter()
            .map(|m| m.latency)
            .min()
            .unwrap_or_default()
    }
}

/// Places for block requests, as many as the controller allows at the moment.
#[derive(Debug)]
pub(crate) struct Flow {
    permits: Semaphore,
    state: Mutex<FlowState>,
    /// Told each time a place is given back: read-ahead waits here, never in the
    /// permits' queue, so that it cannot stand before a demand read (see [`priority`]).
    freed: Notify,
}

#[derive(Debug)]
struct FlowState {
    controller: Controller,
    /// The limit the permits stand for now.
    granted: usize,
    /// Permits to keep back as requests finish, after the limit fell.
    owed: usize,
    /// When the first request entered and the last one left.
    span: Option<(Instant, Instant)>,
}

impl Flow {
    /// At most `max` in flight (`--workers`); `max_rate` is the store's pace, if any.
    pub fn new(max: usize, max_rate: Option<u32>) -> Arc<Flow> {
        let controller = Controller::new(max, max_rate, Instant::now());
        let granted = controller.limit();
        Arc::new(Flow {
            permits: Semaphore::new(granted),
            state: Mutex::new(FlowState {
                controller,
                granted,
                owed: 0,
                span: None,
            }),
            freed: Notify::new(),
        })
    }

    /// The most that may be in flight, whatever the controller finds.
    pub fn max(&self) -> usize {
        self.lock().controller.max
    }

    /// Seconds from the first request's start to the last one's end: the transfer's
    /// own time, without planning, start and completion.
    pub fn busy_seconds(&self) -> f64 {
        self.lock()
            .span
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FlowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a place; the pass it returns gives it back when dropped.
    pub async fn enter(self: &Arc<Flow>) -> Pass {
        let permit = match self.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                self.lock().controller.waited();
                self.permits.acquire().await.expect("never closed")
            }
        };
        // Given back by the pass, which decides whether to give it back.
        permit.forget();
        self.pass()
    }

    /// The pass for a place just taken (its permit forgotten).
    fn pass(self: &Arc<Flow>) -> Pass {
        let now = Instant::now();
        let mut s = self.lock();
        if s.span.is_none() {
            s.span = Some((now, now));
            s.controller.first_request(now);
        }
        drop(s);
        Pass {
            flow: self.clone(),
            since: now,
            latency: None,
        }
    }

    fn leave(&self, latency: Option<Duration>) {
        let now = Instant::now();
        let mut s = self.lock();
        if let Some(latency) = latency {
            s.controller.finished(latency, now);
        }
        if let Some((_, last)) = s.span.as_mut() {
            *last = now;
        }
        let limit = s.controller.limit();
        if limit > s.granted {
            let more = limit - s.granted;
            let repaid = more.min(s.owed);
            s.owed -= repaid;
            self.permits.add_permits(more - repaid);
        } else {
            // Free places go at once; the rest are withheld as requests leave.
            let fewer = s.granted - limit;
            s.owed += fewer - self.permits.forget_permits(fewer);
        }
        s.granted = limit;
        // This request's own place.
        if s.owed > 0 {
            s.owed -= 1;
        } else {
            self.permits.add_permits(1);
        }
        drop(s);
        self.freed.notify_one();
    }
}

/// One request's place in the flow, given back when the pass is dropped. A pass
/// measured ([`Pass::measure`]) reports its request's latency; one dropped unmeasured
/// (a failed or abandoned request, or work that made none) gives its place back only.
#[derive(Debug)]
pub(crate) struct Pass {
    flow: Arc<Flow>,
    since: Instant,
    latency: Option<Duration>,
}

impl Pass {
    /// The request answered: its latency counts, though the place is kept until the
    /// pass is dropped (its block is still held, being written).
    pub fn measure(&mut self) {
        self.latency = Some(self.since.elapsed());
    }

    /// The request answered, and its place is free.
    pub fn finished(mut self) {
        self.measure();
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.flow.leave(self.latency);
    }
}

#[cfg(test)]
mod tests;
