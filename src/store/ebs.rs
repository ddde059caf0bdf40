//! The Amazon EBS store: the EBS direct APIs (aws-sdk-ebs) for blocks, EC2
//! (aws-sdk-ec2) for describing, listing, tagging and deleting snapshots.
//!
//! Conversions between ebsnap's domain types (`u64` indexes and sizes) and the SDK's
//! `i32`/`i64` happen here and nowhere else. What EC2 does not report (the parent, the
//! block count and aggregate of a completed snapshot) travels as `ebsnap:` tags, which
//! are hidden again when a snapshot is described.

use super::*;
use crate::block::{BlockFill, BlockIndex, BufferPool, Digest, HashedBlock, BLOCK_SIZE};
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ebs::primitives::ByteStream;
use aws_sdk_ebs::types as et;
use aws_sdk_ec2::types as ct;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

pub use super::ebs_tags::{CHECKSUM_TAG, COUNT_TAG, FIELD_TAGS, MANAGED_TAG, PARENT_TAG};

mod ca_bundle;
mod convert;
mod direct;
mod errors;
mod http;
#[cfg(test)]
mod test_server;
mod xml_check;
use convert::*;

/// Where and as whom to reach EBS. Unset fields come from aws-config's standard chain
/// (environment, profiles, SSO, IMDS; `AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_EBS`,
/// `AWS_ENDPOINT_URL_EC2`).
#[derive(Clone, Debug, Default)]
pub struct EbsOptions {
    pub region: Option<String>,
    pub profile: Option<String>,
    /// One endpoint for both EBS and EC2 (`ebsnap serve` answers both on one port).
    pub endpoint_url: Option<String>,
    /// A fixed key pair instead of the credential chain (tests).
    pub static_credentials: Option<(String, String)>,
    /// Limit for one attempt of one request.
    pub attempt_timeout: Option<Duration>,
    /// CA certificates (PEM) to trust instead of the system's; unset: `AWS_CA_BUNDLE`,
    /// else the profile's `ca_bundle`, else the system's roots.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// PutSnapshotBlock and GetSnapshotBlock through the SDK's orchestrator, as where a
    /// proxy is set, instead of ebsnap's own signed requests (`direct.rs`): for tests of
    /// that path.
    pub sdk_block_calls: bool,
}

#[derive(Clone, Debug)]
pub struct EbsStore {
    ebs: aws_sdk_ebs::Client,
    ec2: aws_sdk_ec2::Client,
    identity: String,
    /// The endpoint, as errors name it.
    endpoint: String,
    /// Buffers that fetched blocks are gathered into (see [`gather`]).
    buffers: Arc<BufferPool>,
    /// The block calls without the SDK's orchestrator; none where they keep the SDK's.
    direct: Option<Arc<direct::BlockCalls>>,
    /// Pending snapshots whose completion figures are tagged already
    /// ([`SnapshotStore::prepare_completion`]), and those figures. Completion takes its
    /// snapshot's entry out; one whose backup failed after its tagging stays, naming
    /// figures its snapshot does carry.
    tagged: Arc<std::sync::Mutex<TaggedCompletions>>,
}

/// Snapshots, each with the completion figures tagged on it: its count of blocks
/// written, and their aggregate.
type TaggedCompletions = std::collections::HashMap<SnapshotId, (u64, Option<Digest>)>;

/// Spare fetched-block buffers kept for reuse: enough for the blocks that land
/// between two writes, without holding memory that nothing is in flight for.
const SPARE_BUFFERS: usize = 32;

