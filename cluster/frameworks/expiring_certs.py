"""Expiring certificates as Zeek's ``policy/protocols/ssl/expiring-certs``: notices
``SSL::Certificate_Expired``, ``SSL::Certificate_Expires_Soon`` and ``SSL::Certificate_Not_Valid_Yet``
for the host certificate of each established TLS session.

When a session is established with a server in :data:`notify_certs_expiration` (``LOCAL_HOSTS``:
``Site::local_nets``), its first certificate is compared with the network time: not valid yet,
expired, or expiring within :data:`notify_when_cert_expiring_in`.  The notice carries the
connection, ``msg`` ``Certificate <subject> expired at <%T>`` (``isn't valid until``, ``is going to
expire at``), ``suppress_for`` one day, the identifier server address + port + certificate hash,
and ``fuid``, the host certificate's file id.

Zeek reads ``c$ssl$cert_chain`` in ``ssl_established(c)``.  The engine's ``ssl_established`` has
``c`` too, but that is the connection alone: there is no ``c$ssl`` and no x509 event, so the
certificate chain of the connection is known only from its ssl.log record.  This script therefore
takes the facts from Zeek's log events (:mod:`cluster.frameworks.logevents`): ``X509::log_x509``
gives each certificate's subject and validity by fingerprint; the ssl.log record -- Zeek's
``c$ssl``, written right after ``ssl_established`` (its ``established`` is T only then) -- has the
connection (uid, id), ``cert_chain_fps`` and, not logged, ``cert_chain_fuids`` (Zeek's
``c$ssl$cert_chain[i]$fuid``: this connection's own file ids, so concurrent handshakes with the
same certificate each get theirs).  Deviation: the identifier uses the SHA-256 fingerprint where
Zeek uses the SHA-1 (it is never logged).

Options (Zeek's names; ``redef`` lines reach them, see :mod:`cluster.frameworks.options`):
:data:`notify_certs_expiration` (``LOCAL_HOSTS``; ``REMOTE_HOSTS``, ``ALL_HOSTS``, ``NO_HOSTS``),
:data:`notify_when_cert_expiring_in` (30 days).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cluster import api
from cluster.frameworks import host as _host
from cluster.frameworks import notice, options
from cluster.frameworks.site import addr_matches_host
from cluster.frameworks.zeek_time import fmt_time

__all__ = ["CERTIFICATE_EXPIRED", "CERTIFICATE_EXPIRES_SOON", "CERTIFICATE_NOT_VALID_YET",
           "notify_certs_expiration", "notify_when_cert_expiring_in"]

CERTIFICATE_EXPIRED = "SSL::Certificate_Expired"
CERTIFICATE_EXPIRES_SOON = "SSL::Certificate_Expires_Soon"
CERTIFICATE_NOT_VALID_YET = "SSL::Certificate_Not_Valid_Yet"

notify_certs_expiration = "LOCAL_HOSTS"        # SSL::notify_certs_expiration
notify_when_cert_expiring_in = 30 * 86400.0    # SSL::notify_when_cert_expiring_in (30 days)

options.declare(__name__, {
    "SSL::notify_certs_expiration": ("notify_certs_expiration", options.ENUM),
    "SSL::notify_when_cert_expiring_in": ("notify_when_cert_expiring_in", options.INTERVAL),
})

SUPPRESS_FOR = 86400.0
# fingerprint -> (subject, not_valid_before, not_valid_after) of server certificates seen lately;
# a session's x509 rows come just before its ssl.log row, so a small bound is plenty.
_certs: OrderedDict[str, tuple[str, float, float]] = OrderedDict()
CERT_CACHE = 4096


@api.on("X509::log_x509")
def _x509(rec: Any) -> None:
    if rec.client_cert:
        return
    fp = rec.fingerprint
    _certs[fp] = (rec.subject, rec.not_valid_before, rec.not_valid_after)
    _certs.move_to_end(fp)
    if len(_certs) > CERT_CACHE:
        _certs.popitem(last=False)


@api.on("SSL::log_ssl")
def _ssl(rec: Any) -> None:
    """Zeek's ``ssl_established`` handler, on the record written at establishment."""
    if not rec.established or not rec.cert_chain_fps:
        return
    options.ensure()
    if not addr_matches_host(rec.resp_h, notify_certs_expiration):
        return
    fp = rec.cert_chain_fps[0]
    cert = _certs.get(fp)
    if cert is None:            # the certificate did not parse: no x509 record (Zeek: no $x509)
        return
    subject, not_before, not_after = cert
    now = _host.current().network_time()
    if not_before > now:
        note, msg = CERTIFICATE_NOT_VALID_YET, f"Certificate {subject} isn't valid until {fmt_time(not_before)}"
    elif not_after < now:
        note, msg = CERTIFICATE_EXPIRED, f"Certificate {subject} expired at {fmt_time(not_after)}"
    elif not_after - notify_when_cert_expiring_in < now:
        note, msg = CERTIFICATE_EXPIRES_SOON, f"Certificate {subject} is going to expire at {fmt_time(not_after)}"
    else:
        return
    fuids = getattr(rec, "cert_chain_fuids", None)      # None on a record from elsewhere
    notice.NOTICE(note=note, conn=rec, msg=msg, suppress_for=SUPPRESS_FOR,
                  identifier=f"{rec.resp_h}{rec.resp_p}/tcp{fp}", fuid=fuids[0] if fuids else None)


@api.on(api.CLUSTER_STARTED)
def _started() -> None:
    options.ensure()
    _certs.clear()
