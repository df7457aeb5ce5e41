"""The PostgreSQL spool engine: one shared queue for several smtpx nodes (work in progress:
the schema and the low-level queue; the Store on top of them comes next).

Needs the ``postgresql`` extra (asyncpg): ``pip install 'smtpx[postgresql]'``.
"""
