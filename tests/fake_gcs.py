"""Google Cloud Storage held in memory, so that tests can use real gs:// workdirs.

Three clients touch a gs:// workdir during a run, as on Colab, and all three reach one
`BucketServer`, which serves the part of GCS's JSON API they use: objects get (metadata, or
media with byte ranges), insert (media and resumable uploads), rewrite (copy), delete and list
(prefix, delimiter, offsets, pages), each with GCS's generation numbers and `ifGenerationMatch`
/ `ifGenerationNotMatch` preconditions (TensorStore's OCDBT writes depend on them); bucket get
and its storage layout (a flat bucket, no hierarchical namespace). It follows TensorStore's
own GCS mock (tensorstore/kvstore/gcs_http/gcs_mock.cc).

- TensorStore's GCS driver (Orbax's array data): `TENSORSTORE_GCS_HTTP_URL=BucketServer.url`.
- google-cloud-storage (Orbax asks for the bucket before listing or deleting steps):
  `STORAGE_EMULATOR_HOST=BucketServer.url`.
- TensorFlow's GCS client (`etils.epath` for config, pictures, metrics and Orbax's folders
  and small files; the TensorBoard writer) has no endpoint setting. It does honour
  `HTTPS_PROXY` and `CURL_CA_BUNDLE`, so `StorageProxy`, an HTTPS proxy, answers its CONNECTs
  to www.googleapis.com and storage.googleapis.com itself, behind a certificate signed by a
  throw-away certificate authority, and hands the requests to the same server.
"""

import datetime
import http.server
import json
import re
import socketserver
import ssl
import threading
import urllib.parse
from pathlib import Path

