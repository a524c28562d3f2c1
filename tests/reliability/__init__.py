"""
Reliability suites: the installed daemon as a real process on loopback,
killed, loaded, starved and shut down, plus fuzzing of its parsers and API.

Each suite has a quick variant (run with the rest of the tests) and a long
one, run on demand with C{KARAJO_RELIABILITY=long}; both are bounded in
count and time and print their figures (see L{tests.reliability.harness}
and C{bench/reliability.py}).
"""
