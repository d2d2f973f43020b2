"""Node script that turns on known hosts/services (Zeek's ``@load policy/protocols/conn/known-*``):
``starling run TRACE --script cluster/frameworks/known_script.py``."""

from cluster.frameworks import known

known.load()
