//! The `ebsnap:` tags by which a snapshot on EBS carries what EC2 does not report (its
//! parent, and the block count and aggregate of a completed snapshot). Used by the EBS
//! store, which writes and reads them, and by the server, which reports them; kept
//! apart from the EBS store so that the server builds without the AWS SDK.

/// Marks snapshots made through this store: `snapshots` lists only those.
pub const MANAGED_TAG: &str = "ebsnap:managed";
/// The parent snapshot (EC2 does not report it).
pub const PARENT_TAG: &str = "ebsnap:parent";
/// Blocks written to the snapshot, set when it completes.
pub const COUNT_TAG: &str = "ebsnap:blocks-written";
/// The LINEAR aggregate of those blocks, set when it completes.
pub const CHECKSUM_TAG: &str = "ebsnap:checksum";
/// Tags that stand for fields of [`SnapshotInfo`](super::SnapshotInfo); never shown as tags.
pub const FIELD_TAGS: [&str; 3] = [PARENT_TAG, COUNT_TAG, CHECKSUM_TAG];
