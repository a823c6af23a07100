"""Who may do what, and how messages and secrets are protected: tokens, roles and the audit
log (``auth.py``, ``audit.py``), signed task messages and TLS (``security.py``, ``keys.py``),
secrets read from files (``secretfiles.py``)."""
