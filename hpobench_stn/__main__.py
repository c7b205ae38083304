"""``python -m hpobench_stn``: the command line (see ``hpobench_stn.cli``)."""

import sys

from hpobench_stn.cli import main

sys.exit(main())
