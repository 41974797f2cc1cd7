"""Fuzzing the restricted .pth reader (missrec/unpickle.py via missrec.pth.read_original).

Seeded random mutations and truncations of small valid files (zip and legacy format, of the whole
file and of the pickle inside the zip), plus hand-built bombs: nesting, shared references, stride
tricks, storages claiming more than the file, compressed records, sized bytes, too many objects.

Every file is read in ONE subprocess (a crash there is a failed test, not a dead pytest) under an
address-space limit (RLIMIT_AS: what it had after imports + 2 GiB) with a per-file alarm; the
subprocess writes each file's outcome as it goes, so a crash names the file that caused it. Each
file must load or raise the project's one-line error naming it: no crash, no other exception, no
time-out, no allocation failure.
"""
from __future__ import annotations

import collections
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = 19
MAX_OBJECTS = 100_000  # the runner lowers missrec.unpickle.MAX_OBJECTS to this, so the bomb is quick

RUNNER = r'''
import json, resource, signal, sys, time
from pathlib import Path

import missrec.unpickle
from missrec import pth
from missrec.errors import UserError

folder, per_file_s = Path(sys.argv[1]), float(sys.argv[2])
missrec.unpickle.MAX_OBJECTS = int(sys.argv[3])
vm = [int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize:")][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))


class TimeOut(BaseException):  # not an Exception: nothing in the reader may catch it
    pass


def alarm(*_):
    raise TimeOut()


signal.signal(signal.SIGALRM, alarm)
with open(folder / "results.jsonl", "w") as out:
    for f in sorted(folder.glob("*.pth")):
        out.write(json.dumps({"start": f.name}) + "\n")
        out.flush()
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, per_file_s)
        try:
            orig = pth.read_original(f)
            json.dumps(pth._jsonable(orig.config))  # the provenance summary of whatever was read
            res = {"outcome": "ok"}
        except UserError as e:
            res = {"outcome": "error", "type": type(e).__name__, "message": str(e)}
        except TimeOut:
            res = {"outcome": "timeout"}
        except BaseException as e:
            res = {"outcome": "bug", "type": type(e).__name__, "message": str(e)[:500]}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        res.update(case=f.name, seconds=round(time.perf_counter() - t, 3))
        out.write(json.dumps(res) + "\n")
        out.flush()
    out.write(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}) + "\n")
'''


# ----------------------------------------------------------------------------- valid files
def _valid(legacy: bool) -> bytes:
    sd = collections.OrderedDict(w=torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
                                 b=torch.arange(5), t=torch.arange(12.0).reshape(3, 4).t(), h=torch.ones(2).half())
    sd._metadata = collections.OrderedDict({"": {"version": 1}})
    obj = {"state_dict": sd, "epoch": 3, "cur_step": [1, (2, 3), {"a": b"xy"}],
           "config": {"hidden_size": 4, "n_heads": 2, "topk": [10, 50], "device": torch.device("cpu")},
           "best_valid_score": np.float64(0.5)}
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _records(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def _zip(records: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for n, d in records.items():
            z.writestr(n, d)
    return buf.getvalue()


def _with_pickle(zip_data: bytes, pkl: bytes) -> bytes:
    """The zip file with its data.pkl replaced (the other records kept)."""
    records = _records(zip_data)
    records[next(n for n in records if n.endswith("/data.pkl"))] = pkl
    return _zip(records)


def _pickle_of(zip_data: bytes) -> bytes:
    records = _records(zip_data)
    return records[next(n for n in records if n.endswith("/data.pkl"))]


# ----------------------------------------------------------------------------- mutations
def _mutate(rng: np.random.Generator, data: bytes) -> bytes:
    b = bytearray(data)
    kind = rng.integers(6)
    if kind == 0:  # flip a few bytes
        for _ in range(rng.integers(1, 5)):
            b[rng.integers(len(b))] = rng.integers(256)
    elif kind == 1:  # truncate
        del b[rng.integers(len(b)):]
    elif kind == 2:  # insert random bytes
        at = rng.integers(len(b))
        b[at:at] = rng.integers(0, 256, rng.integers(1, 9), dtype=np.uint8).tobytes()
    elif kind == 3:  # delete a span
        at = rng.integers(len(b))
        del b[at:at + rng.integers(1, 9)]
    elif kind == 4:  # duplicate a span
        at = rng.integers(len(b))
        b[at:at] = b[at:at + rng.integers(1, 33)]
    else:  # set a byte to an opcode-ish / size-ish extreme
        b[rng.integers(len(b))] = int(rng.choice([0x00, 0x7F, 0x80, 0xFF, ord("("), ord("t"), ord("R"), ord(".")]))
    return bytes(b)


# ----------------------------------------------------------------------------- bombs
def _deep_tuple_key(n: int) -> bytes:
    return b"\x80\x02}K\x01" + b"\x85" * n + b"K\x00s."  # {((((1,),),)...): 0}


def _deep_list(n: int) -> bytes:
    return b"\x80\x02" + b"]" * n + b"a" * (n - 1) + b"."


def _list_chain_by_mutation(n: int) -> bytes:
    """Each new list is appended to the previous one after that one was nested: depth grows late."""
    b = b"\x80\x04]\x94"
    for i in range(1, n):
        b += b"j" + (i - 1).to_bytes(4, "little") + b"]\x94a0"
    return b + b"0j\x00\x00\x00\x00."


def _shared_tuple(depth: int, width: int, base: int = 0) -> bytes:
    """t0 = (1,) * width; t_d = (t_{d-1},) * width, memoised at base + d: width**(depth) values in a
    few KB. Only the last one stays on the stack."""
    b = b"(" + b"K\x01" * width + b"t\x94"
    for d in range(1, depth):
        b += b"0(" + (b"j" + (base + d - 1).to_bytes(4, "little")) * width + b"t\x94"
    return b


def _shared_list_state_dict() -> bytes:
    x: object = [1]
    for _ in range(8):
        x = [x] * 200
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}, "config": {"x": x}}, buf)
    return buf.getvalue()


