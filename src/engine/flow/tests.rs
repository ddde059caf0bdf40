//! The controller against simulated links, and the flow's place accounting.

use super::*;

/// Runs the controller against a link of `latency` per request that carries at most
/// `capacity` requests/s, with the work always waiting: returns the limit chosen
/// after each round, and the rate it ran at.
fn simulate(max: usize, max_rate: Option<u32>, latency: f64, capacity: f64) -> Vec<(usize, f64)> {
    // Little's law: with `limit` in flight the link delivers limit/latency, up to its
    // capacity; beyond, requests queue and latency grows.
    simulate_with(max, max_rate, |_, limit| {
        let rate = (limit / latency).min(capacity);
        (rate, limit / rate)
    })
}

/// As [`simulate`], but it is the client's own work after each request (hashing,
/// writing) that carries at most `capacity` a second: the places beyond wait for it,
/// and the requests' latency stays `latency`.
fn simulate_work(max: usize, latency: f64, capacity: f64) -> Vec<(usize, f64)> {
    simulate_with(max, None, |_, limit| {
        ((limit / latency).min(capacity), latency)
    })
}

/// Runs the controller with the work always waiting, where `link` gives the rate and
/// the requests' latency in a round at a limit: the limit chosen after each round, and
/// the rate.
fn simulate_with(
    max: usize,
    max_rate: Option<u32>,
    link: impl Fn(usize, f64) -> (f64, f64),
) -> Vec<(usize, f64)> {
    let start = Instant::now();
    let mut c = Controller::new(max, max_rate, start);
    let mut now = start;
    let mut limits = Vec::new();
    for round in 0..60 {
        let (rate, seen) = link(round, c.limit() as f64);
        let n = c.limit();
        for _ in 0..n {
            c.waited();
            now += Duration::from_secs_f64(1.0 / rate);
            c.finished(Duration::from_secs_f64(seen), now);
        }
        // Rounds shorter than ROUND_MIN run on until it.
        while c.limit() == n && c.round.completions > 0 {
            now += Duration::from_secs_f64(1.0 / rate);
            c.finished(Duration::from_secs_f64(seen), now);
        }
        limits.push((c.limit(), rate));
    }
    limits
}

#[test]
fn at_100_ms_it_finds_about_a_hundred_in_flight_for_1000_per_second() {
    let rounds = simulate(256, Some(1000), 0.1, 1000.0);
    let settled = &rounds[10..];
    assert!(
        settled.iter().all(|&(l, _)| (80..=160).contains(&l)),
        "{rounds:?}"
    );
    let rate = settled.iter().map(|&(_, r)| r).sum::<f64>() / settled.len() as f64;
    assert!(rate >= 900.0, "{rate}: {rounds:?}");
}

#[test]
fn a_round_that_stalls_in_startup_does_not_leave_the_limit_low() {
    // At 100 ms and 1000 requests/s, the second round stalls for 700 ms (as a shared
    // host's did): its rate falls below the first's at four times the places.
    let rounds = simulate_with(256, Some(1000), |round, limit| {
        if round == 1 {
            return (125.0, 0.7);
        }
        let rate = (limit / 0.1).min(1000.0);
        (rate, limit / rate)
    });
    let settled = &rounds[5..];
    assert!(
        settled.iter().all(|&(l, _)| (80..=160).contains(&l)),
        "{rounds:?}"
    );
}

/// A link of `latency` at 1000 requests/s, the pace, where `latency` varies by round:
/// the rate and the latency seen at a limit, waits for the pace included.
fn paced_link(latency: impl Fn(usize) -> f64) -> impl Fn(usize, f64) -> (f64, f64) {
    move |round, limit| {
        let rate = (limit / latency(round)).min(1000.0);
        (rate, (limit / rate).max(latency(round)))
    }
}

#[test]
fn at_the_pace_probes_down_keep_what_the_pace_needs() {
    // 1000 requests/s at 100 ms need 100 in flight: a probe below can only lose the
    // pace, and a lucky round would have kept it.
    let rounds = simulate(256, Some(1000), 0.1, 1000.0);
    assert!(rounds[3..].iter().all(|&(l, _)| l >= 100), "{rounds:?}");
    let rate = rounds[3..].iter().map(|&(_, r)| r).sum::<f64>() / (rounds.len() - 3) as f64;
    assert!(rate >= 990.0, "{rate}: {rounds:?}");
}

#[test]
fn a_stalled_first_round_does_not_stop_the_probes_down() {
    // The first round stalls at 700 ms, below the pace: it says nothing of the link,
    // and taken for its latency it would forbid any probe below 700 in flight.
    let stalled = paced_link(|round| if round == 0 { 0.7 } else { 0.1 });
    let rounds = simulate_with(256, Some(1000), stalled);
    assert!(
        rounds[10..].iter().all(|&(l, _)| (100..=110).contains(&l)),
        "{rounds:?}"
    );
}

