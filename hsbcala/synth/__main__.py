"""``python -m hsbcala.synth OUTDIR --face fraktur``: render a synthetic set (see :mod:`hsbcala.synth`)."""

import sys

from hsbcala.synth import main

sys.exit(main())
