"""Registers ``hydra/launcher: hsbcala_slurm``: the released plugin's own Slurm config (same keys, same defaults),
only with the launcher class replaced by :class:`~hydra_plugins.hsbcala_launcher.launcher.HsbcalaSlurmLauncher`
and one key of hsbcala's own: ``wait`` (false: submit the sweep and return at once; ``python -m hsbcala.slurm.status
<sweep dir>`` shows how it goes)."""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf


@dataclass
class HsbcalaSlurmQueueConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.hsbcala_launcher.launcher.HsbcalaSlurmLauncher"
    # hsbcala's: wait for the jobs (true) or submit and return at once (false); not passed to submitit/sbatch
    wait: bool = True
    # the Python that runs the job on the node (submitit's executor `python`): a node of another architecture
    # (ppc64le) needs its own venv; null: the interpreter that submits
    python: str | None = "${cluster.python}"


ConfigStore.instance().store(
    group="hydra/launcher", name="hsbcala_slurm", node=HsbcalaSlurmQueueConf(), provider="hsbcala"
)
