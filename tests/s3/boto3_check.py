#!/usr/bin/python3
"""An independent S3 client (Debian's python3-boto3) checks a TQ checkpoint we wrote:
lists the prefix, downloads every file the manifest names, compares size and sha256.

    boto3_check.py s3://bucket/prefix     (AWS_* environment as for tqserve)
Exit 0 when everything matches; prints one line per file.
"""
import hashlib
import json
import os
import sys

import boto3


def main():
    uri = sys.argv[1]
    assert uri.startswith("s3://"), uri
    bucket, _, prefix = uri[5:].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3"),
                      region_name=os.environ.get("AWS_REGION", "us-east-1"))
    listed = {}
    token = None
    while True:
        kw = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": 3}
        if token:
            kw["ContinuationToken"] = token
        page = s3.list_objects_v2(**kw)
        for o in page.get("Contents", []):
            listed[o["Key"][len(prefix):]] = o["Size"]
        if not page.get("IsTruncated"):
            break
        token = page["NextContinuationToken"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=prefix + "tq_manifest.json")["Body"].read())
    bad = 0
    for f in manifest["files"]:
        body = s3.get_object(Bucket=bucket, Key=prefix + f["name"])["Body"].read()
        digest = hashlib.sha256(body).hexdigest()
        ok = digest == f["sha256"] and len(body) == f["size"] and listed.get(f["name"]) == f["size"]
        bad += 0 if ok else 1
        print(("ok   " if ok else "BAD  ") + f["name"], len(body), digest)
    extra = set(listed) - {f["name"] for f in manifest["files"]} - {"tq_manifest.json"}
    if extra:
        print("unexpected objects:", sorted(extra))
        bad += 1
    print(f"{len(manifest['files'])} files checked, {bad} bad")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
