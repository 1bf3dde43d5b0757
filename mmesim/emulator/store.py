"""The artifact store: where a multi-model endpoint finds ``<prefix>/<TargetModel>``, and the
instance's disk cache it unpacks artifacts into.

A source is a local directory, ``file://DIR`` or ``s3://bucket/prefix`` (boto3, with an S3
endpoint of the user's choosing: moto, MinIO, LocalStack). As on SageMaker, an artifact is
fetched on a model's first use, unpacked onto the instance's disk and kept there until the
cache needs room: least recently used artifacts go first, and pinned ones (models loaded in
the backend) stay. Target names and archive entries come from clients, so both are checked
before anything touches the filesystem, and nothing is ever written outside the cache.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import threading
import time
import urllib.parse
import uuid
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from mmesim.errors import ConfigError, MmesimError
from mmesim.sim.policy import lru_victims
from mmesim.units import GiB, MiB

DEFAULT_MAX_EXTRACT_BYTES = 20 * GiB   # an archive expanding past this is treated as a bomb
DEFAULT_MAX_RATIO = 100.0              # unpacked / packed: weights barely compress, zeros ~1000:1
RATIO_FLOOR_BYTES = 64 * MiB           # small archives may expand more (tar padding, configs)
_REFUSALS_KEPT = 1024                  # remembered refused artifact versions
MAX_NAME_CHARS = 1024                  # SageMaker's limit on TargetModel
_NAME_CHARS = re.compile(r"[\x20-\x7e]+")           # printable ASCII, as TargetModel's pattern
_REFUSED_CHARS = re.compile(r"[\\%]")
_CHUNK = 1 << 20


class ArtifactError(MmesimError):
    """Something about one target model's artifact; the message names the model (and entry)."""


class InvalidTargetModel(ArtifactError):
    """A TargetModel that is not a plain relative name (``../x``, ``/etc/passwd``, ``%2e%2e/x``)."""


class ArtifactNotFound(ArtifactError):
    """No artifact at ``<prefix>/<TargetModel>``."""


class BadArtifact(ArtifactError):
    """An artifact that is not a safe model.tar.gz: corrupt, or with an entry that would
    leave the cache, a link out, a device file, or contents past the size limit."""


class ArchiveTooLarge(BadArtifact):
    """An archive that expands past the size limit (a decompression bomb, or too big for the cache)."""


class DiskFull(ArtifactError):
    """The cache cannot hold the artifact even after evicting every unpinned one."""


class StoreUnavailable(ArtifactError):
    """The source could not be read (S3 unreachable, no credentials, access denied)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """An artifact on the instance's disk. ``path`` is the folder to hand the backend
    (``POST /models {"url": path}``); the timings feed CloudWatch's ModelDownloadingTime."""

    path: Path
    artifact_bytes: int       # size of the archive as stored at the source
    download_s: float         # copying it from the source (0 for a local directory)
    extract_s: float          # unpacking it into the cache
    cache_hit: bool           # it was on disk already


def validate_target_model(name: str) -> str:
    """``name`` if it is a safe relative artifact name, else InvalidTargetModel.

    Allowed: what SageMaker's API takes (printable ASCII, the first not a space: ``model
    (1).tar.gz`` is a valid S3 key) as segments joined by ``/``, except ``\\`` (a separator
    elsewhere) and ``%`` (an escape a proxy may decode); no empty, ``.`` or ``..`` segment, no
    leading ``/``, at most 1024 characters. Checked on the text alone, before any file is touched."""
    if not isinstance(name, str) or not name:
        raise InvalidTargetModel("TargetModel is empty")
    shown = name if len(name) <= 80 else name[:77] + "..."
    if len(name) > MAX_NAME_CHARS:
        raise InvalidTargetModel(f"TargetModel {shown!r} is longer than {MAX_NAME_CHARS} characters")
    if name.startswith("/"):
        raise InvalidTargetModel(f"TargetModel {shown!r} is an absolute path")
    if name[0] == " ":
        raise InvalidTargetModel(f"TargetModel {shown!r} starts with a space")
    for segment in name.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidTargetModel(f"TargetModel {shown!r} has an empty, '.' or '..' path segment")
        if not _NAME_CHARS.fullmatch(segment):
            raise InvalidTargetModel(f"TargetModel {shown!r} has characters other than printable ASCII")
        if _REFUSED_CHARS.search(segment):
            raise InvalidTargetModel(f"TargetModel {shown!r} has '\\' or '%', which the emulator refuses")
    return name


