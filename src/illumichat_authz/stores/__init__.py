"""The I/O behind the pure verifiers: where credentials and counters are looked up.

SQLite API keys (:mod:`.api_keys`) and Auth.js database sessions (:mod:`.sessions`), the
tenant's JWKS fetched and cached (:mod:`.jwks`), rate-limit counters on ``limits``
(:mod:`.ratelimit`) and the cache of verified credentials (:mod:`.credential_cache`).
The PostgreSQL and Redis stores of the coming releases go here too. Nothing is imported
eagerly: import the module you use, so a caller that needs one store (or only a type)
does not pull in ``sqlite3``, ``urllib``, ``threading`` or ``limits`` with it.
"""
