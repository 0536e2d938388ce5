"""The kopf operator: handlers -> flows -> reconcile (pure) and adapters (I/O)."""
