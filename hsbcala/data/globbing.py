"""hsbcala's own ``**``: a glob that enters each real directory once, for :func:`hsbcala.data.resolve.resolve`.

Python's ``glob.glob(pattern, recursive=True)`` follows a symbolic link to a directory wherever it finds one:
a link back up the tree (``book/up -> ..``) is followed until the path is too long (ELOOP, every line ~40
times) and two such links branch 2^40 ways, for ever. Line collections on shared storage do contain such
links, so :func:`_glob` replaces it when a pattern has a ``**`` part (without one it is ``glob.glob`` itself):
:func:`_subdirs` walks the real subdirectories first and follows a link to a directory only when that
directory was not entered yet; a link that points at one of its own ancestors is a loop, one that points at
a directory already included is an alias; neither is followed. :func:`_report_links` reports each loop once
and the aliases in one line. Matches otherwise equal ``glob.glob``'s (hidden names, a final ``**`` matching
the files too).

This module knows directories and links only; what a line is (an image and its ``.gt.txt``), which matches
are images, GT archives in a pattern, and one path per line when several names reach it (symbolic or hard
links, overlapping patterns) stay in :mod:`hsbcala.data.resolve`. The functions keep the leading underscore they had
there: they are internal to the package, called by :func:`hsbcala.data.resolve.resolve` (``_glob`` is also tested
directly).
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable


def _dir_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _subdirs(top: str, seen: set, loops: list[tuple[str, str]], aliases: list[tuple[str, str]]) -> list[str]:
    """``top`` and every directory below it, as glob's ``**`` finds them (hidden names skipped, symbolic links
    to directories followed), but each real directory entered once (``seen``: their (device, inode), ``top``'s
    included): a link to a directory already included is not followed (into ``loops`` when it points at one
    of its own ancestors, else into ``aliases``).

    Real subdirectories are walked before any link is followed, so a directory is named by its own path
    rather than through a link, and a loop ends after one step instead of ~40 (ELOOP) or never (two links).
    """
    out: list[str] = []
    stack, links = [top], []
    while True:
        while stack:
            directory = stack.pop()
            out.append(directory)
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except OSError:
                continue
            below = []
            for entry in entries:
                try:
                    if entry.name.startswith(".") or not entry.is_dir():
                        continue
                    if entry.is_symlink():
                        links.append(entry.path)
                        continue
                    est = entry.stat()
                except OSError:
                    continue
                if (est.st_dev, est.st_ino) not in seen:  # (a bind mount can repeat a directory)
                    seen.add((est.st_dev, est.st_ino))
                    below.append(entry.path)
            stack.extend(reversed(below))
        if not links:
            return out
        links.sort()
        link = links.pop(0)
        key = _dir_key(link)
        if key is None:
            continue
        if key in seen:
            real = os.path.realpath(link)
            parent = os.path.realpath(os.path.dirname(link))
            inside = parent == real or parent.startswith(real.rstrip(os.sep) + os.sep)
            (loops if inside else aliases).append((link, real))
            continue
        seen.add(key)
        stack.append(link)


def _glob(pattern: str) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """``glob.glob(pattern, recursive=True)`` whose ``**`` enters each real directory once (:func:`_subdirs`):
    (matches, symbolic-link loops, links to directories already included). Python's own ``**`` follows a
    link loop until the path is too long (40 times the data) and two such links for ever."""
    parts = pattern.split(os.sep)
    if "**" not in parts:
        return glob.glob(pattern, recursive=True), [], []
    loops: list[tuple[str, str]] = []
    aliases: list[tuple[str, str]] = []
    current = [os.sep] if pattern.startswith(os.sep) else [os.curdir]
    parts = [p for p in parts if p]
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        found: list[str] = []
        if part == "**":
            seen: set = set()
            starts = []
            for directory in sorted(current, key=lambda d: (os.path.islink(d), d)):
                key = _dir_key(directory)
                if key is not None and key not in seen:
                    seen.add(key)
                    starts.append(directory)
            for directory in starts:
                below = _subdirs(directory, seen, loops, aliases)
                found += below
                if last:  # a final '**' also matches the files (as glob does)
                    found += [
                        os.path.join(d, n)
                        for d in below
                        for n in _listdir(d)
                        if not n.startswith(".") and not os.path.isdir(os.path.join(d, n))
                    ]
        else:
            for directory in current:
                if glob.has_magic(part):
                    hidden = part.startswith(".")
                    found += [
                        os.path.join(directory, n)
                        for n in fnmatch.filter(_listdir(directory), part)
                        if hidden or not n.startswith(".")
                    ]
                elif os.path.lexists(os.path.join(directory, part)):
                    found.append(os.path.join(directory, part))
        current = found if last else [d for d in found if os.path.isdir(d)]
    prefix = os.curdir + os.sep
    return [m.removeprefix(prefix) for m in current], loops, aliases


def _listdir(directory: str) -> list[str]:
    try:
        return os.listdir(directory)
    except OSError:
        return []


def _report_links(key: str, loops: list, linked: list, say: Callable[[str], None]) -> None:
    """Each symbolic-link loop once (a link reached under several names is one link), and one line for the
    links to directories already included."""

    def once(items: list) -> list:
        out: dict[str, tuple[str, str, str]] = {}
        for raw, link, target in items:
            where = os.path.join(os.path.realpath(os.path.dirname(link)), os.path.basename(link))
            out.setdefault(where, (raw, link, target))
        return list(out.values())

    for raw, link, target in once(loops):
        say(
            f"{key}: pattern '{raw}': symbolic link loop {link} -> {target} (a directory containing it): "
            f"not followed"
        )
    linked = once(linked)
    if linked:
        raw, link, target = linked[0]
        say(
            f"{key}: {len(linked)} link(s) to directories already included not followed (their lines are "
            f"used once); first: {link} -> {target} (pattern '{raw}')"
        )
