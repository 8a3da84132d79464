"""jdr's expansion of a static-storage subPath is KubeSpawner's own (kubespawner 7.1.0, installed)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dr.deployments.kubernetes.subpath import expand
from dr.errors import UsageError

TEMPLATES = ["{username}", "{escaped_username}", "{safe_username}", "{unescaped_username}", "{user_server}",
             "{escaped_user_server}", "{safe_user_server}", "home/{username}/{servername}",
             "jupyter-{username}-{servername}", "{username}--{servername}", "{userid}-{username}",
             "homes/{hubnamespace}/{user_server}"]

NAMES = st.text(min_size=1, max_size=70).filter(lambda s: "\0" not in s)
SERVERS = st.one_of(st.just(""), st.text(min_size=1, max_size=60).filter(lambda s: "\0" not in s))


def kubespawner_expand(template: str, user: str, server: str, scheme: str, user_id: int, namespace: str) -> str:
    from kubespawner.spawner import KubeSpawner

    fake = SimpleNamespace(name=server, user=SimpleNamespace(name=user, id=user_id), slug_scheme=scheme,
                           _namespace_default=lambda: namespace)
    return str(KubeSpawner._expand_user_properties(fake, template))


@settings(max_examples=300, deadline=None)
@given(user=NAMES, server=SERVERS, scheme=st.sampled_from(["safe", "escape"]),
       template=st.sampled_from(TEMPLATES), user_id=st.integers(0, 10**6),
       namespace=st.sampled_from(["default", "jhub"]))
def test_expansion_is_kubespawners(user: str, server: str, scheme: str, template: str, user_id: int,
                                   namespace: str) -> None:
    theirs = kubespawner_expand(template, user, server, scheme, user_id, namespace)
    try:
        ours = expand(template, user, server, scheme=scheme, user_id=user_id, namespace=namespace)
    except UsageError:
        # jdr refuses only what is not a directory inside the volume (e.g. a raw name "..", "a/../..")
        import posixpath
        norm = posixpath.normpath(theirs) if theirs else ""
        assert norm in ("", ".", "..") or norm.startswith(("/", "../")), theirs
        return
    import posixpath
    assert ours == posixpath.normpath(theirs)


@pytest.mark.parametrize("user,scheme,want", [
    ("alice", "safe", "alice"), ("alice", "escape", "alice"),
    ("Émile", "escape", "-c3-89mile"), ("alice@example.com", "escape", "alice-40example-2ecom"),
    ("Alice", "safe", "alice---3bc51062"),
])
def test_known_names(user: str, scheme: str, want: str) -> None:
    assert expand("{username}", user, scheme=scheme) == want
    assert expand("{username}", user, scheme=scheme) == kubespawner_expand("{username}", user, "", scheme, 0,
                                                                         "default")


@pytest.mark.parametrize("template,word", [
    ("{pod_name}", "pod_name"), ("{pvc_name}/x", "pvc_name"), ("{nonsense}", "nonsense"),
    ("{username", "not a valid template"), ("/abs/{username}", "relative"), ("{username.upper}", "username.upper"),
])
def test_templates_it_cannot_expand_are_refused_naming_the_setting(template: str, word: str) -> None:
    with pytest.raises(UsageError) as e:
        expand(template, "alice")
    assert e.value.exit_code == 2
    assert "deployment.kubernetes.static_subpath" in str(e.value) and word in str(e.value)


def test_userid_needs_the_id() -> None:
    with pytest.raises(UsageError, match="user id"):
        expand("{userid}", "alice")
    assert expand("{userid}", "alice", user_id=7) == "7"


def test_escape_out_of_the_volume_is_refused() -> None:
    with pytest.raises(UsageError, match="not a directory inside"):
        expand("{unescaped_username}", "..")
    with pytest.raises(UsageError, match="not a directory inside"):
        expand("x/../../{unescaped_username}", "a")
