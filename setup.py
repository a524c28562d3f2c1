import os
import re

from setuptools import find_packages, setup


def version() -> str:
    """The version from karajo/version.py, its one home (no import: dependencies may be missing)."""
    with open(os.path.join(os.path.dirname(__file__), "karajo", "version.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def data_files_under(top):
    """Every file below C{top}, relative to it, for package_data."""
    out = []
    for root, _dirs, files in os.walk(top):
        for name in files:
            out.append(os.path.relpath(os.path.join(root, name), top))
    return out


setup(
    name="karajo",
    version=version(),
    description="A cron-like job runner managed over HTTP, with webhooks and a web dashboard.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["karajo", "karajo.*"])
    + ["twisted.plugins", "karajo._templates", "karajo._etc"],
    package_dir={"karajo._templates": "templates", "karajo._etc": "etc"},
    package_data={
        "twisted.plugins": ["karajo_plugin.py"],
        "karajo.web": ["openapi.json"],
        "karajo._templates": data_files_under("templates"),
        "karajo._etc": data_files_under("etc"),
    },
    install_requires=[
        "twisted[tls]>=24.7",
        "klein>=23.5",
        "treq>=24.9",
        "bcrypt>=4.0",
        "service-identity>=24.1",
        "pyOpenSSL>=24.0",
        "attrs>=23.1",
        "cronsim>=2.9,<3",
        "cryptography>=42",
        "nh3>=0.2.14",
        "prometheus_client>=0.20",
    ],
    entry_points={"console_scripts": ["karajo = karajo.cli:main"]},
    extras_require={
        # Cluster mode (docs/cluster.md): several nodes on one PostgreSQL.
        "cluster": ["psycopg[binary]>=3.1"],
        # The browser tests also need Debian's chromium (see .ci/run); the
        # cluster tests a PostgreSQL server (.ci/run installs and starts one).
        "test": [
            "psycopg[binary]>=3.1",
            "hypothesis>=6.100",
            "playwright>=1.40",
            "schemathesis>=4.32,<5",
            "pip-audit>=2.7",
            "bandit>=1.7.9",
        ],
        # The checks .ci/run makes before the tests (config in pyproject.toml).
        "lint": [
            "ruff>=0.17,<0.18",
            "mypy>=2.4,<2.5",
            "mypy-zope>=1.0.17",
            "import-linter>=2.17,<3",
        ],
    },
    zip_safe=False,
)
