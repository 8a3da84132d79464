"""``jdr serve``: the self-service restore service, a JupyterHub service (issue 13, docs/SELF-SERVICE.md).

A tornado application authenticated by the hub's own OAuth (:class:`jupyterhub.services.auth.HubOAuth`):
every request's user comes from the hub-issued identity, never from the URL. Users see and get back their
own files only; administrators (hub scope ``admin:users``) may act for any user. The only package that
imports tornado and jupyterhub (import-linter).

- :mod:`dr.serve.app` — the application, routes, security headers.
- :mod:`dr.serve.handlers` — the pages and actions.
- :mod:`dr.serve.limits` — one restore per user at a time, hourly rate limits.
- :mod:`dr.serve.audit` — every download and restore to a JSON-lines file, the log and the webhooks.
- :mod:`dr.serve.preview` — text and notebook previews, everything escaped.
- :mod:`dr.serve.zipstream` — a folder as a zip, streamed with bounded memory.
"""
