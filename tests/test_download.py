"""missrec/hub.py downloads against a loopback HTTP server: retry, verify, leave nothing on failure."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import threading
from pathlib import Path

import pytest

from missrec import hub as dl


class CheckpointServer:
    """Serves ``files`` on 127.0.0.1 with Range support; can drop the first transfer after N bytes."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.cut_after: int | None = None  # first full/partial transfer stops after this many bytes
        self.honour_range = True
        self.requests: list[dict] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append({"path": self.path, "range": rng})
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404, "no such checkpoint")
                    return
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and server.honour_range:
                    start = int(m.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_after is not None:
                    n, server.cut_after = server.cut_after, None
                    self.wfile.write(body[:n])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_WR)  # the client sees the stream end early
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


PAYLOAD = os.urandom(300_000)
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _torch_file() -> bytes:
    """Bytes of a real torch.save file: what an unverified download must look like to be kept."""
    import io

    import torch
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(1000, dtype=torch.float32)}}, buf)
    return buf.getvalue()


TORCH_PAYLOAD = _torch_file()
TORCH_SHA = hashlib.sha256(TORCH_PAYLOAD).hexdigest()


@pytest.fixture
def server():
    s = CheckpointServer({"/ckpt.pth": PAYLOAD})
    yield s
    s.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# torch.hub.download_url_to_file (the maintained code downloads go through) does not resume with
# HTTP Range: a dropped transfer is a short file, caught by the SHA-256 check and fetched again whole.
def test_interrupted_download_is_retried_and_verified(server, tmp_path):
    server.cut_after = 100_000
    out = dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", SHA, retries=2, backoff=0,
                          progress=False)
    assert out.read_bytes() == PAYLOAD and dl.sha256_file(out) == SHA
    assert [r["range"] for r in server.requests] == [None, None]  # the second transfer starts over
    assert _leftovers(tmp_path) == ["ckpt.pth"]


def test_interrupted_run_leaves_nothing_and_next_run_succeeds(server, tmp_path):
    server.cut_after = 120_000
    with pytest.raises(dl.DownloadError, match="run the same command again"):
        dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", SHA, retries=0, progress=False)
    assert _leftovers(tmp_path) == []  # no partial file: the temp file is removed
    assert len(server.requests) == 1  # retries=0: one transfer, no second try
    out = dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", SHA, retries=0, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert server.requests[-1]["range"] is None
    assert _leftovers(tmp_path) == ["ckpt.pth"]


def test_server_without_range_support_is_fine(server, tmp_path):
    server.cut_after = 50_000
    server.honour_range = False
    out = dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", SHA, retries=1, backoff=0,
                          progress=False)
    assert out.read_bytes() == PAYLOAD
    assert [r["range"] for r in server.requests] == [None, None]  # never asks for a range


@pytest.mark.parametrize("cut", [None, 70_000], ids=["whole", "after-resume"])
def test_wrong_checksum_leaves_nothing(server, tmp_path, cut):
    server.cut_after = cut
    with pytest.raises(dl.ChecksumError, match="SHA-256 mismatch"):
        dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", "0" * 64, retries=2, backoff=0,
                        progress=False)
    assert _leftovers(tmp_path) == []  # neither the final file nor the .part


def test_http_error_leaves_nothing(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="404"):
        dl.download_url(server.url("/missing.pth"), tmp_path / "missing.pth", SHA, progress=False)
    assert _leftovers(tmp_path) == []


def test_existing_verified_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "ckpt.pth").write_bytes(PAYLOAD)
    dl.download_url(server.url("/ckpt.pth"), tmp_path / "ckpt.pth", SHA, progress=False)
    assert server.requests == []


def _registry(tmp_path: Path, entries: dict) -> Path:
    p = tmp_path / "registry.json"
    p.write_text(json.dumps({"format_version": 1, "checkpoints": entries}))
    return p


def test_cli_registry_url_entry(server, tmp_path, capsys):
    reg = _registry(tmp_path, {"toy": {"format": "missrec-pth", "sha256": SHA, "description": "test",
                                       "source": {"type": "url", "url": server.url("/ckpt.pth")}}})
    out = tmp_path / "dl"
    assert dl.main(["toy", "--out", str(out), "--registry", str(reg), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == str(out / "ckpt.pth")
    assert (out / "ckpt.pth").read_bytes() == PAYLOAD
    # a conflicting --sha256 is refused before anything is fetched
    assert dl.main(["toy", "--out", str(tmp_path / "dl2"), "--registry", str(reg), "--sha256", "1" * 64]) == 2
    assert not (tmp_path / "dl2").exists()


def test_cli_plain_url_without_checksum_reports_it(server, tmp_path, capsys):
    server.files["/real.pth"] = TORCH_PAYLOAD
    assert dl.main([server.url("/real.pth"), "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "NOT verified" in err and TORCH_SHA in err


def test_cli_manual_entry(tmp_path, capsys):
    entry = {"format": "missrec-pth", "sha256": None,
             "source": {"type": "manual", "page": "https://example.invalid/page", "filename": "orig.pth",
                        "instructions": "get it by hand."}}
    reg = _registry(tmp_path, {"orig": entry})
    out = tmp_path / "dl"
    assert dl.main(["orig", "--out", str(out), "--registry", str(reg)]) == 3
    err = capsys.readouterr().err
    assert "https://example.invalid/page" in err and str(out / "orig.pth") in err
    out.mkdir()
    (out / "orig.pth").write_bytes(TORCH_PAYLOAD)
    assert dl.main(["orig", "--out", str(out), "--registry", str(reg)]) == 0
    assert TORCH_SHA in capsys.readouterr().err  # tells the user what to register
    entry["sha256"] = "2" * 64
    reg = _registry(tmp_path, {"orig": entry})
    assert dl.main(["orig", "--out", str(out), "--registry", str(reg)]) == 2
    assert (out / "orig.pth").read_bytes() == TORCH_PAYLOAD  # the user's file is never deleted


def test_registry_validation(tmp_path):
    bad = _registry(tmp_path, {"x": {"format": "missrec-pth", "sha256": None,
                                     "source": {"type": "url", "url": "http://127.0.0.1/x.pth"}}})
    with pytest.raises(dl.RegistryError, match="need a 'sha256'"):
        dl.load_registry(bad)
    bad = _registry(tmp_path, {"x": {"format": "zip", "source": {"type": "url", "url": "u"}, "sha256": None}})
    with pytest.raises(dl.RegistryError, match="format"):
        dl.load_registry(bad)


def test_shipped_registry_and_list(capsys):
    entries = dl.load_registry()
    assert "missrec-fhckm-100" in entries
    assert entries["missrec-fhckm-100"]["source"]["filename"] == "MISSRec-FHCKM_mm_full-100.pth"
    assert dl.main(["--list"]) == 0
    assert "missrec-fhckm-100" in capsys.readouterr().out


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(dl.DownloadError, match="someone/some-missrec"):
        dl.fetch("someone/some-missrec", tmp_path, registry=_registry(tmp_path, {}))


def test_help_explains_options(capsys):
    with pytest.raises(SystemExit):
        dl.main(["--help"])
    text = capsys.readouterr().out
    for opt in ("--out", "--sha256", "--list", "--registry", "--retries", "--timeout", "--no_progress"):
        assert opt in text


def test_unreachable_server_leaves_nothing(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(dl.DownloadError, match="download failed"):
        dl.download_url(f"http://127.0.0.1:{port}/x.pth", tmp_path / "x.pth", SHA, retries=1, backoff=0,
                        timeout=5, progress=False)
    assert _leftovers(tmp_path) == []
