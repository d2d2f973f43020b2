"""``python -m cluster ...`` is the ``starling`` command."""

from cluster.cli import main

main(prog_name="starling")
