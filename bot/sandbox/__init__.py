"""A sandbox of real parts for tests, the demo and benchmarks.

- :mod:`bot.sandbox.registry_server`: a real distribution registry on loopback
  (open, basic auth, bearer token auth, TLS with a test CA);
- :mod:`bot.sandbox.token_server`: the bearer token server for it;
- :mod:`bot.sandbox.image_builder`: build and push real images and indexes
  with the registry API;
- :mod:`bot.sandbox.layers`: build tar layers (also hostile ones) from a spec.
"""
