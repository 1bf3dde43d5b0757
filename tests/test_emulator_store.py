"""The artifact store: directory and S3 (a real moto server) sources, the LRU disk cache,
and safe extraction of hostile archives (nothing may be written outside the cache)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from moto_fixture import moto_server  # noqa: F401

from mmesim.emulator.store import (ArchiveTooLarge, ArtifactNotFound, ArtifactStore, BadArtifact, DiskFull,
                                   InvalidTargetModel, validate_target_model)

KiB = 1024
MiB = 2**20


# --- building archives ---------------------------------------------------------------------
def _file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _link(tar: tarfile.TarFile, name: str, target: str, kind=tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _special(tar: tarfile.TarFile, name: str, kind) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    tar.addfile(info)


def archive(build) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        build(tar)
    return buf.getvalue()


def model_archive(name: str = "tiny", weights: int = 64 * KiB, seed: int = 0) -> bytes:
    """A Triton model folder as `mmesim.triton.packaging` lays it out, with an inside link."""
    def build(tar):
        _file(tar, f"{name}/config.pbtxt", f'name: "{name}"\nbackend: "python"\n'.encode())
        _file(tar, f"{name}/1/model.pt", os.urandom(8) + bytes([seed]) * weights)
        _link(tar, f"{name}/1/alias.pt", "model.pt")
        _link(tar, f"{name}/1/hard.pt", f"{name}/1/model.pt", tarfile.LNKTYPE)
    return archive(build)


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_relative_to(skip)}


@pytest.fixture
def layout(tmp_path):
    """tmp/src (the models folder), tmp/box/cache (the cache), tmp/box/deep/er (where
    traversal entries would land)."""
    src, cache = tmp_path / "src", tmp_path / "box" / "cache"
    src.mkdir()
    (tmp_path / "box" / "deep" / "er").mkdir(parents=True)
    return tmp_path, src, cache


# --- names -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "%2e%2e/x", "a/../../x", "a//b", "./a", "a/.", "", "a\\..\\b",
                                  " a", "x" * 1025, "..", "a\x00b", "a\tb", "mod\u00e8le"])
def test_unsafe_names_are_refused_before_any_file_is_touched(layout, name):
    root, src, cache = layout
    store = ArtifactStore(str(src), cache, 10 * MiB)
    before = snapshot(root, Path("/nonexistent"))
    with pytest.raises(InvalidTargetModel):
        store.fetch(name)
    assert snapshot(root, Path("/nonexistent")) == before


@pytest.mark.parametrize("name", ["resnet50-v0.tar.gz", "team/bert_v2.tar.gz", "m+1=x@y,z.tar.gz",
                                  "model (1).tar.gz", "a b/v1:latest#2!.tar.gz"])
def test_plain_names_are_accepted(name):
    assert validate_target_model(name) == name


# --- a directory source ------------------------------------------------------------------
def test_directory_source_extracts_and_keeps_links_inside(layout):
    root, src, cache = layout
    (src / "tiny-v0.tar.gz").write_bytes(model_archive())
    store = ArtifactStore(f"file://{src}", cache, 10 * MiB)
    got = store.fetch("tiny-v0.tar.gz")
    assert not got.cache_hit and got.artifact_bytes == (src / "tiny-v0.tar.gz").stat().st_size
    assert got.path.is_relative_to(cache) and (got.path / "tiny" / "config.pbtxt").read_text().startswith('name: "tiny"')
    weights = (got.path / "tiny" / "1" / "model.pt").read_bytes()
    assert (got.path / "tiny" / "1" / "alias.pt").read_bytes() == weights
    assert (got.path / "tiny" / "1" / "hard.pt").stat().st_ino == (got.path / "tiny" / "1" / "model.pt").stat().st_ino
    again = store.fetch("tiny-v0.tar.gz")
    assert again.cache_hit and again.path == got.path and again.download_s == again.extract_s == 0.0
    with pytest.raises(ArtifactNotFound, match="missing.tar.gz"):
        store.fetch("missing.tar.gz")


def test_lru_eviction_keeps_pinned_and_recently_used(layout):
    root, src, cache = layout
    for i in range(4):
        (src / f"m{i}.tar.gz").write_bytes(model_archive(f"m{i}", weights=300 * KiB, seed=i))
    store = ArtifactStore(str(src), cache, 1 * MiB)          # room for 3 of ~300 KiB
    paths = {f"m{i}": store.fetch(f"m{i}.tar.gz").path for i in range(3)}
    store.fetch("m0.tar.gz")                                   # m0 used again: m1 is now the oldest
    store.fetch("m3.tar.gz")
    assert store.cached() == ["m2.tar.gz", "m0.tar.gz", "m3.tar.gz"]
    assert not paths["m1"].exists() and paths["m0"].exists()
    assert store.used_bytes <= 1 * MiB

    store.pin("m2.tar.gz")                                    # oldest, but loaded in the backend
    store.fetch("m1.tar.gz")
    assert store.cached() == ["m2.tar.gz", "m3.tar.gz", "m1.tar.gz"] and paths["m2"].exists()


def test_disk_full_when_pinned_artifacts_leave_no_room(layout):
    root, src, cache = layout
    for i in range(2):
        (src / f"m{i}.tar.gz").write_bytes(model_archive(f"m{i}", weights=600 * KiB, seed=i))
    store = ArtifactStore(str(src), cache, 1 * MiB)
    store.fetch("m0.tar.gz", pin=True)
    with pytest.raises(DiskFull, match="m1.tar.gz"):
        store.fetch("m1.tar.gz")
    assert store.cached() == ["m0.tar.gz"] and list((cache / "tmp").iterdir()) == []
    store.unpin("m0.tar.gz")
    assert not store.fetch("m1.tar.gz").cache_hit and store.cached() == ["m1.tar.gz"]


def test_a_restarted_store_reuses_the_cache(layout):
    root, src, cache = layout
    (src / "a.tar.gz").write_bytes(model_archive("a"))
    first = ArtifactStore(str(src), cache, 10 * MiB).fetch("a.tar.gz")
    second = ArtifactStore(str(src), cache, 10 * MiB).fetch("a.tar.gz")
    assert second.cache_hit and second.path == first.path


# --- hostile archives ----------------------------------------------------------------------
def _outside_abs(tmp: Path) -> str:
    return str(tmp / "box" / f"abs-{uuid.uuid4().hex}.txt")


HOSTILE = {
    # name: (builder(tmp) -> tar builder, entry the error must name, message fragment)
    "traversal": (lambda t: lambda tar: _file(tar, "../../deep/er/evil.txt", b"x"), "../../deep/er/evil.txt", "'..'"),
    "late-traversal": (lambda t: lambda tar: (_file(tar, "ok/config.pbtxt", b"ok"), _file(tar, "ok/../../x", b"x")),
                       "ok/../../x", "'..'"),
    "absolute": (lambda t: lambda tar: _file(tar, _outside_abs(t), b"x"), "/", "absolute path"),
    "symlink-out": (lambda t: lambda tar: _link(tar, "m/1/weights", "../../../deep/er"), "m/1/weights", "outside"),
    "symlink-abs": (lambda t: lambda tar: _link(tar, "m/etc", "/etc"), "m/etc", "absolute"),
    "symlink-chain": (lambda t: lambda tar: (_link(tar, "l", "."), _link(tar, "m", "l/..")), "m", "outside"),
    "write-through-link": (lambda t: lambda tar: (_file(tar, "sub/keep", b"k"), _link(tar, "d", "sub"),
                                                  _file(tar, "d/x", b"x")), "d/x", "not a directory"),
    "hardlink-out": (lambda t: lambda tar: _link(tar, "m/passwd", "/etc/passwd", tarfile.LNKTYPE), "m/passwd",
                     "hard link"),
    "hardlink-traversal": (lambda t: lambda tar: _link(tar, "m/x", "../../deep/er/f", tarfile.LNKTYPE), "m/x",
                           "hard link"),
    "char-device": (lambda t: lambda tar: _special(tar, "m/null", tarfile.CHRTYPE), "m/null", "device"),
    "block-device": (lambda t: lambda tar: _special(tar, "m/sda", tarfile.BLKTYPE), "m/sda", "device"),
    "fifo": (lambda t: lambda tar: _special(tar, "m/pipe", tarfile.FIFOTYPE), "m/pipe", "FIFO"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_naming_the_entry(layout, case):
    root, src, cache = layout
    make, entry, fragment = HOSTILE[case]
    (src / "evil.tar.gz").write_bytes(archive(make(root)))
    store = ArtifactStore(str(src), cache, 10 * MiB)
    before = snapshot(root, cache)
    with pytest.raises(BadArtifact) as err:
        store.fetch("evil.tar.gz")
    assert "evil.tar.gz" in str(err.value) and repr(entry).strip("'") in str(err.value) and fragment in str(err.value)
    assert snapshot(root, cache) == before, "something was written outside the cache"
    assert not list((root / "box").glob("abs-*")) and not (root / "box" / "deep" / "er" / "evil.txt").exists()
    assert store.cached() == [] and list((cache / "models").iterdir()) == [] and list((cache / "tmp").iterdir()) == []


def test_decompression_bomb_is_stopped_while_streaming(layout):
    root, src, cache = layout

    def bomb(tar):                       # 24 x 1 MiB of zeros: ~24 KiB compressed, each header honest
        for i in range(24):
            _file(tar, f"m/1/part{i:02d}", bytes(MiB))
    (src / "bomb.tar.gz").write_bytes(archive(bomb))
    assert (src / "bomb.tar.gz").stat().st_size < 200 * KiB
    store = ArtifactStore(str(src), cache, 100 * MiB, max_extract_bytes=8 * MiB)
    with pytest.raises(ArchiveTooLarge, match=r"unpacks to more than 8388608 bytes: the limit per model"):
        store.fetch("bomb.tar.gz")
    assert list((cache / "tmp").iterdir()) == [] and store.cached() == []


def test_an_archive_bigger_than_the_free_cache_is_disk_full_not_a_bomb(layout):
    root, src, cache = layout
    (src / "big.tar.gz").write_bytes(archive(lambda tar: _file(tar, "m/1/w", bytes(3 * MiB))))
    with pytest.raises(DiskFull, match="big.tar.gz"):
        ArtifactStore(str(src), cache, 2 * MiB).fetch("big.tar.gz")


@pytest.mark.parametrize("damage", ["garbage-after-header", "truncated", "not-gzip"])
def test_corrupt_archives_are_bad_artifacts(layout, damage):
    root, src, cache = layout
    good = model_archive(weights=256 * KiB)
    data = {"garbage-after-header": good[:10] + os.urandom(4000),
            "truncated": good[: len(good) // 2],
            "not-gzip": b"this is not an archive at all" * 40}[damage]
    (src / "bad.tar.gz").write_bytes(data)
    store = ArtifactStore(str(src), cache, 10 * MiB)
    with pytest.raises(BadArtifact, match=r"bad.tar.gz.*(not a readable tar.gz|entry)"):
        store.fetch("bad.tar.gz")
    assert store.cached() == [] and list((cache / "tmp").iterdir()) == []


def test_gzip_of_a_tar_stream_that_is_cut_short(layout):
    root, src, cache = layout
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        _file(tar, "m/1/model.pt", os.urandom(100 * KiB))
    (src / "cut.tar.gz").write_bytes(gzip.compress(raw.getvalue()[: 50 * KiB]))
    with pytest.raises(BadArtifact, match="m/1/model.pt"):
        ArtifactStore(str(src), cache, 10 * MiB).fetch("cut.tar.gz")


# --- an S3 source (real moto server) --------------------------------------------------------
@pytest.fixture
def bucket(moto_server):
    s3 = boto3.client("s3", endpoint_url=moto_server)
    name = f"models-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    return s3, name


def test_s3_source_fetches_prefix_slash_target_model(bucket, moto_server, tmp_path):
    s3, name = bucket
    s3.put_object(Bucket=name, Key="mme/tiny-v0.tar.gz", Body=model_archive("tiny", weights=512 * KiB))
    s3.put_object(Bucket=name, Key="tiny-v0.tar.gz", Body=model_archive("wrong"))     # outside the prefix
    store = ArtifactStore(f"s3://{name}/mme/", tmp_path / "cache", 10 * MiB, s3_endpoint_url=moto_server)
    got = store.fetch("tiny-v0.tar.gz")
    assert (got.path / "tiny" / "config.pbtxt").exists() and not (got.path / "wrong").exists()
    assert got.download_s > 0 and got.extract_s > 0 and not got.cache_hit
    assert got.artifact_bytes == s3.head_object(Bucket=name, Key="mme/tiny-v0.tar.gz")["ContentLength"]
    assert store.fetch("tiny-v0.tar.gz").cache_hit
    with pytest.raises(ArtifactNotFound, match=f"s3://{name}/mme/nope.tar.gz"):
        store.fetch("nope.tar.gz")
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_s3_concurrent_fetches_of_one_name_download_once(bucket, moto_server, tmp_path):
    s3, name = bucket
    s3.put_object(Bucket=name, Key="p/m.tar.gz", Body=model_archive("m", weights=2 * MiB))
    store = ArtifactStore(f"s3://{name}/p", tmp_path / "cache", 20 * MiB, s3_endpoint_url=moto_server)
    opened = []
    real_open = store.source.open
    store.source.open = lambda *a: opened.append(a) or real_open(*a)      # a spy, not a stand-in
    results, errors = [], []
    barrier = threading.Barrier(8)

    def worker():
        barrier.wait()
        try:
            results.append(store.fetch("m.tar.gz"))
        except Exception as exc:    # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(results) == 8 and len(opened) == 1
    assert len({r.path for r in results}) == 1 and store.cached() == ["m.tar.gz"]


def test_s3_hostile_archive_writes_nothing_outside(bucket, moto_server, tmp_path):
    s3, name = bucket
    (tmp_path / "deep" / "er").mkdir(parents=True)
    s3.put_object(Bucket=name, Key="evil.tar.gz",
                  Body=archive(lambda tar: (_file(tar, "m/ok", b"ok"), _file(tar, "../../deep/er/evil.txt", b"x"))))
    cache = tmp_path / "box" / "cache"
    store = ArtifactStore(f"s3://{name}", cache, 10 * MiB, s3_endpoint_url=moto_server)
    with pytest.raises(BadArtifact, match=r"evil.tar.gz.*'../../deep/er/evil.txt'"):
        store.fetch("evil.tar.gz")
    assert not (tmp_path / "deep" / "er" / "evil.txt").exists() and list((cache / "tmp").iterdir()) == []


# --- 2 GiB decompression bombs (built cheaply: tests/bombs.py) --------------------------------
@pytest.mark.parametrize("files, file_bytes", [(1, 2048 * MiB), (2048, MiB)], ids=["one-2GiB-file", "2048-files"])
def test_a_2_gib_bomb_costs_at_most_its_limit_once(layout, monkeypatch, files, file_bytes):
    from bombs import PeakDisk, zeros_bomb

    from mmesim.emulator import store as store_module
    root, src, cache = layout
    bomb = zeros_bomb(src / "bomb.tar.gz", files, file_bytes)
    assert bomb.stat().st_size < 4 * MiB                   # ~1000:1
    limit = 64 * MiB
    store = ArtifactStore(str(src), cache, 10 * 2**30, max_extract_bytes=limit, max_ratio=1000)
    unpacked = []
    real_extract = store_module.extract
    monkeypatch.setattr(store_module, "extract", lambda *a: unpacked.append(1) or real_extract(*a))
    with PeakDisk(cache) as disk:
        with pytest.raises(ArchiveTooLarge, match=rf"'bomb.tar.gz' unpacks to more than {limit} bytes: the limit "
                                                  r"per model \(--max-model-bytes\)"):
            store.fetch("bomb.tar.gz")
    assert disk.peak <= limit, f"{disk.peak} bytes written for a {limit}-byte limit"
    assert store.cached() == [] and list((cache / "tmp").iterdir()) == [] and list((cache / "models").iterdir()) == []
    with pytest.raises(ArchiveTooLarge):                   # the same version again: refused without unpacking
        store.fetch("bomb.tar.gz")
    assert len(unpacked) == 1
    os.utime(bomb, ns=(0, 10**9))                          # a new version is looked at afresh
    with pytest.raises(ArchiveTooLarge):
        store.fetch("bomb.tar.gz")
    assert len(unpacked) == 2


def test_the_ratio_limit_names_the_packed_size(layout):
    root, src, cache = layout
    from bombs import zeros_bomb
    bomb = zeros_bomb(src / "dense.tar.gz", 1, 80 * MiB)           # ~80 KiB packed: 1000:1
    store = ArtifactStore(str(src), cache, 2**30, max_extract_bytes=2**30)       # ratio 100, 64 MiB free
    with pytest.raises(ArchiveTooLarge, match=rf"more than {64 * MiB} bytes: 100 times its packed size of "
                                              rf"{bomb.stat().st_size} bytes \(--max-unpack-ratio\)"):
        store.fetch("dense.tar.gz")
    ok = archive(lambda tar: _file(tar, "m/1/w", os.urandom(2 * MiB)))     # incompressible: far under any ratio
    (src / "ok.tar.gz").write_bytes(ok)
    assert store.fetch("ok.tar.gz").path.is_dir()


def test_a_missing_artifact_names_no_server_folder(layout):
    root, src, cache = layout
    with pytest.raises(ArtifactNotFound) as err:
        ArtifactStore(str(src), cache, MiB).fetch("nope.tar.gz")
    assert "nope.tar.gz" in str(err.value) and str(root) not in str(err.value)
