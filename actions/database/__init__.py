"""Database actions on a logically replicated PostgreSQL pair: heartbeat, fence, promote, failback.

Every action is an async function taking the service's :class:`~engine.config.database.DatabaseConfig`
and site names, bounded in time, idempotent (running it twice is harmless), and returning an
:class:`~actions.database.results.ActionResult` whose ``sentence`` says what happened, including a
partial outcome. Errors raised on purpose come from :mod:`probes.postgres_conn` (``PgError`` →
``Unreachable`` | ``Refused``); the actions catch them and report them in their results.
"""
