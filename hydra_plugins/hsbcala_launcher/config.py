"""Registers ``hydra/launcher: hsbcala_slurm``: the released plugin's own Slurm config (same keys, same defaults),
only with the launcher class replaced by :class:`~hydra_plugins.hsbcala_launcher.launcher.HsbcalaSlurmLauncher`."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class HsbcalaSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.hsbcala_launcher.launcher.HsbcalaSlurmLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="hsbcala_slurm", node=HsbcalaSlurmQueueConf(), provider="hsbcala"
)
