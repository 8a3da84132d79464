"""Deployments: where a hub lives. ``base`` is the port; ``local`` (a hub on one machine) and
``kubernetes`` (a z2jh release) are its adapters."""
