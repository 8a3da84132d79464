"""A user's directory on a shared (static) home volume: KubeSpawner's expansion of ``subPath``.

z2jh's ``singleuser.storage.type: static`` mounts one PVC (``static.pvcName``) into every server with
``subPath: static.subPath`` (default ``{username}``), and KubeSpawner expands that template per server
(``KubeSpawner._expand_user_properties`` in kubespawner/spawner.py, names from kubespawner/slugs.py). jdr
must find exactly the directory KubeSpawner mounts, so :func:`expand` reproduces that expansion for every
field that depends only on the user and server: ``{username}``, ``{servername}``, ``{user_server}`` (by
``slug_scheme``), ``{safe_*}``, ``{escaped_*}``, ``{unescaped_*}``, ``{userid}`` (when the id is known) and
``{hubnamespace}``. The fields that depend on other objects (``{pod_name}``, ``{pvc_name}``,
``{namespace}``) are refused. tests/unit/test_subpath.py checks the result against the installed
KubeSpawner for many random names under both slug schemes; KubeSpawner itself is not a runtime
dependency of jdr (it pulls in JupyterHub).

Pure.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import string
from string import Formatter

from dr.errors import UsageError

SETTING = "deployment.kubernetes.static_subpath"

_SLUG_MAX = 48  # KubeSpawner's per-field budget in _expand_user_properties
_HASH = 8
_LOWER = frozenset(string.ascii_lowercase)
_LOWER_DIGITS = frozenset(string.ascii_lowercase + string.digits)
_OBJECT = re.compile(r"^[a-z0-9\-]+$")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")

FIELDS = frozenset({
    "userid", "unescaped_username", "unescaped_servername", "hubnamespace", "username", "servername",
    "user_server", "safe_username", "safe_servername", "safe_user_server", "escaped_username",
    "escaped_servername", "escaped_user_server",
})
_UNAVAILABLE = frozenset({"pod_name", "pvc_name", "namespace"})


def escape_slug(name: str) -> str:
    """The legacy ``escape`` slug: every UTF-8 byte of a character other than a-z and 0-9 becomes
    ``-`` and its hex digits (upper-case, unpadded), then the whole is lower-cased (escapism.escape
    with ``-``, as KubeSpawner)."""
    out = []
    for ch in name:
        if ch in _LOWER_DIGITS:
            out.append(ch)
        else:
            out.extend(f"-{b:X}" for b in ch.encode("utf-8"))
    return "".join(out).lower()


def _valid_object_name(s: str) -> bool:
    return (0 < len(s) <= 63 and s[0] in _LOWER and s[-1] in _LOWER_DIGITS
            and _OBJECT.match(s) is not None)


def _safe_part(name: str, max_length: int) -> str:
    """A lower-case, hyphen-separated excerpt of ``name`` starting with a letter, at most ``max_length``."""
    part = _NON_ALNUM.sub("-", name.lower()).lstrip("-")[:max_length].rstrip("-")
    if part and part[0] not in _LOWER:
        part = "x-" + part[:max_length - 2]
    return part or "x"


def _hashed(name: str, max_length: int) -> str:
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:_HASH]
    return f"{_safe_part(name, max_length - (_HASH + 3))}---{digest}"


def safe_slug(name: str, max_length: int = _SLUG_MAX) -> str:
    """The ``safe`` slug: the name itself when it is a valid object name without ``--`` that fits, else
    an excerpt plus ``---`` and 8 hex digits of its SHA-256."""
    if "--" not in name and _valid_object_name(name) and len(name) <= max_length:
        return name
    return _hashed(name, max_length)


def _multi_slug(names: list[str], max_length: int = _SLUG_MAX) -> str:
    h = hashlib.sha256(names[0].encode("utf-8"))
    for n in names[1:]:
        h.update(b"\xff")
        h.update(n.encode("utf-8"))
    per = (max_length - (_HASH + 1)) // len(names) - 2
    return "--".join(_safe_part(n, per) for n in names) + "---" + h.hexdigest()[:_HASH]


def fields(user: str, server: str = "", *, scheme: str = "safe", user_id: int | None = None,
           namespace: str = "") -> dict[str, str]:
    """Every field :func:`expand` can fill, for one user's (named) server."""
    if scheme not in ("safe", "escape"):
        raise UsageError(f"deployment.kubernetes.slug_scheme: must be 'safe' or 'escape', not {scheme!r}")
    safe_user = safe_slug(user)
    safe_server = safe_slug(server) if server else ""
    if len(safe_user) + len(safe_server) + 2 > _SLUG_MAX:
        safe_user_server = _multi_slug([user, server])
    else:
        safe_user_server = f"{safe_user}--{safe_server}" if server else safe_user
    esc_user, esc_server = escape_slug(user), escape_slug(server)
    esc_user_server = f"{esc_user}--{esc_server}" if esc_server else esc_user
    if scheme == "safe":
        username, servername, user_server = safe_user, safe_server, safe_user_server
    else:
        username, servername, user_server = esc_user, esc_server, esc_user_server
    ns = {
        "unescaped_username": user, "unescaped_servername": server,
        "hubnamespace": "user" if namespace in ("", "default") else namespace,
        "username": username, "servername": servername, "user_server": user_server,
        "safe_username": safe_user, "safe_servername": safe_server, "safe_user_server": safe_user_server,
        "escaped_username": esc_user, "escaped_servername": esc_server,
        "escaped_user_server": f"{esc_user}--{esc_server}",
    }
    if user_id is not None:
        ns["userid"] = str(user_id)
    return ns


