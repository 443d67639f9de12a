"""Transport-free pieces of the Dune API client: requests, response models, errors and retry rules.

The sync (``requests``) and async (``httpx``) paths of :class:`~airflow_provider_dune.hooks.dune.DuneHook` are thin
shells around these pure functions and dataclasses, so both behave identically.
"""
