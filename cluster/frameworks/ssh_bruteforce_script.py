"""Node script that turns on SSH password-guessing detection (Zeek's
``@load policy/protocols/ssh/detect-bruteforcing``)."""

from cluster.frameworks import ssh_bruteforce  # noqa: F401  (importing registers the SumStat and handlers)