def check_template(template: str) -> None:
    """Raise UsageError (naming the setting) unless jdr can expand ``template`` for any user."""
    try:
        names = {f for _, f, _, _ in Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise UsageError(f"{SETTING}: {template!r} is not a valid template: {e}") from e
    bad = sorted(n for n in names if n.split(".")[0].split("[")[0] not in FIELDS or n != n.strip()
                 or "." in n or "[" in n)
    if bad:
        why = ("depends on objects KubeSpawner makes, not on the user alone" if set(bad) & _UNAVAILABLE
               else "is not a field KubeSpawner expands")
        raise UsageError(f"{SETTING}: cannot expand {{{bad[0]}}} in {template!r} ({why})",
                         hint="use {username}, {escaped_username}, {servername}, {user_server} or their "
                              "safe_/escaped_/unescaped_ forms")
    if template.startswith("/"):
        raise UsageError(f"{SETTING}: {template!r} must be relative to the shared volume's root")


def expand(template: str, user: str, server: str = "", *, scheme: str = "safe", user_id: int | None = None,
           namespace: str = "") -> str:
    """The subdirectory KubeSpawner mounts for ``user``'s ``server`` (a relative, normalized path).

    Raises UsageError naming the setting for a template jdr cannot expand (see the module doc), or when
    the expansion is not a directory inside the volume (empty, absolute, or climbing out with ``..``).
    """
    check_template(template)
    ns = fields(user, server, scheme=scheme, user_id=user_id, namespace=namespace)
    try:
        rendered = template.format(**ns)
    except KeyError as e:
        raise UsageError(f"{SETTING}: {{{e.args[0]}}} in {template!r} needs the hub's user id, which is "
                         "not known here") from None
    # KubeSpawner strips a trailing '-' that an empty server name leaves (unless the template ends so).
    if not template.endswith("-"):
        rendered = rendered.rstrip("-")
    path = posixpath.normpath(rendered) if rendered else ""
    if not path or path == "." or path.startswith("/") or path == ".." or path.startswith("../"):
        raise UsageError(f"{SETTING}: {template!r} expands to {rendered!r} for user {user!r}, which is not a "
                         "directory inside the shared volume")
    return path
