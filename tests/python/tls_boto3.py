"""boto3 against `ebsnap serve` over TLS (run by tests/serve_tls.rs).

    tls_boto3.py ENDPOINT CA_BUNDLE

Trusts only CA_BUNDLE (verify=), writes a snapshot through the EBS direct APIs
(StartSnapshot, PutSnapshotBlock, CompleteSnapshot), reads it back, and finds it with
EC2 DescribeSnapshots. Credentials come from the environment. Exits 0 on success.
"""
import base64
import hashlib
import sys

import boto3
from botocore.config import Config

endpoint, ca = sys.argv[1], sys.argv[2]
config = Config(retries={"max_attempts": 1})
ebs = boto3.client("ebs", endpoint_url=endpoint, region_name="us-east-1", verify=ca, config=config)
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1", verify=ca, config=config)

data = bytes(range(256)) * 2048
digest = hashlib.sha256(data).digest()
checksum = base64.b64encode(digest).decode()
snap = ebs.start_snapshot(VolumeSize=1, Description="over TLS")["SnapshotId"]
put = ebs.put_snapshot_block(
    SnapshotId=snap, BlockIndex=3, BlockData=data, DataLength=len(data),
    Checksum=checksum, ChecksumAlgorithm="SHA256",
)
assert put["Checksum"] == checksum, put
aggregate = base64.b64encode(hashlib.sha256(digest).digest()).decode()
done = ebs.complete_snapshot(
    SnapshotId=snap, ChangedBlocksCount=1, Checksum=aggregate,
    ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR",
)
assert done["Status"] in ("pending", "completed"), done
ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[snap], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
blocks = ebs.list_snapshot_blocks(SnapshotId=snap)["Blocks"]
assert [b["BlockIndex"] for b in blocks] == [3], blocks
got = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=3, BlockToken=blocks[0]["BlockToken"])
assert got["BlockData"].read() == data
found = ec2.describe_snapshots(SnapshotIds=[snap])["Snapshots"]
assert [s["Description"] for s in found] == ["over TLS"], found
print("ok", snap)