#[test]
fn probes_that_lose_the_pace_come_less_and_less_often() {
    // Latency that varies from round to round (85 to 115 ms): the fastest round below
    // the pace allows probes to 85 in flight, and in the slower rounds each costs
    // part of a round's rate, so after each that fails the next waits longer. (With
    // no backoff, 10 probes down in these 50 rounds.)
    let jitter = paced_link(|round| [0.085, 0.1, 0.115][round % 3]);
    let rounds = simulate_with(256, Some(1000), jitter);
    let probes_down: Vec<usize> = (10..rounds.len())
        .filter(|&i| rounds[i].0 < rounds[i - 1].0)
        .collect();
    assert!(
        probes_down.len() <= 7,
        "probes down {probes_down:?}: {rounds:?}"
    );
}

#[test]
fn with_a_pace_startup_goes_straight_to_what_the_pace_needs() {
    // The first round (32 in flight at 100 ms) measures the latency; the next one
    // has what 1000 requests/s need at it, not 64.
    let rounds = simulate(256, Some(1000), 0.1, 1000.0);
    assert!((100..=115).contains(&rounds[0].0), "{rounds:?}");
    // At 300 ms, three doublings would reach the ceiling; two steps do.
    let rounds = simulate(256, Some(1000), 0.3, 1000.0);
    assert_eq!((rounds[0].0, rounds[1].0), (128, 256), "{rounds:?}");
    // Without a pace, no rate to aim at: doubling, as before.
    let rounds = simulate(256, None, 0.3, 1000.0);
    assert_eq!(rounds[0].0, 2 * INITIAL_LIMIT, "{rounds:?}");
}

#[test]
fn a_link_slower_than_the_pace_does_not_make_startup_overshoot() {
    // 24 blocks/s (100 Mbit/s) under a pace of 1000: the first round's requests
    // queue on the link, and Little's law at that latency asks for 1334. The step
    // is bounded, and the step back goes to between the last two limits.
    let rounds = simulate(256, Some(1000), 0.1, 24.0);
    assert!(rounds[0].0 <= 4 * INITIAL_LIMIT, "{rounds:?}");
    assert!(rounds[1].0 <= INITIAL_LIMIT * 3 / 2, "{rounds:?}");
}

#[test]
fn with_a_pace_it_never_holds_much_more_than_the_pace_needs() {
    // 1000 requests/s at 100 ms need 100 in flight, whatever --workers allows.
    let rounds = simulate(1024, Some(1000), 0.1, 1000.0);
    assert!(rounds.iter().all(|&(l, _)| l <= 125), "{rounds:?}");
}

#[test]
fn a_link_without_a_rate_cap_gets_what_fills_it_and_not_much_more() {
    // 2000 requests/s at 10 ms: 20 in flight fill it.
    let rounds = simulate(256, None, 0.01, 2000.0);
    let settled = &rounds[10..];
    assert!(
        settled.iter().all(|&(l, _)| (16..=64).contains(&l)),
        "{rounds:?}"
    );
    assert!(settled.iter().all(|&(_, r)| r >= 1900.0), "{rounds:?}");
}

#[test]
fn places_held_by_the_work_after_the_requests_are_given_up() {
    // A restore on loopback that the client's CPU bounds: 2000 blocks a second, 2 ms
    // a request, so 4 places hold requests. Startup doubles once for nothing; then,
    // each time a probe up gains nothing, one halves the places, while the rate holds.
    let rounds = simulate_work(256, 0.002, 2000.0);
    let settled = &rounds[40..];
    assert!(settled.iter().all(|&(l, _)| l <= 24), "{rounds:?}");
    assert!(rounds.iter().all(|&(l, _)| l >= MIN_CEILING), "{rounds:?}");
    let rate = settled.iter().map(|&(_, r)| r).sum::<f64>() / settled.len() as f64;
    assert!(rate >= 1900.0, "{rate}: {rounds:?}");
    // Where the requests themselves fill the places, none are given up.
    let rounds = simulate_work(256, 0.1, 2000.0);
    assert!(rounds[10..].iter().all(|&(l, _)| l >= 200), "{rounds:?}");
}

