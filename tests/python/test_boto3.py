"""boto3 against `ebsnap serve`, used the way boto3's EBS client is documented to be used.

The test starts the server itself (the binary from EBSNAP_BIN), with a key pair that
boto3 signs with, on 127.0.0.1 with a free port.
"""

import base64
import glob
import hashlib
import os
import subprocess
import tempfile
import unittest

import boto3
import botocore.exceptions
from botocore.config import Config

BLOCK = 524288
KEY_ID = "AKIDBOTO3TEST"
SECRET = "boto3-test-secret/abcdefghijklmnop"


def b64sha256(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def block(seed):
    return hashlib.sha256(str(seed).encode()).digest() * (BLOCK // 32)


class Boto3AgainstServe(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        env = dict(os.environ, EBSNAP_ACCESS_KEY_ID=KEY_ID, EBSNAP_SECRET_ACCESS_KEY=SECRET)
        # Two named keys: the first is the default, a KmsKeyArn ending in key/NAME picks one.
        keys = cls.tmp.name + "/keys.toml"
        with open(os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            for name in ("first", "second"):
                f.write('[[key]]\nname = "%s"\nsecret = "%s"\n' % (name, base64.b64encode(os.urandom(32)).decode()))
        cls.server = subprocess.Popen(
            [os.environ["EBSNAP_BIN"], "serve", "--listen", "127.0.0.1:0", "--store", cls.tmp.name + "/store",
             "--key-file", keys],
            stdout=subprocess.PIPE, env=env, text=True)
        line = cls.server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://"))
        session = boto3.session.Session(aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET, region_name="us-east-1")
        config = Config(retries={"max_attempts": 1})
        cls.ebs = session.client("ebs", endpoint_url=url, config=config)
        cls.ec2 = session.client("ec2", endpoint_url=url, config=config)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=10)
        cls.tmp.cleanup()

    def list_all(self, call, key, **kwargs):
        """boto3 has no paginator for ebs: loop on NextToken."""
        items, token = [], None
        while True:
            args = dict(kwargs, MaxResults=100)
            if token:
                args["NextToken"] = token
            page = call(**args)
            items += page[key]
            token = page.get("NextToken")
            if not token:
                return items

    def upload(self, blocks, **start):
        snap = self.ebs.start_snapshot(VolumeSize=1, Timeout=60, **start)
        self.assertEqual(snap["Status"], "pending")
        self.assertEqual(snap["BlockSize"], BLOCK)
        sid = snap["SnapshotId"]
        for index, data in sorted(blocks.items()):
            put = self.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=index, BlockData=data, DataLength=BLOCK,
                                              Checksum=b64sha256(data), ChecksumAlgorithm="SHA256")
            self.assertEqual(put["Checksum"], b64sha256(data))
        aggregate = hashlib.sha256(b"".join(hashlib.sha256(blocks[i]).digest() for i in sorted(blocks))).digest()
        done = self.ebs.complete_snapshot(SnapshotId=sid, ChangedBlocksCount=len(blocks),
                                          Checksum=base64.b64encode(aggregate).decode(),
                                          ChecksumAlgorithm="SHA256", ChecksumAggregationMethod="LINEAR")
        self.assertIn(done["Status"], ("pending", "completed"))
        self.ec2.get_waiter("snapshot_completed").wait(SnapshotIds=[sid], WaiterConfig={"Delay": 1, "MaxAttempts": 30})
        return sid

    def test_all_six_operations_and_describe(self):
        blocks = {i * 7: block(i) for i in range(150)}
        parent = self.upload(blocks, Description="boto3 parent", Tags=[{"Key": "made-by", "Value": "boto3"}])
        listed = self.list_all(self.ebs.list_snapshot_blocks, "Blocks", SnapshotId=parent)
        self.assertEqual([b["BlockIndex"] for b in listed], sorted(blocks))
        for b in listed[:5] + listed[-5:]:
            got = self.ebs.get_snapshot_block(SnapshotId=parent, BlockIndex=b["BlockIndex"], BlockToken=b["BlockToken"])
            data = got["BlockData"].read()
            self.assertEqual(data, blocks[b["BlockIndex"]])
            self.assertEqual(got["Checksum"], b64sha256(data))
            self.assertEqual(got["DataLength"], BLOCK)

        child_blocks = {7: block("new"), 2000: block("far")}
        child = self.upload(child_blocks, ParentSnapshotId=parent)
        changed = self.list_all(self.ebs.list_changed_blocks, "ChangedBlocks",
                                FirstSnapshotId=parent, SecondSnapshotId=child)
        self.assertEqual([c["BlockIndex"] for c in changed], [7, 2000])
        self.assertIn("FirstBlockToken", changed[0])
        self.assertNotIn("FirstBlockToken", changed[1], "the parent has no data at 2000")
        inherited = self.list_all(self.ebs.list_snapshot_blocks, "Blocks", SnapshotId=child)
        self.assertEqual(len(inherited), 151)

        described = self.ec2.describe_snapshots(SnapshotIds=[parent])["Snapshots"][0]
        self.assertEqual(described["State"], "completed")
        self.assertEqual(described["Progress"], "100%")
        self.assertEqual(described["VolumeSize"], 1)
        self.assertEqual(described["Description"], "boto3 parent")
        self.assertIn({"Key": "made-by", "Value": "boto3"}, described["Tags"])
        by_tag = self.ec2.describe_snapshots(Filters=[{"Name": "tag:made-by", "Values": ["boto3"]}])["Snapshots"]
        self.assertEqual([s["SnapshotId"] for s in by_tag], [parent])
        paged, token = [], None
        while True:
            args = {"MaxResults": 5, "OwnerIds": ["self"]}
            if token:
                args["NextToken"] = token
            page = self.ec2.describe_snapshots(**args)
            paged += page["Snapshots"]
            token = page.get("NextToken")
            if not token:
                break
        self.assertTrue({parent, child} <= {s["SnapshotId"] for s in paged})

        self.ec2.create_tags(Resources=[child], Tags=[{"Key": "stage", "Value": "test"}])
        tags = self.ec2.describe_snapshots(SnapshotIds=[child])["Snapshots"][0].get("Tags", [])
        self.assertIn({"Key": "stage", "Value": "test"}, tags)
        self.ec2.delete_tags(Resources=[child], Tags=[{"Key": "stage"}])
        tags = self.ec2.describe_snapshots(SnapshotIds=[child])["Snapshots"][0].get("Tags", [])
        self.assertNotIn("stage", [t["Key"] for t in tags])

        self.ec2.delete_snapshot(SnapshotId=parent)
        with self.assertRaises(botocore.exceptions.ClientError) as err:
            self.ec2.describe_snapshots(SnapshotIds=[parent])
        self.assertEqual(err.exception.response["Error"]["Code"], "InvalidSnapshot.NotFound")
        self.assertEqual(len(self.list_all(self.ebs.list_snapshot_blocks, "Blocks", SnapshotId=child)), 151,
                         "the child keeps what it inherited")

    def test_sse_type_tells_the_truth_and_kms_key_arn_selects_a_key(self):
        arn = "arn:aws:kms:us-east-1:111122223333:key/second"
        for start, sse in (({}, "none"), ({"Encrypted": True}, "sse-ebs"),
                           ({"Encrypted": True, "KmsKeyArn": arn}, "sse-kms")):
            snap = self.ebs.start_snapshot(VolumeSize=1, **start)
            self.assertEqual(snap["SseType"], sse, start)
            self.assertEqual(snap.get("KmsKeyArn"), start.get("KmsKeyArn"))
            self.ebs.complete_snapshot(SnapshotId=snap["SnapshotId"], ChangedBlocksCount=0)
        data = block("secret")
        sid = self.upload({0: data}, Encrypted=True, KmsKeyArn=arn)
        described = self.ec2.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertTrue(described["Encrypted"])
        self.assertEqual(described["KmsKeyId"], arn)
        listed = self.list_all(self.ebs.list_snapshot_blocks, "Blocks", SnapshotId=sid)
        got = self.ebs.get_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockToken=listed[0]["BlockToken"])
        self.assertEqual(got["BlockData"].read(), data)
        for path in glob.glob(self.tmp.name + "/store/packs/*"):
            with open(path, "rb") as f:
                self.assertNotIn(data[:4096], f.read(), path)
        with open("%s/store/snapshots/%s.json" % (self.tmp.name, sid)) as f:
            self.assertIn('"key_name": "second"', f.read())
        with self.assertRaises(botocore.exceptions.ClientError) as err:
            self.ebs.start_snapshot(VolumeSize=1, Encrypted=True, KmsKeyArn=arn.replace("second", "third"))
        self.assertEqual(err.exception.response["Error"]["Code"], "ValidationException")
        self.assertEqual(err.exception.response["Reason"], "INVALID_CUSTOMER_KEY")

    def test_errors_carry_type_and_reason(self):
        with self.assertRaises(self.ebs.exceptions.ResourceNotFoundException) as err:
            self.ebs.list_snapshot_blocks(SnapshotId="snap-0123456789abcdef0")
        self.assertEqual(err.exception.response["Reason"], "SNAPSHOT_NOT_FOUND")
        sid = self.ebs.start_snapshot(VolumeSize=1)["SnapshotId"]
        data = block("x")
        with self.assertRaises(self.ebs.exceptions.ValidationException) as err:
            self.ebs.put_snapshot_block(SnapshotId=sid, BlockIndex=0, BlockData=data, DataLength=BLOCK,
                                        Checksum=b64sha256(b"other"), ChecksumAlgorithm="SHA256")
        self.assertEqual(err.exception.response["Reason"], "INVALID_PARAMETER_VALUE")
        with self.assertRaises(self.ebs.exceptions.ValidationException) as err:
            self.ebs.list_snapshot_blocks(SnapshotId=sid)
        self.assertEqual(err.exception.response["Reason"], "INVALID_SNAPSHOT_ID", "pending snapshots are unreadable")

    def test_a_wrong_secret_is_refused(self):
        bad = boto3.session.Session(aws_access_key_id=KEY_ID, aws_secret_access_key="wrong", region_name="us-east-1")
        client = bad.client("ebs", endpoint_url=self.ebs.meta.endpoint_url, config=Config(retries={"max_attempts": 1}))
        with self.assertRaises(botocore.exceptions.ClientError) as err:
            client.start_snapshot(VolumeSize=1)
        self.assertEqual(err.exception.response["ResponseMetadata"]["HTTPStatusCode"], 403)


if __name__ == "__main__":
    unittest.main()
