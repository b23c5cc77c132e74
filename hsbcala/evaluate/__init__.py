"""evaluate: what a model reads, scored.

``predict`` (the one calamari-predict pass and the evaluation plan), ``sets`` (which lines), ``cer`` (CER with
calamari-eval's normalisation), ``scoring``, ``intervals``, ``charclasses``, ``baseline``, ``checkpoints``,
``comparison``, ``report`` and ``htmlreport`` (printed, Markdown/CSV and HTML), ``triage`` (ground truth ranked by
what deserves a look), ``release`` (the archive a team ships), and ``run`` (``python evaluate.py``'s
orchestration; nothing imports it back). Imports: core, engines, modeldir, data, pretrained, config, track.
"""
