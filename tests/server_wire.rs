//! The server's error paths on the wire: each gets the right HTTP status, error type
//! (`x-amzn-ErrorType`) and `Reason`, and leaves the store unchanged.

mod common;

use common::server::TestServer;
use ebsnap::block::{BlockIndex, Digest, LinearAggregate, BLOCK_SIZE};
use ebsnap::store::conformance::{aggregate_of, block, pending_from, read_all, snapshot_with};
use ebsnap::store::{PageRequest, SnapshotStore, StartSnapshot};
use serde_json::Value;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Reply {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts an EBS error: status, `x-amzn-ErrorType`, and `Reason` (if any).
    fn assert_error(&self, status: u16, error_type: &str, reason: Option<&str>) {
        let body = String::from_utf8_lossy(&self.body);
        assert_eq!(self.status, status, "{body}");
        assert_eq!(
            self.headers.get("x-amzn-errortype").map(String::as_str),
            Some(error_type),
            "{body}"
        );
        assert_eq!(self.json()["Reason"].as_str(), reason, "{body}");
        assert!(self.json()["message"].is_string(), "{body}");
    }
}

/// One HTTP/1.1 request on a fresh connection.
async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Reply {
    let addr = server.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    let (mut reader, mut writer) = stream.into_split();
    // The server may answer before the body has been sent (an announced length over
    // the limit is refused at once) and then close, so the body goes out from its own
    // task while the answer is read: written first, a refused body would end in a
    // broken pipe or a reset before the answer could be read.
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    let sender = tokio::spawn(async move {
        if let Err(e) = writer.write_all(&request).await {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "writing the request: {e}"
            );
        }
        // Dropping the write half would send a FIN, on which the server (no half-close)
        // ends the connection without answering: it is kept until the answer is read.
        writer
    });
    let mut raw = Vec::new();
    if let Err(e) = reader.read_to_end(&mut raw).await {
        // A reset after the answer has arrived (the server closed with our body
        // unread) still leaves the answer, which is what is checked.
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset,
            "reading: {e}"
        );
    }
    drop(sender.await.unwrap());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: raw[split..].to_vec(),
    }
}

