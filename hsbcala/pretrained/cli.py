"""The command line, ``python -m hsbcala.pretrained list|get`` (see the package docstring).

Kept apart from ``__main__.py`` so that the package can offer :func:`main` (tests call it in-process)
without importing ``hsbcala.pretrained.__main__`` ahead of ``python -m``, which runs that module anew.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from hsbcala.core.errors import clean_exit
from hsbcala.pretrained.fetch import get
from hsbcala.pretrained.registry import PROG, REGISTRY, REGISTRY_ENV, list_models, registry_path


def default_dir() -> Path:
    """``warmstart.pretrained_dir``'s default: ``${paths.root}/pretrained``, paths.root being the current
    directory."""
    return Path.cwd() / "pretrained"


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog=PROG, description="Pretrained Calamari models for warm starts.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where the models live (default: ./pretrained, as warmstart.pretrained_dir)",
    )
    common.add_argument(
        "--registry", type=Path, default=None, help=f"registry file (default: ${REGISTRY_ENV} or {REGISTRY})"
    )
    sub.add_parser("list", parents=[common], help="the registered models and whether they are present")
    gp = sub.add_parser("get", parents=[common], help="download (or copy), check and install models")
    gp.add_argument("names", nargs="+", metavar="NAME")
    gp.add_argument(
        "--from",
        dest="source",
        metavar="URL|DIR|ARCHIVE",
        help="the archive's URL or a mirror's base URL, a local mirror directory, or an archive file",
    )
    gp.add_argument("--force", action="store_true", help="replace a model that is already present")
    args = ap.parse_args(argv)
    directory = (args.dir or default_dir()).expanduser().absolute()
    with clean_exit():
        registry = registry_path(args.registry)
        if args.cmd == "list":
            list_models(directory, registry)
        else:
            get(args.names, directory, source=args.source, force=args.force, registry=registry)
