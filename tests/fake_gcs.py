"""A Google Cloud Storage bucket held in memory, so that tests can use real gs:// workdirs.

Three clients touch a gs:// workdir during a run, and all three reach this one store:

- `etils.epath` (config, pictures, metrics, Orbax's folders and small files) through fsspec:
  `InMemoryGCS` answers for gs:// (with `EPATH_USE_TF=false`; TensorFlow's own GCS client
  has no endpoint override);
- TensorStore's GCS driver (Orbax's array data) through `TENSORSTORE_GCS_HTTP_URL`;
- google-cloud-storage (Orbax asks the bucket's metadata before listing or deleting steps)
  through `STORAGE_EMULATOR_HOST`.

The last two talk HTTP to `BucketServer`, which serves `InMemoryGCS.store` through the part
of GCS's JSON API they use: objects get (media or metadata, byte ranges), insert (media
upload), delete and list (prefix, delimiter, offsets, pages), each with GCS's generation
numbers and `ifGenerationMatch` / `ifGenerationNotMatch` preconditions, which TensorStore's
OCDBT writes depend on; and bucket get. It follows TensorStore's own GCS mock
(tensorstore/kvstore/gcs_http/gcs_mock.cc).
"""

import http.server
import json
import re
import threading
import urllib.parse

import fsspec.implementations.memory
import fsspec.utils


class InMemoryGCS(fsspec.implementations.memory.MemoryFileSystem):
    """fsspec's in-memory filesystem answering for gs:// (a bucket that is not the local disk).

    Keys are "/<bucket>/<object name>"."""

    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs: list = [""]

    @classmethod
    def _strip_protocol(cls, path):
        path = fsspec.utils.stringify_path(path).removeprefix("gs://").removeprefix("gcs://")
        return "/" + path.strip("/") if path else ""

    @classmethod
    def clear(cls) -> None:
        cls.store.clear()
        cls.pseudo_dirs[:] = [""]


class _Generations:
    """GCS generation numbers for the objects of `InMemoryGCS.store`, whoever wrote them.

    An object gets a new number whenever the stored file object changes (fsspec stores a new
    one per write), as GCS gives each write of an object a new generation."""

    def __init__(self):
        self._last = 0
        self._seen: dict[str, tuple[object, int]] = {}

    def of(self, key: str) -> int | None:
        stored = InMemoryGCS.store.get(key)
        if stored is None:
            return None
        seen = self._seen.get(key)
        if seen is None or seen[0] is not stored:
            self._last += 1
            seen = self._seen[key] = (stored, self._last)  # Holding it keeps its id unique.
        return seen[1]


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """[start, stop) of an HTTP Range header ("bytes=a-b", "bytes=a-", "bytes=-n")."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header or "")
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if not first:
        return max(0, size - int(last)), size
    return int(first), min(size, int(last) + 1) if last else size


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Keep-alive, as the clients expect.
    server: "BucketServer"

    def log_message(self, *args) -> None:  # Quiet.
        pass

    # -- plumbing ------------------------------------------------------------------------------

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, value: dict) -> None:
        self._reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _route(self) -> tuple[str, str, str | None, dict[str, str]]:
        """(api, bucket, object name or None, query) of the request's URL."""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        match = re.fullmatch(r"/(upload/)?storage/v1/b/([^/]+)(/o(?:/(.*))?)?", url.path)
        if not match:
            return "", "", None, query
        upload, bucket, objects, name = match.groups()
        api = "upload" if upload else ("objects" if objects else "bucket")
        return api, bucket, urllib.parse.unquote(name) if name else None, query

    def _metadata(self, bucket: str, name: str) -> dict:
        key = f"/{bucket}/{name}"
        return {
            "kind": "storage#object",
            "name": name,
            "bucket": bucket,
            "generation": str(self.server.generations.of(key)),
            "metageneration": "1",
            "size": str(InMemoryGCS.store[key].size),
            "contentType": "application/octet-stream",
            "timeCreated": "2026-01-01T00:00:00.000Z",
            "updated": "2026-01-01T00:00:00.000Z",
        }

    def _precondition_fails(self, key: str, query: dict[str, str]) -> int | None:
        """412 or 304 where a generation precondition does not hold, else None."""
        generation = self.server.generations.of(key)
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != (generation or 0):
            return 412
        if "ifGenerationNotMatch" in query and generation is not None:
            if int(query["ifGenerationNotMatch"]) == generation:
                return 304
        return None

    # -- the API -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        api, bucket, name, query = self._route()
        with self.server.lock:
            if api == "bucket":
                return self._json(200, {"kind": "storage#bucket", "id": bucket, "name": bucket})
            if api == "objects" and name is None:
                return self._list(bucket, query)
            if api != "objects":
                return self._reply(404)
            key = f"/{bucket}/{name}"
            failed = self._precondition_fails(key, query)
            if failed:
                return self._reply(failed)
            if key not in InMemoryGCS.store:
                return self._reply(404)
            if query.get("alt") != "media":
                return self._json(200, self._metadata(bucket, name))
            data = InMemoryGCS.store[key].getvalue()
            headers = {
                "Content-Type": "application/octet-stream",
                "x-goog-generation": str(self.server.generations.of(key)),
                "x-goog-metageneration": "1",
            }
            span = _range(self.headers.get("Range"), len(data))
            if span is None:
                return self._reply(200, data, headers)
            start, stop = span
            if start >= len(data) or stop < start:
                return self._reply(416)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
            return self._reply(206, data[start:stop], headers)

    def do_POST(self) -> None:
        api, bucket, _, query = self._route()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if api != "upload" or query.get("uploadType") != "media" or not query.get("name"):
            return self._reply(400, b"only uploadType=media uploads are served")
        key = f"/{bucket}/{query['name']}"
        with self.server.lock:
            failed = self._precondition_fails(key, query)
            if failed:
                return self._reply(412 if failed == 304 else failed)
            InMemoryGCS.store[key] = fsspec.implementations.memory.MemoryFile(None, key, body)
            return self._json(200, self._metadata(bucket, query["name"]))

    def do_DELETE(self) -> None:
        api, bucket, name, query = self._route()
        key = f"/{bucket}/{name}"
        with self.server.lock:
            if api != "objects" or name is None or key not in InMemoryGCS.store:
                return self._reply(404)
            failed = self._precondition_fails(key, query)
            if failed:
                return self._reply(412)
            del InMemoryGCS.store[key]
            return self._reply(204)

    def _list(self, bucket: str, query: dict[str, str]) -> None:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        start = query.get("pageToken") or query.get("startOffset", "")
        stop = query.get("endOffset")
        limit = int(query.get("maxResults") or 1000)
        names = sorted(
            key[len(bucket) + 2 :] for key in InMemoryGCS.store if key.startswith(f"/{bucket}/")
        )
        items, prefixes, token = [], set(), None
        for name in names:
            if not name.startswith(prefix) or name < start or (stop and name >= stop):
                continue
            if query.get("pageToken") and name == start:
                continue  # The token is the last name of the previous page.
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            if len(items) == limit:
                token = items[-1]["name"]
                break
            items.append(self._metadata(bucket, name))
        result = {"kind": "storage#objects", "items": items}
        if prefixes:
            result["prefixes"] = sorted(prefixes)
        if token:
            result["nextPageToken"] = token
        self._json(200, result)


class BucketServer(http.server.ThreadingHTTPServer):
    """The GCS JSON API over `InMemoryGCS.store`, on a free local port, in a daemon thread."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.generations = _Generations()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()
