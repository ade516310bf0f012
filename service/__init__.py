"""The plumbing both services run on, and nothing of the bonus program: HTTP helpers and the
error middleware, the metrics endpoint, logging, systemd notification, configuration loading,
OpenAPI building, versions, the phone key.  ``shared/`` stays the pure core without I/O;
``agent/`` and ``central/`` import from here, never from each other."""
