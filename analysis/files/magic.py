"""Content sniffing: the MIME type Zeek's file analysis reports for a file (files.log
``mime_type``, http.log ``*_mime_types``, ftp.log ``mime_type``).

Zeek matches the first ``default_file_bof_buffer_size`` (4096) bytes of a file against its
``file-magic`` signatures and keeps the strongest match.  We keep the types that matter on the
web, in Zeek's strength order: binary magic numbers first, then markup, JSON, and finally
``text/plain`` for a start of at least ten printable or white-space characters (which is why a
tiny body gets no type at all).
"""

from __future__ import annotations

import re

BOF_SIZE = 4096

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "application/pdf"),
    (b"MZ", "application/x-dosexec"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/x-gzip"),
    (b"\x7fELF", "application/x-executable"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"RIFF", "application/x-riff"),
    (b"Rar!\x1a\x07", "application/x-rar"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"BZh", "application/x-bzip2"),
    (b"\xfd7zXZ\x00", "application/x-xz"),
    (b"CWS", "application/x-shockwave-flash"),
    (b"FWS", "application/x-shockwave-flash"),
    (b"OggS", "application/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"\xca\xfe\xba\xbe", "application/x-java-applet"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/vnd.ms-office"),
    (b"wOFF", "application/font-woff"),
    (b"wOF2", "application/font-woff2"),
)

_HTML = re.compile(rb"(?is)^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*"
                   rb"<(?:!doctype\s+html|html|head|title|body|iframe|h1|table)[\s>]")
_JS = re.compile(rb"^[\r\n \t]*(?:"
                 rb"<script[ \t]+(?:(?:type|language)=['\"]?(?:text/)?javascript|src=['\"]?http)"
                 rb"|<script>[\r\n \t]*(?:var|function) "
                 rb"|for \(;;\);"
                 rb"|document\.write(?:ln)?[ \t]?\()"
                 rb"|^\(function\(\)[ \t\n]*\{", re.I)
_JSON = re.compile(rb'^[\r\n \t]*[\[{][\r\n \t]*(?:["\[{\]}0-9-]|true|false|null)')
_XML = re.compile(rb"^(?:\xef\xbb\xbf)?[\r\n \t]*<\?xml")
_PLAIN = re.compile(rb"^[\x20-\x7e\t\n\x0b\x0c\r]{10}")


def sniff(bof: bytes) -> str | None:
    """The MIME type of a file starting with ``bof`` (at most BOF_SIZE bytes), or None."""
    if not bof:
        return None
    for magic, mime in _MAGIC:
        if bof.startswith(magic):
            if magic == b"RIFF":
                kind = bof[8:12]
                return {b"WEBP": "image/webp", b"WAVE": "audio/x-wav", b"AVI ": "video/avi"}.get(kind, mime)
            return mime
    if _XML.match(bof):
        if b"<svg" in bof[:BOF_SIZE]:
            return "image/svg+xml"
        return "application/xml"
    if _JS.match(bof):
        return "application/javascript"
    if _HTML.search(bof[:BOF_SIZE]):
        return "text/html"
    if _JSON.match(bof):
        return "text/json"
    if _PLAIN.match(bof):
        return "text/plain"
    return None
