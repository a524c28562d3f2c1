"""
karajo's version: its one home, read by C{setup.py}, C{karajo version} and
C{GET /karajo/api/environment} (a module of its own so that the web layer
need not import the package's public API, which builds whole servers).
"""

__version__ = "0.1.0"
