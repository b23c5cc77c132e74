"""``python -m hsbcala.pretrained list|get …``: the command line is :mod:`hsbcala.pretrained.cli`."""

from hsbcala.pretrained.cli import main

main()