def _hash_flood() -> bytes:
    """A 90k-value shared tuple (under the size cap) used as a dict key again and again."""
    b = b"\x80\x04}\x94" + _shared_tuple(2, 300, base=1) + b"0"  # dict = memo 0, tuples = memo 1, 2
    return b + (b"j\x02\x00\x00\x00K\x01s") * 1000 + b"."


def _saved(obj, legacy=False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _huge_storage(legacy: bool) -> bytes:
    data = _saved({"state_dict": {"w": torch.arange(4.0)}}, legacy)
    huge = b"\x8a\x08" + (1 << 42).to_bytes(8, "little")
    if legacy:
        return re.sub(rb"(X\x03\x00\x00\x00cpu(?:q.|\x94))K\x04", lambda m: m.group(1) + huge, data, count=1)
    pkl = re.sub(rb"(X\x03\x00\x00\x00cpu(?:q.|\x94))K\x04", lambda m: m.group(1) + huge, _pickle_of(data), count=1)
    return _with_pickle(data, pkl)


def _storage_size_mismatch() -> bytes:
    """Legacy: the pickle says 8 elements, the data section holds 4 (torch printed 'expected %ld got %ld')."""
    data = _saved({"state_dict": {"w": torch.arange(4.0)}}, legacy=True)
    return re.sub(rb"(X\x03\x00\x00\x00cpu(?:q.|\x94))K\x04", lambda m: m.group(1) + b"K\x08", data, count=1)


def _out_of_bounds_view() -> bytes:
    data = _saved({"state_dict": {"w": torch.arange(4.0)}})
    return _with_pickle(data, _pickle_of(data).replace(b"K\x04\x85", b"K\x28\x85", 1))


BOMBS = {
    # name: (file bytes, what the one error line must say)
    "deep-tuple-key": (_deep_tuple_key(1_000_000), "nested more than"),
    "deep-tuple-key-zip": (_with_pickle(_valid(False), _deep_tuple_key(100_000)), "nested more than"),
    "deep-list": (_deep_list(50_000), "nested more than"),
    "list-chain-by-mutation": (_list_chain_by_mutation(5_000), "nested more than"),
    "shared-tuple-key": (b"\x80\x04}" + _shared_tuple(8, 200) + b"K\x00s.", "repeats shared values"),
    "shared-tuple-in-set": (_with_pickle(_valid(False), b"\x80\x04c__builtin__\nset\n" + _shared_tuple(3, 200)
                                         + b"\x85\x85R."), "repeats shared values"),
    "hash-flood": (_hash_flood(), "hashing its keys"),
    "too-many-objects": (b"\x80\x04" + b"]0" * (MAX_OBJECTS + 10) + b"N.", "more than"),
    "sized-bytes": (b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\x00\x00\x00\x10\x85R.", "bytes/bytearray of a size"),
    "sized-bytearray": (_with_pickle(_valid(False), b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00\x00\x00\x00\x10"
                                                    b"\x85R."), "bytes/bytearray of a size"),
    "expand-stride-0": (_saved({"state_dict": {"w": torch.zeros(1).expand(100_000, 8)}}), "repeats elements"),
    "overlapping-strides": (_saved({"state_dict": {"w": torch.arange(10.0).as_strided((5, 4), (1, 1))}}),
                            "repeats elements"),
    "expand-legacy": (_saved({"state_dict": {"w": torch.zeros(1).expand(1000, 8)}}, legacy=True), "repeats elements"),
    "out-of-bounds-view": (_out_of_bounds_view(), "reaches element"),
    "huge-storage-legacy": (_huge_storage(True), "storages claim"),
    "huge-storage-zip": (_huge_storage(False), "claim"),
    "storage-size-mismatch": (_storage_size_mismatch(), "not the size its header claims"),
    "deflated-records": (_zip(_records(_valid(False)), zipfile.ZIP_DEFLATED), "compressed records"),
}


def _cases(rng) -> dict[str, bytes]:
    zip_file, legacy_file = _valid(False), _valid(True)
    pkl = _pickle_of(zip_file)
    cases = {"valid-zip": zip_file, "valid-legacy": legacy_file, "shared-lists-in-config": _shared_list_state_dict()}
    for i in range(70):
        cases[f"zip-{i:03d}"] = _mutate(rng, zip_file)
        cases[f"zip-pickle-{i:03d}"] = _with_pickle(zip_file, _mutate(rng, pkl))
        cases[f"legacy-{i:03d}"] = _mutate(rng, legacy_file)
    for i in range(20):  # several mutations at once
        m = pkl
        for _ in range(4):
            m = _mutate(rng, m)
        cases[f"zip-pickle-multi-{i:03d}"] = _with_pickle(zip_file, m)
    cases.update({f"bomb-{k}": v for k, (v, _) in BOMBS.items()})
    return cases


def test_fuzzed_and_hostile_pth_files_never_crash_hang_or_blow_memory(tmp_path):
    cases = _cases(np.random.default_rng(SEED))
    folder = tmp_path / "cases"
    folder.mkdir()
    for name, data in cases.items():
        (folder / f"{name}.pth").write_bytes(data)
    runner = tmp_path / "runner.py"
    runner.write_text(RUNNER)
    p = subprocess.run([sys.executable, str(runner), str(folder), "20", str(MAX_OBJECTS)], capture_output=True,
                       text=True, timeout=600, cwd=ROOT,
                       env={**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    lines = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    done = {r["case"]: r for r in lines if "case" in r}
    started = [r["start"] for r in lines if "start" in r]
    crashed = [s for s in started if s not in done]
    assert p.returncode == 0 and not crashed, (p.returncode, crashed, p.stderr[-3000:])
    assert len(done) == len(cases)

    bad = {k: r for k, r in done.items() if r["outcome"] not in ("ok", "error")}
    assert not bad, bad  # no time-out, no exception other than the project's UserError
    for name, r in done.items():
        if r["outcome"] == "error":
            msg = r["message"]
            assert "\n" not in msg and msg.startswith(str(folder / name)), r
            assert r["type"] in ("PthFormatError", "UnsafePickleError"), r
            assert "%ld" not in msg and "allocate" not in msg and "MemoryError" not in msg, r
    for name in ("valid-zip", "valid-legacy", "shared-lists-in-config"):
        assert done[f"{name}.pth"]["outcome"] == "ok", done[f"{name}.pth"]
    for name, (_, needle) in BOMBS.items():
        r = done[f"bomb-{name}.pth"]
        assert r["outcome"] == "error" and needle in r["message"], (name, r)
    maxrss_gib = lines[-1]["maxrss_kb"] / 2**20
    assert maxrss_gib < 2.5, maxrss_gib  # torch itself is ~0.7 GiB; no file may add gigabytes
    # The mutations reach the reader's checks, not only the zip/magic-number gate.
    outcomes = collections.Counter(r["outcome"] for r in done.values())
    assert outcomes["ok"] >= 5 and outcomes["error"] >= 100, outcomes