impl EbsStore {
    /// A client for `options`; fails only on a CA bundle that cannot be used.
    pub async fn connect(options: &EbsOptions) -> StoreResult<EbsStore> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(region) = &options.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &options.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(url) = &options.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        let bundle = ca_bundle::bundle(options).await?;
        let roots = match &bundle {
            Some(bundle) => http::Roots::Bundle(bundle.roots.clone()),
            None => http::Roots::System,
        };
        let ebs_client = http::ebs_client(roots.clone());
        if let Some(bundle) = bundle {
            loader = loader.http_client(bundle.sdk_client);
        }
        if let Some((id, secret)) = &options.static_credentials {
            loader = loader.credentials_provider(aws_sdk_ebs::config::Credentials::new(
                id, secret, None, None, "ebsnap",
            ));
        }
        let timeout = options.attempt_timeout.unwrap_or(Duration::from_secs(60));
        loader = loader.timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .connect_timeout(http::CONNECT_TIMEOUT)
                .build(),
        );
        // One retry policy, ours (`RetryStore`, which wraps every store): the SDK's
        // own three attempts under each of ours would make up to thirty, and would
        // hide a throttling answer from the flow that must slow down for it. The
        // codes those retries knew (throttling, clock skew) are ours in errors.rs.
        // The credential chain's STS and SSO calls get one attempt too: a refresh
        // that fails is a dispatch failure, which RetryStore retries.
        loader = loader.retry_config(RetryConfig::disabled());
        let mut config = loader.load().await;
        if config.region().is_none() {
            // A local endpoint needs no real region, but SigV4 needs one to sign with.
            config = config
                .into_builder()
                .region(aws_config::Region::new("us-east-1"))
                .build();
        }
        let endpoint = options
            .endpoint_url
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_EBS").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let identity = format!("ebs:{region}:{}", endpoint.as_deref().unwrap_or("aws"));
        let endpoint = endpoint.unwrap_or_else(|| format!("of AWS in {region}"));
        let setup = direct::Setup {
            config: &config,
            roots: &roots,
            endpoint: &endpoint,
            attempt_timeout: timeout,
        };
        let direct = if options.sdk_block_calls {
            None
        } else {
            direct::BlockCalls::new(setup).await.map(Arc::new)
        };
        let mut ebs = aws_sdk_ebs::config::Builder::from(&config);
        if let Some(client) = ebs_client {
            ebs = ebs.http_client(client);
        }
        Ok(EbsStore {
            ebs: aws_sdk_ebs::Client::from_conf(ebs.build()),
            ec2: aws_sdk_ec2::Client::from_conf(
                aws_sdk_ec2::config::Builder::from(&config)
                    .interceptor(xml_check::XmlCheck)
                    .build(),
            ),
            identity,
            endpoint,
            buffers: BufferPool::new(SPARE_BUFFERS),
            direct,
            tagged: Arc::default(),
        })
    }

    /// Remembers what EC2 will not tell: how many blocks snapshot `id` wrote, and
    /// their aggregate, for `verify`.
    async fn tag_completion(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        let mut tags = vec![Tag::new(COUNT_TAG, count.to_string())];
        if let Some(a) = aggregate {
            tags.push(Tag::new(CHECKSUM_TAG, a.to_base64()));
        }
        self.create_tags(id, &tags).await
    }

    fn lock_tagged(&self) -> std::sync::MutexGuard<'_, TaggedCompletions> {
        self.tagged.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether PutSnapshotBlock and GetSnapshotBlock go out as ebsnap's own signed
    /// requests (`direct.rs`) rather than through the SDK: for tests that must know
    /// which path they ran.
    #[doc(hidden)]
    pub fn sends_block_calls_itself(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether the environment names a proxy, as the store reads it: then its block
    /// calls are the SDK's, whatever [`EbsOptions`] asks (for tests).
    #[doc(hidden)]
    pub fn proxy_in_environment() -> bool {
        http::proxied()
    }

    fn sdk_error<E>(
        &self,
        context: &str,
        err: SdkError<E, aws_sdk_ebs::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        errors::sdk_error(&self.endpoint, context, err)
    }

    /// PutSnapshotBlock through the SDK; the checksum the service computed, if it says.
    async fn sdk_put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: &HashedBlock,
        checksum: Digest,
    ) -> StoreResult<Option<Digest>> {
        let out = self
            .ebs
            .put_snapshot_block()
            .snapshot_id(id.as_str())
            .block_index(sdk_index(index)?)
            .block_data(ByteStream::from(block.data().clone()))
            .data_length(BLOCK_SIZE as i32)
            .checksum(checksum.to_base64())
            .checksum_algorithm(et::ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("PutSnapshotBlock {id} block {index}"), e))?;
        Ok(out.checksum().and_then(Digest::from_base64))
    }

    /// GetSnapshotBlock through the SDK.
    async fn sdk_get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        let context = format!("GetSnapshotBlock {id} block {index}");
        let out = self
            .ebs
            .get_snapshot_block()
            .snapshot_id(id.as_str())
            .block_index(sdk_index(index)?)
            .block_token(&token.0)
            .send()
            .await
            .map_err(|e| self.sdk_error(&context, e))?;
        let checksum = out
            .checksum()
            .and_then(Digest::from_base64)
            .ok_or_else(|| no_checksum(&context))?;
        let body = out.block_data.into_inner();
        let data = gather(self.buffers.fill(), body, &context).await?;
        Ok(FetchedBlock { data, checksum })
    }
}

