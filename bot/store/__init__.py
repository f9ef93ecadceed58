"""The store: the queue, the ledger, the inputs and every record, in SQLite or PostgreSQL.

Each behaviour is written once, as a transaction script (``bot.store.script``) over shared SQL,
and run by one small dialect per database (``bot.store.sqlite``, ``bot.store.postgres``) that
says how statements, locks and notices work there. ``bot.store.store.Store`` is the interface
the engine uses; it knows jobs, states and money (``bot.core``), never the engine above it.
"""
