"""Each kind of config error gives ONE ConfigError whose message names the file, the key path
and what is wrong (the CLI prints it as is and exits 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fustor.config import ConfigError, load_agent_config, load_fusion_config

DATA = Path(__file__).parent / "data"
FUSION = (DATA / "guide_fusion_default.yaml").read_text(encoding="utf-8")
AGENT = (DATA / "guide_agent_default.yaml").read_text(encoding="utf-8")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FUSTOR_HOME", str(home))
    monkeypatch.delenv("FUSTOR_CONFIG", raising=False)
    return home


def fusion_error(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "fusion.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_fusion_config(str(p))
    assert info.value.file == str(p)
    assert str(info.value).startswith(f"{p}: ")
    assert "\n" not in str(info.value)
    return info.value


def agent_error(tmp_path: Path, text: str) -> ConfigError:
    p = tmp_path / "agent.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_agent_config(str(p))
    assert info.value.file == str(p)
    return info.value


FUSION_CASES = [
    # (what, edit of the guide's file, key path, words of the reason)
    ("unknown top-level key", "colour: red\n" + FUSION, "colour", "unknown key 'colour'"),
    ("unknown nested key",
     FUSION.replace("audit_interval_sec: 43200 # 12 hours\n  pipe-2",
                    "audit_intervl_sec: 5\n  pipe-2"),
     "pipes.pipe-1.audit_intervl_sec", "unknown key 'audit_intervl_sec'"),
    ("unknown driver param", FUSION.replace("hot_file_threshold: 60.0", "hot_file: 1"),
     "views.unified-view.driver_params.hot_file", "unknown key"),
    ("wrong type: string for a port", FUSION.replace("port: 18888", "port: 'eighteen'"),
     "receivers.http-receiver.port", "expected an integer, got a string"),
    ("wrong type: list for a number", FUSION.replace("hot_file_threshold: 60.0", "hot_file_threshold: [1]"),
     "views.unified-view.driver_params.hot_file_threshold", "expected a number, got a list"),
    ("wrong type: boolean for an integer", "port: true\n", "port", "got a boolean"),
    ("wrong type: a section as a list", "views: [a, b]\n", "views", "expected a mapping"),
    ("wrong type: key not a string", FUSION.replace('"external-read-only-key"', "12345"),
     "views.unified-view.api_keys[0]", "expected a non-empty string"),
    ("dangling receiver",
     FUSION.replace("receiver: http-receiver\n    views: [unified-view]\n    audit_interval_sec: 43200 # 12 hours\n  pipe-2",
                    "receiver: nope\n    views: [unified-view]\n  pipe-2"),
     "pipes.pipe-1.receiver", "no receiver named 'nope' (known: http-receiver)"),
    ("dangling view", FUSION.replace("views: [unified-view]", "views: [nope]", 1),
     "pipes.pipe-1.views[0]", "no view named 'nope'"),
    ("dangling pipe of a receiver key", FUSION.replace('pipe_id: "pipe-2"', 'pipe_id: "pipe-9"'),
     "receivers.http-receiver.api_keys[1].pipe_id", "no pipe named 'pipe-9'"),
    ("API key used twice: receiver and view",
     FUSION.replace('"external-read-only-key"', '"agent-1-push-key"'),
     "views.unified-view.api_keys[0]", "API key used twice (also at receivers.http-receiver.api_keys[0].key)"),
    ("API key used twice: two pipes", FUSION.replace("agent-2-push-key", "agent-1-push-key"),
     "receivers.http-receiver.api_keys[1].key", "API key used twice"),
    ("API key used twice: management and view",
     "management: {api_keys: [external-read-only-key]}\n" + FUSION,
     "management.api_keys[0]", "API key used twice"),
    ("port used twice: API and receiver", "port: 18888\n" + FUSION,
     "receivers.http-receiver.port", "port 18888 used twice"),
    ("port used twice: two receivers", FUSION.replace("receivers:\n", "receivers:\n  other: {}\n", 1),
     "receivers.http-receiver.port", "port 18888 used twice (also by receivers.other.port)"),
    ("required key missing", "receivers: {r: {}}\nviews: {v: {}}\npipes: {p: {views: [v]}}\n",
     "pipes.p.receiver", "is required"),
    ("pipe without views", "receivers: {r: {}}\npipes: {p: {receiver: r, views: []}}\n",
     "pipes.p.views", "at least one view"),
    ("bad log level", "logging: {level: loud}\n", "logging.level", "must be one of DEBUG"),
    ("negative duration", "session_timeout_seconds: -1\n", "session_timeout_seconds", "must be > 0"),
    ("port out of range", "port: 70000\n", "port", "0..65535"),
    ("unknown driver", "views: {v: {driver: sql}}\n", "views.v.driver", "must be one of fs"),
]


@pytest.mark.parametrize(("text", "key", "reason"), [c[1:] for c in FUSION_CASES],
                         ids=[c[0] for c in FUSION_CASES])
def test_fusion_error_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = fusion_error(tmp_path, text)
    assert err.key == key
    assert reason in err.reason
    assert str(err) == f"{err.file}: {key}: {err.reason}"


AGENT_CASES = [
    ("unknown key", AGENT + "extra: 1\n", "extra", "unknown key 'extra'"),
    ("dangling source", AGENT.replace("source: nfs-source", "source: nope"),
     "pipes.sync-job.source", "no source named 'nope' (known: nfs-source)"),
    ("dangling sender", AGENT.replace("sender: fusion-main", "sender: other"),
     "pipes.sync-job.sender", "no sender named 'other'"),
    ("relative source path", AGENT.replace('"/mnt/data/share"', '"data/share"'),
     "sources.nfs-source.uri", "must be an absolute path"),
    ("sender URL without scheme", AGENT.replace('"http://<FUSION_IP>:18888"', '"fusion:18888"'),
     "senders.fusion-main.uri", "http:// or https://"),
    ("credential missing", AGENT.replace('    credential: { key: "agent-1-push-key" }\n', ""),
     "senders.fusion-main.credential.key", "is required"),
    ("credential as a string", AGENT.replace('{ key: "agent-1-push-key" }', '"agent-1-push-key"'),
     "senders.fusion-main.credential", "expected a mapping, got a string"),
    ("wrong type in driver_params",
     AGENT.replace("    driver: fs\n", "    driver: fs\n    driver_params: {batch_size: many}\n"),
     "sources.nfs-source.driver_params.batch_size", "expected an integer"),
]


@pytest.mark.parametrize(("text", "key", "reason"), [c[1:] for c in AGENT_CASES],
                         ids=[c[0] for c in AGENT_CASES])
def test_agent_error_names_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    err = agent_error(tmp_path, text)
    assert err.key == key
    assert reason in err.reason


def test_invalid_yaml_names_line_and_column(tmp_path: Path) -> None:
    err = fusion_error(tmp_path, FUSION.replace("views: [unified-view]", "views: [unified-view", 1))
    assert err.key is None
    assert "line 23, column 23: invalid YAML" in err.reason


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping at the top, got a list" in fusion_error(tmp_path, "- a\n").reason


def test_duplicate_id_across_files_names_both(clean_env: Path) -> None:
    d = clean_env / "fusion-config"
    d.mkdir(parents=True)
    (d / "default.yaml").write_text(FUSION, encoding="utf-8")
    (d / "more.yaml").write_text("views:\n  unified-view: {api_keys: [x]}\n")
    with pytest.raises(ConfigError) as info:
        load_fusion_config()
    assert info.value.file == str(d / "more.yaml")
    assert info.value.key == "views.unified-view"
    assert f"duplicate id (also defined in {d / 'default.yaml'})" in info.value.reason


def test_scalar_set_in_two_files(clean_env: Path) -> None:
    d = clean_env / "agent-config"
    d.mkdir(parents=True)
    (d / "default.yaml").write_text("agent_id: a\n" + AGENT, encoding="utf-8")
    (d / "x.yaml").write_text("agent_id: b\n")
    with pytest.raises(ConfigError, match=r"x\.yaml: agent_id: defined twice"):
        load_agent_config()


def test_error_in_second_file_names_that_file(clean_env: Path) -> None:
    d = clean_env / "fusion-config"
    d.mkdir(parents=True)
    (d / "default.yaml").write_text(FUSION, encoding="utf-8")
    (d / "extra.yaml").write_text("pipes:\n  pipe-3: {receiver: http-receiver, views: [missing]}\n")
    with pytest.raises(ConfigError) as info:
        load_fusion_config()
    assert info.value.file == str(d / "extra.yaml")
    assert info.value.key == "pipes.pipe-3.views[0]"


def test_config_directory_without_yaml_files(tmp_path: Path) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    (d / "README.txt").write_text("nothing")
    with pytest.raises(ConfigError) as info:
        load_fusion_config(str(d))
    assert info.value.file == str(d) and "no *.yaml files" in info.value.reason


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    p = tmp_path / "bin.yaml"
    p.write_bytes(b"port: \xff\n")
    with pytest.raises(ConfigError, match=r"bin\.yaml: not UTF-8 text"):
        load_fusion_config(str(p))


def test_key_repeated_in_one_file(tmp_path: Path) -> None:
    # PyYAML alone keeps the last `views:` and would silently drop the first section.
    err = fusion_error(tmp_path, "views:\n  a: {}\nviews:\n  b: {}\n")
    assert "line 3, column 1: invalid YAML: duplicate key 'views' (first on line 1)" in err.reason


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    p = tmp_path / "f.yaml"
    p.write_text("views:\n  a: &d {driver: fs}\n  b: {<<: *d, api_keys: [k]}\n")
    assert load_fusion_config(str(p)).views["b"].api_keys == ("k",)
