"""
The statements L{karajo.pgstore.PgStore} runs: one per operation of
L{karajo.clusterstore.ClusterStore}, each a single round trip.

What must change several tables at once is one statement with
data-modifying C{WITH} clauses (atomic by itself in autocommit), and its
notifications are C{pg_notify} calls in the same statement (sent at its
commit).  Atomic decisions are left to the database: a claim is C{INSERT
... ON CONFLICT}, a take or a reap an C{UPDATE ... WHERE} that a second
asker re-checks after the first commits (READ COMMITTED), so exactly one
wins.  Parameters are named (C{%(name)s}, psycopg's style); every C{WHERE}
is served by an index of L{karajo.clusterschema}.

Pure: text only.
"""

from __future__ import annotations

__all__ = [
    "ANSWER", "ANSWER_OF", "APPEND", "BEGIN", "CLAIM", "END", "FORGET", "FORWARD", "HEARTBEAT",
    "LAST_SLOT", "LEAVE", "PAUSED", "PRUNE", "READ_LOG", "REAP", "RESERVE", "RESTARTED", "RUN",
    "RUNS_ALL", "RUNS_OF_JOB", "RUNS_OF_KIND", "SEEN", "SET_PAUSED", "TAKE",
]

_RUN_COLUMNS = "kind, job_id, counter, status, started, ended, trigger, attempt, node"
_RUN_PAYLOAD = "kind || '/' || job_id || '/' || counter"
_RUNS = f"SELECT {_RUN_COLUMNS} FROM karajo_run"
_RUNS_ORDER = " ORDER BY kind, job_id, counter"

# Three statements rather than one with optional filters: each keeps its index.
RUNS_ALL = _RUNS + _RUNS_ORDER
RUNS_OF_KIND = _RUNS + " WHERE kind = %s" + _RUNS_ORDER
RUNS_OF_JOB = _RUNS + " WHERE kind = %s AND job_id = %s" + _RUNS_ORDER
RUN = _RUNS + " WHERE kind = %s AND job_id = %s AND counter = %s"

LAST_SLOT = "SELECT max(slot) FROM karajo_slot WHERE kind = %s AND job_id = %s"

PAUSED = "SELECT kind, job_id FROM karajo_job WHERE paused"

SEEN = (
    "INSERT INTO karajo_replay (key, expires) VALUES (%s, %s)"
    " ON CONFLICT (key) DO NOTHING RETURNING 1"
)

ANSWER_OF = (
    "SELECT outcome, counter, message FROM karajo_request WHERE id = %s AND outcome IS NOT NULL"
)


HEARTBEAT = """
WITH old AS (SELECT alive FROM karajo_node WHERE name = %(name)s),
up AS (
    INSERT INTO karajo_node (name, alive, last_seen, running, version, config_digest, started)
    VALUES (%(name)s, true, now(), %(running)s, %(version)s, %(digest)s, %(started)s)
    ON CONFLICT (name) DO UPDATE SET alive = true, last_seen = now(),
        running = excluded.running, version = excluded.version,
        config_digest = excluded.config_digest, started = excluded.started
    RETURNING name, alive, last_seen, running, version, config_digest, started,
        (SELECT pg_notify('karajo_node', %(name)s)
         WHERE NOT coalesce((SELECT alive FROM old), false)) AS told
)
SELECT name, alive, extract(epoch FROM last_seen)::float8, running, version, config_digest,
    started
FROM up
UNION ALL
SELECT name, alive, extract(epoch FROM last_seen)::float8, running, version, config_digest,
    started
FROM karajo_node WHERE name <> %(name)s
"""

# The stored log of a run ended by the cluster: its live chunks, then a line.
_ENDED_LOG = """
coalesce((SELECT string_agg(c.data, ''::bytea ORDER BY c.off) FROM karajo_log_chunk c
          WHERE c.kind = r.kind AND c.job_id = r.job_id AND c.counter = r.counter), ''::bytea)
    || convert_to({line} || E'\\n', 'UTF8')
"""

