"""The SkyPilot task template filled per launch: the pure part (no ``sky`` needed), and region mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped, unused-ignore]

from cic.fleet.launcher import FleetConfigError, cluster_name_for, gpu_count
from cic.fleet.skypilot import DEFAULT_TEMPLATE, RegionMap, load_template, task_config
from tests.fleet.helpers import no_secrets, spec

# --- the filled template (pure: no sky) -------------------------------------------------------------


def test_template_is_the_checked_in_one() -> None:
    assert Path(__file__).resolve().parents[2] / "infra" / "skypilot" / "vllm-node.yaml" == DEFAULT_TEMPLATE
    template = load_template()
    assert set(template["secrets"]) == {"CIC_NODE_TOKEN", "HF_TOKEN"}
    assert template["envs"]["VLLM_VERSION"] == "0.11.0"


def test_envs_resources_and_secret_names() -> None:
    config, secret_names = task_config(spec(), load_template())
    assert secret_names == ["CIC_NODE_TOKEN", "HF_TOKEN"]
    assert "secrets" not in config
    assert config["envs"] == {
        "VLLM_VERSION": "0.11.0",
        "CIC_PACKAGE_SPEC": "crosslogic-inference-cloud @ https://dl.example.com/cic-0.1.0-py3-none-any.whl",
        "MODEL": "meta-llama/Meta-Llama-3-8B-Instruct",
        "SERVED_MODEL_NAME": "llama-3-8b",
        "CIC_REGION": "us-east",
        "CIC_CONTROL_PLANE": "https://cp.example.com",
        "CIC_PROVIDER": "aws",
        "CIC_GPU": "A10G:1",
        "CIC_SPOT": "true",
        "CIC_LAUNCH_ID": "lch_0123456789abcdef0123",
        "CIC_ADVERTISE_URL": "",
        "MAX_MODEL_LEN": "8192",
        "TENSOR_PARALLEL_SIZE": "1",
        "VLLM_EXTRA_ARGS": "",
    }
    assert config["resources"] == {
        "accelerators": "A10G:1",
        "use_spot": True,
        "disk_size": 256,
        "ports": 8000,
        "infra": "aws/us-east-1",
    }
    no_secrets(yaml.safe_dump(config))


@pytest.mark.parametrize(
    ("region", "infra"),
    [
        ("us-east", "aws/us-east-1"),
        ("eu-west", "aws/eu-west-1"),
        ("ap-singapore", "aws/ap-southeast-1"),
        ("in-mumbai", "aws/ap-south-1"),
    ],
)
def test_region_codes_map_to_aws_regions(region: str, infra: str) -> None:
    config, _ = task_config(spec(region=region), load_template())
    assert config["resources"]["infra"] == infra
    assert config["envs"]["CIC_REGION"] == region


def test_on_demand_multi_gpu_and_overrides() -> None:
    config, _ = task_config(
        spec(
            spot=False,
            accelerators="L4:4",
            max_model_len=None,
            vllm_version="0.11.1",
            disk_size_gb=512,
            extra_envs={"VLLM_EXTRA_ARGS": "--gpu-memory-utilization 0.92"},
        ),
        load_template(),
    )
    assert config["resources"]["use_spot"] is False
    assert config["envs"]["CIC_SPOT"] == "false"
    assert config["envs"]["CIC_GPU"] == "L4:4"
    assert config["resources"]["accelerators"] == "L4:4"
    assert config["resources"]["disk_size"] == 512
    assert config["envs"]["TENSOR_PARALLEL_SIZE"] == "4"
    assert config["envs"]["MAX_MODEL_LEN"] == ""
    assert config["envs"]["VLLM_VERSION"] == "0.11.1"
    assert config["envs"]["VLLM_EXTRA_ARGS"] == "--gpu-memory-utilization 0.92"


def test_other_clouds_and_region_overrides() -> None:
    gcp = RegionMap.for_cloud("gcp")
    config, _ = task_config(spec(region="ap-singapore"), load_template(), gcp)
    assert config["resources"]["infra"] == "gcp/asia-southeast1"
    assert config["envs"]["CIC_PROVIDER"] == "gcp"
    mixed = RegionMap.from_env(
        {"CIC_FLEET_CLOUD": "azure", "CIC_FLEET_REGIONS": "us-east=aws/us-east-2, eu-west=gcp/europe-west4"}
    )
    assert mixed.infra("us-east") == "aws/us-east-2"
    assert mixed.infra("eu-west") == "gcp/europe-west4"
    assert mixed.infra("in-mumbai") == "azure/centralindia"
    assert mixed.cloud("eu-west") == "gcp"
    assert RegionMap.from_env({}).infra("in-mumbai") == "aws/ap-south-1"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: task_config(spec(region="mars"), load_template()), "No cloud region for region 'mars'"),
        (lambda: task_config(spec(accelerators="A10G:x"), load_template()), "Bad accelerator spec"),
        (lambda: task_config(spec(package_spec=None), load_template()), "needs values for: CIC_PACKAGE_SPEC"),
        (lambda: task_config(spec(hf_repo=""), load_template()), "has no weights"),
        (
            lambda: task_config(spec(extra_envs={"CIC_NODE_TOKEN": "x"}), load_template()),
            "extra_envs may not set secrets",
        ),
        (lambda: RegionMap.for_cloud("oracle"), "No region table for cloud 'oracle'"),
        (lambda: RegionMap.for_cloud("aws", {"us-east": "us-east-1"}), "is not <cloud>/<region>"),
        (lambda: RegionMap.from_env({"CIC_FLEET_REGIONS": "us-east"}), "is not code=cloud/region"),
        (lambda: load_template("/nonexistent/vllm-node.yaml"), "not found"),
    ],
)
def test_bad_inputs_are_fleet_config_errors(make: Any, message: str) -> None:
    with pytest.raises(FleetConfigError, match=message):
        make()


def test_spec_repr_hides_the_secrets() -> None:
    no_secrets(repr(spec()))
    no_secrets(str(spec()))


def test_cluster_names_and_gpu_counts() -> None:
    assert cluster_name_for("llama-3-8b", "us-east", "abc123") == "cic-llama-3-8b-us-east-abc123"
    assert cluster_name_for("Qwen2.5_72B/Instruct-AWQ-very-long-name", "ap-singapore", "0f0f0f") == (
        "cic-qwen2-5-72b-instruct-ap-singapore-0f0f0f"
    )
    assert cluster_name_for("m", "r") != cluster_name_for("m", "r")
    assert (gpu_count("H100"), gpu_count("A10G:1"), gpu_count("L4:8")) == (1, 1, 8)
    for bad in ("", ":2", "A10G:0", "A10G:two"):
        with pytest.raises(FleetConfigError):
            gpu_count(bad)
