"""Decompression bombs built cheaply: a gzip stream may be many members, so a MiB of zeros is
compressed once (~1 KiB) and written as often as needed; 2 GiB unpacked costs ~2 MiB on disk."""

from __future__ import annotations

import gzip
import os
import tarfile
import threading
from pathlib import Path

MiB = 2**20


def zeros_bomb(path: Path, files: int, file_bytes: int) -> Path:
    """A tar.gz of ``files`` files of zeros, each ``file_bytes`` (a whole number of MiB)."""
    assert file_bytes % MiB == 0
    zeros = gzip.compress(bytes(MiB), 9)
    with open(path, "wb") as out:
        for i in range(files):
            info = tarfile.TarInfo(f"bomb/1/part{i:05d}")
            info.size = file_bytes
            out.write(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
            for _ in range(file_bytes // MiB):
                out.write(zeros)
        out.write(gzip.compress(bytes(2 * tarfile.BLOCKSIZE)))      # end of archive
    return path


def disk_bytes(folder: Path) -> int:
    """Bytes allocated under ``folder`` (blocks, as du counts them)."""
    total = 0
    for root, dirs, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


class PeakDisk:
    """Samples ``disk_bytes(folder)`` every 20 ms in a thread while in the ``with`` block."""

    def __init__(self, folder: Path):
        self.folder, self.peak, self._stop = folder, 0, threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, disk_bytes(self.folder))

    def __enter__(self) -> "PeakDisk":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, disk_bytes(self.folder))