def _runs_ended_failed(line: str, runs: str, jobs: str) -> str:
    """
    The end of a statement that ends a node's running runs C{failed} (a
    reap, a restart, a leave): each run's stored log gets C{line}, every
    node hears of it, its job is free again and its live chunks go; the
    runs ended are what it returns.  C{runs} and C{jobs} say whose: the
    C{FROM}/C{WHERE} of the runs (alias C{r}) and of the jobs (alias C{j}).
    """
    return f"""
ended AS (
    UPDATE karajo_run r SET status = 'failed', ended = extract(epoch FROM now()),
        log = {_ENDED_LOG.format(line=line)}
    {runs} AND r.status = 'running'
    RETURNING {", ".join("r." + c for c in _RUN_COLUMNS.split(", "))},
        pg_notify('karajo_run', r.kind || '/' || r.job_id || '/' || r.counter)
),
freed AS (
    UPDATE karajo_job j SET running_node = NULL, running_counter = NULL {jobs}
),
dropped AS (
    DELETE FROM karajo_log_chunk c USING ended e
    WHERE c.kind = e.kind AND c.job_id = e.job_id AND c.counter = e.counter
)
SELECT {_RUN_COLUMNS} FROM ended
"""


REAP = f"""
WITH dead AS (
    UPDATE karajo_node SET alive = false
    WHERE alive AND name <> %(me)s AND last_seen < now() - make_interval(secs => %(timeout)s)
    RETURNING name, pg_notify('karajo_node', name)
),
{_runs_ended_failed(
    "'!!! node ' || r.node || ' was lost (not heard from for ' || %(label)s || ')'",
    "FROM dead WHERE r.node = dead.name",
    "FROM dead WHERE j.running_node = dead.name",
)}"""

RESTARTED = f"""
WITH {_runs_ended_failed(
    "'!!! node ' || r.node || ' restarted during this run; marked failed at start-up'",
    "WHERE r.node = %(me)s",
    "WHERE j.running_node = %(me)s",
)}"""

LEAVE = f"""
WITH gone AS (
    UPDATE karajo_node SET alive = false, running = 0
    WHERE name = %(me)s AND alive
    RETURNING name, pg_notify('karajo_node', name)
),
{_runs_ended_failed(
    "'!!! node ' || r.node || ' stopped during this run'",
    "WHERE r.node = %(me)s",
    "WHERE j.running_node = %(me)s",
)}"""

RESERVE = """
INSERT INTO karajo_job (kind, job_id, counter) VALUES (%(kind)s, %(job)s, %(after)s + %(n)s)
ON CONFLICT (kind, job_id) DO UPDATE
    SET counter = greatest(karajo_job.counter, %(after)s) + %(n)s
RETURNING counter
"""

# A slot claimed again by its holder is won again: a retried claim is safe.
CLAIM = """
INSERT INTO karajo_slot (kind, job_id, slot, node)
SELECT kind, job_id, slot, %(me)s
FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(slots)s::float8[]) AS u(kind, job_id, slot)
ON CONFLICT (kind, job_id, slot) DO UPDATE SET node = excluded.node
    WHERE karajo_slot.node = excluded.node
RETURNING kind, job_id, slot
"""

# Several runs begun at once (one answer each, in order); a job appears once.
BEGIN = f"""
WITH u AS (
    SELECT * FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(counters)s::int8[],
        %(statuses)s::text[], %(started)s::float8[], %(ended)s::float8[], %(triggers)s::text[],
        %(attempts)s::int8[])
    WITH ORDINALITY AS u(kind, job_id, counter, status, started, ended, trigger, attempt, n)
),
j AS (
    INSERT INTO karajo_job (kind, job_id, running_node, running_counter)
    SELECT kind, job_id, %(me)s, counter FROM u
    ON CONFLICT (kind, job_id) DO UPDATE
        SET running_node = excluded.running_node, running_counter = excluded.running_counter
        WHERE karajo_job.running_node IS NULL OR karajo_job.running_node = excluded.running_node
    RETURNING kind, job_id
),
r AS (
    INSERT INTO karajo_run ({_RUN_COLUMNS})
    SELECT u.kind, u.job_id, u.counter, u.status, u.started, u.ended, u.trigger, u.attempt,
        %(me)s
    FROM u JOIN j USING (kind, job_id)
    ON CONFLICT (kind, job_id, counter) DO UPDATE SET status = excluded.status,
        started = excluded.started, ended = excluded.ended, trigger = excluded.trigger,
        attempt = excluded.attempt, node = excluded.node
    RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
)
SELECT j.kind IS NOT NULL FROM u LEFT JOIN j USING (kind, job_id) ORDER BY u.n
"""

