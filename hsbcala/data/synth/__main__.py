"""``python -m hsbcala.data.synth OUTDIR --face fraktur``: render a synthetic set (see :mod:`hsbcala.data.synth`)."""

import sys

from hsbcala.data.synth import main

sys.exit(main())