#[test]
fn where_more_places_carry_more_the_places_held_after_grow_back() {
    // A restore whose target writes scale with the queue: 10 ms a request, then 30 ms
    // writing, so three places in four wait for the disk, and 40 places carry 1000
    // blocks a second. The disk then gets four times faster in what it carries
    // (another job on it ended): more places carry more, and the probes up find them,
    // a quarter more every few rounds.
    let rounds = simulate_with(256, None, |round, limit| {
        let capacity = if round < 20 { 1000.0 } else { 4000.0 };
        ((limit / 0.04).min(capacity), 0.01)
    });
    // Apart from a probe's rounds, it holds what the disk carries, before and after.
    let short = |rounds: &[(usize, f64)], rate| rounds.iter().filter(|&&(_, r)| r < rate).count();
    assert!(short(&rounds[10..20], 1000.0) <= 2, "{rounds:?}");
    // Within the 5% a probe up must gain to be kept.
    assert!(short(&rounds[50..], 3800.0) <= 2, "{rounds:?}");
}

#[test]
fn under_a_byte_limit_it_keeps_the_rate_with_few_in_flight() {
    // --limit-upload 20MiB is 40 blocks a second, the pace the store reports; the
    // bucket's wait shows as latency, as a full link's queue does. 100 ms needs 4
    // in flight; it keeps 16 (8 MiB), not the 256 allowed, and probes no lower.
    let rounds = simulate(256, Some(40), 0.1, 40.0);
    let settled = &rounds[15..];
    assert!(settled.iter().all(|&(l, _)| l == MIN_CEILING), "{rounds:?}");
    assert!(settled.iter().all(|&(_, r)| r >= 40.0), "{rounds:?}");
}

#[test]
fn a_long_fat_link_grows_to_the_ceiling() {
    let rounds = simulate(256, Some(1000), 0.3, 1000.0);
    assert_eq!(rounds.last().unwrap().0, 256, "{rounds:?}");
}

#[test]
fn rounds_that_did_not_fill_the_window_change_nothing() {
    let start = Instant::now();
    let mut c = Controller::new(256, None, start);
    for i in 1..=1000 {
        c.finished(Duration::from_millis(1), start + Duration::from_millis(i));
    }
    assert_eq!(c.limit(), INITIAL_LIMIT);
}

#[tokio::test]
async fn the_flow_never_lets_more_than_its_limit_in() {
    let flow = Flow::new(4, None);
    let passes: Vec<Pass> = futures::future::join_all((0..4).map(|_| flow.enter())).await;
    assert_eq!(flow.permits.available_permits(), 0);
    let waiting = tokio::time::timeout(Duration::from_millis(20), flow.enter()).await;
    assert!(waiting.is_err(), "a fifth request got in");
    drop(passes);
    assert_eq!(flow.permits.available_permits(), 4);
}

#[tokio::test]
async fn a_lower_limit_takes_free_places_at_once() {
    let flow = Flow::new(8, None);
    let mut passes: Vec<Pass> = futures::future::join_all((0..2).map(|_| flow.enter())).await;
    flow.lock().controller.limit = 3;
    // A pass leaving applies the new limit.
    drop(passes.pop());
    // One still in flight, so two places free: never more than the limit in all.
    assert_eq!(flow.permits.available_permits(), 2);
}

#[tokio::test]
async fn a_lower_limit_is_reached_as_requests_leave() {
    let flow = Flow::new(8, None);
    let passes: Vec<Pass> = futures::future::join_all((0..8).map(|_| flow.enter())).await;
    {
        let mut s = flow.lock();
        s.controller.limit = 3;
    }
    for pass in passes {
        pass.finished();
    }
    assert_eq!(flow.permits.available_permits(), 3);
}

#[test]
fn a_queue_building_up_is_answered_whatever_the_backoff() {
    let mut c = Controller::new(256, Some(1000), Instant::now());
    c.phase = Phase::Steady;
    c.limit = 100;
    c.backoff = MAX_BACKOFF;
    let at = |rate: f64, ms: u64| Measure {
        rate,
        latency: Duration::from_millis(ms),
    };
    // At the pace, a probe down waits out the backoff...
    for _ in 0..PROBE_EVERY {
        c.decide(at(1000.0, 100));
    }
    assert_eq!(c.limit(), 100);
    // ...but latency that triples is answered now.
    c.decide(at(600.0, 300));
    assert!(c.limit() < 100, "{}", c.limit());
}

#[tokio::test]
async fn the_first_round_counts_from_the_first_request() {
    // A restore lists the snapshot's blocks before it fetches one: the time before
    // the first request is not the link's, and must not make its rate look low.
    let flow = Flow::new(256, None);
    std::thread::sleep(Duration::from_millis(300));
    let passes: Vec<Pass> =
        futures::future::join_all((0..INITIAL_LIMIT).map(|_| flow.enter())).await;
    flow.lock().controller.waited();
    std::thread::sleep(Duration::from_millis(60));
    passes.into_iter().for_each(Pass::finished);
    let rate = flow.lock().controller.history[0].rate;
    // 32 requests in about 60 ms: some 500 a second, not the 90 counted from creation.
    assert!(rate > 250.0, "{rate}");
}
