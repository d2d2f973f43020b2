"""Content sniffing for HTTP bodies.  The sniffer is file analysis's (``analysis/files/magic.py``);
this name stays for the HTTP analyzer and its tests."""

from analysis.files.magic import BOF_SIZE, sniff

__all__ = ["BOF_SIZE", "sniff"]
