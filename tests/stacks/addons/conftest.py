"""Add-on fixtures. The default app (``synthesized``) and the nodegroup/AMP alternative
(``alternative``, :data:`tests.conftest.ALTERNATIVE`) are session fixtures of tests/conftest.py, shared
with tests/helm."""
