"""Node script that turns on FTP brute-forcing detection (Zeek's
``@load policy/protocols/ftp/detect-bruteforcing``)."""

from cluster.frameworks import ftp_bruteforce  # noqa: F401  (importing registers the SumStat and handlers)
