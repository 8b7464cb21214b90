"""The ground floor every layer shares; it imports no other ``lib`` package.

``errors`` (the errors a user reads), ``registry`` (name -> component tables), ``schema`` (the
two config files' pydantic schemas and every default), ``config`` (YAML loading, ``base:``
inheritance, ``--set`` overrides, variant names), ``paths`` (the output layout), ``artifacts``
(records: which files make a result, whether it is complete and what it was made from),
``device`` (devices, threads, precision), ``utils`` (atomic writes, fingerprints, seeding).
"""