GOOGLE_STORAGE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")


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
    disable_nagle_algorithm = True  # Else each small reply waits for a delayed ACK (40 ms).
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
        self.wfile.write(body)

    def _json(self, status: int, value: dict) -> None:
        self._reply(status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        """The request's body; chunked where it says so (curl's uploads also send a length)."""
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # Trailers.
            pass
        return b"".join(chunks)

    def _route(self) -> tuple[str, str, str | None, dict[str, str]]:
        """(api, bucket, object name or None, query) of the request's URL.

        api: "bucket", "layout", "objects", "upload", "media" (storage.googleapis.com/<bucket>/
        <name>: TensorFlow's reads) or "rewrite" (name: "<source>\\n<destination>")."""
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if self.headers.get("Host", "").startswith("storage.googleapis.com"):
            bucket, _, name = url.path.lstrip("/").partition("/")
            return "media", bucket, urllib.parse.unquote(name), query
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/o/([^/]+)/rewriteTo/b/\1/o/([^/]+)", url.path)
        if match:
            bucket, source, target = match.groups()
            names = f"{urllib.parse.unquote(source)}\n{urllib.parse.unquote(target)}"
            return "rewrite", bucket, names, query
        match = re.fullmatch(r"/storage/v1/b/([^/]+)/storageLayout", url.path)
        if match:  # TensorFlow asks whether the bucket has folders (hierarchical namespace).
            return "layout", match.group(1), None, query
        match = re.fullmatch(r"/(upload/)?storage/v1/b/([^/]+)(/o(?:/(.*))?)?", url.path)
        if not match:
            return "", "", None, query
        upload, bucket, objects, name = match.groups()
        api = "upload" if upload else ("objects" if objects else "bucket")
        return api, bucket, urllib.parse.unquote(name) if name else None, query

    def _metadata(self, bucket: str, name: str) -> dict:
        data, generation = self.server.objects[(bucket, name)]
        return {
            "kind": "storage#object",
            "name": name,
            "bucket": bucket,
            "generation": str(generation),
            "metageneration": "1",
            "size": str(len(data)),
            "contentType": "application/octet-stream",
            "timeCreated": "2026-01-01T00:00:00.000Z",
            "updated": "2026-01-01T00:00:00.000Z",
        }

    def _precondition_fails(self, bucket: str, name: str, query: dict[str, str]) -> int | None:
        """412 or 304 where a generation precondition does not hold, else None."""
        stored = self.server.objects.get((bucket, name))
        generation = stored[1] if stored else 0  # 0: "does not exist", as GCS has it.
        if "ifGenerationMatch" in query and int(query["ifGenerationMatch"]) != generation:
            return 412
        if "ifGenerationNotMatch" in query and stored:
            if int(query["ifGenerationNotMatch"]) == generation:
                return 304
        return None

    def _store(self, bucket: str, name: str, data: bytes, query: dict, rewrite: bool = False):
        """Writes an object unless a precondition fails; answers with its metadata (a rewrite:
        inside the rewrite's status)."""
        with self.server.lock:
            if self._precondition_fails(bucket, name, query):
                return self._reply(412)
            self.server.generation += 1
            self.server.objects[(bucket, name)] = (data, self.server.generation)
            metadata = self._metadata(bucket, name)
        return self._json(200, {"done": True, "resource": metadata} if rewrite else metadata)

    # -- the API -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        api, bucket, name, query = self._route()
        with self.server.lock:
            if api == "bucket":
                return self._json(200, {"kind": "storage#bucket", "id": bucket, "name": bucket})
            if api == "layout":
                layout = {"kind": "storage#storageLayout", "bucket": bucket, "location": "US"}
                return self._json(200, {**layout, "hierarchicalNamespace": {"enabled": False}})
            if api == "objects" and name is None:
                return self._json(200, self._list(bucket, query))
            if api not in ("objects", "media"):
                return self._reply(404)
            failed = self._precondition_fails(bucket, name, query)
            if failed:
                return self._reply(failed)
            if (bucket, name) not in self.server.objects:
                return self._reply(404)
            if api == "objects" and query.get("alt") != "media":
                return self._json(200, self._metadata(bucket, name))
            data, generation = self.server.objects[(bucket, name)]
        headers = {
            "Content-Type": "application/octet-stream",
            "x-goog-generation": str(generation),
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
        api, bucket, name, query = self._route()
        body = self._body()
        if api == "rewrite":  # A copy (TensorFlow's rename: a copy, then a delete).
            source, target = name.split("\n")
            with self.server.lock:
                stored = self.server.objects.get((bucket, source))
            if stored is None:
                return self._reply(404)
            return self._store(bucket, target, stored[0], query, rewrite=True)
        if api != "upload" or not query.get("name"):
            return self._reply(400, b"not a request this fake serves")
        if query.get("uploadType") == "media":
            return self._store(bucket, query["name"], body, query)
        if query.get("uploadType") == "resumable":  # TensorFlow's writes: a session, then PUT.
            with self.server.lock:
                session = str(len(self.server.sessions))
                self.server.sessions[session] = (bucket, query)
            host = self.headers.get("Host", "")
            location = f"https://{host}/upload/storage/v1/b/{bucket}/o?upload_id={session}"
            return self._reply(200, headers={"Location": location})
        return self._reply(400, b"not an uploadType this fake serves")

    def do_PUT(self) -> None:
        """The data of a resumable upload, in one piece ("Content-Range: bytes 0-(n-1)/n")."""
        _, _, _, query = self._route()
        body = self._body()
        session = self.server.sessions.get(query.get("upload_id", ""))
        total = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+)", self.headers.get("Content-Range", ""))
        if session is None or total is None or int(total.group(1)) != len(body):
            return self._reply(400, b"only whole resumable uploads are served")
        bucket, session_query = session
        return self._store(bucket, session_query["name"], body, session_query)

    def do_DELETE(self) -> None:
        api, bucket, name, query = self._route()
        with self.server.lock:
            if api != "objects" or (bucket, name) not in self.server.objects:
                return self._reply(404)
            if self._precondition_fails(bucket, name, query):
                return self._reply(412)
            del self.server.objects[(bucket, name)]
        return self._reply(204)

    def _list(self, bucket: str, query: dict[str, str]) -> dict:
        prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
        token = query.get("pageToken", "")  # The last name of the previous page.
        start, stop = query.get("startOffset", ""), query.get("endOffset")
        limit = int(query.get("maxResults") or 1000)
        names = sorted(name for b, name in self.server.objects if b == bucket)
        items, prefixes, last = [], set(), None
        for name in names:
            if not name.startswith(prefix) or name < start or (stop and name >= stop):
                continue
            if token and name <= token:
                continue
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            if len(items) == limit:
                last = items[-1]["name"]
                break
            items.append(self._metadata(bucket, name))
        result = {"kind": "storage#objects", "items": items}
        if prefixes:
            result["prefixes"] = sorted(prefixes)
        if last:
            result["nextPageToken"] = last
        return result


class BucketServer(http.server.ThreadingHTTPServer):
    """Every bucket, in memory, served on a free local port from a daemon thread.

    `objects`: (bucket, object name) -> (data, generation)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.objects: dict[tuple[str, str], tuple[bytes, int]] = {}
        self.generation = 0  # The last one given; each write gets the next.
        self.sessions: dict[str, tuple[str, dict[str, str]]] = {}  # Resumable uploads.
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def names(self, bucket: str) -> list[str]:
        """The object names of `bucket`, sorted."""
        with self.lock:
            return sorted(name for b, name in self.objects if b == bucket)


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away certificate authority, and a certificate it signs for Google's storage
    hosts: (ca.pem, cert.pem, key.pem) in `folder`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def certificate(subject, issuer, key, signing_key, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(
        "fake-gcs CA",
        "fake-gcs CA",
        ca_key,
        ca_key,
        [(x509.BasicConstraints(ca=True, path_length=None), True)],
    )
    names = [x509.DNSName(host) for host in GOOGLE_STORAGE_HOSTS]
    leaf = certificate(
        GOOGLE_STORAGE_HOSTS[0],
        "fake-gcs CA",
        key,
        ca_key,
        [(x509.SubjectAlternativeName(names), False)],
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class _Tunnel(socketserver.StreamRequestHandler):
    """An HTTPS proxy's CONNECT to a storage host, answered by the bucket server itself."""

    server: "StorageProxy"
    disable_nagle_algorithm = True

    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").split()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        host = request[1].rsplit(":", 1)[0] if len(request) == 3 else ""
        if request[:1] != ["CONNECT"] or host not in GOOGLE_STORAGE_HOSTS:
            self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        with self.server.context.wrap_socket(self.connection, server_side=True) as tls:
            _Handler(tls, self.client_address, self.server.bucket_server)

    def finish(self) -> None:  # The socket now belongs to the TLS wrapper.
        pass


class StorageProxy(socketserver.ThreadingTCPServer):
    """An HTTPS proxy that answers for Google's storage hosts with `bucket_server`.

    For a client that honours `HTTPS_PROXY` and a CA bundle but no endpoint setting:
    TensorFlow's GCS client (curl; `CURL_CA_BUNDLE=StorageProxy.ca`)."""

    daemon_threads = True

    def __init__(self, bucket_server: BucketServer, folder: Path):
        super().__init__(("127.0.0.1", 0), _Tunnel)
        self.bucket_server = bucket_server
        self.ca, cert, key = certificates(folder)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


def environment(server: BucketServer, proxy: StorageProxy) -> dict[str, str]:
    """The variables that send every client of a run to `server` (directly or via `proxy`)."""
    return {
        "TENSORSTORE_GCS_HTTP_URL": server.url,
        "STORAGE_EMULATOR_HOST": server.url,
        "HTTPS_PROXY": proxy.url,
        "https_proxy": proxy.url,
        "CURL_CA_BUNDLE": str(proxy.ca),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "token",  # TensorFlow's and TensorStore's sign-in.
    }


if __name__ == "__main__":
    # Serves every gs:// bucket from memory until Ctrl-C, for trying bucket workdirs offline:
    #   python tests/fake_gcs.py > /tmp/bucket.env &   then   source /tmp/bucket.env
    #   ltpa-train --config=configs/demo.py --workdir=gs://any-bucket/demo
    import tempfile
    import time

    bucket_server = BucketServer()
    storage_proxy = StorageProxy(bucket_server, Path(tempfile.mkdtemp(prefix="fake_gcs_")))
    variables = environment(bucket_server, storage_proxy)
    print("export " + " ".join(f"{k}={v}" for k, v in variables.items()), flush=True)
    while True:
        time.sleep(3600)
