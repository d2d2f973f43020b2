"""Node script that turns on scan detection (Zeek's ``@load policy/misc/scan``):
``starling run TRACE --load policy/misc/scan`` or ``--script cluster/frameworks/scan_script.py``."""

from cluster.frameworks import scan  # noqa: F401  (importing registers the SumStats and handlers)
