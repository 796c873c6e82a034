"""Shared fixtures: a configuration on a temporary directory and a client of the real app."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightspeed.config import Config, parse_config


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a Config from YAML-like data, with storage under ``tmp_path``."""

    def make(**sections: Any) -> Config:
        udc = {
            "feedback_enabled": True,
            "feedback_storage": str(tmp_path / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(tmp_path / "transcripts"),
        }
        udc.update(sections.pop("user_data_collection", {}))
        data = {"name": "test", "user_data_collection": udc, **sections}
        return parse_config(data, env={})

    return make
