"""``python -m analysis TRACE --logdir DIR``: see :mod:`analysis.standalone`."""

import sys

from analysis.standalone import main

sys.exit(main())
