"""Cluster add-ons: one module per add-on behind the contract in ``contract.py``, composed by
``AddonsStack`` (``stacks/addons/stack.py``)."""
