//! Hostile load: many pending snapshots under a low descriptor limit, forged requests
//! that announce a body and send nothing, thousands of half-sent heads, requests that
//! ask for unbounded work. Under each, a genuine call is answered within 2 s and the
//! server's memory stays under 256 MiB ([`Fixture::assert_served`]).

use super::*;
use ebsnap::store::conformance::block;

/// EC2 forms, encoded.
pub(super) fn form_pairs(pairs: &[(String, String)]) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        out.append_pair(k, v);
    }
    out.finish()
}

pub(super) fn pair(k: impl Into<String>, v: impl Into<String>) -> (String, String) {
    (k.into(), v.into())
}

/// A request's head alone (its body is announced, never sent).
fn head_only(req: &Req) -> Vec<u8> {
    let bytes = req.bytes();
    bytes[..find(&bytes, b"\r\n\r\n").unwrap() + 4].to_vec()
}

impl Fixture {
    /// A signed EC2 call.
    pub(super) fn ec2_call(&self, pairs: &[(String, String)]) -> Reply {
        let req = Req::ec2(&form_pairs(pairs)).header("host", &self.server.addr);
        self.send(&Fixture::with_length(req).signed()).reply()
    }

    /// A signed StartSnapshot with this JSON body.
    pub(super) fn start_raw(&self, json: &Value) -> Reply {
        let req = self
            .req("POST", "/snapshots")
            .header("content-type", "application/json")
            .body(json.to_string());
        self.send(&Fixture::with_length(req).signed()).reply()
    }

    /// Descriptors the server holds open.
    fn server_fds(&self) -> usize {
        let dir = format!("/proc/{}/fd", self.server.pid());
        std::fs::read_dir(dir).unwrap().count()
    }

    /// Makes pending snapshots look idle for two hours (past the default timeout of
    /// one): their metadata and journals, while the server is stopped.
    fn age(&self, ids: &[SnapshotId]) {
        let past = SystemTime::now() - Duration::from_secs(2 * 3600);
        let past_ms = past
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        for id in ids {
            let meta = self.path("store/snapshots").join(format!("{id}.json"));
            let mut json: Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
            json["start_time_ms"] = Value::from(past_ms as u64);
            std::fs::write(&meta, json.to_string()).unwrap();
            let journal = meta.with_extension("journal");
            let file = std::fs::File::options().write(true).open(journal).unwrap();
            file.set_modified(past).unwrap();
        }
    }
}

/// Item: no cap on pending snapshots, a descriptor each, every journal synced on each
/// put. Under `ulimit -n 256`, 400 pending snapshots (each with a put) are served, the
/// server restarts over them holding few descriptors, the default cap of 100 refuses
/// more with ConcurrentLimitExceededException, and snapshots timed out to `error` no
/// longer count.
#[test]
fn pending_snapshots_are_capped_and_hold_no_descriptors() {
    let args = [QUICK, &["--max-pending", "400"]].concat();
    let mut fx = Fixture::start_with(&args, Some(256));
    let data = block(7);
    let mut started = Vec::new();
    for _ in 1..400 {
        let id = fx
            .rt
            .block_on(fx.client.start_snapshot(StartSnapshot::new(1)));
        let id = id.expect("under the raised cap, a start succeeds").id;
        let put = fx
            .client
            .put_block(&id, BlockIndex(0), data.clone(), data.digest());
        fx.rt
            .block_on(put)
            .expect("a put to one of 400 pending snapshots");
        started.push(id);
    }
    fx.assert_served("400 pending snapshots");
    let over = fx.start_raw(&serde_json::json!({"VolumeSize": 1}));
    over.assert_ebs(400, "ConcurrentLimitExceededException");

    fx.restart(QUICK, Some(256));
    assert!(fx.server_fds() < 64, "{} descriptors open", fx.server_fds());
    fx.assert_served("restarted over 400 pending snapshots");
    let over = fx.start_raw(&serde_json::json!({"VolumeSize": 1}));
    over.assert_ebs(400, "ConcurrentLimitExceededException");

    fx.server.stop();
    fx.age(&started[..350]);
    fx.restart(QUICK, Some(256));
    for n in 0..50 {
        let reply = fx.start_raw(&serde_json::json!({"VolumeSize": 1}));
        assert_eq!(
            reply.status,
            201,
            "start {n} of the 50 left: {}",
            reply.text()
        );
    }
    let over = fx.start_raw(&serde_json::json!({"VolumeSize": 1}));
    over.assert_ebs(400, "ConcurrentLimitExceededException");
    let listed = fx.rt.block_on(fx.client.list_snapshots()).unwrap();
    let errors = listed
        .iter()
        .filter(|s| s.status.as_str() == "error")
        .count();
    assert_eq!(errors, 350, "the aged snapshots timed out");
    fx.assert_served("100 pending, 350 timed out");
}

