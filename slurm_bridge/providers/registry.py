"""Build the configured providers. Cloud SDKs are imported only when configured, so the
power-save programs stay quick to start."""

from __future__ import annotations

from ..config import Config
from .base import Provider


def build(cfg: Config) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    if cfg.local_regions:
        from .local import LocalProvider

        providers["local"] = LocalProvider(cfg.local_regions, cfg.local_lab_dir, authorized_key=_public_key(cfg))
    if cfg.aws is not None:
        from .aws import AwsProvider

        providers["aws"] = AwsProvider(cfg.aws)
    if cfg.gcp is not None:
        from .gcp import GcpProvider

        providers["gcp"] = GcpProvider(cfg.gcp)
    if cfg.ssh is not None:
        from .ssh import SshProvider

        providers["ssh"] = SshProvider(cfg.ssh, cfg.cluster.name, bootstrap=_bootstrap(cfg.ssh))
    return providers


def _public_key(cfg: Config) -> str | None:
    """The bridge's public key, for local "ssh" instances to let in (as cloud-init user data would)."""
    boot = cfg.bootstrap
    if boot is None or "local" not in boot.providers:
        return None
    import asyncssh

    try:
        return asyncssh.read_private_key(str(boot.client_keys[0])).export_public_key().decode()
    except (OSError, ValueError, asyncssh.Error):
        return None     # the launch then fails with a CONFIG failure naming [bootstrap] client_keys


def _bootstrap(ssh):
    """The node bootstrap the config asks for (munge key and Slurm config over SSH), or None."""
    if ssh.munge_key is None:
        return None
    from ..bootstrap import make_bootstrap

    return make_bootstrap(ssh.munge_key, slurm_conf_dir=ssh.slurm_conf_dir, conf_server=ssh.conf_server,
                          restart_munge=ssh.munge_restart, sudo=("sudo", "-n") if ssh.sudo else ())
