"""A generic durable spool: append-only, checksummed, fsync'd segment files with a committed read cursor.

It knows nothing about what the payloads are; the Elasticsearch sink (:mod:`collector.elasticsearch`) is
one user. Writers ``append`` byte payloads; one reader ``read``s after the cursor and ``commit``s what it
has handled, so nothing appended is lost across a restart. A size cap with a declared
:class:`SpoolPolicy` bounds the disk; what the policy drops is counted in ``Spool.dropped``.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Spool", "SpoolPolicy", "SpoolRecord"]


class SpoolPolicy(enum.StrEnum):
    """What the spool does when it reaches ``spool_max_bytes``."""

    DROP_OLDEST = "drop_oldest"   # delete the oldest closed segment (keep the newest data)
    DROP_NEWEST = "drop_newest"   # refuse the incoming batch (keep the oldest data)



_HEADER = struct.Struct(">4sII")          # magic, payload length, crc32(payload)
_MAGIC = b"IDS1"
_MAX_RECORD = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class SpoolRecord:
    segment: int
    offset: int       # where the record starts
    end: int          # where the next record starts
    payload: bytes


class Spool:
    """Append-only, checksummed, fsync'd segment files with a committed read cursor.

    Records are ``magic | length | crc32 | payload``. ``read`` yields records after the cursor;
    ``commit`` persists the cursor atomically. A record whose checksum fails is skipped and
    counted; an unreadable tail (torn write) ends that segment. Above ``max_bytes`` the policy
    decides what is dropped; ``dropped`` counts every dropped record.

        >>> import tempfile
        >>> s = Spool(tempfile.mkdtemp())
        >>> s.append([b"a", b"b"])
        2
        >>> [r.payload for r in s.read(10)]
        [b'a', b'b']
    """

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 256 * 1024 * 1024,
                 segment_bytes: int = 8 * 1024 * 1024, policy: SpoolPolicy = SpoolPolicy.DROP_OLDEST,
                 fsync: bool = True) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.segment_bytes = min(segment_bytes, max(max_bytes // 4, 4096))
        self.policy = policy
        self.fsync = fsync
        self.dropped = 0
        self.corrupt = 0
        self._lock = threading.RLock()
        self._cursor_path = self.dir / "cursor.json"
        self._cursor = self._load_cursor()
        for n in self._segments():
            if self._seg_path(n).stat().st_size == 0:
                self._seg_path(n).unlink()
        segs = self._segments()
        # Always append to a fresh segment: the previous process may have left a torn tail.
        self._active = max([*segs, self._cursor[0], 0]) + 1
        self._fh = open(self._seg_path(self._active), "ab")  # noqa: SIM115 - kept open for appends

    # -- layout ------------------------------------------------------------------------------
    def _seg_path(self, n: int) -> Path:
        return self.dir / f"seg-{n:012d}.log"

    def _segments(self) -> list[int]:
        return sorted(int(p.name[4:16]) for p in self.dir.glob("seg-*.log"))

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads(self._cursor_path.read_text())
            return int(data["segment"]), int(data["offset"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0, 0

    def _fsync_dir(self) -> None:
        if not self.fsync:
            return
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @property
    def size_bytes(self) -> int:
        total = 0
        for n in self._segments():
            try:
                total += self._seg_path(n).stat().st_size
            except FileNotFoundError:
                pass
        return total

    # -- writing -----------------------------------------------------------------------------
    def append(self, payloads: Iterable[bytes]) -> int:
        """Append records durably; returns how many were stored (0 when the policy refuses them)."""
        items = list(payloads)
        if not items:
            return 0
        blob = b"".join(_HEADER.pack(_MAGIC, len(p), zlib.crc32(p)) + p for p in items)
        with self._lock:
            if not self._make_room(len(blob)):
                self.dropped += len(items)
                return 0
            if self._fh.tell() > 0 and self._fh.tell() + len(blob) > self.segment_bytes:
                self._rotate()
            self._fh.write(blob)
            self._fh.flush()
            if self.fsync:
                os.fsync(self._fh.fileno())
        return len(items)

    def _rotate(self) -> None:
        self._fh.close()
        self._active += 1
        self._fh = open(self._seg_path(self._active), "ab")  # noqa: SIM115
        self._fsync_dir()

    def _make_room(self, incoming: int) -> bool:
        while self.size_bytes + incoming > self.max_bytes:
            if self.policy is SpoolPolicy.DROP_NEWEST:
                return False
            closed = [n for n in self._segments() if n != self._active]
            if not closed:
                # Only the active segment is left: close it so it can be dropped as a whole.
                if self._fh.tell() == 0:
                    return incoming <= self.max_bytes
                self._rotate()
                continue
            victim = closed[0]
            start = self._cursor[1] if victim == self._cursor[0] else 0
            if victim >= self._cursor[0]:
                self.dropped += sum(1 for _ in self._scan(victim, start, count_corrupt=False))
            self._seg_path(victim).unlink(missing_ok=True)
            if self._cursor[0] <= victim:
                self._set_cursor((victim + 1, 0))
            log.warning("spool over %d bytes: dropped segment %d", self.max_bytes, victim)
        return True

    # -- reading -----------------------------------------------------------------------------
    def _scan(self, seg: int, start: int, *, count_corrupt: bool = True) -> Iterator[SpoolRecord]:
        try:
            with open(self._seg_path(seg), "rb") as fh:
                fh.seek(start)
                pos = start
                while True:
                    head = fh.read(_HEADER.size)
                    if len(head) < _HEADER.size:
                        return
                    magic, length, crc = _HEADER.unpack(head)
                    if magic != _MAGIC or length > _MAX_RECORD:
                        # The framing itself is damaged: nothing after it can be trusted, so the
                        # rest of the segment is skipped (one empty record that moves the cursor).
                        if count_corrupt:
                            self.corrupt += 1
                            log.error("spool: unreadable data in segment %d at %d", seg, pos)
                        yield SpoolRecord(seg, pos, os.fstat(fh.fileno()).st_size, b"")
                        return
                    payload = fh.read(length)
                    if len(payload) < length:
                        # A torn write left by a crash (never acknowledged to the caller): skip it.
                        yield SpoolRecord(seg, pos, os.fstat(fh.fileno()).st_size, b"")
                        return
                    end = pos + _HEADER.size + length
                    if zlib.crc32(payload) != crc:
                        if count_corrupt:
                            self.corrupt += 1
                            log.error("spool: checksum mismatch in segment %d at %d", seg, pos)
                        yield SpoolRecord(seg, pos, end, b"")   # skipped, but the cursor moves past it
                    else:
                        yield SpoolRecord(seg, pos, end, payload)
                    pos = end
        except FileNotFoundError:
            return

    def read(self, limit: int) -> list[SpoolRecord]:
        """Up to ``limit`` records after the committed cursor (corrupt ones have empty payloads)."""
        out: list[SpoolRecord] = []
        with self._lock:
            seg, off = self._cursor
            for n in self._segments():
                if n < seg:
                    continue
                start = off if n == seg else 0
                for rec in self._scan(n, start):
                    out.append(rec)
                    if len(out) >= limit:
                        return out
        return out

    def commit(self, upto: SpoolRecord) -> None:
        """Mark every record up to and including ``upto`` as delivered; delete finished segments."""
        with self._lock:
            self._set_cursor((upto.segment, upto.end))
            for n in self._segments():
                if n < upto.segment and n != self._active:
                    self._seg_path(n).unlink(missing_ok=True)
            # A fully read closed segment can go too.
            if upto.segment != self._active:
                path = self._seg_path(upto.segment)
                try:
                    if path.stat().st_size <= upto.end:
                        path.unlink()
                        self._set_cursor((upto.segment + 1, 0))
                except FileNotFoundError:
                    pass

    def _set_cursor(self, cursor: tuple[int, int]) -> None:
        self._cursor = cursor
        tmp = self._cursor_path.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"segment": cursor[0], "offset": cursor[1]}, fh)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, self._cursor_path)
        self._fsync_dir()

    def is_empty(self) -> bool:
        """True when every record has been committed (cheap: compares the cursor with the file ends)."""
        with self._lock:
            seg, off = self._cursor
            for n in self._segments():
                if n < seg:
                    continue
                try:
                    size = self._seg_path(n).stat().st_size
                except FileNotFoundError:
                    continue
                if size > (off if n == seg else 0):
                    return False
            return True

    def pending(self) -> int:
        """How many records are not yet committed (reads the files; for tests and status)."""
        with self._lock:
            seg, off = self._cursor
            return sum(1 for n in self._segments() if n >= seg
                       for _ in self._scan(n, off if n == seg else 0, count_corrupt=False))

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()
