#!/usr/bin/env python3
"""Reads a bucket back with the cloud's own client library (the independent check of what
the agent's object_store client wrote) and mirrors it into a local directory.

    bucket_mirror.py s3    OUT_DIR ENDPOINT BUCKET ACCESS_KEY SECRET_KEY
    bucket_mirror.py azure OUT_DIR ENDPOINT CONTAINER ACCOUNT ACCOUNT_KEY [CA_FILE]
    bucket_mirror.py gcs   OUT_DIR ENDPOINT BUCKET
    bucket_mirror.py azure-create ENDPOINT CONTAINER ACCOUNT ACCOUNT_KEY [CA_FILE]

Every object is written to OUT_DIR/<key>; OUT_DIR/../manifest.json maps each key to its
size, content type and user metadata as the store reports them.
"""

import json
import os
import sys


def save(out, key, data, manifest, content_type, metadata, created=None):
    path = os.path.join(out, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    manifest[key] = {
        "size": len(data),
        "content_type": content_type,
        "metadata": {k.lower(): v for k, v in (metadata or {}).items()},
        "created": created.isoformat() if created else None,
    }


def s3(endpoint, bucket, access, secret, out):
    import boto3

    c = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    )
    manifest = {}
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for o in page.get("Contents", []):
            got = c.get_object(Bucket=bucket, Key=o["Key"])
            meta = dict(got.get("Metadata", {}))
            meta["etag"] = got.get("ETag", "").strip('"')
            save(out, o["Key"], got["Body"].read(), manifest, got.get("ContentType"), meta)
    return manifest


def azure(endpoint, container, account, key, out, ca=None):
    from azure.storage.blob import BlobServiceClient

    kwargs = {"connection_verify": ca} if ca else {}
    svc = BlobServiceClient(
        account_url=f"{endpoint}/{account}",
        credential={"account_name": account, "account_key": key},
        **kwargs,
    )
    cc = svc.get_container_client(container)
    manifest = {}
    for b in cc.list_blobs(include=["metadata"]):
        data = cc.download_blob(b.name).readall()
        save(out, b.name, data, manifest, b.content_settings.content_type, b.metadata)
    return manifest


def azure_create(endpoint, container, account, key, ca=None):
    from azure.storage.blob import BlobServiceClient

    kwargs = {"connection_verify": ca} if ca else {}
    svc = BlobServiceClient(
        account_url=f"{endpoint}/{account}",
        credential={"account_name": account, "account_key": key},
        **kwargs,
    )
    svc.create_container(container)


def gcs(endpoint, bucket, out):
    os.environ["STORAGE_EMULATOR_HOST"] = endpoint
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="skygate", credentials=AnonymousCredentials())
    manifest = {}
    for b in client.list_blobs(bucket):
        save(out, b.name, b.download_as_bytes(), manifest, b.content_type, b.metadata, b.time_created)
    return manifest


def main():
    kind, args = sys.argv[1], sys.argv[2:]
    if kind == "azure-create":
        azure_create(*args)
        print("created")
        return
    out, args = args[0], args[1:]
    if kind == "s3":
        manifest = s3(*args, out)
    elif kind == "azure":
        manifest = azure(args[0], args[1], args[2], args[3], out, args[4] if len(args) > 4 else None)
    elif kind == "gcs":
        manifest = gcs(args[0], args[1], out)
    else:
        sys.exit(f"unknown store {kind}")
    with open(os.path.join(os.path.dirname(os.path.abspath(out)), "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print(len(manifest))


if __name__ == "__main__":
    main()