/// A fetched block's answer that says no checksum to check it by.
fn no_checksum(context: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("{context}: no checksum in the answer"),
    }
}

/// Gathers a block's body, which arrives in pieces, into one pooled buffer: the one
/// copy it needs anyway, into memory aligned for a restore's `O_DIRECT` writes.
/// Anything but exactly one block is an unusable answer.
async fn gather<B>(mut fill: BlockFill, body: B, context: &str) -> StoreResult<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let unusable = |message: String| StoreError::Unavailable {
        message: format!("{context}: {message}"),
    };
    let mut body = std::pin::pin!(body);
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let frame = frame.map_err(|e| unusable(e.to_string()))?;
        let Ok(piece) = frame.into_data() else {
            continue;
        };
        fill.push(&piece)
            .map_err(|_| unusable(format!("more than {BLOCK_SIZE} bytes")))?;
    }
    if fill.filled() != BLOCK_SIZE {
        let len = fill.filled();
        return Err(unusable(format!("{len} bytes instead of {BLOCK_SIZE}")));
    }
    Ok(fill.freeze())
}

#[async_trait]
impl SnapshotStore for EbsStore {
    fn identity(&self) -> String {
        self.identity.clone()
    }

    async fn start_snapshot(&self, req: StartSnapshot) -> StoreResult<SnapshotInfo> {
        let volume = i64::try_from(req.volume_size_gib).map_err(|_| {
            StoreError::invalid(
                ValidationReason::InvalidVolumeSize,
                "volume size out of range",
            )
        })?;
        // Marked ebsnap's whatever the request says (backup and copy say so already).
        let mut tags: Vec<et::Tag> = req
            .tags
            .iter()
            .filter(|t| t.key != MANAGED_TAG)
            .map(|t| et::Tag::builder().key(&t.key).value(&t.value).build())
            .collect();
        tags.push(et::Tag::builder().key(MANAGED_TAG).value("true").build());
        if let Some(p) = &req.parent {
            tags.push(et::Tag::builder().key(PARENT_TAG).value(p.as_str()).build());
        }
        let out = self
            .ebs
            .start_snapshot()
            .volume_size(volume)
            .set_parent_snapshot_id(req.parent.as_ref().map(|p| p.to_string()))
            .set_tags(Some(tags))
            .set_description(req.description.clone())
            .set_client_token(req.client_token.clone())
            .set_timeout(req.timeout_minutes.map(|t| t.min(i32::MAX as u32) as i32))
            .set_encrypted(req.encrypted.then_some(true))
            .set_kms_key_arn(req.kms_key_arn.clone())
            .send()
            .await
            .map_err(|e| self.sdk_error("StartSnapshot", e))?;
        let block_size = block_size(out.block_size());
        Ok(SnapshotInfo {
            id: out.snapshot_id().unwrap_or_default().parse()?,
            parent: out.parent_snapshot_id().and_then(|p| p.parse().ok()),
            status: status(out.status().map(|s| s.as_str())),
            volume_size_gib: out
                .volume_size()
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(req.volume_size_gib),
            block_size,
            start_time: time(out.start_time()),
            description: out.description().map(str::to_owned),
            tags: req.tags.clone(),
            encrypted: out.sse_type().is_some_and(|t| t.as_str() != "none") || req.encrypted,
            kms_key_arn: out.kms_key_arn().map(str::to_owned),
            changed_blocks_count: None,
            aggregate: None,
        })
    }

