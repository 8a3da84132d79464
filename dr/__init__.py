"""jdr: backup and disaster recovery for JupyterHub."""

__version__ = "0.1.0"
