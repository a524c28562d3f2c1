"""
Files shipped beside the code: web templates and the example configuration.

An installed package carries them as C{karajo/_templates} and C{karajo/_etc}
(see C{setup.py}); a source checkout has them at the top level.  Looking in
both keeps C{trial tests} working before and after C{pip install .}.
"""

from __future__ import annotations

import os

_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_PACKAGE)


def _find(installed: str, checkout: str) -> str:
    for candidate in (os.path.join(_PACKAGE, installed), os.path.join(_CHECKOUT, checkout)):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"karajo cannot find its {checkout}/ directory")


def templates_dir() -> str:
    """The directory of page templates and static files of the web UI."""
    return _find("_templates", "templates")


def examples_dir() -> str:
    """The example configuration tree (C{etc/})."""
    return _find("_etc", "etc")
