"""One file being analysed (Zeek's ``fa_file`` as far as files.log needs it), sans-I/O.

A protocol analyzer that carries files (HTTP bodies, SMTP MIME entities, FTP data transfers)
makes one :class:`FileState` per file, with the same ``fuid`` it writes into its own log, hands
it the file's bytes as they come (:meth:`FileState.data`, :meth:`FileState.gap`) and asks for
the files.log row when the file ends (:meth:`FileState.record`): at the end of the entity or
transfer, or when the connection goes away.  It keeps what Zeek's file manager keeps: first and
last activity, seen/missing bytes, the beginning-of-file buffer for MIME sniffing and, when
``frameworks/files/hash-all-files`` is loaded, the MD5/SHA1/SHA256 digests; with
``frameworks/files/extract-all-files`` an :class:`~analysis.files.extract.Extractor` writes the
bytes through the sink the runner put into the options.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from typing import Any

from analysis.files.extract import DEFAULT_PREFIX, Extractor, extract_name
from analysis.files.magic import BOF_SIZE, sniff
from analysis.files.record import FilesInfo, files_record_type

__all__ = ["FileOptions", "FileState", "is_local_default", "write_file"]


@dataclass
class FileOptions:
    """Which file-analysis scripts are loaded.  Protocol options classes inherit these fields, so
    each analyzer that carries files gets them set by ``analysis/zeek_scripts.py`` (``zeek_load``
    metadata: True when that script is loaded).  The defaults are Zeek's default configuration,
    which loads ``base/files/hash`` and ``base/files/extract`` (their columns exist) but hashes
    nothing; bare mode turns the columns off unless those scripts are loaded."""

    files_hash_columns: bool = field(default=True, metadata={"zeek_load": "base/files/hash"})
    files_hash_all: bool = field(default=False, metadata={"zeek_load": "frameworks/files/hash-all-files"})
    files_extract_columns: bool = field(default=True, metadata={"zeek_load": "base/files/extract"})
    # frameworks/files/extract-all-files: Files::ANALYZER_EXTRACT on every file (file_new)
    files_extract_all: bool = field(default=False,
                                    metadata={"zeek_load": "frameworks/files/extract-all-files"})
    extract_prefix: str = field(default=DEFAULT_PREFIX, metadata={"zeek": "FileExtract::prefix"})
    extract_limit: int = field(default=0, metadata={"zeek": "FileExtract::default_limit"})
    extract_limit_includes_missing: bool = field(
        default=True, metadata={"zeek": "FileExtract::default_limit_includes_missing"})
    # where extracted bytes go (analysis.files.extract.install); no sink: nothing is extracted
    extract_sink: Any = field(default=None, compare=False, repr=False)


_NO_OPTIONS = FileOptions()
_HASH_ANALYZERS = ("MD5", "SHA1", "SHA256")
_local_default = None


def is_local_default(addr: str) -> bool:
    """Zeek's default ``Site::is_local_addr``: ``Site::local_nets`` is the private address space
    (``Site::private_address_space_is_local=T``).  Used when the engine's context offers no
    ``is_local_addr`` of its own."""
    global _local_default
    if _local_default is None:
        from analysis.config import PRIVATE_ADDRESS_SPACE, NetSet
        _local_default = NetSet(PRIVATE_ADDRESS_SPACE)
    return addr in _local_default


class FileState:
    """Per-file state; ``data``/``gap`` on the hot path, ``record`` once at the end."""

    __slots__ = ("fuid", "source", "is_orig", "depth", "filename", "ts", "last_active",
                 "seen_bytes", "total_bytes", "missing_bytes", "overflow_bytes", "mime_type",
                 "sniffed", "bof", "hashers", "analyzers", "parent_fuid", "next_offset",
                 "ranges", "record_type", "ended", "extractor")

    def __init__(self, fuid: str, source: str, is_orig: bool, ts: float,
                 opts: FileOptions | None = None, depth: int = 0, filename: str | None = None) -> None:
        o = opts if opts is not None else _NO_OPTIONS
        self.fuid = fuid
        self.source = source
        self.is_orig = is_orig
        self.depth = depth
        self.filename = filename
        self.ts = ts
        self.last_active = ts
        self.seen_bytes = 0
        self.total_bytes: int | None = None
        self.missing_bytes = 0
        self.overflow_bytes = 0
        self.mime_type: str | None = None
        self.sniffed = False
        self.bof = b""
        self.parent_fuid: str | None = None
        self.next_offset = 0            # file offset after the last chunk delivered
        self.ranges: list[list[int]] | None = None   # covered [start, end) once out of order
        self.ended = False
        if o.files_hash_all:
            self.hashers = [hashlib.md5(), hashlib.sha1(), hashlib.sha256()]
            self.analyzers = list(_HASH_ANALYZERS)
        else:
            self.hashers = None
            self.analyzers = []
        self.extractor = None
        if o.files_extract_all and o.extract_sink is not None:
            self.analyzers.append("EXTRACT")
            self.extractor = Extractor(o.extract_sink, o.extract_prefix, extract_name(ts, source, fuid), ts,
                                       o.extract_limit, o.extract_limit_includes_missing)
        self.record_type = files_record_type(o.files_hash_columns or o.files_hash_all,
                                             o.files_extract_columns or o.files_extract_all)

    def data(self, chunk: bytes, ts: float, offset: int = -1) -> bool:
        """File bytes in stream order (``offset`` -1) or at a file offset (HTTP 206 ranges).
        Returns True when this call decided the MIME type (the BOF buffer filled up)."""
        n = len(chunk)
        if not n:
            return False
        self.seen_bytes += n
        self.last_active = ts
        if (offset >= 0 and offset != self.next_offset) or self.ranges is not None:
            return self._out_of_order(chunk, offset if offset >= 0 else self.next_offset, ts)
        x = self.extractor
        if x is not None:
            x.data(chunk, self.next_offset, ts)
        self.next_offset += n
        h = self.hashers
        if h is not None:
            for x in h:
                x.update(chunk)
        if not self.sniffed:
            need = BOF_SIZE - len(self.bof)
            self.bof += chunk[:need] if n > need else chunk
            if len(self.bof) >= BOF_SIZE:
                self._sniff()
                return True
        return False

    def _out_of_order(self, chunk: bytes, offset: int, ts: float) -> bool:
        """Byte ranges (HTTP 206, possibly over several connections): keep the covered
        intervals; what lies between them is missing when the file ends, as Zeek's file
        reassembler reports it.  Hashes need in-order data, so they are dropped."""
        n = len(chunk)
        self.hashers = None
        if self.extractor is not None:
            self.extractor.data(chunk, offset, ts)
        rs = self.ranges
        if rs is None:
            rs = self.ranges = [[0, self.next_offset]] if self.next_offset else []
        end = offset + n
        rs.append([offset, end])
        if len(rs) > 1:
            rs.sort()
            merged = [rs[0]]
            for a, b in rs[1:]:
                if a <= merged[-1][1]:
                    if b > merged[-1][1]:
                        merged[-1][1] = b
                else:
                    merged.append([a, b])
            self.ranges = merged
        self.next_offset = end
        if not self.sniffed and offset <= len(self.bof) < end:
            self.bof += chunk[len(self.bof) - offset:BOF_SIZE - offset]
            if len(self.bof) >= BOF_SIZE:
                self._sniff()
                return True
        return False

    def missing(self) -> int:
        """Missing bytes: declared gaps plus the holes between received ranges."""
        rs = self.ranges
        if not rs:
            return self.missing_bytes
        return self.missing_bytes + rs[-1][1] - sum(b - a for a, b in rs)

    def gap(self, length: int) -> None:
        """``length`` bytes of the file are missing (a content gap)."""
        if length > 0:
            if self.extractor is not None:
                self.extractor.gap(self.next_offset, length)
            if self.ranges is None:
                self.missing_bytes += length     # else the hole shows between the ranges
            self.next_offset += length
            self.hashers = None

    def _sniff(self) -> None:
        self.sniffed = True
        self.mime_type = sniff(self.bof)
        self.bof = b""

    def finish(self) -> bool:
        """The file ends: sniff what the BOF buffer holds.  True when that decided the MIME type
        now (the file was shorter than the buffer)."""
        self.ended = True
        if self.extractor is not None:
            self.extractor.close()
        if not self.sniffed:
            self._sniff()
            return True
        return False

    def record(self, conn, is_local=None, timedout: bool = False) -> FilesInfo:
        """The files.log row for connection view ``conn``.  ``is_local`` is Site::is_local_addr;
        it may answer None (no ``Site::local_nets`` at all: Zeek leaves ``local_orig`` unset)."""
        if not self.ended:
            self.finish()
        sender = conn.orig_h if self.is_orig else conn.resp_h
        local = (is_local or is_local_default)(sender)
        extra = {}
        if self.hashers is not None:
            md5, sha1, sha256 = self.hashers
            extra = {"md5": md5.hexdigest(), "sha1": sha1.hexdigest(), "sha256": sha256.hexdigest()}
        if self.extractor is not None:
            extra.update(self.extractor.columns())
        return self.record_type(
            ts=self.ts, fuid=self.fuid, uid=conn.uid, orig_h=conn.orig_h, orig_p=conn.orig_p,
            resp_h=conn.resp_h, resp_p=conn.resp_p, source=self.source, depth=self.depth,
            analyzers=list(self.analyzers), mime_type=self.mime_type, filename=self.filename,
            duration=self.last_active - self.ts, local_orig=local, is_orig=self.is_orig,
            seen_bytes=self.seen_bytes, total_bytes=self.total_bytes,
            missing_bytes=self.missing(), overflow_bytes=self.overflow_bytes,
            timedout=timedout, parent_fuid=self.parent_fuid, **extra)


def write_file(ctx, f: FileState, timedout: bool = False) -> None:
    """Write ``f``'s files.log row through analyzer context ``ctx``."""
    ctx.write_log("files", f.record(ctx.conn, getattr(ctx, "is_local_addr", None), timedout))