# Several runs ended at once; a run appears once.
END = f"""
WITH u AS (
    SELECT * FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(counters)s::int8[],
        %(statuses)s::text[], %(started)s::float8[], %(ended)s::float8[], %(triggers)s::text[],
        %(attempts)s::int8[], %(nodes)s::text[], %(logs)s::bytea[])
    AS u(kind, job_id, counter, status, started, ended, trigger, attempt, node, log)
),
r AS (
    INSERT INTO karajo_run ({_RUN_COLUMNS}, log)
    SELECT * FROM u
    ON CONFLICT (kind, job_id, counter) DO UPDATE SET status = excluded.status,
        started = excluded.started, ended = excluded.ended, trigger = excluded.trigger,
        attempt = excluded.attempt, node = excluded.node, log = excluded.log
    RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
),
j AS (
    UPDATE karajo_job k SET running_node = NULL, running_counter = NULL
    FROM u
    WHERE k.kind = u.kind AND k.job_id = u.job_id
        AND k.running_node = u.node AND k.running_counter = u.counter
)
DELETE FROM karajo_log_chunk c USING u
WHERE c.kind = u.kind AND c.job_id = u.job_id AND c.counter = u.counter
"""

# Chunks of runs no longer running (ended, reaped) are not stored.
APPEND = f"""
WITH c AS (
    INSERT INTO karajo_log_chunk (kind, job_id, counter, off, data)
    SELECT u.kind, u.job_id, u.counter, u.off, u.data
    FROM unnest(%(kinds)s::text[], %(jobs)s::text[], %(counters)s::int8[], %(offsets)s::int8[],
                %(data)s::bytea[]) AS u(kind, job_id, counter, off, data)
    JOIN karajo_run r USING (kind, job_id, counter)
    WHERE r.status = 'running'
    ON CONFLICT DO NOTHING
    RETURNING kind, job_id, counter
)
SELECT pg_notify('karajo_run', p) FROM (SELECT DISTINCT {_RUN_PAYLOAD} AS p FROM c) AS d
"""

READ_LOG = """
SELECT -1::int8, substring(log FROM (%(off)s + 1)::int) FROM karajo_run
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = %(counter)s AND log IS NOT NULL
UNION ALL
SELECT off, data FROM karajo_log_chunk
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = %(counter)s
    AND off + length(data) > %(off)s
ORDER BY 1
"""

FORGET = f"""
WITH c AS (
    DELETE FROM karajo_log_chunk
    WHERE kind = %(kind)s AND job_id = %(job)s AND counter = ANY(%(counters)s::int8[])
)
DELETE FROM karajo_run
WHERE kind = %(kind)s AND job_id = %(job)s AND counter = ANY(%(counters)s::int8[])
RETURNING pg_notify('karajo_run', {_RUN_PAYLOAD})
"""

SET_PAUSED = """
INSERT INTO karajo_job (kind, job_id, paused) VALUES (%(kind)s, %(job)s, %(paused)s)
ON CONFLICT (kind, job_id) DO UPDATE SET paused = excluded.paused
RETURNING pg_notify('karajo_pause', kind || '/' || job_id)
"""

# The payload names the node the request is for: only that one takes it.
FORWARD = """
INSERT INTO karajo_request (kind, job_id, action, trigger, method, path, headers, body,
    from_node, to_node)
VALUES (%(kind)s, %(job)s, %(action)s, %(trigger)s, %(method)s, %(path)s, %(headers)s,
    %(body)s, %(from)s, %(to)s)
RETURNING id, pg_notify('karajo_request', id::text || ' ' || to_node)
"""

TAKE = """
UPDATE karajo_request SET taken_by = %(me)s
WHERE id = %(id)s AND taken_by IS NULL AND to_node IN ('', %(me)s)
RETURNING id, kind, job_id, action, trigger, method, path, headers, body, from_node, to_node
"""

ANSWER = """
UPDATE karajo_request SET outcome = %(outcome)s, counter = %(counter)s, message = %(message)s
WHERE id = %(id)s
RETURNING pg_notify('karajo_answer', id::text)
"""

# Each job keeps its newest slot, however old: last_slot still answers.
PRUNE = """
WITH s AS (
    DELETE FROM karajo_slot s WHERE s.slot < %(slots)s
        AND s.slot < (SELECT max(m.slot) FROM karajo_slot m
                      WHERE m.kind = s.kind AND m.job_id = s.job_id)
),
r AS (DELETE FROM karajo_replay WHERE expires < %(now)s)
DELETE FROM karajo_request WHERE created < now() - interval '1 hour'
"""
