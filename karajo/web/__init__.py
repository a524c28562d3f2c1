"""
The HTTP side: the JSON API, the web UI, public files and metrics, read
from the services they are given (L{karajo.web.site.build_site}).

Klein runs C{from twisted.internet import reactor} when it is imported,
which would install the default reactor: it is imported here first, with
the binding deferred (L{karajo.twisted_private.reactor_bound_late}), so
importing the web layer leaves the choice of reactor to the entry point.
"""

from karajo.twisted_private import reactor_bound_late

with reactor_bound_late():
    import klein  # noqa: F401  (imported for the side effect above)
