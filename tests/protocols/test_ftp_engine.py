"""FTP/SMTP/POP3/IRC through the real engine (``analyze_file``) against Zeek's corpus logs.

Covers what the analyzer-level tests cannot: attachment by port and content, conn.log
``service`` (``ftp-data`` from expected connections, ``pop3,ssl`` / ``irc,ssl`` hand-offs), the
``X`` history letter and the weird policy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", ROOT.parent / "shared" / "conformance")) / "zeek"

CASES = [
    ("scripts.base.protocols.ftp.ftp-ipv6", {"conn", "ftp"}),
    ("scripts.base.protocols.ftp.ftp-max-command-length", {"conn", "ftp", "weird"}),
    ("scripts.base.protocols.ftp.bad-adat-encoding", {"weird"}),
    ("scripts.policy.protocols.ftp.ftp", {"ftp"}),
    ("scripts.base.protocols.smtp.basic", {"smtp"}),
    ("scripts.base.protocols.smtp.mail-transactions-invalid", {"smtp", "weird"}),
    ("scripts.base.protocols.pop3.starttls", {"conn"}),
    ("scripts.base.protocols.irc.starttls", {"conn"}),
    ("scripts.base.protocols.irc.max-dcc-send-expected", {"weird"}),
]


@pytest.mark.parametrize("name,logs", CASES)
def test_case_end_to_end(name, logs):
    if not (CORPUS / "cases.json").is_file():
        pytest.skip(f"conformance corpus not found at {CORPUS}")
    import json
    sys.path.insert(0, str(ROOT / "bench"))
    import conformance

    case = next(c for c in json.loads((CORPUS / "cases.json").read_text())["cases"] if c["test"] == name)
    res = conformance.run_case((str(CORPUS), case, logs, [], str(CORPUS.parent / "compare_logs.py"), None))
    assert res["error"] is None
    for log in logs:
        r = res["logs"][log]
        assert r["passed"], (log, r)
