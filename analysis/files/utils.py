"""Zeek's ``base/utils/files`` helpers that protocol scripts use to name files."""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["filename_from_disposition"]

_CD_FILENAME = re.compile(r"""(?i)filename\*?[ \t]*=[ \t]*(?:"([^"]*)"|([^;]*))""")


def filename_from_disposition(value: str) -> str | None:
    """``extract_filename_from_content_disposition``: the file name in a Content-Disposition (or
    Content-Type ``name=``) header value, RFC 5987 ``utf-8''`` names unquoted; None without one."""
    m = _CD_FILENAME.search(value)
    if not m:
        return None
    name = m.group(1) if m.group(1) is not None else m.group(2).strip()
    if name.lower().startswith("utf-8''"):
        name = unquote(name[7:], errors="surrogateescape")
    return name