# --- sources ------------------------------------------------------------------------------
class _DirectorySource:
    def __init__(self, root: Path):
        if not root.is_dir():
            raise ConfigError("is not a directory", field="models", value=str(root))
        self.root = root.resolve()

    def describe(self, name: str) -> str:
        return str(self.root / name)

    def head(self, name: str) -> tuple[int, str]:
        """(size in bytes, version): the version changes when the file does."""
        path = self.root / name          # a checked name: it cannot climb out of root
        if not path.is_file():           # the message names no server-side folder
            raise ArtifactNotFound(f"no artifact {name!r} under the endpoint's model data prefix")
        st = path.stat()
        return st.st_size, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"

    def open(self, name: str, scratch: Path):
        """(a readable file of the artifact, seconds spent copying it)."""
        return (self.root / name).open("rb"), 0.0


class _S3Source:
    def __init__(self, url: str, endpoint_url: str | None):
        parsed = urllib.parse.urlparse(url)
        if not parsed.netloc:
            raise ConfigError("expected s3://bucket/prefix", field="models", value=url)
        self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
        import boto3  # the [emulate] extra
        from botocore.config import Config
        # a client is thread-safe; a session is not, so each store makes its own
        self.client = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, config=Config(retries={"max_attempts": 3, "mode": "standard"}))
        self._errors = _botocore_errors()

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def describe(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def head(self, name: str) -> tuple[int, str]:
        """(size in bytes, version): the object's ETag (and VersionId where versioned)."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
        except self._errors as exc:
            raise self._translate(exc, name) from None
        return int(head["ContentLength"]), f"{head.get('ETag')}:{head.get('VersionId')}"

    def open(self, name: str, scratch: Path):
        t0 = time.perf_counter()
        try:
            with scratch.open("wb") as fh:
                self.client.download_fileobj(self.bucket, self.key(name), fh)
        except self._errors as exc:
            raise self._translate(exc, name) from None
        return scratch.open("rb"), time.perf_counter() - t0

    def _translate(self, exc: Exception, name: str) -> ArtifactError:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return ArtifactNotFound(f"no artifact {name!r} at {self.describe(name)}")
        return StoreUnavailable(f"cannot read {self.describe(name)}: {exc}")


def _botocore_errors() -> tuple[type[Exception], ...]:
    from botocore.exceptions import BotoCoreError, ClientError
    return (BotoCoreError, ClientError)


def _source(source: str, s3_endpoint_url: str | None):
    if source.startswith("s3://"):
        return _S3Source(source, s3_endpoint_url)
    if source.startswith("file://"):
        source = urllib.parse.unquote(source[len("file://"):])
    return _DirectorySource(Path(source))


# --- safe extraction ----------------------------------------------------------------------
class _Counted:
    """A forward-only stream that stops once more than ``limit`` bytes came out of it: the
    decompressed bytes are counted as they stream, whatever the tar headers claim. It
    offers tell() and forward seek() so tarfile reads it without its slower stream mode."""

    def __init__(self, raw, limit: int, where):
        self.raw, self.limit, self.where, self.count = raw, limit, where, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:                 # never "all of it": a bomb must stop at the limit
            n = self.limit + 1 - self.count
        data = self.raw.read(min(n, self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            raise ArchiveTooLarge(f"expands past {self.limit} bytes (at entry {self.where()!r})")
        return data

    def tell(self) -> int:
        return self.count

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence != 0 or pos < self.count:
            raise tarfile.ReadError("archive needs to be read backwards (hard link to a later entry?)")
        while self.count < pos:
            if not self.read(min(pos - self.count, _CHUNK)):
                break
        return self.count


def _entry_parts(name: str) -> list[str]:
    """An archive entry's path as safe relative parts, or BadArtifact naming it."""
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise BadArtifact(f"entry {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise BadArtifact(f"entry {name!r} has a '..' component")
    if "\x00" in name or any(len(p.encode()) > 255 for p in parts):
        raise BadArtifact(f"entry {name!r} has an invalid name")
    return parts


def _real_dir(root: Path, parts: list[str], entry: str, make: bool = True) -> Path:
    """root/parts[...] as real directories (made as needed), never through a link."""
    here = root
    for part in parts:
        here = here / part
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if not make:
                raise BadArtifact(f"entry {entry!r} refers to {part!r}, which is not in the archive before it") from None
            os.mkdir(here, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BadArtifact(f"entry {entry!r} goes through {part!r}, which is not a directory")
    return here


def extract(archive, dest: Path, max_bytes: int) -> int:
    """Unpack a (gzipped) tar stream into the new folder ``dest``; the bytes written.

    Rules: regular files and directories are written, never through a link; symbolic links
    must stay inside ``dest`` once every link is on disk; hard links must name a regular
    file extracted earlier; absolute paths, ``..``, devices, FIFOs and sparse files are
    refused; at most ``max_bytes`` come out of the decompressor. Errors name the entry."""
    dest.mkdir(parents=True)
    current = {"name": "<archive header>"}
    magic = archive.read(2)
    archive.seek(0)
    raw = gzip.GzipFile(fileobj=archive, mode="rb") if magic == b"\x1f\x8b" else archive
    stream = _Counted(raw, max_bytes, lambda: current["name"])
    written, links = 0, []
    try:
        with tarfile.open(fileobj=stream, mode="r:") as tar:
            for m in tar:
                current["name"] = m.name
                parts = _entry_parts(m.name)
                if not parts:
                    if m.isdir():
                        continue
                    raise BadArtifact(f"entry {m.name!r} has an empty name")
                if m.isdev() or m.isfifo():
                    raise BadArtifact(f"entry {m.name!r} is a device file or FIFO")
                if m.issparse():
                    raise BadArtifact(f"entry {m.name!r} is a sparse file")
                parent = _real_dir(dest, parts[:-1], m.name)
                target = parent / parts[-1]
                if m.isdir():
                    _real_dir(dest, parts, m.name)
                    continue
                if os.path.lexists(target):
                    if os.path.isdir(target) and not os.path.islink(target):
                        raise BadArtifact(f"entry {m.name!r} would replace a directory")
                    os.unlink(target)
                if m.issym():
                    if m.linkname.startswith("/"):
                        raise BadArtifact(f"entry {m.name!r} is a link to an absolute path {m.linkname!r}")
                    where = os.path.normpath(os.path.join(*parts[:-1], m.linkname) if parts[:-1] else m.linkname)
                    if where == ".." or where.startswith("../"):
                        raise BadArtifact(f"entry {m.name!r} links outside the archive ({m.linkname!r})")
                    os.symlink(m.linkname, target)
                    links.append((m.name, target))
                elif m.islnk():
                    try:
                        linked = _entry_parts(m.linkname)
                    except BadArtifact:
                        raise BadArtifact(f"entry {m.name!r} is a hard link out of the archive ({m.linkname!r})") from None
                    src = _real_dir(dest, linked[:-1], m.name, make=False) / linked[-1] if linked else dest
                    if not stat.S_ISREG(os.lstat(src).st_mode if os.path.lexists(src) else 0):
                        raise BadArtifact(f"entry {m.name!r} is a hard link to {m.linkname!r}, "
                                          "which is not a file extracted before it")
                    os.link(src, target, follow_symlinks=False)
                elif m.isreg():
                    if written + m.size > max_bytes:      # refused on its header, before a byte is written
                        raise ArchiveTooLarge(f"expands past {max_bytes} bytes (at entry {m.name!r})")
                    src = tar.extractfile(m)
                    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
                    fd = os.open(target, flags, 0o755 if m.mode & 0o111 else 0o644)
                    with os.fdopen(fd, "wb") as out:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            written += len(chunk)
                else:
                    raise BadArtifact(f"entry {m.name!r} has an unsupported type {m.type!r}")
    except BadArtifact:
        raise
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BadArtifact(f"is not a readable tar.gz (at entry {current['name']!r}): {exc}") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull(f"the disk under the cache is full (at entry {current['name']!r})") from None
        raise BadArtifact(f"cannot be unpacked (at entry {current['name']!r}): {exc.strerror or exc}") from None
    real_dest = dest.resolve()
    for name, link in links:          # with every link on disk, where does each really lead?
        if not Path(os.path.realpath(link)).is_relative_to(real_dest):
            raise BadArtifact(f"entry {name!r} links outside the archive ({os.readlink(link)!r})")
    return written


# --- the cache ----------------------------------------------------------------------------
@dataclass
class _Entry:
    name: str
    folder: Path              # <cache>/models/<hash>/
    artifact_bytes: int
    bytes: int                # extracted size, what counts against the cache
    pins: int = 0

    @property
    def path(self) -> Path:
        return self.folder / "model"


class _Pending:
    """A fetch in progress: later callers for the same name wait for it."""

    def __init__(self):
        self.done = threading.Event()
        self.result: Fetched | None = None
        self.error: BaseException | None = None


class ArtifactStore:
    """Artifacts from ``source`` unpacked into ``cache_dir``, at most ``cache_bytes`` of them.

    Thread-safe and blocking: an asyncio caller runs ``fetch`` through ``asyncio.to_thread``.
    Concurrent fetches of one name download it once. Artifacts left in ``cache_dir`` by an
    earlier run are reused."""

    def __init__(self, source: str, cache_dir: str | Path, cache_bytes: int,
                 s3_endpoint_url: str | None = None, max_extract_bytes: int = DEFAULT_MAX_EXTRACT_BYTES,
                 max_ratio: float = DEFAULT_MAX_RATIO):
        if cache_bytes <= 0:
            raise ConfigError("must be positive", field="cache_bytes", value=cache_bytes)
        if max_extract_bytes <= 0:
            raise ConfigError("must be positive", field="max_extract_bytes", value=max_extract_bytes)
        if not max_ratio >= 1:
            raise ConfigError("must be at least 1", field="max_ratio", value=max_ratio)
        self.max_ratio = float(max_ratio)
        self._refused: OrderedDict[str, tuple[str, ArchiveTooLarge]] = OrderedDict()   # name -> (version, error)
        self.source = _source(str(source), s3_endpoint_url)
        self.cache_dir = Path(cache_dir)
        self.cache_bytes, self.max_extract_bytes = int(cache_bytes), int(max_extract_bytes)
        self._models, self._scratch = self.cache_dir / "models", self.cache_dir / "tmp"
        self._models.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self._scratch, ignore_errors=True)       # half-done work of an earlier run
        self._scratch.mkdir()
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry] = OrderedDict()     # least recently used first
        self._pending: dict[str, _Pending] = {}
        self._reindex()

    # -- public ---------------------------------------------------------------------------
    def fetch(self, target_model: str, *, pin: bool = False) -> Fetched:
        """The artifact for ``target_model`` on disk, downloading and unpacking it if needed.
        With ``pin=True`` it is pinned in the same step (no eviction in between)."""
        name = validate_target_model(target_model)
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None:
                self._entries.move_to_end(name)
                entry.pins += pin
                return Fetched(entry.path, entry.artifact_bytes, 0.0, 0.0, True)
            pending = self._pending.get(name)
            owner = pending is None
            if owner:
                pending = self._pending[name] = _Pending()
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            with self._lock:
                entry = self._entries.get(name)
                if entry is not None:
                    entry.pins += pin
            if entry is None:      # evicted already: rare, fetch again
                return self.fetch(name, pin=pin)
            return pending.result
        try:
            pending.result = self._download(name, pin)
            return pending.result
        except BaseException as exc:
            pending.error = exc
            raise
        finally:
            with self._lock:
                del self._pending[name]
            pending.done.set()

    def pin(self, name: str) -> None:
        """Keep ``name``'s files (a model the backend has loaded) until as many ``unpin``."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                raise ArtifactNotFound(f"{name!r} is not in the cache")
            entry.pins += 1

    def unpin(self, name: str) -> None:
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and entry.pins > 0:
                entry.pins -= 1

    def cached(self) -> list[str]:
        """Names on disk, least recently used first."""
        with self._lock:
            return list(self._entries)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.bytes for e in self._entries.values())

    # -- inside ---------------------------------------------------------------------------
    def unpack_limit(self, artifact_bytes: int) -> tuple[int, str]:
        """(bytes an artifact of this packed size may unpack to, which limit that is)."""
        by_ratio = max(int(self.max_ratio * artifact_bytes), RATIO_FLOOR_BYTES)
        if by_ratio < self.max_extract_bytes:
            return by_ratio, (f"{self.max_ratio:g} times its packed size of {artifact_bytes} bytes "
                              "(--max-unpack-ratio)")
        return self.max_extract_bytes, "the limit per model (--max-model-bytes)"

    def _download(self, name: str, pin: bool) -> Fetched:
        artifact_bytes, version = self.source.head(name)
        with self._lock:
            refused = self._refused.get(name)
        if refused is not None and refused[0] == version:       # a bomb costs its limit once per version
            raise refused[1]
        limit, which = self.unpack_limit(artifact_bytes)
        key = hashlib.sha256(name.encode()).hexdigest()[:24]
        work = self._scratch / uuid.uuid4().hex
        work.mkdir()
        try:
            with self._lock:
                pinned = sum(e.bytes for e in self._entries.values() if e.pins)
            room = self.cache_bytes - pinned
            if artifact_bytes > room and not isinstance(self.source, _DirectorySource):
                raise DiskFull(f"{name!r} ({artifact_bytes} bytes) does not fit in the cache: "
                               f"{room} of {self.cache_bytes} bytes are not pinned")
            archive, download_s = self.source.open(name, work / "artifact")
            t0 = time.perf_counter()
            with archive:
                try:
                    size = extract(archive, work / "entry" / "model", min(limit, room))
                except ArchiveTooLarge:
                    if room < limit:
                        raise DiskFull(f"{name!r} does not fit in the cache: it unpacks to more than the "
                                       f"{room} of {self.cache_bytes} bytes not pinned") from None
                    error = ArchiveTooLarge(f"artifact {name!r} unpacks to more than {limit} bytes: {which}")
                    with self._lock:
                        self._refused[name] = (version, error)
                        while len(self._refused) > _REFUSALS_KEPT:
                            self._refused.popitem(last=False)
                    raise error from None
                except BadArtifact as exc:
                    raise BadArtifact(f"artifact {name!r} {exc}") from None
            extract_s = time.perf_counter() - t0
            (work / "entry" / "entry.json").write_text(
                json.dumps({"name": name, "artifact_bytes": artifact_bytes, "bytes": size}))
            with self._lock:
                victims = self._victims(size)
                if victims is None:
                    raise DiskFull(f"{name!r} ({size} bytes unpacked) does not fit in the cache of "
                                   f"{self.cache_bytes} bytes next to the pinned artifacts")
                trash = [self._evict(victim) for victim in victims]
                folder = self._models / key
                os.replace(work / "entry", folder)
                entry = self._entries[name] = _Entry(name, folder, artifact_bytes, size, pins=int(pin))
            for folder in trash:                 # deleted outside the lock: fetches of others go on
                shutil.rmtree(folder, ignore_errors=True)
            return Fetched(entry.path, artifact_bytes, download_s, extract_s, False)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _victims(self, need: int) -> list[str] | None:
        """Least recently used unpinned names whose removal lets ``need`` bytes fit: the same
        rule (sim.policy.lru_victims) as the platform's choice of models to unload."""
        used = sum(e.bytes for e in self._entries.values())
        return lru_victims(((n, e.bytes, not e.pins) for n, e in self._entries.items()), used, need,
                           self.cache_bytes)

    def _evict(self, name: str) -> Path:
        """Take ``name`` out of the cache at once (a rename); the caller deletes the returned folder."""
        entry = self._entries.pop(name)
        trash = self._scratch / uuid.uuid4().hex
        os.replace(entry.folder, trash)
        return trash

    def _reindex(self) -> None:
        found = []
        for folder in self._models.iterdir():
            try:
                meta = json.loads((folder / "entry.json").read_text())
                name = validate_target_model(meta["name"])
                if folder.name != hashlib.sha256(name.encode()).hexdigest()[:24] or not (folder / "model").is_dir():
                    raise ValueError(folder)
                found.append((folder.stat().st_mtime, _Entry(name, folder, int(meta["artifact_bytes"]),
                                                             int(meta["bytes"]))))
            except (OSError, ValueError, KeyError, TypeError, ArtifactError):
                shutil.rmtree(folder, ignore_errors=True)
        for _, entry in sorted(found, key=lambda f: f[0]):
            self._entries[entry.name] = entry
        victims = self._victims(0) or []
        for victim in victims:
            shutil.rmtree(self._evict(victim), ignore_errors=True)