/// A token as a query value: percent-encoded, as every client sends it (tokens use the
/// standard base64 alphabet, whose `+` would otherwise read as a space).
fn query_value(token: &str) -> String {
    percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn put_headers(checksum: Digest, length: usize) -> Vec<(&'static str, String)> {
    vec![
        ("x-amz-data-length", length.to_string()),
        ("x-amz-checksum", checksum.to_base64()),
        ("x-amz-checksum-algorithm", "SHA256".into()),
        ("content-type", "application/octet-stream".into()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_with_bad_ids_and_tokens_are_refused() {
    let server = TestServer::start(false).await;
    let store = server.client().await;
    let a = snapshot_with(&store, None, 1, &[(1, 1), (2, 2)]).await;
    let b = snapshot_with(&store, None, 1, &[(1, 1)]).await;
    let before = read_all(&store, &a).await;

    http(
        &server,
        "GET",
        "/snapshots/snap-0123456789abcdef0/blocks",
        &[],
        b"",
    )
    .await
    .assert_error(404, "ResourceNotFoundException", Some("SNAPSHOT_NOT_FOUND"));
    http(
        &server,
        "GET",
        "/snapshots/snap-..%2F..%2Fetc/blocks",
        &[],
        b"",
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_SNAPSHOT_ID"));
    let forged =
        format!("/snapshots/{a}/blocks/1?blockToken=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    http(&server, "GET", &forged, &[], b"").await.assert_error(
        400,
        "ValidationException",
        Some("INVALID_BLOCK_TOKEN"),
    );
    let page = store.list_blocks(&a, PageRequest::default()).await.unwrap();
    let other_index = format!(
        "/snapshots/{a}/blocks/2?blockToken={}",
        query_value(&page.blocks[0].token.0)
    );
    http(&server, "GET", &other_index, &[], b"")
        .await
        .assert_error(400, "ValidationException", Some("INVALID_BLOCK_TOKEN"));
    let other_snapshot = format!(
        "/snapshots/{b}/blocks/1?blockToken={}",
        query_value(&page.blocks[0].token.0)
    );
    http(&server, "GET", &other_snapshot, &[], b"")
        .await
        .assert_error(400, "ValidationException", Some("INVALID_BLOCK_TOKEN"));
    let bad_page = format!("/snapshots/{a}/blocks?pageToken=not-a-token");
    http(&server, "GET", &bad_page, &[], b"")
        .await
        .assert_error(400, "ValidationException", Some("INVALID_PAGE_TOKEN"));
    let unrelated = format!("/snapshots/{b}/changedblocks?firstSnapshotId={a}");
    http(&server, "GET", &unrelated, &[], b"")
        .await
        .assert_error(400, "ValidationException", Some("UNRELATED_SNAPSHOTS"));

    // A good read, for contrast: the wire shape of GetSnapshotBlock.
    let good = format!(
        "/snapshots/{a}/blocks/1?blockToken={}",
        query_value(&page.blocks[0].token.0)
    );
    let reply = http(&server, "GET", &good, &[], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), BLOCK_SIZE);
    assert_eq!(reply.headers["x-amz-data-length"], BLOCK_SIZE.to_string());
    assert_eq!(
        reply.headers["x-amz-checksum"],
        block(1).digest().to_base64()
    );
    assert_eq!(reply.headers["x-amz-checksum-algorithm"], "SHA256");
    let listed = http(
        &server,
        "GET",
        &format!("/snapshots/{a}/blocks?maxResults=100"),
        &[],
        b"",
    )
    .await;
    let v = listed.json();
    assert_eq!(v["BlockSize"], 524288);
    assert_eq!(v["VolumeSize"], 1);
    assert!(v["ExpiryTime"].is_number());
    assert_eq!(v["Blocks"][0]["BlockIndex"], 1);
    assert!(v.get("NextToken").is_none());
    assert_eq!(read_all(&store, &a).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_writes_are_refused_and_change_nothing() {
    let server = TestServer::start(false).await;
    let store = server.client().await;
    let id = store
        .start_snapshot(StartSnapshot::new(1))
        .await
        .unwrap()
        .id;
    let good = block(5);
    let path = |i: u64| format!("/snapshots/{id}/blocks/{i}");

    let wrong_sum = http(
        &server,
        "PUT",
        &path(0),
        &put_headers(block(6).digest(), BLOCK_SIZE),
        good.data(),
    )
    .await;
    wrong_sum.assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    let short = &good.data()[..1000];
    http(
        &server,
        "PUT",
        &path(0),
        &put_headers(good.digest(), 1000),
        short,
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    http(
        &server,
        "PUT",
        &path(0),
        &put_headers(good.digest(), BLOCK_SIZE),
        short,
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    http(
        &server,
        "PUT",
        &path(2048),
        &put_headers(good.digest(), BLOCK_SIZE),
        good.data(),
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_BLOCK"));
    http(
        &server,
        "PUT",
        &format!("/snapshots/{id}/blocks/-1"),
        &put_headers(good.digest(), BLOCK_SIZE),
        good.data(),
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_BLOCK"));
    let too_big = vec![0u8; BLOCK_SIZE * 2];
    let reply = http(
        &server,
        "PUT",
        &path(0),
        &put_headers(good.digest(), BLOCK_SIZE * 2),
        &too_big,
    )
    .await;
    assert!(
        reply.status == 400 || reply.status == 413,
        "an oversized body is refused: {}",
        reply.status
    );

    let ok = http(
        &server,
        "PUT",
        &path(0),
        &put_headers(good.digest(), BLOCK_SIZE),
        good.data(),
    )
    .await;
    assert_eq!(ok.status, 201, "{}", String::from_utf8_lossy(&ok.body));
    assert_eq!(ok.headers["x-amz-checksum"], good.digest().to_base64());

    let complete = |count: u64, sum: Option<Digest>| {
        let mut h = vec![("x-amz-changedblockscount", count.to_string())];
        if let Some(s) = sum {
            h.push(("x-amz-checksum", s.to_base64()));
            h.push(("x-amz-checksum-algorithm", "SHA256".into()));
            h.push(("x-amz-checksum-aggregation-method", "LINEAR".into()));
        }
        h
    };
    let url = format!("/snapshots/completion/{id}");
    http(
        &server,
        "POST",
        &url,
        &complete(1, Some(Digest::zero_block())),
        b"",
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    http(&server, "POST", &url, &complete(3, None), b"")
        .await
        .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    let mut agg = LinearAggregate::new();
    agg.push(BlockIndex(0), &good.digest()).unwrap();
    let done = http(&server, "POST", &url, &complete(1, Some(agg.finish())), b"").await;
    assert_eq!(done.status, 202);
    assert_eq!(done.json()["Status"], "completed");

    let after = http(
        &server,
        "PUT",
        &path(1),
        &put_headers(good.digest(), BLOCK_SIZE),
        good.data(),
    )
    .await;
    after.assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    let held = read_all(&store, &id).await;
    assert_eq!(held.len(), 1, "only the one good put is in the snapshot");
    assert_eq!(held[&0], good.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_snapshot_speaks_the_wire_format() {
    let server = TestServer::start(false).await;
    let body = br#"{"VolumeSize": 2, "Description": "x", "Tags": [{"Key": "k", "Value": "v"}], "ClientToken": "t-1", "Timeout": 60}"#;
    let reply = http(
        &server,
        "POST",
        "/snapshots",
        &[("content-type", "application/json".into())],
        body,
    )
    .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let v = reply.json();
    assert!(v["SnapshotId"].as_str().unwrap().starts_with("snap-"));
    assert_eq!(v["Status"], "pending");
    assert_eq!(v["BlockSize"], 524288);
    assert_eq!(v["VolumeSize"], 2);
    assert!(v["StartTime"].is_number());
    assert_eq!(v["Tags"][0]["Key"], "k");
    let again = http(&server, "POST", "/snapshots", &[], body).await;
    assert_eq!(
        again.json()["SnapshotId"],
        v["SnapshotId"],
        "same ClientToken, same snapshot"
    );
    let changed = br#"{"VolumeSize": 3, "ClientToken": "t-1"}"#;
    http(&server, "POST", "/snapshots", &[], changed)
        .await
        .assert_error(409, "ConflictException", None);
    let encrypted_child = format!(
        r#"{{"VolumeSize": 2, "ParentSnapshotId": "{}", "Encrypted": true}}"#,
        v["SnapshotId"].as_str().unwrap()
    );
    http(
        &server,
        "POST",
        "/snapshots",
        &[],
        encrypted_child.as_bytes(),
    )
    .await
    .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    http(&server, "POST", "/snapshots", &[], br#"{"VolumeSize": 0}"#)
        .await
        .assert_error(400, "ValidationException", Some("INVALID_VOLUME_SIZE"));
    http(&server, "POST", "/snapshots", &[], b"not json")
        .await
        .assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    http(&server, "DELETE", "/nothing/here", &[], b"")
        .await
        .assert_error(404, "UnknownOperationException", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_badly_signed_requests_get_403() {
    let server = TestServer::start(true).await;
    let unsigned = http(
        &server,
        "GET",
        "/snapshots/snap-0123456789abcdef0/blocks",
        &[],
        b"",
    )
    .await;
    unsigned.assert_error(403, "MissingAuthenticationTokenException", None);
    let forged = [("authorization", "AWS4-HMAC-SHA256 Credential=AKIDEBSNAPTEST/20260101/us-east-1/ebs/aws4_request, SignedHeaders=host;x-amz-date, Signature=00".to_string()), ("x-amz-date", "20260101T000000Z".to_string())];
    let reply = http(
        &server,
        "POST",
        "/snapshots",
        &forged,
        br#"{"VolumeSize": 1}"#,
    )
    .await;
    assert_eq!(reply.status, 403);
    let ec2 = http(
        &server,
        "POST",
        "/",
        &[("content-type", "application/x-www-form-urlencoded".into())],
        b"Action=DescribeSnapshots",
    )
    .await;
    assert_eq!(ec2.status, 401);
    assert!(String::from_utf8_lossy(&ec2.body).contains("<Code>AuthFailure</Code>"));
    let wrong = server.client_with_secret("wrong").await;
    let err = wrong
        .start_snapshot(StartSnapshot::new(1))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ebsnap::store::StoreError::AccessDenied { .. }),
        "{err}"
    );
    let right = server.client().await;
    assert!(
        right.list_snapshots().await.unwrap().is_empty(),
        "nothing was created by the refused calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ec2_errors_use_the_xml_shape() {
    let server = TestServer::start(false).await;
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let reply = http(
        &server,
        "POST",
        "/",
        &form,
        b"Action=DescribeSnapshots&SnapshotId.1=snap-0123456789abcdef0",
    )
    .await;
    assert_eq!(reply.status, 400);
    let body = String::from_utf8_lossy(&reply.body);
    assert!(
        body.contains("<Code>InvalidSnapshot.NotFound</Code>"),
        "{body}"
    );
    let reply = http(&server, "POST", "/", &form, b"Action=Frobnicate").await;
    assert!(String::from_utf8_lossy(&reply.body).contains("<Code>InvalidAction</Code>"));
    let reply = http(&server, "POST", "/", &form, b"Action=DescribeSnapshots").await;
    assert_eq!(reply.status, 200);
    assert!(String::from_utf8_lossy(&reply.body).contains("<snapshotSet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_paths_and_queries_get_the_ebs_error_shape() {
    let server = TestServer::start(false).await;
    let reply = http(
        &server,
        "GET",
        "/snapshots/snap-0123456789abcdef0/blocks?maxResults=%ZZ",
        &[],
        b"",
    )
    .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.headers.contains_key("x-amzn-errortype"),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let reply = http(
        &server,
        "GET",
        "/snapshots/snap-0123456789abcdef0/blocks?maxResults=abc",
        &[],
        b"",
    )
    .await;
    reply.assert_error(400, "ValidationException", Some("INVALID_PARAMETER_VALUE"));
    let hostile = format!(
        "Action=DescribeSnapshots&Filter.1.Name=description&Filter.1.Value.1={}",
        "*a".repeat(600)
    );
    let form = [(
        "content-type",
        "application/x-www-form-urlencoded".to_string(),
    )];
    let reply = http(&server, "POST", "/", &form, hostile.as_bytes()).await;
    assert_eq!(
        reply.status, 400,
        "an oversized filter is refused, the server stays up"
    );
    let reply = http(&server, "POST", "/", &form, b"Action=DescribeSnapshots").await;
    assert_eq!(reply.status, 200);
}

/// A store that keeps the tags of each CreateTags the server passes on to it.
#[derive(Debug)]
struct TagLog {
    inner: ebsnap::store::LocalStore,
    created: std::sync::Mutex<Vec<Vec<ebsnap::store::Tag>>>,
}

#[async_trait::async_trait]
impl ebsnap::store::StoreLayer for TagLog {
    type Inner = ebsnap::store::LocalStore;
    fn inner(&self) -> &Self::Inner {
        &self.inner
    }
    async fn create_tags(
        &self,
        id: &ebsnap::store::SnapshotId,
        tags: &[ebsnap::store::Tag],
    ) -> ebsnap::store::StoreResult<()> {
        self.created.lock().unwrap().push(tags.to_vec());
        self.inner.create_tags(id, tags).await
    }
}

/// The completion-figure tags of each CreateTags the log saw, as (count, checksum).
fn completion_tags(log: &TagLog) -> Vec<(Option<String>, Option<String>)> {
    use ebsnap::store::ebs_tags::{CHECKSUM_TAG, COUNT_TAG};
    let value = |tags: &[ebsnap::store::Tag], key| {
        tags.iter().find(|t| t.key == key).map(|t| t.value.clone())
    };
    let created = log.created.lock().unwrap();
    created
        .iter()
        .map(|tags| (value(tags, COUNT_TAG), value(tags, CHECKSUM_TAG)))
        .collect()
}

/// The EBS store tags a snapshot's completion figures once: ahead of completion when
/// told them there, else on completion, and there again when those said ahead were
/// not completion's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_figures_are_tagged_once_unless_they_changed() {
    let mut log = None;
    let server = TestServer::start_over(true, |inner| {
        let tags = std::sync::Arc::new(TagLog {
            inner,
            created: Default::default(),
        });
        log = Some(tags.clone());
        tags
    })
    .await;
    let log = log.expect("made by the server's start");
    let store = server.client().await;
    let aggregate = aggregate_of(&[(0, block(7).digest())].into());
    let right = (Some("1".to_owned()), Some(aggregate.to_base64()));
    let wrong = (Some("2".to_owned()), Some(Digest::zero_block().to_base64()));
    let cases = [
        (None, vec![right.clone()]),
        (Some((1, aggregate)), vec![right.clone()]),
        (Some((2, Digest::zero_block())), vec![wrong, right]),
    ];
    for (ahead, tagged) in cases {
        log.created.lock().unwrap().clear();
        let (id, _) = pending_from(&store, StartSnapshot::new(1), &[(0, 7)]).await;
        if let Some((count, aggregate)) = ahead {
            store
                .prepare_completion(&id, count, Some(aggregate))
                .await
                .unwrap();
        }
        store
            .complete_snapshot(&id, 1, Some(aggregate))
            .await
            .unwrap();
        assert_eq!(completion_tags(&log), tagged, "said ahead: {ahead:?}");
    }
}
