"""The downloader against a local HTTP server on 127.0.0.1: good file, wrong checksum, dropped
connection, first mirror down."""

import gzip
import hashlib
import http.server
import threading

import pytest
from conftest import write_dataset

from fmnist.data import dataset as data
from fmnist.data import load_fashion_mnist
from fmnist.data.download import download
from fmnist.errors import FmnistError

PAYLOAD = gzip.compress(b"some IDX content" * 1000)
SHA = hashlib.sha256(b"some IDX content" * 1000).hexdigest()


@pytest.fixture
def server(tmp_path):
    """Serves /good/<f> from a folder, /bad/<f> wrong bytes, /drop/<f> a cut-off body."""
    files = tmp_path / "served"
    files.mkdir()
    (files / "f.gz").write_bytes(PAYLOAD)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            kind, name = self.path.strip("/").split("/", 1)
            path = files / name
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            if kind == "bad":
                body = gzip.compress(b"wrong content")
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if kind == "drop" else body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    httpd.server_close()


def test_good_file(server, tmp_path):
    base, _ = server
    path = download("f.gz", tmp_path / "cache", SHA, [f"{base}/good/"], progress=False)
    assert path.read_bytes() == PAYLOAD


@pytest.mark.parametrize("kind", ["bad", "drop"])
def test_wrong_or_cut_bytes_leave_nothing_behind(server, tmp_path, kind):
    base, _ = server
    with pytest.raises(FmnistError, match="could not download"):
        download("f.gz", tmp_path / "cache", SHA, [f"{base}/{kind}/"], retries=1, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


@pytest.mark.parametrize("first", ["http://127.0.0.1:9/", "bad", "drop"])
def test_next_mirror_is_tried(server, tmp_path, first):
    base, _ = server
    first = first if first.startswith("http") else f"{base}/{first}/"
    path = download("f.gz", tmp_path / "cache", SHA, [first, f"{base}/good/"], retries=1, timeout=2, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["f.gz"]


def test_full_dataset_download_into_cache(server, monkeypatch, tmp_path, isolated_cache):
    base, files = server
    sums = write_dataset(files)
    monkeypatch.setattr(data, "SHA256", sums)
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("FMNIST_MIRRORS", f"http://127.0.0.1:9/,{base}/good/")
    ds = load_fashion_mnist(progress=False)
    assert ds.origin == "download" and len(ds.train_labels) == 200
    assert load_fashion_mnist().origin == "cache"  # the second time it is found in the cache
