"""Zeek's detection policy scripts on our frameworks: FTP/SSH brute forcing, expiring certificates.

The corpus traces run through the `starling analyze --load ...` front door (a subprocess, so the
scripts' handlers do not stay registered in this test process) and must give Zeek's notice.log
rows; each threshold is checked one under the limit (no notice) against a count the protocol
logs give independently; one cluster of two workers must raise the same notices as standalone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from analysis.logs.reader import read_tsv
from cluster import api
from cluster.frameworks import analysis_loads, loads_for_scripts, logevents, options, scripts_for_loads
from cluster.frameworks.zeek_time import duration_to_mins_secs, fmt_time

REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("STARLING_CONFORMANCE", REPO.parent / "shared" / "conformance"))
ZEEK = CORPUS / "zeek"
FTP_CASE = "scripts.policy.protocols.ftp.bruteforce"
SSH_CASE = "scripts.policy.protocols.ssh.detect-bruteforcing"
SSL_CASE = "scripts.policy.protocols.ssl.expiring-certs"

pytestmark = pytest.mark.timeout(120)
needs_corpus = pytest.mark.skipif(not (ZEEK / "cases.json").is_file(), reason="conformance corpus not present")


def _case(name: str) -> dict:
    return next(c for c in json.loads((ZEEK / "cases.json").read_text())["cases"] if c["test"] == name)


def _analyze(trace: Path, out: Path, loads=(), redefs=(), *extra: str) -> dict[str, list[dict]]:
    """`starling analyze` with Zeek's options; every log written, parsed."""
    argv = [sys.executable, "-m", "cluster", "analyze", str(trace), "--logdir", str(out), "-C", *extra]
    for name in loads:
        argv += ["--load", name]
    for line in redefs:
        argv += ["--redef", line]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr
    return {p.stem: list(read_tsv(p).rows()) for p in out.glob("*.log")}


