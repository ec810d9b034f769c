"""routesim's reference stability suite, run against any registered law.

``pytest --pyargs routesim.testing.reference --routesim-law NAME`` (see
:mod:`routesim.testing.plugin`). Built only on the public toolkit.
"""
