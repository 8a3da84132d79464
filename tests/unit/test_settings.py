"""Configuration: the YAML of SPEC.md, ``JDR_…`` environment overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dr.errors import ConfigError
from dr.settings import Settings, env_name, key_paths, load_settings

SPEC_EXAMPLE = """\
deployment:
  kind: local                      # or kubernetes
  hub_db: /opt/tljh/state/jupyterhub.sqlite
  homes: /home/jupyter-{username}  # a user's home directory
  restart_hub: [systemctl, restart, jupyterhub]   # optional
repository: s3://my-bucket/jupyterhub      # or file:///var/backups/jdr
hub_api:                                   # optional; needed to stop running servers
  url: http://hub:8081/hub/api
  token_env: JDR_HUB_TOKEN
retention: {keep_last: 7, keep_daily: 14, keep_weekly: 8, keep_monthly: 12}
schedule: {backup: "0 2 * * *", prune: "30 3 * * *", drill: "0 5 1 */3 *"}
"""


def load(tmp_path: Path, text: str | None, **env: str) -> Settings:
    path = None
    if text is not None:
        path = tmp_path / "jdr.yaml"
        path.write_text(text)
    return load_settings(path, environ=env)


def error(tmp_path: Path, text: str | None, **env: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text, **env)
    return e.value


def test_the_spec_example_loads(tmp_path: Path) -> None:
    s = load(tmp_path, SPEC_EXAMPLE)
    assert s.deployment.kind == "local"
    assert s.deployment.homes == "/home/jupyter-{username}"
    assert s.deployment.restart_hub == ["systemctl", "restart", "jupyterhub"]
    assert s.repository.url == "s3://my-bucket/jupyterhub"
    assert s.hub_api.url == "http://hub:8081/hub/api" and s.hub_api.token_env == "JDR_HUB_TOKEN"
    assert (s.retention.keep_last, s.retention.keep_daily, s.retention.keep_weekly,
            s.retention.keep_monthly, s.retention.keep_yearly) == (7, 14, 8, 12, 0)
    assert s.schedule.drill == "0 5 1 */3 *"


def test_no_file_and_an_empty_file_give_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, None) == Settings()
    assert load(tmp_path, "") == Settings()
    assert load(tmp_path, "# nothing\n") == Settings()
    assert load(tmp_path, "retention:\n") == Settings()  # an empty section is the section's defaults


def test_repository_as_a_mapping(tmp_path: Path) -> None:
    s = load(tmp_path, "repository: {url: 'file:///b', endpoint_url: 'http://s3:9000', lock_stale_after: 180}")
    assert (s.repository.url, s.repository.endpoint_url, s.repository.lock_stale_after) == (
        "file:///b", "http://s3:9000", 180)


@pytest.mark.parametrize("text,key", [
    ("deployment: {hom: /x}", "deployment.hom"),
    ("retension: {keep_last: 1}", "retension"),
    ("deployment: {kubernetes: {namespac: jhub}}", "deployment.kubernetes.namespac"),
    ("repository: {url: 'file:///b', endpoint: x}", "repository.endpoint"),
])
def test_unknown_keys_are_named(tmp_path: Path, text: str, key: str) -> None:
    e = error(tmp_path, text)
    assert str(e).startswith(f"{key}: unknown key")
    assert e.hint and "known keys here:" in e.hint
    assert e.exit_code == 2


@pytest.mark.parametrize("text,message", [
    ("retention: {keep_daily: seven}", "retention.keep_daily: expected an integer, got a string"),
    ("retention: {keep_daily: 1.5}", "retention.keep_daily: expected an integer, got a number"),
    ("retention: {keep_daily: true}", "retention.keep_daily: expected an integer, got a boolean"),
    ("retention: [1]", "retention: expected a mapping, got a list"),
    ("deployment: {restart_hub: {a: b}}", "deployment.restart_hub: expected a list, got a mapping"),
    ("deployment: {restart_hub: [a, [b]]}", "deployment.restart_hub[1]: expected a string, got a list"),
    ("encryption: {secret_in_clear: 'yes'}", "encryption.secret_in_clear: expected true or false"),
    ("deployment: {hub_db: [a]}", "deployment.hub_db: expected a string, got a list"),
    ("deployment: {hub_db: null}", "deployment.hub_db: expected a string, got nothing (null)"),
    ("deployment: {kubernetes: {pod_labels: [a]}}", "deployment.kubernetes.pod_labels: expected a mapping"),
    ("deployment: {kubernetes: {concurrency: -1}}", "deployment.kubernetes.concurrency: must not be negative"),
    ("retention: {keep_last: -2}", "retention.keep_last: must not be below -1"),
    ("deployment: {kind: docker}", "deployment.kind: 'docker' is not one of local, kubernetes"),
    ("backup: {method: rsync}", "backup.method: 'rsync' is not one of"),
    ("backup: {compression_level: 30}", "backup.compression_level: must be between 1 and 22"),
    ("notify: {on: [always]}", "notify.on: 'always' is not one of failure, success"),
    ("log_format: xml", "log_format: 'xml' is not one of"),
])
def test_wrong_types_and_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    assert message in str(error(tmp_path, text))


def test_unlimited_retention_and_keep_within(tmp_path: Path) -> None:
    s = load(tmp_path, "retention: {keep_last: -1, keep_within: 7}")
    assert s.retention.keep_last == -1 and s.retention.keep_within == "7d"


@pytest.mark.parametrize("text,message", [
    ("repository: [file:///b\n", "is not valid YAML"),
    ("- a\n- b\n", "the top level must be a mapping"),
    ("just a string\n", "the top level must be a mapping"),
])
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    e = error(tmp_path, text)
    assert message in str(e) and str(tmp_path / "jdr.yaml") in str(e)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read configuration .*nope\.yaml"):
        load_settings(tmp_path / "nope.yaml", environ={})


# --- the environment ----------------------------------------------------------------------------


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    s = load(tmp_path, SPEC_EXAMPLE, JDR_RETENTION_KEEP_DAILY="3", JDR_DEPLOYMENT_KIND="local",
             JDR_HUB_API_URL="http://other/hub/api", JDR_SCHEDULE_TIMEZONE="Europe/Paris")
    assert s.retention.keep_daily == 3 and s.retention.keep_last == 7  # only the named key changes
    assert s.hub_api.url == "http://other/hub/api" and s.hub_api.token_env == "JDR_HUB_TOKEN"
    assert s.schedule.timezone == "Europe/Paris"


def test_environment_alone_configures_everything(tmp_path: Path) -> None:
    s = load(tmp_path, None, JDR_REPOSITORY="s3://b/p", JDR_DEPLOYMENT_HUB_DB="/srv/hub.sqlite",
             JDR_DEPLOYMENT_HOMES="/home/{username}", JDR_DEPLOYMENT_KUBERNETES_CONCURRENCY="8",
             JDR_ENCRYPTION_SECRET_IN_CLEAR="true", JDR_DEPLOYMENT_KUBERNETES_POD_LABELS="{team: data}")
    assert s.repository.url == "s3://b/p"
    assert s.deployment.hub_db == "/srv/hub.sqlite" and s.deployment.homes == "/home/{username}"
    assert s.deployment.kubernetes.concurrency == 8
    assert s.encryption.secret_in_clear is True
    assert s.deployment.kubernetes.pod_labels == {"team": "data"}
    assert load(tmp_path, None, JDR_REPOSITORY_URL="file:///x").repository.url == "file:///x"


@pytest.mark.parametrize("value,expected", [
    ("[systemctl, restart, jupyterhub]", ["systemctl", "restart", "jupyterhub"]),
    ("systemctl restart jupyterhub", ["systemctl", "restart", "jupyterhub"]),
    ("[]", []),
    ("", []),
])
def test_list_values_from_the_environment(tmp_path: Path, value: str, expected: list[str]) -> None:
    s = load(tmp_path, SPEC_EXAMPLE, JDR_DEPLOYMENT_RESTART_HUB=value)
    assert s.deployment.restart_hub == expected
    assert load(tmp_path, None, JDR_NOTIFY_ON="[failure, success]").notify.on == ["failure", "success"]


def test_bad_environment_values_are_named(tmp_path: Path) -> None:
    assert "retention.keep_daily: expected an integer" in str(error(tmp_path, None, JDR_RETENTION_KEEP_DAILY="x"))
    e = error(tmp_path, None, JDR_RETENTION_KEEP_DAILY="[1,")
    assert "JDR_RETENTION_KEEP_DAILY" in str(e)
    assert "deployment.kind" in str(error(tmp_path, None, JDR_DEPLOYMENT_KIND="nomad"))


def test_every_key_has_an_environment_name() -> None:
    paths = key_paths()
    assert "retention.keep_daily" in paths and "deployment.kubernetes.namespace" in paths
    assert "log_format" in paths and "deployment.kubernetes" not in paths  # leaves only
    assert env_name("retention.keep_daily") == "JDR_RETENTION_KEEP_DAILY"
    assert env_name("deployment.kubernetes.mover_image") == "JDR_DEPLOYMENT_KUBERNETES_MOVER_IMAGE"
    names = [env_name(p) for p in paths]
    assert len(names) == len(set(names))  # no two keys share a variable


def test_yaml_1_1_booleans_are_plain_words(tmp_path: Path) -> None:
    # ``on`` is a key here, not YAML 1.1's boolean True; ``yes`` is not a boolean either.
    assert load(tmp_path, "notify: {on: [failure, success]}").notify.on == ["failure", "success"]
    assert "expected true or false, got a string" in str(error(tmp_path, "encryption: {secret_in_clear: yes}"))
    assert load(tmp_path, "encryption: {secret_in_clear: true}").encryption.secret_in_clear is True
    assert load(tmp_path, "deployment: {hub_db: off}").deployment.hub_db == "off"
