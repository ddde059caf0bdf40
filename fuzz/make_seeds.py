#!/usr/bin/env python3
"""Writes the hand-made seeds of the fuzz targets into fuzz/corpus/<target>/seed-*.

Each seed is a small valid input (or a near miss) for its target, so that the fuzzer
starts from inputs that reach deep: signed requests, forms, store files. Run it from
anywhere; it rewrites the seed files and leaves the rest of the corpora alone.
"""
import hashlib
import hmac
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def seed(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- sigv4: requests signed for 2015-08-30T12:36:00Z (the clock of the target) ---
KEY_ID, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
DATE = "20150830T123600Z"


def enc(raw, keep_slash):
    safe = b"-_.~" + (b"/" if keep_slash else b"")
    return "".join(chr(b) if (chr(b).isalnum() and b < 128) or b in safe else "%%%02X" % b for b in raw)


def unquote(s):
    out, i = bytearray(), 0
    while i < len(s):
        if s[i] == "%" and i + 2 < len(s) + 0 and all(c in "0123456789abcdefABCDEF" for c in s[i + 1:i + 3]) and len(s[i + 1:i + 3]) == 2:
            out.append(int(s[i + 1:i + 3], 16))
            i += 3
        else:
            out += s[i].encode()
            i += 1
    return bytes(out)


def signed(method, target, headers, body=b"", service="service"):
    path, _, query = target.partition("?")
    pairs = sorted((enc(unquote(k), False), enc(unquote(v), False))
                   for k, _, v in (p.partition("=") for p in query.split("&") if p))
    headers = [("host", "example.amazonaws.com"), ("x-amz-date", DATE)] + headers
    signed_h = sorted((k.lower(), v.strip()) for k, v in headers)
    names = ";".join(k for k, _ in signed_h)
    payload = dict(headers).get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
    canonical = "\n".join([method, enc(path.encode(), True), "&".join(f"{k}={v}" for k, v in pairs)]
                          + [f"{k}:{v}" for k, v in signed_h] + ["", names, payload])
    scope = f"{DATE[:8]}/us-east-1/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", DATE, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + SECRET).encode()
    for part in (DATE[:8], "us-east-1", service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, SignedHeaders={names}, Signature={sig}"
    head = f"{method} {target}\n" + "".join(f"{k}: {v}\n" for k, v in headers + [("authorization", auth)])
    return head.encode() + b"\n" + body


# AWS's own get-vanilla vector.
seed("sigv4", "get-vanilla", "GET /\nhost: example.amazonaws.com\nx-amz-date: 20150830T123600Z\n"
     "authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
     "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31\n\n")
seed("sigv4", "list-blocks", signed("GET", "/snapshots/snap-0123456789abcdef0/blocks?maxResults=100&pageToken=ab%2Bc%3D", [], service="ebs"))
seed("sigv4", "put-block", signed("PUT", "/snapshots/snap-0123456789abcdef0/blocks/7",
     [("x-amz-content-sha256", "UNSIGNED-PAYLOAD"), ("x-amz-checksum", "B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE="),
      ("x-amz-checksum-algorithm", "SHA256"), ("x-amz-data-length", "524288")], b"data", service="ebs"))
body = b'{"VolumeSize":1,"ClientToken":"c"}'
seed("sigv4", "start-hashed", signed("POST", "/snapshots", [("x-amz-content-sha256", hashlib.sha256(body).hexdigest())], body, service="ebs"))
seed("sigv4", "ec2-form", signed("POST", "/", [("content-type", "application/x-www-form-urlencoded")],
     b"Action=DescribeSnapshots&Owner.1=self", service="ec2"))
seed("sigv4", "odd-path", signed("GET", "/snapshots/%2e%2e%2F%FF/blocks?a=%FF&b=+&c", [("x-amz-meta", "a  b\tc")], service="ebs"))

# --- http_request: {A} completed, {P} pending, {T} a genuine block token ---
for name, text in {
    "list": "GET /snapshots/{A}/blocks?maxResults=100&startingBlockIndex=1\n\n",
    "get": "GET /snapshots/{A}/blocks/1?blockToken={T}\n\n",
    "changed": "GET /snapshots/{A}/changedblocks?firstSnapshotId={A}&maxResults=100\n\n",
    "start": 'POST /snapshots\ncontent-type: application/json\n\n{"VolumeSize": 2, "ParentSnapshotId": "{A}", "Tags": [{"Key": "k", "Value": "v"}], "Description": "d", "ClientToken": "t", "Timeout": 60}',
    "put": "PUT /snapshots/{P}/blocks/3\nx-amz-data-length: 524288\nx-amz-checksum: B4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=\nx-amz-checksum-algorithm: SHA256\nx-amz-progress: 50\n\nshort",
    "complete": "POST /snapshots/completion/{P}\nx-amz-changedblockscount: 0\nx-amz-checksum-aggregation-method: LINEAR\n\n",
    "describe": "POST /\ncontent-type: application/x-www-form-urlencoded\n\nAction=DescribeSnapshots&Filter.1.Name=tag-key&Filter.1.Value.1=*&Filter.2.Name=status&Filter.2.Value.1=comp?eted&MaxResults=5",
    "tags": "POST /\n\nAction=CreateTags&ResourceId.1={A}&Tag.1.Key=host&Tag.1.Value=db1",
    "untag": "POST /\n\nAction=DeleteTags&ResourceId.1={A}&Tag.1.Key=host",
    "delete": "POST /\n\nAction=DeleteSnapshot&SnapshotId={P}",
    "method": "DELETE /snapshots/{A}/blocks\n\n",
}.items():
    seed("http_request", name, text)

# --- ec2_form ---
for name, text in {
    "describe": "Action=DescribeSnapshots&SnapshotId.1=snap-0123456789abcdef0&Owner.1=self",
    "filters": "Action=DescribeSnapshots&Filter.1.Name=description&Filter.1.Value.1=db*disk&Filter.2.Name=tag:host&Filter.2.Value.1=d?1&Filter.3.Name=volume-size&Filter.3.Value.1=8",
    "paging": "Action=DescribeSnapshots&MaxResults=5&NextToken=MQ",
    "tags": "Action=CreateTags&ResourceId.1=snap-0123456789abcdef0&ResourceId.2=snap-fedcba98765432100&Tag.1.Key=k&Tag.1.Value=v",
    "globs": "a=*a*b&b=xxaxxb&c=a?c&d=abc&e=*&f=&g=%2A%3F",
}.items():
    seed("ec2_form", name, text)

# --- ebs_parse: body, id, query, checksum, token ---
seed("ebs_parse", "start", '{"VolumeSize": 1, "ParentSnapshotId": "snap-0123456789abcdef0", "Tags": [{"Key": "k"}], "Timeout": 4320, "Encrypted": false, "KmsKeyArn": "arn"}\n'
     "snap-0123456789abcdef0\nmaxResults=100&startingBlockIndex=5&pageToken=\nB4VNL+8pega6gWheZgwzLeNtXRjVRpJ9MNqtbX/aFUE=\nAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
seed("ebs_parse", "limits", '{"VolumeSize": 65537, "Timeout": -1}\nsnap-0123456789ABCDEF0\nmaxResults=99999999999\nnot base64\n\n')

# --- local_files: a kind byte, then the file ---
def record(index, pack, slot, digest):
    return struct.pack("<QII", index, pack, slot) + digest

ZERO = hashlib.sha256(bytes(524288)).digest()
DATA = hashlib.sha256(b"\x5a" * 524288).digest()
ZERO_PACK = 0xFFFFFFFF
mapfile = b"EBSNMAP1" + struct.pack("<Q", 3) + record(0, ZERO_PACK, 0, ZERO) + record(1, 1, 0, DATA) + record(9, 1, 1, DATA)
seed("local_files", "map", b"\x00" + mapfile)
seed("local_files", "journal", b"\x01" + record(0, 1, 0, DATA) + bytes(48) + record(2, ZERO_PACK, 0, ZERO))
seed("local_files", "idx", b"\x02" + b"EBSNIDX1" + struct.pack("<Q", 2) + DATA + bytes(32))


def meta(id, status, parent=None, lineage=None, count=None, aggregate=None):
    return json.dumps({
        "version": 1, "id": id, "parent": parent, "lineage": lineage or id, "status": status,
        "volume_size_gib": 1, "start_time_ms": 1700000000000, "description": "d",
        "tags": [["k", "v"]], "encrypted": False, "client_token": "t", "request_fingerprint": None,
        "timeout_minutes": 60, "changed_blocks_count": count, "aggregate": aggregate,
    }, indent=1)


seed("local_files", "meta", b"\x03" + meta("snap-0123456789abcdef0", "completed", count=2).encode())
seed("local_files", "format", b"\x04" + b'{"format":"ebsnap-local-store","version":1}\n' + bytes(range(32)))

# --- local_store: a lineage of two completed snapshots and a pending one ---
import base64
A, B, C = "snap-00000000000000001", "snap-00000000000000002", "snap-0000000000000000c"
agg = lambda *digests: base64.b64encode(hashlib.sha256(b"".join(digests)).digest()).decode()
files = [
    (f"snapshots/{A}.json", meta(A, "completed", count=2, aggregate=agg(ZERO, DATA)).encode()),
    (f"snapshots/{A}.map", b"EBSNMAP1" + struct.pack("<Q", 2) + record(0, ZERO_PACK, 0, ZERO) + record(1, 1, 0, DATA)),
    (f"snapshots/{B}.json", meta(B, "completed", parent=A, lineage=A, count=1, aggregate=agg(ZERO)).encode()),
    (f"snapshots/{B}.map", b"EBSNMAP1" + struct.pack("<Q", 1) + record(1, ZERO_PACK, 0, ZERO)),
    (f"snapshots/{C}.json", meta(C, "pending", parent=B, lineage=A).encode()),
    (f"snapshots/{C}.journal", bytes(48) + record(1, 1, 0, DATA)),
    ("packs/00000001.idx", b"EBSNIDX1" + struct.pack("<Q", 1) + DATA),
    ("packs/00000001.pack", b""),
]
seed("local_store", "lineage", b"".join(b"=== " + n.encode() + b"\n" + c + b"\n" for n, c in files))
seed("local_store", "one", b"".join(b"=== " + n.encode() + b"\n" + c + b"\n" for n, c in files[:2]))

# --- manifest: a header and four records, one of them zero ---
header = json.dumps({"store": "local:/s", "snapshot_id": A, "source": "/dev/x", "source_bytes": 4 * 524288,
                     "blocks": 4, "digest": "blake3"}).encode()
head = (b"EBSNMAN1" + struct.pack("<I", len(header)) + header).ljust(4096, b"\0")
seed("manifest", "four", head + hashlib.sha256(b"a").digest() + bytes(32) + hashlib.sha256(b"b").digest() * 2)
seed("manifest", "empty", (b"EBSNMAN1" + struct.pack("<I", len(header.replace(b'"blocks": 4', b'"blocks": 0'))) + header.replace(b'"blocks": 4', b'"blocks": 0')).ljust(4096, b"\0"))


# --- nbd_proto: client flags, options, then transmission requests ---
def nbd_option(option, data=b""):
    return struct.pack(">QII", 0x49484156454F5054, option, len(data)) + data


def nbd_request(kind, offset, length, flags=0, cookie=1):
    return struct.pack(">IHHQQI", 0x25609513, flags, kind, cookie, offset, length)


def nbd_name(name):
    return struct.pack(">I", len(name)) + name


NBD_FLAGS = struct.pack(">I", 3)
NBD_META = nbd_name(b"") + struct.pack(">I", 1) + nbd_name(b"base:allocation")
seed("nbd_proto", "go", NBD_FLAGS + nbd_option(3) + nbd_option(8) + nbd_option(10, NBD_META)
     + nbd_option(6, nbd_name(b"") + struct.pack(">HH", 1, 3))
     + nbd_option(7, nbd_name(b"") + struct.pack(">H", 0))
     + nbd_request(0, 0, 4096) + nbd_request(7, 0, 1 << 20) + nbd_request(1, 0, 0)
     + nbd_request(3, 0, 0) + nbd_request(2, 0, 0))
seed("nbd_proto", "export-name", NBD_FLAGS + nbd_option(9, nbd_name(b"") + struct.pack(">I", 0))
     + nbd_option(1, b"snap-0123456789abcdef0") + nbd_request(0, 20971520 - 4096, 8192))


# --- tls_handshake: a real ClientHello (Python's ssl module's), whole and cut short ---
def client_hello():
    import socket
    import ssl
    import threading
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def connect():
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(listener.getsockname(), timeout=2) as s:
                context.wrap_socket(s, server_hostname="localhost")
        except OSError:
            pass  # the listener below never answers

    thread = threading.Thread(target=connect)
    thread.start()
    conn, _ = listener.accept()
    conn.settimeout(2)
    data = conn.recv(65536)
    conn.close()
    thread.join()
    listener.close()
    return data


HELLO = client_hello()
seed("tls_handshake", "client-hello", HELLO)
seed("tls_handshake", "client-hello-cut", HELLO[: len(HELLO) // 2])
seed("tls_handshake", "plain-http", b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
# --- keys_file: the keys file of `serve --keys` ---
KEY = '[[key]]\naccess_key_id = "AKIAHOSTDB1EXAMPLE01"\nsecret_access_key = "db1-secret"\nrole = "backup"\nowner = "111122223333"\n'
seed("keys_file", "one", KEY)
seed("keys_file", "roles", KEY + KEY.replace("DB1", "DB2").replace("backup", "read") + KEY.replace("DB1", "ADM").replace("backup", "admin"))
seed("keys_file", "twice", KEY + KEY)
seed("keys_file", "bad-owner", KEY.replace("111122223333", "1111"))
seed("keys_file", "unknown-field", KEY + 'comment = "x"\n')
seed("keys_file", "empty", "")
