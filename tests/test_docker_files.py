"""docker/: the compose demo and the image, checked statically (no Docker engine, no buildah).

The checks are docker/check's own (`static_problems`); these tests run them on the real files and on
copies broken on purpose, so a check that cannot fail is caught too.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"


def _load_check():
    loader = importlib.machinery.SourceFileLoader("docker_check", str(DOCKER / "check"))
    spec = importlib.util.spec_from_loader("docker_check", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


check = _load_check()


@pytest.fixture
def copy(tmp_path) -> Path:
    """docker/ in a repository of its own: the build context's files are links to the real ones."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pyproject.toml", "README.md", "slurm_bridge"):
        (repo / name).symlink_to(ROOT / name)
    shutil.copytree(DOCKER, repo / "docker", ignore=shutil.ignore_patterns("__pycache__"))
    return repo / "docker"


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _compose(docker: Path) -> dict:
    return yaml.safe_load((docker / "compose.yaml").read_text())


def _save(docker: Path, data: dict) -> None:
    (docker / "compose.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def test_the_real_files_pass():
    assert check.static_problems() == []


def test_the_copy_passes_before_it_is_broken(copy):
    assert check.static_problems(copy) == []


def test_every_service_runs_the_one_image_with_a_known_role():
    compose = _compose(DOCKER)
    roles = check.entrypoint_roles((DOCKER / "entrypoint").read_text())
    assert {"mariadb", "slurmdbd", "slurmctld", "slurmd", "cloud-node", "moto", "selftest"} <= roles
    services = compose["services"]
    assert {"mariadb", "slurmdbd", "slurmctld", "moto", "onprem-0", "a10g-eu-0", "a10g-eu-1"} == set(services)
    assert {s["image"] for s in services.values()} == {check.IMAGE}
    assert all(not s.get("ports") for s in services.values())   # no host port: the lab's are 6817-6819, 3306


def test_the_rendered_fragment_is_the_one_in_the_demo():
    r = check.rendered()
    assert (DOCKER / "demo/slurm/slurm-bridge.conf").read_text() == r["slurm-bridge.conf"]
    assert "NodeName=a10g-eu-[0-1] State=CLOUD" in r["slurm-bridge.conf"]
    assert "SlurmctldParameters=cloud_reg_addrs,idle_on_node_suspend" in r["slurm-bridge.conf"]


def test_a_missing_bind_mount_is_caught(copy):
    data = _compose(copy)
    data["services"]["slurmdbd"]["volumes"].append("./no-such-dir:/x:ro")
    _save(copy, data)
    assert any("bind mount source ./no-such-dir does not exist" in p for p in check.static_problems(copy))


def test_an_undeclared_volume_is_caught(copy):
    data = _compose(copy)
    data["services"]["mariadb"]["volumes"][1] = "mysql-data:/var/lib/mysql"
    _save(copy, data)
    problems = check.static_problems(copy)
    assert any("volume 'mysql-data' is not declared" in p for p in problems)
    assert any("volume 'mariadb' is declared but no service mounts it" in p for p in problems)


def test_a_missing_dockerfile_is_caught(copy):
    data = _compose(copy)
    data["services"]["moto"]["build"]["dockerfile"] = "docker/Containerfile"
    _save(copy, data)
    assert any("build dockerfile docker/Containerfile does not exist" in p for p in check.static_problems(copy))


def test_a_copy_of_a_missing_file_is_caught(copy):
    _edit(copy / "Dockerfile", "docker/moto_setup.py /usr", "docker/moto_setup.py docker/gone.py /usr")
    problems = check.static_problems(copy)
    assert any("COPY source docker/gone.py does not exist" in p for p in problems)
    assert any("docker/gone.py is not let through" in p for p in problems)


def test_an_unknown_role_is_caught(copy):
    data = _compose(copy)
    data["services"]["onprem-0"]["command"] = ["slurmd-onprem", "onprem-0"]
    _save(copy, data)
    assert any("'slurmd-onprem' is no role" in p for p in check.static_problems(copy))


def test_a_stale_render_is_caught(copy):
    _edit(copy / "demo/bridge.toml", "suspend_time = 60", "suspend_time = 90")
    problems = check.static_problems(copy)
    assert any("demo/slurm/slurm-bridge.conf is not what `slurm-bridge conf render` makes" in p for p in problems)
    check.write_rendered(copy)
    assert check.static_problems(copy) == []


def test_a_pool_node_without_a_cloud_container_is_caught(copy):
    _edit(copy / "demo/bridge.toml", "size = 2", "size = 3")
    check.write_rendered(copy)
    assert any("no cloud-node service for a10g-eu-2" in p for p in check.static_problems(copy))


def test_addresses_must_agree(copy):
    data = _compose(copy)
    data["services"]["slurmctld"]["networks"]["cluster"]["ipv4_address"] = "172.31.240.99"
    _save(copy, data)
    problems = check.static_problems(copy)
    assert any("SlurmctldHost=slurmctld(172.31.240.12) does not match" in p for p in problems)
    assert any("extra_hosts says slurmctld is 172.31.240.12" in p for p in problems)


def test_an_address_in_the_instances_subnet_is_caught(copy):
    data = _compose(copy)
    data["services"]["a10g-eu-0"]["networks"]["cluster"]["ipv4_address"] = "172.31.65.4"
    _save(copy, data)
    assert any("outside ip_range" in p for p in check.static_problems(copy))


def test_a_watcher_that_does_not_compile_is_caught(copy):
    _edit(copy / "cloud_node.py", "def main(node: str) -> int:", "def main(node: str) -> int")
    assert any(p.startswith("cloud_node.py: does not compile") for p in check.static_problems(copy))


def test_an_entrypoint_that_does_not_parse_is_caught(copy):
    _edit(copy / "entrypoint", "esac", "")
    assert any(p.startswith("entrypoint: bash -n") for p in check.static_problems(copy))


def test_the_endpoint_must_be_a_service(copy):
    _edit(copy / "demo/bridge.toml", "http://moto:5000", "http://localhost:5000")
    assert any("endpoint_url 'http://localhost:5000' names no compose service" in p
               for p in check.static_problems(copy))


def test_the_watcher_uses_the_providers_tags():
    from slurm_bridge.providers import aws

    text = (DOCKER / "cloud_node.py").read_text()
    assert f'TAG_CLUSTER, TAG_NODE = "{aws.TAG_CLUSTER}", "{aws.TAG_NODE}"' in text


def test_no_secret_is_baked_into_the_image():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "munge.key" not in dockerfile.replace("rm -f /etc/munge/munge.key", "")
    for path in (DOCKER / "demo").rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert "StoragePass" not in text.replace("appends\n# StoragePass", ""), path
