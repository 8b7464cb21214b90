"""The core layer every stage shares.

``config`` (YAML loading, ``base:`` inheritance, defaults, checks, variant names), ``schema``
(the two config files' pydantic schemas), ``registry`` (name -> component tables), ``errors``
(the errors a user reads), ``paths`` (the output layout), ``artifacts`` (records: which files
make a result, whether it is complete and what it was made from), ``cli`` (what every stage
script shares), ``utils`` (atomic writes, fingerprints, seeding, devices).
"""
