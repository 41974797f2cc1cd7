"""features/fetch_images.py against a loopback HTTP server (127.0.0.1 only, bounded waits)."""
from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from missrec.features import images as fi
from tests._features_helpers import jpeg_bytes, png

JPEG = jpeg_bytes(1)
PNG_BYTES = None


class _Handler(BaseHTTPRequestHandler):
    hits: Counter = Counter()

    def log_message(self, *args):  # keep test output clean
        pass

    def _send(self, code: int, body: bytes, length: bool = True):
        self.send_response(code)
        self.send_header("Content-Type", "image/jpeg")
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        path = self.path
        self.hits[path] += 1
        if path.startswith("/ok/"):
            self._send(200, JPEG)
        elif path == "/png":
            self._send(200, PNG_BYTES)
        elif path == "/missing":
            self._send(404, b"nope")
        elif path == "/slow":
            time.sleep(1.0)  # longer than the client's timeout
            self._send(200, JPEG)
        elif path == "/corrupt":
            self._send(200, b"<html>not an image</html>")
        elif path == "/truncated":
            self._send(200, JPEG[: len(JPEG) // 2])
        elif path == "/big":
            self._send(200, b"\xff" * 5000)
        elif path == "/big-unsized":
            self._send(200, b"\xff" * 5000, length=False)
        elif path == "/flaky":
            if self.hits[path] == 1:
                self._send(503, b"busy")
            else:
                self._send(200, JPEG)
        else:
            self._send(500, b"?")


@pytest.fixture()
def server(monkeypatch, tmp_path):
    global PNG_BYTES
    PNG_BYTES = png(tmp_path / "src.png", 2).read_bytes()
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    _Handler.hits = Counter()
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.handle_error = lambda *a: None
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


FAST = dict(workers=4, timeout=0.3, retries=1, backoff=0.01, max_bytes=4000)


def test_fetch_outcomes_and_failures_file(server, tmp_path):
    out = tmp_path / "images"
    pairs = [("I1", f"{server}/ok/1"), ("I2", f"{server}/png"), ("I3", f"{server}/missing"),
             ("I4", f"{server}/slow"), ("I5", f"{server}/corrupt"), ("I6", f"{server}/truncated"),
             ("I7", f"{server}/big"), ("I8", f"{server}/big-unsized"), ("I9", f"{server}/flaky"),
             ("I10", None), ("../evil", f"{server}/ok/2"), ("I11", "file:///etc/passwd")]
    t0 = time.monotonic()
    s = fi.fetch_images(pairs, out, **FAST)
    assert time.monotonic() - t0 < 10
    assert s.downloaded == 3 and s.present == 0 and s.no_url == 1
    assert sorted(p.name for p in out.iterdir()) == ["I1.jpg", "I2.png", "I9.jpg", "failures.tsv"]
    with Image.open(out / "I2.png") as im:
        assert im.format == "PNG"
    reasons = {i: r for i, _, r in s.failed}
    assert reasons["I3"] == "HTTP 404"
    assert reasons["I4"].startswith("timeout")
    assert reasons["I5"].startswith("not a decodable image") and reasons["I6"].startswith("not a decodable image")
    assert reasons["I7"].startswith("too large (5000 bytes") and reasons["I8"].startswith("too large (>")
    assert reasons["../evil"] == "item id is not a safe file name"
    assert reasons["I11"] == "not an http(s) URL"
    # 404 is final; timeouts and 503 are retried once (retries=1).
    assert _Handler.hits["/missing"] == 1 and _Handler.hits["/slow"] == 2 and _Handler.hits["/flaky"] == 2
    assert _Handler.hits["/ok/2"] == 0
    lines = (out / "failures.tsv").read_text().splitlines()
    assert lines[0] == "item_id\turl\treason" and len(lines) == 1 + 8
    assert f"I3\t{server}/missing\tHTTP 404" in lines
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_resume_skips_valid_files_and_refetches_broken_ones(server, tmp_path):
    out = tmp_path / "images"
    pairs = [(f"I{k}", f"{server}/ok/{k}") for k in range(5)]
    s = fi.fetch_images(pairs, out, **FAST)
    assert s.downloaded == 5
    before = sum(_Handler.hits.values())
    s = fi.fetch_images(pairs, out, **FAST)
    assert (s.downloaded, s.present) == (0, 5) and sum(_Handler.hits.values()) == before
    (out / "I0.jpg").unlink()
    (out / "I1.jpg").write_bytes(b"garbage from a crashed run")
    s = fi.fetch_images(pairs, out, **FAST)
    assert (s.downloaded, s.present) == (2, 3)
    assert _Handler.hits["/ok/0"] == 2 and _Handler.hits["/ok/1"] == 2 and _Handler.hits["/ok/2"] == 1
    assert fi.validate_image(out / "I1.jpg") == "JPEG"


def test_cli_on_dataset_and_corpus_folders(server, tmp_path, capsys):
    ds = tmp_path / "data" / "Toy"
    ds.mkdir(parents=True)
    (ds / "Toy.image_urls").write_text(f"item_id\timage_url\nA\t{server}/ok/a\nB\t{server}/missing\n")
    assert fi.main([str(ds), "--retries", "0", "--timeout", "2"]) == 0
    assert (ds / "images" / "A.jpg").is_file() and not (ds / "images" / "B.jpg").exists()
    assert "downloaded 1, already present 0, failed 1" in capsys.readouterr().out
    corpus = tmp_path / "data" / "C2"
    corpus.mkdir()
    (corpus / "C2.pt_datasets").write_text("Food,Kindle\n")
    (corpus / "Food.image_urls").write_text(f"item_id\timage_url\nA\t{server}/ok/fa\n")
    (corpus / "Kindle.image_urls").write_text(f"item_id\timage_url\nA\t{server}/png\n")
    assert fi.main([str(corpus), "--retries", "0", "--timeout", "2"]) == 0
    assert (corpus / "images" / "Food" / "A.jpg").is_file() and (corpus / "images" / "Kindle" / "A.png").is_file()
    # Bad inputs: one clear line naming the file.
    (ds / "Toy.image_urls").write_text("A\thttp://x\tjunk\n")
    assert fi.main([str(ds)]) == 2
    assert f"{ds / 'Toy.image_urls'}:1: expected 'item_id<TAB>url'" in capsys.readouterr().err
    assert fi.main([str(tmp_path / "nowhere")]) == 2


def test_index_images_prefers_jpg_and_ignores_temp_files(tmp_path):
    for name in ("a.png", "a.jpg", "b.webp", ".c.jpg.123.tmp", "notes.txt", "d.JPEG"):
        (tmp_path / name).write_bytes(b"x")
    found = fi.index_images(tmp_path)
    assert {k: v.name for k, v in found.items()} == {"a": "a.jpg", "b": "b.webp", "d": "d.JPEG"}
