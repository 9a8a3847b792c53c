"""Config files (`config_files`): a mistake in a config file is named by its file (and line) and
key (issue 22's hostile probe, defects 4 and 6), and one in a config dict by its key."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("text, message", [
    ('{"batch_size": 0}', r"cfg\.json: TrainConfig\.batch_size must be >= 1, got 0"),
    ('{"candidate_epochs": 0}', r"cfg\.json: TrainConfig\.candidate_epochs must be >= 1, got 0"),
    ('{"ranker_epochs": -2}', r"cfg\.json: TrainConfig\.ranker_epochs must be >= 1, got -2"),
    ('{"seed": -3}', r"cfg\.json: TrainConfig\.seed must be in \[0, 2\^31\), got -3"),
    ('{"preset": "movielens", "seed": -3}', r"cfg\.json: TrainConfig\.seed must be in"),
    ('{"seed": 1,\n "batch_size": }', r"cfg\.json, line 2: not valid JSON"),
    (b"\x00\x01\xff\xfe", r"cfg\.json: not a text file \(byte 2 is not UTF-8\)"),
])
def test_bad_configs_are_named_by_file_and_key(tmp_path, text, message):
    from tfrs_youtube.config_files import ConfigError, load_train_config

    path = tmp_path / "cfg.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ConfigError, match=message):
        load_train_config(str(path))


def test_config_mistakes_name_the_key():
    from tfrs_youtube.config_files import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match="'candidate_epoch' .*candidate_epochs"):
        config_from_dict({"candidate_epoch": 3})
    with pytest.raises(ConfigError, match="batch_size must be int, got 'big'"):
        config_from_dict({"batch_size": "big"})
    with pytest.raises(ConfigError, match="k <= num_candidates"):
        config_from_dict({"serving": {"k": 500}})
    with pytest.raises(ConfigError, match="unknown preset 'youtube'"):
        config_from_dict({"preset": "youtube"})
