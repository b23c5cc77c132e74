"""Training through Slurm: ``python train.py -m cluster=slurm_local …`` submits real jobs to the real local cluster
(scripts/slurm-local.sh, the ``slurm_cluster`` fixture) through hsbcala's subclass of hydra-submitit-launcher's
SlurmLauncher; no mocks of sbatch/squeue. Tiny real trainings, a real MLflow store in tmp.

The quick tests at the top need no cluster: the refusal without -m, the dry run, the new cluster configs and
the data staging.

Timing on the local cluster (slurm.conf of slurm-local.sh): slurmctld looks at time limits every 30 s, so with a
1-minute limit and a 1 s signal delay the first job gets USR2 between 29 and 59 s after its start; a requeued
job starts again 11-15 s later, and from then on every job of the chain gets USR2 about 45 s after its start
(the next 30-s look after start + 29 s). So the walltime and scancel tests use Calamari 2 epochs that are cheap
and even (EVEN_EPOCHS): the first checkpoint comes ~20 s after a job starts, then one every ~0.5 s, in fresh
and resumed jobs alike. (Calamari 1 is no good here: its resume script loads the data on the fly, whatever the
first launch did, and a resumed job makes little progress in 45 s.)
"""

from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from pathlib import Path

import pytest

from hsbcala.config import schema
from hsbcala.slurm import job as slurm_job
from tests.conftest import ROOT, SHARED, compose_cfg, need

TINY_NET = "cnn=8:3x3,pool=2x2,lstm=16"
# Calamari 2 epochs of one batch, without exporting a best model whenever the validation CER improves (~5 s
# each): every epoch then takes about as long (~0.5 s, a checkpoint each), in a fresh and in a resumed job alike.
EVEN_EPOCHS = {"train.samples_per_epoch": "8", "train.extra_args": "[--trainer.export_best,False]"}
NEW_CLUSTERS = ("slurm_local", "slurm_generic", "zih_capella")


# --- helpers ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gt(tmp_path_factory) -> Path:
    """16 training + 4 validation lines of real Fraktur (train/, val/), and the same as gt.tar.gz beside them."""
    need(SHARED / "data")  # as the `shared` fixture (function-scoped) does
    root = tmp_path_factory.mktemp("gt")
    books = sorted((SHARED / "data" / "fraktur19-lines" / "ref_AS").iterdir())
    for sub, book, n in (("train", books[0], 16), ("val", books[2], 4)):
        (root / sub).mkdir()
        for png in sorted(book.glob("*.png"))[:n]:
            shutil.copy(png, root / sub / png.name)
            gt_txt = png.with_suffix("").with_suffix(".gt.txt")
            shutil.copy(gt_txt, root / sub / gt_txt.name)
    with tarfile.open(root / "gt.tar.gz", "w:gz") as tar:
        tar.add(root / "train", arcname="train")
        tar.add(root / "val", arcname="val")
    return root


def tiny(tmp: Path, gt: Path, version: str, **extra: str) -> list[str]:
    """Overrides for a tiny, fast real training on the local cluster, everything in ``tmp``."""
    overrides = {
        "cluster": "slurm_local",
        "version": version,
        "paths.root": str(tmp),
        "model_dir": str(tmp / f"model-{version}"),
        "mlflow.tracking_uri": f"sqlite:///{tmp / 'mlruns.db'}",
        "mlflow.system_metrics_interval_s": "2",
        "data.train": f"[{gt}/train/*.png]",
        "data.val": f"[{gt}/val/*.png]",
        "train.epochs": "2",
        "train.samples_per_epoch": "16",
        "train.batch_size": "8",
        "train.workers": "1",
        "train.augmentations": "0",
        "train.early_stopping_patience": "0",  # off: a tiny model must not stop before the test's epochs
        "train.network": f"'{TINY_NET}'",  # quoted: Hydra's override grammar reserves '='
        "hydra.sweep.dir": str(tmp / "multirun"),
    }
    overrides.update(extra)
    return [f"{k}={v}" for k, v in overrides.items() if v is not None]


def launch(tmp: Path, overrides: list[str], *, multirun: bool = True, timeout: float = 600):
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *(["-m"] if multirun else []), *overrides],
        capture_output=True,
        text=True,
        cwd=tmp,
        timeout=timeout,
        check=False,
    )
    proc.seconds = time.monotonic() - t0
    return proc


