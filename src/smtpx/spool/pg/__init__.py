"""The PostgreSQL spool engine: one shared queue for several smtpx nodes.

:mod:`~smtpx.spool.pg.schema` (versioned, migrated at start), :mod:`~smtpx.spool.pg.queue`
(rows, leases, fenced outcomes, chunked bodies), :mod:`~smtpx.spool.pg.notify` (wake-up
hints and events across nodes) and :mod:`~smtpx.spool.pg.store`, the spool's store on
top of them. Needs the ``postgresql`` extra (asyncpg): ``pip install 'smtpx[postgresql]'``.
"""
