"""Bottom layer: settings, statuses, file safety, the rollback ledger, caching, progress, Prefect helpers. Imports nothing else of galleryflow."""
