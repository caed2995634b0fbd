"""Config loading: the guide's two files verbatim, merging of several files, and where the
files come from (--config > FUSTOR_CONFIG > $FUSTOR_HOME/<role>-config/*.yaml)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from fustor.config import (
    ConfigError,
    config_files,
    default_agent_id,
    load_agent_config,
    load_fusion_config,
)

DATA = Path(__file__).parent / "data"
GUIDE = Path("/work/shared/seed/DEPLOYMENT_FS.md")
FUSION_YAML = DATA / "guide_fusion_default.yaml"
AGENT_YAML = DATA / "guide_agent_default.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FUSTOR_HOME", str(home))
    monkeypatch.delenv("FUSTOR_CONFIG", raising=False)
    return home


def install(home: Path, role: str, name: str, text: str) -> Path:
    d = home / f"{role}-config"
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(text, encoding="utf-8")
    return p


@pytest.mark.skipif(not GUIDE.exists(), reason="the deployment guide is not on this machine")
def test_fixtures_are_the_guides_blocks_verbatim() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
    assert blocks[0] == FUSION_YAML.read_text(encoding="utf-8")
    assert blocks[1] == AGENT_YAML.read_text(encoding="utf-8")


def test_guide_fusion_file_from_the_guides_location(clean_env: Path) -> None:
    path = install(clean_env, "fusion", "default.yaml", FUSION_YAML.read_text(encoding="utf-8"))
    cfg = load_fusion_config()
    assert cfg.files == (str(path),)
    assert cfg.port == 8101 and cfg.host == "0.0.0.0"
    (rec,) = cfg.receivers.values()
    assert rec.id == "http-receiver" and rec.port == 18888 and rec.driver == "http"
    assert [(k.key, k.pipe_id) for k in rec.api_keys] == [
        ("agent-1-push-key", "pipe-1"), ("agent-2-push-key", "pipe-2"),
    ]
    view = cfg.views["unified-view"]
    assert view.driver == "fs" and view.api_keys == ("external-read-only-key",)
    assert view.driver_params.hot_file_threshold == 60.0
    assert set(cfg.pipes) == {"pipe-1", "pipe-2"}
    for pid, pipe in cfg.pipes.items():
        assert pipe.id == pid and pipe.receiver == "http-receiver"
        assert pipe.views == ("unified-view",)
        assert pipe.audit_interval_sec == 43200.0
        assert cfg.pipe_timeout(pid) == cfg.session_timeout_seconds


def test_guide_agent_file_from_the_guides_location(clean_env: Path) -> None:
    install(clean_env, "agent", "default.yaml", AGENT_YAML.read_text(encoding="utf-8"))
    cfg = load_agent_config()
    assert cfg.sources["nfs-source"].uri == "/mnt/data/share"
    assert cfg.sources["nfs-source"].driver == "fs"
    sender = cfg.senders["fusion-main"]
    assert sender.uri == "http://<FUSION_IP>:18888" and sender.key == "agent-1-push-key"
    assert sender.driver == "fusion"
    pipe = cfg.pipes["sync-job"]
    assert (pipe.source, pipe.sender) == ("nfs-source", "fusion-main")
    assert cfg.agent_id == default_agent_id() and cfg.agent_id


def test_agent_id_is_stable_and_can_be_set(clean_env: Path) -> None:
    assert default_agent_id() == default_agent_id()
    install(clean_env, "agent", "default.yaml",
            "agent_id: host-a\n" + AGENT_YAML.read_text(encoding="utf-8"))
    assert load_agent_config().agent_id == "host-a"


def test_several_files_merge_default_first(clean_env: Path) -> None:
    install(clean_env, "fusion", "zz-extra.yaml", """
views:
  second-view: {api_keys: [second-key]}
pipes:
  pipe-3: {receiver: http-receiver, views: [second-view, unified-view]}