def client(tmp: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp / 'mlruns.db'}")


def all_runs(tmp: Path) -> list:
    c = client(tmp)
    return c.search_runs([e.experiment_id for e in c.search_experiments()])


def state_of(model_dir: Path) -> dict:
    return json.loads((model_dir / "hsbcala-state.json").read_text())


def submitted_ids(stderr: str) -> list[str]:
    m = re.search(r"submitted (?:Slurm job|\d+ Slurm jobs as a job array \()([0-9_, …]+)", stderr)
    assert m, stderr[-3000:]
    return [x.strip() for x in m.group(1).split(",") if x.strip()]


def comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return ""


def job_stderr(tmp: Path, job_id: str) -> str:
    return (tmp / "multirun" / ".submitit" / job_id / f"{job_id}_0_log.err").read_text(errors="replace")


# --- no cluster needed -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cluster", ["slurm_local", "zih_power9"])
def test_slurm_cluster_without_m_refuses_to_train_here(tmp_path, cluster):
    # A subprocess: whether -m was given is Hydra's mode as the real train.py sets it (an in-process run would
    # set it itself), and the environment must be one without SLURM_* variables.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"cluster={cluster}", f"paths.root={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hsbcala: error:") and " -m " in lines[0], proc.stderr
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlruns.db").exists()


def test_dry_run_prints_sbatch_and_commands_without_submitting(tmp_path, gt):
    # Subprocesses: -m runs hsbcala's Slurm launcher plugin through Hydra's multirun, as on a login node.
    overrides = tiny(
        tmp_path, gt, "cala1", **{"dry_run": "true", "train.seed": "1,2", "hydra.sweep.dir": None}
    )
    proc = launch(tmp_path, overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "#SBATCH --partition=debug" in out and "#SBATCH --cpus-per-task=1" in out
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --signal=USR2@10" in out and "#SBATCH --time=60" in out
    assert "-m submitit.core._submit" in out and "requeued up to 3 times" in out
    engine = [line for line in out.splitlines() if "calamari-train" in line]
    assert len(engine) == 2 and all("--seed" in line for line in engine)
    assert not any(tmp_path.iterdir()), "a dry run created something"
    # without -m: the same sbatch script, and the one command
    single = launch(tmp_path, tiny(tmp_path, gt, "cala2", dry_run="true"), multirun=False)
    assert single.returncode == 0, single.stderr
    assert "#SBATCH --partition=debug" in single.stdout and "add -m to submit it" in single.stdout
    assert "/bin/calamari-train " in single.stdout.strip().splitlines()[-1]
    # zih_power9 with staged data: the archive is listed (not unpacked) to count the lines for Calamari 1
    staged = launch(
        tmp_path,
        [
            "cluster=zih_power9",
            "version=cala1",
            "dry_run=true",
            "warmstart.model=null",
            f"paths.root={tmp_path}",
            f"cluster.stage.archive={gt / 'gt.tar.gz'}",
        ],
    )
    assert staged.returncode == 0, staged.stderr
    assert "#SBATCH --partition=ml" in staged.stdout and "#SBATCH --gres=gpu:1" in staged.stdout
    assert f"the job would unpack {gt / 'gt.tar.gz'} to /dev/shm/hsbcala/fraktur" in staged.stderr
    assert "--files '/dev/shm/hsbcala/fraktur/train/*.png'" in staged.stdout
    assert not Path("/dev/shm/hsbcala/fraktur").exists() and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "script,version,cluster",
    list(itertools.product(("fraktur", "antiqua"), ("cala1", "cala2"), NEW_CLUSTERS)),
)
def test_new_clusters_compose_and_match_golden(script, version, cluster):
    from tests.test_commands import build, check_golden

    cfg = compose_cfg([f"script={script}", f"version={version}", f"cluster={cluster}"], hydra_node=True)
    schema.check(cfg)
    assert cfg.cluster.slurm and cfg.hydra.launcher._target_.endswith("HsbcalaSlurmLauncher")
    assert cfg.hydra.launcher.max_num_timeout > 0
    check_golden(
        f"{script}-{version}-{cluster}",
        build([f"script={script}", f"version={version}", f"cluster={cluster}"]),
    )


