"""The domain: options, jobs and their states, limits, the poll schedule, statistics,
alerts and the tracker, written against the Protocols in :mod:`bot.core.ports`.

Nothing here imports Telegram, HTTP or a database (import-linter checks it in
``make test``): the adapters in :mod:`bot.telegram`, :mod:`bot.segmind` and
:mod:`bot.storage` depend on the core, never the other way round.
"""