def _comparator():
    if "compare_logs" not in sys.modules:       # its dataclasses look their module up by name
        spec = importlib.util.spec_from_file_location("compare_logs", CORPUS / "compare_logs.py")
        mod = sys.modules["compare_logs"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    return sys.modules["compare_logs"]


def _row(n: dict) -> tuple:
    return (n["note"], n["msg"], n["sub"], n["src"], n["uid"] is not None, n["suppress_for"])


# ---- the corpus: Zeek's notices ----------------------------------------------------------------

@needs_corpus
@pytest.mark.parametrize("name", [FTP_CASE, SSH_CASE, SSL_CASE])
def test_corpus_notices_are_zeeks(tmp_path, name):
    case = _case(name)
    # --bare as in the case: the policy scripts' own loads enable their analyzers
    bare = ["--bare"] if case["bare"] else []
    logs = _analyze(ZEEK / case["trace"], tmp_path, case["loads"], case["redefs"], *bare)
    assert case["protocol"] in logs
    res = _comparator().compare_logs(ZEEK / case["baselines"]["notice.log"], tmp_path / "notice.log")
    d = res.to_dict()
    assert res.passed, d["mismatches"] or d["unmatched_baseline_rows"]
    assert d["rows"]["ours"] == d["rows"]["baseline"]


@needs_corpus
def test_ftp_threshold_counts_rejected_user_and_pass(tmp_path):
    """One notice at exactly the number of 5xx replies to USER/PASS (ftp.log, logging them), none
    one above it."""
    case = _case(FTP_CASE)
    trace = ZEEK / case["trace"]
    logs = _analyze(trace, tmp_path / "count", ["base/protocols/ftp"],
                    ['redef FTP::logged_commands += { "USER", "PASS" };'])
    failed = [r for r in logs["ftp"] if r["command"] in ("USER", "PASS") and 500 <= (r["reply_code"] or 0) < 600]
    n = len(failed)
    assert n >= 20
    clients = {r["id.orig_h"] for r in failed}
    assert len(clients) == 1
    at = _analyze(trace, tmp_path / "at", case["loads"], [f"redef FTP::bruteforce_threshold={n};"])["notice"]
    assert [r["msg"].split(" in ")[0] for r in at] == [f"{clients.pop()} had {n} failed logins on 1 FTP server"]
    above = _analyze(trace, tmp_path / "above", case["loads"], [f"redef FTP::bruteforce_threshold={n + 1};"])
    assert "notice" not in above


@needs_corpus
def test_ssh_threshold_counts_failed_connections(tmp_path):
    case = _case(SSH_CASE)
    trace = ZEEK / case["trace"]
    logs = _analyze(trace, tmp_path / "at", case["loads"], ["redef SSH::password_guesses_limit=3;"])
    failed = [r for r in logs["ssh"] if r["auth_success"] is False]
    n = len(failed)
    assert n > 3 and [r["msg"] for r in logs["notice"]] == \
        [f"{failed[0]['id.orig_h']} appears to be guessing SSH passwords (seen in 3 connections)."]
    at = _analyze(trace, tmp_path / "n", case["loads"], [f"redef SSH::password_guesses_limit={n};"])["notice"]
    assert [r["note"] for r in at] == ["SSH::Password_Guessing"] and f"(seen in {n} connections)" in at[0]["msg"]
    above = _analyze(trace, tmp_path / "above", case["loads"], [f"redef SSH::password_guesses_limit={n + 1};"])
    assert "notice" not in above
    # ignore_guessers: this client towards this server is never counted
    c, s = failed[0]["id.orig_h"], failed[0]["id.resp_h"]
    ign = _analyze(trace, tmp_path / "ign", case["loads"],
                   ["redef SSH::password_guesses_limit=3;", f"redef SSH::ignore_guessers += {{ [{c}/32] = {s}/32 }};"])
    assert "notice" not in ign


@needs_corpus
def test_expiring_certs_options(tmp_path):
    case = _case(SSL_CASE)
    trace = ZEEK / case["trace"]
    load = case["loads"]
    # LOCAL_HOSTS (Zeek's default) and no local networks: nothing
    assert "notice" not in _analyze(trace, tmp_path / "default", load)
    # one server local: only its certificate
    local = _analyze(trace, tmp_path / "local", load, (), "--local-nets", "87.98.220.0/24")["notice"]
    assert [(r["note"], r["id.resp_h"]) for r in local] == [("SSL::Certificate_Expired", "87.98.220.10")]
    both = _analyze(trace, tmp_path / "all", load, case["redefs"])["notice"]
    soon = next(r for r in both if r["note"] == "SSL::Certificate_Expires_Soon")
    x509 = _analyze(trace, tmp_path / "x509", ["base/protocols/ssl"])["x509"]
    cert = next(r for r in x509 if r["certificate.subject"] in soon["msg"])
    left = cert["certificate.not_valid_after"] - soon["ts"]
    assert soon["msg"].endswith(f"is going to expire at {fmt_time(cert['certificate.not_valid_after'])}")
    # a warning window just shorter than the time left: no Expires_Soon notice
    shorter = _analyze(trace, tmp_path / "shorter", load,
                       [*case["redefs"], f"redef SSL::notify_when_cert_expiring_in = {int(left) - 1} secs;"])
    assert [r["note"] for r in shorter["notice"]] == ["SSL::Certificate_Expired"]


# what the certificates' records carry besides their columns, as a user's script sees them
RECORD_FUIDS_SCRIPT = '''
import json
from cluster import api as cluster

OUT = {out!r}

def _put(kind, **kw):
    with open(OUT, "a") as f:
        f.write(json.dumps({{"kind": kind, **kw}}) + "\\n")

@cluster.on("X509::log_x509")
def x509(rec):
    _put("x509", fp=rec.fingerprint, fuid=rec.fuid, host_cert=rec.host_cert, client_cert=rec.client_cert)

@cluster.on("SSL::log_ssl")
def ssl(rec):
    _put("ssl", uid=rec.uid, fps=rec.cert_chain_fps, fuids=rec.cert_chain_fuids)
'''


@needs_corpus
def test_expiring_certs_notice_fuid_is_the_host_certificates_file_id(tmp_path):
    """The notice's fuid is the file id of the connection's host certificate: the one its x509
    record carries (not a column of x509.log, whose header stays Zeek's)."""
    case = _case(SSL_CASE)
    seen = tmp_path / "records.jsonl"
    script = tmp_path / "record_fuids.py"
    script.write_text(RECORD_FUIDS_SCRIPT.format(out=str(seen)))
    logs = _analyze(ZEEK / case["trace"], tmp_path / "out", case["loads"], case["redefs"], "--script", str(script))
    recs = [json.loads(line) for line in seen.read_text().splitlines()]
    x509 = [r for r in recs if r["kind"] == "x509"]
    ssl = {r["uid"]: r for r in recs if r["kind"] == "ssl"}
    fuids = [r["fuid"] for r in x509]
    assert len(x509) >= 2 and all(f.startswith("F") and len(f) > 10 for f in fuids)
    assert len(set(fuids)) == len(fuids)                 # one file per certificate
    notices = logs["notice"]
    assert len(notices) == 2
    for n in notices:
        chain = ssl[n["uid"]]
        assert n["fuid"] is not None and n["fuid"] == chain["fuids"][0]
        host = [r for r in x509 if r["fuid"] == n["fuid"]]
        assert len(host) == 1 and host[0]["host_cert"] and not host[0]["client_cert"]
        assert host[0]["fp"] == chain["fps"][0]
    # x509.log keeps Zeek's columns: the file id is in no log
    x509_log = tmp_path / "out" / "x509.log"
    fields = next(line for line in x509_log.read_text().splitlines() if line.startswith("#fields"))
    assert fields.split("\t")[1:3] == ["ts", "fingerprint"] and "fuid" not in fields
    assert not any(f in x509_log.read_text() for f in fuids)


# ---- a cluster gives the same notices ----------------------------------------------------------

@needs_corpus
@pytest.mark.parametrize("name,count,peer", [(SSH_CASE, 1, "manager"), (FTP_CASE, 1, "manager"),
                                             (SSL_CASE, 2, "worker-")])
def test_two_worker_cluster_same_notice_as_standalone(tmp_path, name, count, peer):
    """SumStats decide on the manager; a certificate notice comes from the worker that saw the
    session (its log events run there), with the certificate's file id."""
    from cluster.run import run_local

    case = _case(name)
    trace = ZEEK / case["trace"]
    alone = sorted(_analyze(trace, tmp_path / "sa", case["loads"], case["redefs"])["notice"], key=lambda r: r["ts"])
    s = run_local(trace, workers=2, logdir=tmp_path / "cl", proxies=0, loggers=1, progress=False,
                  ignore_checksums=True, loads=case["loads"], redefs=case["redefs"])
    assert s["ok"], s["problems"]
    clustered = sorted(read_tsv(tmp_path / "cl" / "notice.log").rows(), key=lambda r: r["ts"])
    assert [_row(r) for r in clustered] == [_row(r) for r in alone] and len(alone) == count
    assert [r["ts"] for r in clustered] == [r["ts"] for r in alone]    # the same observations decided
    assert all(r["peer_descr"].startswith(peer) for r in clustered)
    has_file = name == SSL_CASE
    assert all((r["fuid"] or "").startswith("F") == has_file for r in clustered + alone)


# ---- the pieces ----------------------------------------------------------------------------------

def test_load_names_and_engine_loads():
    assert loads_for_scripts(scripts_for_loads(["protocols/ssl/expiring-certs", "misc/scan"])) == ["base/protocols/ssl"]
    got = scripts_for_loads(["policy/protocols/ftp/detect-bruteforcing", "protocols/ssh/detect-bruteforcing.zeek",
                             "protocols/ssl/expiring-certs", "base/protocols/ssl"])
    assert [Path(p).name for p in got] == ["ftp_bruteforce_script.py", "ssh_bruteforce_script.py",
                                           "expiring_certs_script.py"]
    assert analysis_loads(["base/protocols/conn", "protocols/ssh/detect-bruteforcing", "base/protocols/ssh",
                           "policy/protocols/ssl/expiring-certs"]) == \
        ["base/protocols/conn", "base/protocols/ssh", "base/protocols/ssl"]


def test_redefs_reach_declared_options_and_are_undone(monkeypatch):
    mod = types.ModuleType("fake_policy")
    mod.limit, mod.window, mod.hosts, mod.skip = 30.0, 1800.0, "LOCAL_HOSTS", {}
    monkeypatch.setitem(sys.modules, "fake_policy", mod)
    monkeypatch.setattr(options, "_declared", {})
    monkeypatch.setattr(options, "_replaced", {})
    options.declare("fake_policy", {"X::limit": ("limit", options.DOUBLE), "X::window": ("window", options.INTERVAL),
                                    "X::hosts": ("hosts", options.ENUM), "X::skip": ("skip", options.SUBNET_TABLE)})
    notes = options.apply(["redef X::limit=10;", "redef X::window = 15 mins;", "redef X::hosts = X::ALL_HOSTS;",
                           "redef X::skip += { [10.0.0.0/8] = 192.168.1.0/24 };", "redef Other::thing = 3;",
                           "redef X::limit += 3;"])
    assert (mod.limit, mod.window, mod.hosts, mod.skip) == (10.0, 900.0, "ALL_HOSTS", {"10.0.0.0/8": "192.168.1.0/24"})
    assert len(notes) == 1 and "X::limit" in notes[0]          # += on a double: reported, value kept
    mod.limit = 12.0                                            # a script's own assignment ...
    options.apply(["redef X::window = 1day;"])                  # ... a new run undoes the old redefs only
    assert (mod.limit, mod.window, mod.hosts, mod.skip) == (30.0, 86400.0, "LOCAL_HOSTS", {})
    assert options.known("X::window") and not options.known("Other::thing")


def test_log_events_tap():
    reg = api.Registry()
    sink = types.SimpleNamespace(rows=[], write=lambda p, r: sink.rows.append((p, r)), flush=lambda: None,
                                 close=lambda: None)
    assert logevents.tap(sink, reg) is sink                    # nobody listens: no wrapper
    seen = []
    reg.on("SSL::log_ssl")(lambda rec: seen.append(("ssl", rec, list(sink.rows))))
    reg.on("Conn::log_conn")(lambda rec: seen.append(("conn", rec)))
    t = logevents.tap(sink, reg)
    for path, rec in (("ssl", 1), ("x509", 2), ("conn", 3)):
        t.write(path, rec)
    assert sink.rows == [("ssl", 1), ("x509", 2), ("conn", 3)]
    assert seen == [("ssl", 1, []), ("conn", 3)]               # the event comes before the write
    assert logevents.event_name("x509") == "X509::log_x509"


def test_zeek_time_formats():
    assert fmt_time(1393977599.0) == "2014-03-04-23:59:59.000000000"
    assert fmt_time(1.25) == "1970-01-01-00:00:01.250000000"
    assert duration_to_mins_secs(37.9) == "0m37s" and duration_to_mins_secs(3725) == "62m5s"


def test_engine_notes_leave_out_the_redefs_a_framework_script_takes(monkeypatch):
    from analysis.zeek_scripts import configure

    monkeypatch.setattr(options, "_declared", {})      # as a loaded ssh_bruteforce declares it
    options.declare("fake_ssh", {"SSH::password_guesses_limit": ("limit", options.DOUBLE)})
    cfg = configure(redefs=["redef SSH::password_guesses_limit=10;", "redef Foo::bar = 1;"])
    assert len(cfg.notes) == 2 and cfg.unused_redefs == ["SSH::password_guesses_limit", "Foo::bar"]
    assert options.engine_notes(cfg) == ["redef Foo::bar: not used by the engine (ignored)"]