def test_generic_site_settings():
    cfg = compose_cfg(
        ["cluster=slurm_generic", "hydra.launcher.partition=gpu", "cluster.gpus=2"], hydra_node=True
    )
    assert (
        cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gres == "gpu:2" and cfg.cluster.gpus == 2
    )
    assert cfg.data.train == ["/dev/shm/hsbcala/fraktur/train/*.png"]


def test_stage_unpacks_once_shares_and_cleans_up(tmp_path, gt):
    target = tmp_path / "shm" / "fraktur"
    cfg = compose_cfg(
        [f"paths.root={tmp_path}", f"cluster.stage.archive={gt / 'gt.tar.gz'}", f"cluster.stage.dir={target}"]
    )
    first = slurm_job.stage(cfg)
    assert sorted(p.name for p in target.iterdir()) == [slurm_job.STAGE_STAMP, "train", "val"]
    assert len(list((target / "train").glob("*.png"))) == 16
    marker = target / "train" / "marker"
    marker.write_text("unpacked once")
    sleeper = subprocess.Popen(["sleep", "60"])  # stands for a second job on the node
    try:
        stamp = json.loads((target / slurm_job.STAGE_STAMP).read_text())
        stamp["users"].append(sleeper.pid)
        (target / slurm_job.STAGE_STAMP).write_text(json.dumps(stamp))
        second = slurm_job.stage(cfg)
        assert marker.exists(), "an already unpacked archive was unpacked again"
        first.release()
        assert marker.exists(), "removed while another job still used it"
    finally:
        sleeper.kill()
        sleeper.wait()
    second.release()
    assert not target.exists()
    with pytest.raises(slurm_job.DataError, match="cluster.stage.archive"):
        slurm_job.stage(compose_cfg([f"paths.root={tmp_path}", "cluster.stage.archive=missing.tar.gz"]))


def test_staging_on_the_node_keeps_the_data_steps_archive_caps(tmp_path):
    """The job's unpacking to the RAM disk refuses what the login node's data step would: here 50 MB of zeros
    (packed ~50 kB, ratio ~1000) against data.archive_max_ratio, before a byte is written to the stage dir."""
    import io
    import tarfile

    bomb = tmp_path / "gt.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = tarfile.TarInfo("train/zeros.png")
        info.size = 50_000_000
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    target = tmp_path / "shm" / "fraktur"
    overrides = [f"paths.root={tmp_path}", f"cluster.stage.archive={bomb}", f"cluster.stage.dir={target}"]
    with pytest.raises(slurm_job.DataError, match=r"data.archive_max_ratio.*a zip bomb"):
        slurm_job.stage(compose_cfg(overrides))
    assert not target.exists() and not any(
        p.name.startswith(".fraktur.unpacking") for p in target.parent.iterdir()
    )
    trusted = slurm_job.stage(
        compose_cfg([*overrides, "data.archive_max_ratio=0"])
    )  # the cap's key turns it off
    assert (target / "train" / "zeros.png").stat().st_size == 50_000_000
    trusted.release()


