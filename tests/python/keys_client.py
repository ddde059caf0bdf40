"""One boto3 call against `ebsnap serve`, for tests/serve_keys.rs.

    keys_client.py URL ACCESS_KEY_ID SECRET SERVICE OPERATION JSON_PARAMS

Prints one JSON object: {"ok": RESPONSE} or {"error": CODE, "status": HTTP_STATUS,
"message": MESSAGE}. No retries, so that a refusal is seen as the server gave it.
"""

import json
import sys

import boto3
import botocore.exceptions
from botocore.config import Config


def main():
    url, key_id, secret, service, operation, params = sys.argv[1:7]
    session = boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="us-east-1")
    client = session.client(service, endpoint_url=url, config=Config(retries={"max_attempts": 1}))
    try:
        response = getattr(client, operation)(**json.loads(params))
        response.pop("ResponseMetadata", None)
        if hasattr(response.get("BlockData"), "read"):
            response["BlockData"] = len(response["BlockData"].read())
        print(json.dumps({"ok": response}, default=str))
    except botocore.exceptions.ClientError as e:
        print(json.dumps({
            "error": e.response["Error"]["Code"],
            "status": e.response["ResponseMetadata"]["HTTPStatusCode"],
            "message": e.response["Error"].get("Message", ""),
        }))


if __name__ == "__main__":
    main()
