"""Node script that turns on expiring-certificate notices (Zeek's
``@load policy/protocols/ssl/expiring-certs``)."""

from cluster.frameworks import expiring_certs  # noqa: F401  (importing registers the handlers)