# --- against the local Slurm cluster -------------------------------------------------------------------------------
def test_tiny_training_through_slurm_with_staged_data(slurm_cluster, tmp_path, gt):
    """cala2, data unpacked from gt.tar.gz to a RAM disk directory by the job, removed at its end."""
    stage_dir = Path("/dev/shm") / f"hsbcala-test-{uuid.uuid4().hex[:8]}" / "fraktur"
    overrides = tiny(
        tmp_path,
        gt,
        "cala2",
        **{
            "cluster.stage.archive": str(gt / "gt.tar.gz"),
            "cluster.stage.dir": str(stage_dir),
            "data.train": "[${cluster.stage.dir}/train/*.png]",
            "data.val": "[${cluster.stage.dir}/val/*.png]",
        },
    )
    try:
        proc = launch(tmp_path, overrides)
    finally:
        shutil.rmtree(stage_dir.parent, ignore_errors=True)
    print(f"\nsubmit -> finish: {proc.seconds:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = submitted_ids(proc.stderr)
    model_dir = tmp_path / "model-cala2"
    state = state_of(model_dir)
    assert state["status"] == "finished" and state["history"][0]["slurm_job_id"] == job
    run = client(tmp_path).get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    assert 0 <= run.data.metrics["best_val_cer"] <= 2 and "val_cer" in run.data.metrics
    assert run.data.tags["slurm.job_id"] == job and run.data.tags["slurm.node"] == slurm_cluster.hostname
    assert run.data.tags["slurm.job_name"] == "fraktur-cala2"  # not "train" in squeue
    assert re.fullmatch(r"model-cala2-\d{8}-\d{4}", run.info.run_name)  # the run names its model dir and when
    assert run.data.metrics["slurm/elapsed_s"] > 10 and 0 < run.data.metrics["slurm/cpu_efficiency"] < 3
    assert run.data.metrics["slurm/max_rss_mb"] > 100
    err = job_stderr(tmp_path, job)
    assert f"unpacked {gt / 'gt.tar.gz'} to {stage_dir}" in err and "removed the staged data" in err
    assert not stage_dir.exists()


def test_walltime_requeue_resumes_from_checkpoint_in_one_run(slurm_cluster, tmp_path, gt):
    """A 1-minute limit and 200 epochs (~45 s at least) after ~20 s of start-up: requeued at least once, then finished.

    Sized for this 2-core machine: the first job trains for 9-39 s (USR2 comes 29-59 s after its start, the first
    checkpoint 15-20 s after it), every requeued job for ~25 s (USR2 ~45 s after its start). 150 epochs of 0.3-0.5 s
    cannot fit into the first job even when it is fast and its USR2 late, and need 2-4 jobs. 8 are allowed
    (max_num_timeout=7): on a machine busy with other work an epoch takes up to 1 s and a job's start-up up to
    30 s, so 6-7 jobs may be needed (and if the first job gets USR2 before its first checkpoint, the second
    starts from zero and the test fails: it needs the machine to itself, as in CI).
    """
    overrides = tiny(
        tmp_path,
        gt,
        "cala2",
        **EVEN_EPOCHS,
        **{
            # 150 epochs fitted into one 1-minute job once hsbcala stopped echoing the engine's output (one CI
            # run: 55 s, no requeue); 200 cannot on an idle machine (~0.23 s an epoch), and 10 jobs allow a busy one
            "train.epochs": "200",
            "hydra.launcher.timeout_min": "1",
            "hydra.launcher.signal_delay_s": "1",
            "hydra.launcher.max_num_timeout": "9",
        },
    )
    proc = launch(tmp_path, overrides, timeout=900)
    print(f"\nsubmit -> finish: {proc.seconds:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (job,) = submitted_ids(proc.stderr)
    state = state_of(tmp_path / "model-cala2")
    history = state["history"]
    starts = [time.mktime(time.strptime(h["started"], "%Y-%m-%dT%H:%M:%S")) for h in history]
    print(
        "jobs started at "
        + ", ".join(
            f"+{s - starts[0]:.0f} s (from {Path(h['resumed_from']).parent.name if h['resumed_from'] else 'scratch'})"
            for s, h in zip(starts, history)
        )
    )
    assert len(history) >= 2, f"never requeued: {history}"
    assert {h["slurm_job_id"] for h in history} == {job}, "requeued, not resubmitted"
    assert history[0]["resumed_from"] is None
    resumed_at = [
        int(re.search(r"checkpoint_(\d+)", h["resumed_from"] or "checkpoint_0").group(1)) for h in history[1:]
    ]
    assert all(e > 0 for e in resumed_at), f"a requeued job started from zero: {history}"
    assert resumed_at == sorted(resumed_at), "a requeued job went back to an older checkpoint"
    assert state["status"] == "finished"
    err = job_stderr(tmp_path, job)
    assert "Caught signal SIGUSR2" in err and "this job is timed-out" in err
    # one continuous MLflow run: the only run, FINISHED, one accounting point per job, epochs went on
    runs = all_runs(tmp_path)
    assert [r.info.run_id for r in runs] == [state["run_id"]] and runs[0].info.status == "FINISHED"
    jobs = client(tmp_path).get_metric_history(state["run_id"], "slurm/elapsed_s")
    assert sorted(m.step for m in jobs) == list(range(len(history)))
    epochs = sorted({m.step for m in client(tmp_path).get_metric_history(state["run_id"], "val_cer")})
    assert epochs[-1] == 200 and any(e > resumed_at[0] for e in epochs), (resumed_at, epochs)


def test_sweep_is_one_job_array_with_a_model_dir_and_run_per_point(slurm_cluster, tmp_path, gt):
    overrides = tiny(tmp_path, gt, "cala1", **{"model_dir": None, "train.epochs": "1", "train.seed": "1,2"})
    proc = launch(tmp_path, overrides)
    print(f"\nsubmit -> finish (2 points side by side): {proc.seconds:.0f} s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids = submitted_ids(proc.stderr)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"], ids
    model_dirs = sorted(p.parent for p in (tmp_path / "models").rglob("hsbcala-state.json"))
    assert len(model_dirs) == 2, model_dirs
    assert "train.seed=1" in model_dirs[0].name and "train.seed=2" in model_dirs[1].name, model_dirs
    states = [state_of(d) for d in model_dirs]
    runs = [client(tmp_path).get_run(s["run_id"]) for s in states]
    assert len({r.info.run_id for r in runs}) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["slurm.array"] for r in runs} == set(ids)  # slurm.job_id: each task's own job id
    # named after the runs in squeue (one name per array: the part the points share), not "train"
    assert {r.data.tags["slurm.job_name"] for r in runs} == {"fraktur-cala1-sweep"}
    assert [s["history"][0]["slurm_job_id"] for s in states] == [r.data.tags["slurm.job_id"] for r in runs]
    assert sorted(p.name for p in (tmp_path / "multirun").iterdir() if p.name.isdigit()) == ["0", "1"]


def test_sbatch_refusal_is_one_clear_line(slurm_cluster, tmp_path, gt):
    proc = launch(tmp_path, tiny(tmp_path, gt, "cala2", **{"hydra.launcher.partition": "no_such_partition"}))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hsbcala: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert (
        "sbatch refused the job" in errors[0]
        and "invalid partition specified: no_such_partition" in errors[0]
    )
    assert not (tmp_path / "model-cala2").exists()
    assert not all_runs(tmp_path), "an MLflow run was created"


def test_job_failing_on_the_node_is_reported_with_its_logs(slurm_cluster, tmp_path, gt):
    """Two trainings on one model directory: the job finds the directory locked, fails; the launcher reports it."""
    model_dir = tmp_path / "model-cala2"
    model_dir.mkdir()
    with open(model_dir / ".hsbcala.lock", "w") as lock:  # another training holds the model directory
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        proc = launch(tmp_path, tiny(tmp_path, gt, "cala2"))
    assert proc.returncode == 2, proc.stderr[-3000:]
    (job,) = submitted_ids(proc.stderr)
    err = proc.stderr
    assert (
        f"hsbcala: error: Slurm job {job} failed: model_dir {model_dir} is in use by another training" in err
    )
    logs = tmp_path / "multirun" / ".submitit" / job
    assert f"stdout: {logs / f'{job}_0_log.out'}" in err and f"stderr: {logs / f'{job}_0_log.err'}" in err
    assert "last lines of stderr:" in err and "Traceback" not in err
    assert not all_runs(tmp_path), "an MLflow run was created"


def test_job_dying_without_a_result_is_noticed(slurm_cluster, tmp_path, gt):
    """SIGKILL leaves no result file; without Slurm accounting submitit would wait for it forever."""
    launcher = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *tiny(tmp_path, gt, "cala2")],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        head = ""
        while "submitted Slurm job" not in head:
            line = launcher.stderr.readline()
            assert line, f"the launcher ended before submitting: {head[-3000:]}"
            head += line
        (job,) = submitted_ids(head)
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                ["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, check=False
            ).stdout.strip()
            != "RUNNING"
        ):
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.5)
        folder = str(
            tmp_path / "multirun" / ".submitit"
        )  # the job's python: ... -m submitit.core._submit <folder>
        pids = []
        while not pids:
            assert time.monotonic() < deadline, "the job's python did not start"
            found = subprocess.run(
                ["pgrep", "-f", f"submitit.core._submit {folder}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.split()
            pids = [int(p) for p in found if comm(p).startswith("python")]
            time.sleep(0.5)
        time.sleep(2)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # a hard death: no handler runs, no result is written
        err = head + launcher.communicate(timeout=180)[1]
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 1, err[-3000:]
    assert re.search(rf"Slurm job {job} failed: the job ended \(\w+\) without a result", err), err[-3000:]
    assert f"stderr: {tmp_path / 'multirun' / '.submitit' / job / f'{job}_0_log.err'}" in err


def test_scancel_ends_the_run_killed_and_a_relaunch_resumes(slurm_cluster, tmp_path, gt):
    overrides = tiny(tmp_path, gt, "cala2", **EVEN_EPOCHS, **{"train.epochs": "10"})
    model_dir = tmp_path / "model-cala2"
    t0 = time.monotonic()
    first = subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *overrides],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300
        while not (
            list(model_dir.glob("checkpoint/checkpoint_*/trainer_params.json"))
            and (model_dir / "hsbcala-state.json").exists()
        ):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.5)
        job = state_of(model_dir)["history"][0]["slurm_job_id"]
        t1 = time.monotonic()
        subprocess.run(["scancel", job], check=True)
        err = first.communicate(timeout=120)[1]
        print(
            f"\nsubmit -> first checkpoint {t1 - t0:.0f} s, scancel -> launcher's report {time.monotonic() - t1:.0f} s"
        )
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGINT)
            first.wait(30)
    assert first.returncode == 130, err[-3000:]
    assert f"Slurm job {job} failed: interrupted by SIGTERM" in err and "stderr: " in err
    run_id = state_of(model_dir)["run_id"]
    assert client(tmp_path).get_run(run_id).info.status == "KILLED"

    again = launch(tmp_path, overrides)
    print(f"relaunch: submit -> finish {again.seconds:.0f} s")
    assert again.returncode == 0, again.stderr[-3000:]
    state = state_of(model_dir)
    assert state["run_id"] == run_id and state["status"] == "finished"
    assert state["history"][-1]["resumed_from"], "the relaunch did not resume"
    assert client(tmp_path).get_run(run_id).info.status == "FINISHED"


