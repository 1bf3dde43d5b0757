"""An endpoint's request log, streamed to disk: the emulator may serve for days, so records
go to column files in its work folder every few thousand requests and memory stays flat;
at shutdown they are read back as the Records every summary is computed from."""

from __future__ import annotations

from array import array
from pathlib import Path

from mmesim.results.records import Records, RequestRecord

CHUNK = 4096                # records held in memory before they are appended to disk
MAX_NAMES = 100_000         # distinct TargetModel names kept; past it, refusals of new names share one
OTHER = "(other names)"


class RequestLog:
    """Append-only RequestRecords: ``add`` on the request path, ``records()`` once at the end."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._buffer = Records()
        self._files = {c: open(self.folder / f"{c}.bin", "wb") for c in Records.COLUMNS}
        self._count = 0

    @property
    def models(self) -> list[str]:
        return self._buffer.models

    def __len__(self) -> int:
        return self._count

    def add(self, rec: RequestRecord) -> None:
        if len(self._buffer.models) >= MAX_NAMES and rec.model not in self._buffer._model_index:
            rec = RequestRecord(rec.start, rec.end, OTHER, rec.instance, rec.outcome, rec.cold)
        self._buffer.add(rec)
        self._count += 1
        if len(self._buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Append the records held in memory to the column files, and forget them."""
        buf = self._buffer
        for column, fh in self._files.items():
            getattr(buf, column).tofile(fh)
            fh.flush()
            setattr(buf, column, array(getattr(buf, column).typecode))

    def records(self) -> Records:
        """Every record so far, read back from disk (and what is still in memory)."""
        self.flush()
        out = Records(list(self._buffer.models))
        for column in Records.COLUMNS:
            column_array = getattr(out, column)
            with open(self.folder / f"{column}.bin", "rb") as fh:
                column_array.fromfile(fh, self._count)
        return out

    def close(self) -> None:
        for fh in self._files.values():
            fh.close()
