"""Shared pieces of the fleet tests: a launch spec with secrets that must never show."""

from __future__ import annotations

from typing import Any

from cic.fleet.launcher import LaunchSpec

TOKEN = "cnt_9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # the bootstrap token: must never show
HF_TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"


def spec(**kw: Any) -> LaunchSpec:
    values: dict[str, Any] = {
        "cluster_name": "cic-llama-3-8b-us-east-a1b2c3",
        "launch_id": "lch_0123456789abcdef0123",
        "model_id": "llama-3-8b",
        "hf_repo": "meta-llama/Meta-Llama-3-8B-Instruct",
        "region": "us-east",
        "accelerators": "A10G:1",
        "spot": True,
        "control_plane_url": "https://cp.example.com/",
        "bootstrap_token": TOKEN,
        "hf_token": HF_TOKEN,
        "max_model_len": 8192,
        "package_spec": "crosslogic-inference-cloud @ https://dl.example.com/cic-0.1.0-py3-none-any.whl",
    }
    values.update(kw)
    return LaunchSpec(**values)


def no_secrets(text: str) -> None:
    assert TOKEN not in text
    assert HF_TOKEN not in text
