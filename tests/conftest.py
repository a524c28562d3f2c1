"""
Read by pytest only, which mutmut uses to run the tests (tests/MUTATION.md);
trial, the project's runner, ignores this file.

mutmut runs a test several times in one process (coverage, clean run,
mutants), each time on a new TestCase instance; Hypothesis takes that for a
test called from different executors.  The instances are equivalent here.
"""

from hypothesis import HealthCheck, settings

settings.register_profile("mutmut", suppress_health_check=[HealthCheck.differing_executors])
settings.load_profile("mutmut")
