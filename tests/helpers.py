"""Small helpers shared by the tests: writing config trees."""

from __future__ import annotations

import os
import textwrap


def write(path: str, text: str) -> str:
    """Write dedented C{text} to C{path}, creating parent directories."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip("\n"))
    return path


def config_tree(base: str, main: str, files: dict[str, str] | None = None) -> str:
    """
    Lay out a config tree under C{base} whose main file sets
    C{dir_base = base}; C{files} are paths relative to C{base/etc/karajo}.
    Returns the main file's path.
    """
    base = os.path.abspath(base)
    etc = os.path.join(base, "etc", "karajo")
    main_path = write(
        os.path.join(etc, "karajo.conf"),
        f"[karajo]\ndir_base = {base}\n" + textwrap.dedent(main).lstrip("\n"),
    )
    for rel, text in (files or {}).items():
        write(os.path.join(etc, rel), text)
    return main_path