/// Item: the signature was checked only after a turn was taken and the body read. 130
/// forged requests announcing 512 KiB and sending nothing (PutSnapshotBlock heads,
/// whose signature is checked from the head, and EC2 forms, whose is not) must not
/// delay a genuine call, EBS or EC2.
#[test]
fn forged_requests_that_send_no_body_hold_no_turn() {
    let slow = ["--header-timeout", "30", "--body-timeout", "30"];
    let fx = Fixture::start_with(&slow, None);
    let digest = block(1).digest();
    let mut conns = Vec::new();
    for i in 0..130 {
        let req = if i % 2 == 0 {
            fx.put_block(fx.pending.as_str(), &i.to_string(), &digest)
        } else {
            Req::ec2("Action=DescribeSnapshots").header("host", &fx.server.addr)
        };
        let req = req.set("content-length", "524288").forged();
        let mut conn = fx.conn();
        conn.send(&head_only(&req));
        conns.push((i, conn));
    }
    std::thread::sleep(Duration::from_millis(300));
    fx.assert_served("130 forged requests waiting for their bodies");
    let started = std::time::Instant::now();
    let reply = fx.ec2_call(&[pair("Action", "DescribeSnapshots")]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "a genuine EC2 call took {took:?}"
    );
    for (_, conn) in conns.iter_mut().filter(|(i, _)| i % 2 == 0) {
        conn.read()
            .reply()
            .assert_ebs(403, "InvalidSignatureException");
    }
    drop(conns);
    fx.finish();
}

/// Raises this process's descriptor limit as far as it may go; returns it.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur
}

/// Item: no connection limit, and heads of up to ~400 KB buffered: 3000 half-sent
/// 200 KiB headers took the server past 256 MiB. Connections are bounded, heads too.
#[test]
fn thousands_of_half_sent_heads_cost_little() {
    let fx = Fixture::start();
    let count = 3000.min(raise_nofile().saturating_sub(256) as usize);
    if count < 3000 {
        eprintln!("NOTE: only {count} connections (descriptor limit of this process)");
    }
    assert!(count >= 1000, "too few descriptors to test with: {count}");
    let mut head = format!(
        "GET /snapshots/{}/blocks HTTP/1.1\r\nhost: x\r\nx-pad: ",
        fx.completed
    )
    .into_bytes();
    head.resize(200 << 10, b'a');
    let addr: std::net::SocketAddr = fx.server.addr.parse().unwrap();
    let mut open: Vec<(TcpStream, usize)> = Vec::new();
    for _ in 0..count {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            s.set_nonblocking(true).unwrap();
            open.push((s, 0));
        }
        push_some(&mut open, &head, 1);
    }
    for _ in 0..20 {
        push_some(&mut open, &head, usize::MAX);
        std::thread::sleep(Duration::from_millis(50));
    }
    fx.assert_served("3000 half-sent 200 KiB heads");
    drop(open);
    fx.finish();
}

/// Writes what the last `last` sockets take of `head` now.
fn push_some(open: &mut [(TcpStream, usize)], head: &[u8], last: usize) {
    for (s, sent) in open.iter_mut().rev().take(last) {
        while *sent < head.len() {
            match s.write(&head[*sent..]) {
                Ok(n) if n > 0 => *sent += n,
                _ => break,
            }
        }
    }
}