    async fn put_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        block: HashedBlock,
        checksum: Digest,
    ) -> StoreResult<()> {
        let computed = match &self.direct {
            Some(direct) => direct.put(id, index, &block, checksum).await?,
            None => self.sdk_put_block(id, index, &block, checksum).await?,
        };
        // The service answers with the checksum it computed: one more check on the way.
        match computed {
            Some(d) if d != block.digest() => Err(StoreError::corrupt(
                format!("block {index} of {id}"),
                format!(
                    "the service computed checksum {d}, ebsnap sent {}",
                    block.digest()
                ),
            )),
            _ => Ok(()),
        }
    }

    async fn prepare_completion(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<()> {
        // Out first: a CreateTags cut short may still land, and an older entry would
        // then name figures the snapshot no longer carries.
        self.lock_tagged().remove(id);
        self.tag_completion(id, count, aggregate).await?;
        self.lock_tagged().insert(id.clone(), (count, aggregate));
        Ok(())
    }

    async fn complete_snapshot(
        &self,
        id: &SnapshotId,
        count: u64,
        aggregate: Option<Digest>,
    ) -> StoreResult<SnapshotStatus> {
        // Tagged before completing, so that a failed CreateTags can never follow a
        // completion the caller would then take for a failed backup. Figures tagged
        // ahead with the last blocks save that round trip (100 ms to AWS).
        let tagged = self.lock_tagged().remove(id);
        if tagged != Some((count, aggregate)) {
            self.tag_completion(id, count, aggregate).await?;
        }
        let mut call = self
            .ebs
            .complete_snapshot()
            .snapshot_id(id.as_str())
            .changed_blocks_count(sdk_count(count, "ChangedBlocksCount")?);
        if let Some(a) = aggregate {
            call = call
                .checksum(a.to_base64())
                .checksum_algorithm(et::ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .checksum_aggregation_method(
                    et::ChecksumAggregationMethod::ChecksumAggregationLinear,
                );
        }
        let out = call
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("CompleteSnapshot {id}"), e))?;
        Ok(status(out.status().map(|s| s.as_str())))
    }

    async fn list_blocks(&self, id: &SnapshotId, page: PageRequest) -> StoreResult<BlockPage> {
        let out = self
            .ebs
            .list_snapshot_blocks()
            .snapshot_id(id.as_str())
            .set_next_token(page.token.map(|t| t.0))
            .set_max_results(page.max_results.map(|m| m.min(i32::MAX as u32) as i32))
            .starting_block_index(sdk_index(page.starting_block)?)
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("ListSnapshotBlocks {id}"), e))?;
        let blocks = out
            .blocks()
            .iter()
            .map(|b| {
                Ok(BlockRef {
                    index: our_index(b.block_index())?,
                    token: BlockToken(b.block_token().unwrap_or_default().to_owned()),
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(BlockPage {
            blocks,
            next_token: page_token(out.next_token().map(str::to_owned)),
            expiry_time: time(out.expiry_time()),
            volume_size_gib: gib(out.volume_size()),
            block_size: block_size(out.block_size()),
        })
    }

    async fn list_changed_blocks(
        &self,
        first: Option<&SnapshotId>,
        second: &SnapshotId,
        page: PageRequest,
    ) -> StoreResult<ChangedBlockPage> {
        let out = self
            .ebs
            .list_changed_blocks()
            .set_first_snapshot_id(first.map(|f| f.to_string()))
            .second_snapshot_id(second.as_str())
            .set_next_token(page.token.map(|t| t.0))
            .set_max_results(page.max_results.map(|m| m.min(i32::MAX as u32) as i32))
            .starting_block_index(sdk_index(page.starting_block)?)
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("ListChangedBlocks {second}"), e))?;
        let token = |t: Option<&str>| {
            t.filter(|t| !t.is_empty())
                .map(|t| BlockToken(t.to_owned()))
        };
        let blocks = out
            .changed_blocks()
            .iter()
            .map(|b| {
                Ok(ChangedBlock {
                    index: our_index(b.block_index())?,
                    first_token: token(b.first_block_token()),
                    second_token: token(b.second_block_token()),
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok(ChangedBlockPage {
            blocks,
            next_token: page_token(out.next_token().map(str::to_owned)),
            expiry_time: time(out.expiry_time()),
            volume_size_gib: gib(out.volume_size()),
            block_size: block_size(out.block_size()),
        })
    }

    async fn get_block(
        &self,
        id: &SnapshotId,
        index: BlockIndex,
        token: &BlockToken,
    ) -> StoreResult<FetchedBlock> {
        match &self.direct {
            Some(direct) => direct.get(id, index, token, &self.buffers).await,
            None => self.sdk_get_block(id, index, token).await,
        }
    }

    async fn describe_snapshot(&self, id: &SnapshotId) -> StoreResult<SnapshotInfo> {
        let out = self
            .ec2
            .describe_snapshots()
            .snapshot_ids(id.as_str())
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("DescribeSnapshots {id}"), e))?;
        match out.snapshots().first() {
            Some(s) => from_ec2(s),
            None => Err(StoreError::snapshot_not_found(id)),
        }
    }

    async fn list_snapshots(&self) -> StoreResult<Vec<SnapshotInfo>> {
        let mut all = Vec::new();
        let mut token = None;
        loop {
            let filter = ct::Filter::builder()
                .name("tag-key")
                .values(MANAGED_TAG)
                .build();
            let out = self
                .ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(filter)
                .max_results(1000)
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| self.sdk_error("DescribeSnapshots", e))?;
            for s in out.snapshots() {
                all.push(from_ec2(s)?);
            }
            token = out
                .next_token()
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        all.sort_by(|a, b| (a.start_time, &a.id).cmp(&(b.start_time, &b.id)));
        Ok(all)
    }

    async fn delete_snapshot(&self, id: &SnapshotId) -> StoreResult<()> {
        self.ec2
            .delete_snapshot()
            .snapshot_id(id.as_str())
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("DeleteSnapshot {id}"), e))?;
        Ok(())
    }

    async fn create_tags(&self, id: &SnapshotId, tags: &[Tag]) -> StoreResult<()> {
        let tags = tags.iter().map(|t| ec2_tag(&t.key, &t.value)).collect();
        self.ec2
            .create_tags()
            .resources(id.as_str())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("CreateTags {id}"), e))?;
        Ok(())
    }

    async fn delete_tags(&self, id: &SnapshotId, tags: &[TagFilter]) -> StoreResult<()> {
        let tags = tags
            .iter()
            .map(|t| {
                ct::Tag::builder()
                    .key(&t.key)
                    .set_value(t.value.clone())
                    .build()
            })
            .collect();
        self.ec2
            .delete_tags()
            .resources(id.as_str())
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.sdk_error(&format!("DeleteTags {id}"), e))?;
        Ok(())
    }
}
