"""Repository: where backups go. ``store`` is the port; ``file`` and ``s3`` are its adapters;
``repository`` lays runs, manifests, artifacts and locks out on top of any store (docs/FORMAT.md)."""
