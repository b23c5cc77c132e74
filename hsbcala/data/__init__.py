"""data: from the user's globs to the lines a training or evaluation uses, and the record of them.

``resolve`` (globs, GT archives: ``archives``, ``globbing``), ``checks`` and ``linesize`` (fail/warn/drop),
``exclude`` (lines the user leaves out), ``split`` (document-wise train/val), ``manifest`` (every line with its
hashes), ``codec`` (the codec report), ``hashcache``, ``step`` (the data step of every training) and ``synth``
(the demo's synthetic Upper Sorbian lines). Imports: core, engines (a version's text rules), modeldir.
"""
