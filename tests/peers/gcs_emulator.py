#!/usr/bin/env python3
"""gcp-storage-emulator, with two gaps of its XML upload API closed the way real GCS
behaves, so a client that uses that API (object_store does) can be tested against it:

- the `PUT /BUCKET/OBJECT` response carries the object's `ETag` (real GCS always does;
  object_store refuses a response without one);
- `x-goog-meta-*` request headers become the object's custom metadata (real GCS keeps
  them; the emulator only does so for its JSON API).

    gcs_emulator.py PORT BUCKET      in memory, on 127.0.0.1; prints "ready"
"""

import sys
import threading

from gcp_storage_emulator.handlers import objects

_upload = objects.xml_upload


def xml_upload(request, response, storage, *args, **kwargs):
    _upload(request, response, storage, *args, **kwargs)
    if response.status != 200:
        return
    bucket, name = request.params["bucket_name"], request.params["object_id"]
    try:
        obj = storage.get_file_obj(bucket, name)
    except Exception:
        return
    headers = request._request_handler.headers
    meta = {
        k[len("x-goog-meta-"):].lower(): v
        for k, v in headers.items()
        if k.lower().startswith("x-goog-meta-")
    }
    if meta:
        obj["metadata"] = meta
        storage.patch_object(bucket, name, obj)
    response["ETag"] = '"{}"'.format(obj.get("etag") or obj.get("md5Hash", ""))


# The server module binds its handler table at import: patch first, import after.
objects.xml_upload = xml_upload
from gcp_storage_emulator.server import create_server  # noqa: E402


def main():
    port, bucket = int(sys.argv[1]), sys.argv[2]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=bucket)
    threading.Timer(0.5, lambda: print("ready", flush=True)).start()
    server.run()


if __name__ == "__main__":
    main()