""")
    install(clean_env, "fusion", "default.yaml", FUSION_YAML.read_text(encoding="utf-8"))
    install(clean_env, "fusion", "a-port.yml", "port: 9100\n")
    install(clean_env, "fusion", "notes.txt", "not: [yaml")  # ignored: not *.yaml/*.yml
    cfg = load_fusion_config()
    assert [Path(f).name for f in cfg.files] == ["default.yaml", "a-port.yml", "zz-extra.yaml"]
    assert cfg.port == 9100
    assert set(cfg.views) == {"unified-view", "second-view"}
    assert cfg.pipes["pipe-3"].views == ("second-view", "unified-view")


def test_agent_sections_merge_across_files(clean_env: Path) -> None:
    install(clean_env, "agent", "default.yaml", AGENT_YAML.read_text(encoding="utf-8"))
    install(clean_env, "agent", "more.yaml", """
sources:
  scratch: {uri: /scratch, driver_params: {exclude: ["*.tmp"], batch_size: 500}}
pipes:
  scratch-job: {source: scratch, sender: fusion-main}
""")
    cfg = load_agent_config()
    assert set(cfg.pipes) == {"sync-job", "scratch-job"}
    assert cfg.sources["scratch"].driver_params.exclude == ("*.tmp",)
    assert cfg.sources["scratch"].driver_params.batch_size == 500


def test_precedence_config_option_over_env_over_home(
    clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(clean_env, "fusion", "default.yaml", "port: 9001\n")
    env_file = tmp_path / "env.yaml"
    env_file.write_text("port: 9002\n")
    opt_file = tmp_path / "opt.yaml"
    opt_file.write_text("port: 9003\n")
    assert load_fusion_config().port == 9001
    monkeypatch.setenv("FUSTOR_CONFIG", str(env_file))
    assert load_fusion_config().port == 9002
    assert load_fusion_config(str(opt_file)).port == 9003
    assert config_files("fusion", opt_file) == [opt_file]


def test_config_may_name_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "conf"
    d.mkdir()
    shutil.copy(FUSION_YAML, d / "default.yaml")
    (d / "mgmt.yaml").write_text("management: {api_keys: [admin-key]}\n")
    cfg = load_fusion_config(str(d))
    assert cfg.management_api_keys == ("admin-key",)
    monkeypatch.setenv("FUSTOR_CONFIG", str(d))
    assert load_fusion_config().management_api_keys == ("admin-key",)


def test_home_defaults_to_dot_fustor(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FUSTOR_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    install(tmp_path / ".fustor", "agent", "default.yaml", AGENT_YAML.read_text(encoding="utf-8"))
    assert load_agent_config().files == (str(tmp_path / ".fustor/agent-config/default.yaml"),)


def test_missing_config_says_where_to_put_it(clean_env: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_fusion_config()
    assert str(clean_env / "fusion-config" / "default.yaml") in str(info.value)
    with pytest.raises(ConfigError, match="no such config file"):
        load_agent_config(str(tmp_path / "nope.yaml"))


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    p = tmp_path / "empty.yaml"
    p.write_text("# nothing yet\n")
    cfg = load_fusion_config(str(p))
    assert cfg.port == 8101 and not cfg.views and not cfg.receivers


def test_optional_keys_and_defaults(tmp_path: Path) -> None:
    p = tmp_path / "f.yaml"
    p.write_text("""
host: 127.0.0.1
port: 0
session_timeout_seconds: 12
logging: {level: debug, file: /tmp/fusion.log}
receivers:
  r: {port: 0, max_batch_events: 10, api_keys: [{key: k1, pipe_id: p}]}
views:
  v: {driver_params: {max_tree_items: 50, tombstone_ttl_sec: 10, suspect_ttl_sec: 5}}
pipes:
  p: {receiver: r, views: [v], session_timeout_seconds: 3, sentinel_interval_sec: 7}
""")
    cfg = load_fusion_config(str(p))
    assert cfg.logging.level == "DEBUG" and cfg.logging.file == "/tmp/fusion.log"
    assert cfg.receivers["r"].host == "127.0.0.1"  # inherits the top-level host
    assert cfg.receivers["r"].max_batch_events == 10
    assert cfg.views["v"].driver_params.max_tree_items == 50
    assert cfg.pipe_timeout("p") == 3.0 and cfg.session_timeout_seconds == 12.0
    assert cfg.pipes["p"].sentinel_interval_sec == 7.0
    p.write_text("logging: warning\n")
    assert load_fusion_config(str(p)).logging.level == "WARNING"
