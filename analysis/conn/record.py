"""conn.log's record (Zeek's ``Conn::Info``) and its optional extensions.

Zeek policy scripts add columns to ``Conn::Info`` (``mac-logging`` adds the L2 addresses,
``vlan-logging`` the VLAN tags), appended in load order.  Here each extension is a subclass
of :class:`ConnInfo` made once per combination, so the writers derive the right header from
the record's type while the stream keeps one registered base schema.
"""

from __future__ import annotations

import functools

from analysis.logs.schema import (
    Bool, ConnIdRecord, Count, Enum, Int, Interval, LogRecord, String, log_stream, set_of,
)


@log_stream("conn")
class ConnInfo(ConnIdRecord, kw_only=True):
    proto: Enum
    service: String | None = None
    duration: Interval | None = None
    orig_bytes: Count | None = None
    resp_bytes: Count | None = None
    conn_state: String | None = None
    local_orig: Bool | None = None
    local_resp: Bool | None = None
    missed_bytes: Count = 0
    history: String | None = None
    orig_pkts: Count | None = None
    orig_ip_bytes: Count | None = None
    resp_pkts: Count | None = None
    resp_ip_bytes: Count | None = None
    tunnel_parents: set_of("string") | None = None
    ip_proto: Count | None = None


class _MacColumns(LogRecord, kw_only=True):
    orig_l2_addr: String | None = None
    resp_l2_addr: String | None = None


class _VlanColumns(LogRecord, kw_only=True):
    vlan: Int | None = None
    inner_vlan: Int | None = None


#: extension name (what AnalysisConfig.conn_extensions lists) -> the columns it adds
EXTENSIONS: dict[str, type[LogRecord]] = {"mac": _MacColumns, "vlan": _VlanColumns}


@functools.cache
def conn_record_type(extensions: tuple[str, ...] = ()) -> type[ConnInfo]:
    """The ConnInfo type with the given extensions' columns appended, in that order."""
    if not extensions:
        return ConnInfo
    import msgspec
    import typing

    fields = []
    for name in extensions:
        ext = EXTENSIONS[name]
        hints = typing.get_type_hints(ext, include_extras=True)
        for f in msgspec.structs.fields(ext):
            fields.append((f.name, hints[f.name], None))
    cls = msgspec.defstruct("ConnInfo_" + "_".join(extensions), fields, bases=(ConnInfo,), kw_only=True,
                            module=__name__)
    cls.__log_path__ = "conn"  # type: ignore[attr-defined]
    return cls
