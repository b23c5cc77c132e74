"""The OCR-D resource entry of a release: ``<archive name>.ocrd-resources.yml`` beside the archive.

``ocrd resmgr`` (OCR-D/core ``src/ocrd/resource_manager.py``) reads resource lists shaped
``{<processor executable>: [{name, url, type, path_in_archive, size, description, version_range}, …]}``, the
user's own in ``~/.config/ocrd/resources.yml``. For ``type: archive`` it downloads ``url`` (or copies it, when
``url`` is a local path), unpacks it and copies ``path_in_archive`` to ``<resource dir>/<name>``.
ocrd_calamari's ``checkpoint_dir`` names that folder and its loader takes every ``*.ckpt.json`` in it with the
weights beside (``recognize.py``: ``glob("%s/*.ckpt.json" % checkpoint_dir)``), so the archive's model folder
holds exactly one ``.ckpt.json`` (more would be voted as an ensemble).

``version_range`` is ocrd_calamari's version, not Calamari's: ocrd_calamari 2.0.0 moved to the Calamari 2 API
(its CHANGELOG, #118), and its own ``ocrd-tool.json`` lists Calamari 1 models with ``>= 1.0.0, < 2.0.0`` and
Calamari 2 models with ``>= 2.0.0``.
"""

from __future__ import annotations

from pathlib import Path

EXECUTABLE = "ocrd-calamari-recognize"
#: Calamari major version -> the ocrd_calamari versions that load its models (ocrd_calamari's ocrd-tool.json)
VERSION_RANGE = {1: ">= 1.0.0, < 2.0.0", 2: ">= 2.0.0"}


def entry(name: str, archive: Path, url: str | None, major: int, description: str) -> dict:
    """The resource list of one release (``url`` None: the archive's local path)."""
    return {
        EXECUTABLE: [
            {
                "name": name,
                "url": f"{url.rstrip('/')}/{archive.name}" if url else str(archive),
                "type": "archive",
                "path_in_archive": name,
                "size": archive.stat().st_size,
                "description": description,
                "version_range": VERSION_RANGE[major],
            }
        ]
    }


def write(resources: dict, archive: Path) -> Path:
    """``<archive without .tar.gz>.ocrd-resources.yml`` beside the archive."""
    import yaml  # PyYAML: declared in pyproject (also an mlflow dependency)

    from hsbcala.core import fsutil

    path = archive.with_name(archive.name.removesuffix(".tar.gz") + ".ocrd-resources.yml")
    text = (
        f"# OCR-D resource list for {archive.name}: append to ~/.config/ocrd/resources.yml, then\n"
        f"# ocrd resmgr download {EXECUTABLE} {resources[EXECUTABLE][0]['name']}\n"
        + yaml.safe_dump(resources, allow_unicode=True, sort_keys=False)
    )
    fsutil.atomic_write_text(path, text)
    return path
