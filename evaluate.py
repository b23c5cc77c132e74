"""Evaluate trained models: ``python evaluate.py script=fraktur version=cala2 [-m] [eval.…]``.

CER overall and per preprocessing variant group, with the model version's own calamari-predict, logged to
MLflow; after ``-m`` the comparison table (Markdown, CSV, PNG) is written to the sweep dir. See
docs/evaluate.md and hsbcala/evaluate/run.py.
"""

import hydra
from omegaconf import DictConfig

from hsbcala.config import schema
from hsbcala.core import cli

schema.register()
cli.install()  # a bad command line: one "hsbcala: error: …" line and exit 2 (hsbcala/core/cli.py)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float | None:
    from hsbcala.core.cli import user_paths
    from hsbcala.core.errors import clean_exit
    from hsbcala.evaluate.run import run

    # bad input: one line; a bug in hsbcala: its traceback and exit 70 (hsbcala/core/errors.py)
    with clean_exit(user_paths(cfg)):
        return run(cfg)


if __name__ == "__main__":
    main()