def test_bad_data_is_refused_on_the_login_node_before_anything_is_submitted(tmp_path, gt):
    """The data step runs for every point before submission (no Slurm needed: nothing reaches it)."""
    overrides = tiny(
        tmp_path, gt, "cala2", **{"data.train": f"[{gt}/train/*.png],[{tmp_path}/nowhere/*.png]"}
    )
    proc = launch(tmp_path, overrides)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hsbcala: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-3000:]
    assert f"data.train: pattern '{tmp_path}/nowhere/*.png' matches no file" in errors[0]
    assert "submitted" not in proc.stderr and not (tmp_path / "multirun" / ".submitit").exists()
    assert not list((tmp_path / "models").rglob("*")) if (tmp_path / "models").exists() else True


SITE_CONFIGS = ("zih_capella", "zih_power9", "slurm_generic")


@pytest.mark.slurm  # a dry run only (nothing is submitted); in the Slurm tier because it is about Slurm
@pytest.mark.parametrize("cluster,version", list(itertools.product(SITE_CONFIGS, ("cala1", "cala2"))))
def test_site_sbatch_script_matches_golden(tmp_path, gt, cluster, version):
    """The sbatch script each site config renders (resources, partition, signal, Python on the node), as a
    user of that site would submit it; regenerate with HSBCALA_REGEN_GOLDEN=1 after a deliberate change."""
    from tests.test_commands import GOLDEN, compare_golden

    proc = launch(
        tmp_path,
        [
            f"cluster={cluster}",
            f"version={version}",
            "dry_run=true",
            "warmstart.model=null",
            f"paths.root={tmp_path}",
            f"cluster.stage.archive={gt / 'gt.tar.gz'}",
        ],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    start = lines.index("#!/bin/bash")
    end = next(i for i, x in enumerate(lines) if x.startswith("# on walltime"))
    text = "\n".join(lines[start : end + 1]) + "\n"
    import tempfile

    text = text.replace(str(tmp_path), "$ROOT").replace(sys.executable, "$PYTHON")
    text = text.replace(tempfile.gettempdir() + "/hsbcala-dry-run", "$TMP/hsbcala-dry-run")
    compare_golden(GOLDEN / f"sbatch-{cluster}-{version}.txt", text, "sbatch script")
