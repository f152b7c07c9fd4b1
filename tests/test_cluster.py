"""Running on a Ray cluster: the autoscaler config, a real multi-node Ray on this machine,
fractional (logical) GPUs, and an object-store output on a local S3 server.

The multi-node tests start their cluster in a separate process (tests/cluster_sweep_script.py),
since this test session already has its own Ray in-process (`ray_local`), and make sure every
process of it is gone afterwards, also when the test fails.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = Path(__file__).resolve().parent / "cluster_sweep_script.py"

# One scenario, so that concurrent trials need the *same* reference models: the first two
# (ce and mpt) both need M1 at once, every mpt trial needs phi_new. Grid order is fixed.
SHARED_REFS_SPACE = """
name: cluster
scenario:
  datasets: [digits]
  arrangements: [exclusive-op]
  models: ["flipsearch_faults:gated"]  # a small model that waits at the test's gate
  seeds: [0]
  scale: 0.5
  training: {epochs: 2, batch_size: 64}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: grid, trials_per_scenario: 6, seed: 0, concurrency: 2, cpus_per_trial: 1}
methods:
  ce: {}
  mpt: {k: {choice: [0, 1, 2, 4, 8]}}
"""


# ---------------------------------------------------------------------------------------
# cluster.yaml


def _ray_schema() -> dict:
    import ray.autoscaler

    with open(os.path.join(os.path.dirname(ray.autoscaler.__file__), "ray-schema.json")) as f:
        return json.load(f)


def _validate(config: dict) -> dict:
    """Ray's own checks: the raw file against ray-schema.json (no unknown keys), then the
    config merged with the provider's defaults, as `ray up` does."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    jsonschema.validate(config, _ray_schema())
    full = prepare_config(copy.deepcopy(config))
    validate_config(full)
    return full


def _cluster_yaml() -> tuple[dict, str]:
    text = (ROOT / "cluster.yaml").read_text()
    return yaml.safe_load(text), text


def _gcp_variant(text: str) -> dict:
    lines = text.splitlines()
    start, end = lines.index("# >>> gcp"), lines.index("# <<< gcp")
    return yaml.safe_load("\n".join(line[2:] for line in lines[start + 1:end]))


def test_cluster_yaml_validates_against_the_installed_rays_schema():
    config, _ = _cluster_yaml()
    full = _validate(config)
    assert full["provider"]["type"] == "aws"
    assert full["available_node_types"]["gpu_worker"]["max_workers"] <= full["max_workers"]


def test_cluster_yaml_gcp_variant_validates_too():
    config, text = _cluster_yaml()
    variant = _gcp_variant(text)
    assert set(variant) == {"provider", "auth", "available_node_types", "head_node_type"}
    full = _validate({**config, **variant})
    assert full["provider"]["type"] == "gcp"
    assert full["available_node_types"]["head"]["resources"] == {"CPU": 0}


def test_schema_check_is_not_vacuous():
    config, _ = _cluster_yaml()
    import jsonschema

    bad = {**config, "idle_timeout_minuts": 5}
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minuts"):
        _validate(bad)
    bad = copy.deepcopy(config)
    bad["available_node_types"]["head"]["resources"] = {"CPU": -1}
    with pytest.raises(jsonschema.ValidationError):
        _validate(bad)


def test_cluster_yaml_head_runs_no_trials_workers_are_gpu_spot_and_nothing_is_exposed():
    config, _ = _cluster_yaml()
    head = config["available_node_types"][config["head_node_type"]]
    workers = [v for k, v in config["available_node_types"].items() if k != config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--num-cpus=0" in head_start
    for w in workers:
        assert w["min_workers"] == 0
        assert w["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
        assert w["node_config"]["InstanceType"].startswith(("g", "p"))  # NVIDIA GPU families
    assert 1 <= config["idle_timeout_minutes"] <= 60
    assert "gpu" in config["docker"]["image"]
    # No port but SSH reaches the cluster: no extra ingress rules, dashboard on loopback only.
    assert "IpPermissions" not in config["provider"].get("security_group", {})
    assert "--dashboard-host=127.0.0.1" in head_start and "0.0.0.0" not in head_start
    # Token authentication on every node, with the same token everywhere.
    assert "RAY_AUTH_MODE=token" in head_start
    assert "RAY_AUTH_MODE=token" in " ".join(config["worker_start_ray_commands"])
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    # flipsearch is installed on both kinds of node, CPU torch on the head only.
    for cmds in (config["head_setup_commands"], config["worker_setup_commands"]):
        assert any("pip install" in c and "~/flipsearch" in c for c in cmds)
    assert any("whl/cpu" in c for c in config["head_setup_commands"])
    assert not any("whl/cpu" in c for c in config["worker_setup_commands"])


# ---------------------------------------------------------------------------------------
# small pieces of the cluster path that need no cluster


def test_child_uri_keeps_the_endpoint_query_of_an_object_store_uri():
    from flipsearch.storage import Storage

    out = Storage("s3://bucket/runs/a?endpoint_override=127.0.0.1:9000&scheme=http", None, "bucket/runs/a")
    assert out.child_uri("references") == "s3://bucket/runs/a/references?endpoint_override=127.0.0.1:9000&scheme=http"
    assert out.sub("trials").root == "bucket/runs/a/trials"
    assert Storage.open("/tmp/x/").child_uri("ray", "t") == "/tmp/x/ray/t"


def test_mixed_precision_recipe_is_ignored_on_the_cpu():
    """`amp: true` only acts on CUDA; on the CPU it trains exactly as without it."""
    import torch

    from flipsearch.models import build_model
    from flipsearch.train import TrainRecipe, fit

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    states = []
    for amp in (False, True):
        model = build_model("small", 3, (1, 8, 8), seed=0)
        fit(model, x, y, TrainRecipe(epochs=2, batch_size=16, amp=amp), seed=0)
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


# ---------------------------------------------------------------------------------------
# a real multi-node Ray in a subprocess


def _ours(marker: str) -> list[int]:
    """Pids of live processes whose command line or environment mentions `marker` (the
    cluster's private temp dir: Ray's processes carry it in one or the other)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{entry}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        if marker.encode() in cmd or marker.encode() in env:
            pids.append(int(entry))
    return pids


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def run_on_cluster(tmp_path: Path, workers: list[dict], sweeps: list[dict], timeout: float = 150) -> dict:
    """Start a head (0 CPUs) plus `workers` in a subprocess, run `flipsearch sweep *args
    --address HEAD` for each of `sweeps` ({"args": [...], "release_when": {...}}) against it,
    one after the other, stop everything; return the script's report. With `release_when` the
    sweep's model must be flipsearch_faults:gated: its trials wait until the cluster's free
    resources have fallen to those values (see cluster_sweep_script.py)."""
    # Short on purpose: Ray's socket paths live under it and must stay below ~107 bytes.
    ray_tmp = tempfile.mkdtemp(prefix="fsc-", dir="/tmp")
    spec_path, report_path = tmp_path / "spec.json", tmp_path / "report.json"
    spec_path.write_text(json.dumps({"workers": workers, "sweeps": sweeps, "timeout": timeout}))
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(
        RAY_TMPDIR=ray_tmp,  # Ray's files and the address file `ray.init()` looks for: private
        RAY_AUTH_MODE="token",  # as on the real cluster
        # Every node and driver on 127.0.0.1: Ray's node-IP detection would pick this
        # machine's interface address instead.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1", RAY_DEDUP_LOGS="0",
        FLIPSEARCH_GATE=str(gate), FLIPSEARCH_GATE_ROWS="0", FLIPSEARCH_GATE_OUT="")
    log = open(tmp_path / "cluster.log", "w")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), str(spec_path), str(report_path)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    leaked: list[int] = []
    try:
        try:
            proc.wait(timeout=timeout * len(sweeps) + 60)
        except subprocess.TimeoutExpired:
            proc.terminate()  # the script stops its sweep and cluster in order on SIGTERM
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
    finally:
        _kill_group(proc.pid, signal.SIGKILL)  # the script's session: itself, Ray, the sweep
        proc.wait()
        log.close()
        deadline = time.monotonic() + 15
        while (leaked := _ours(ray_tmp)) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in leaked:  # escaped the session: ours all the same (they name our temp dir)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not leaked, f"cluster processes outlived the test: {leaked}"
    assert report_path.exists(), (tmp_path / "cluster.log").read_text()[-3000:]
    report = json.loads(report_path.read_text())
    done = report.get("sweeps", [])
    assert "error" not in report and len(done) == len(sweeps) and all(r["returncode"] == 0 for r in done), \
        f"{report.get('error')}\n{(done or [{}])[-1].get('stderr', '')[-3000:]}\n" \
        f"{(tmp_path / 'cluster.log').read_text()[-2000:]}"
    return report


def test_a_cluster_that_misses_rays_start_up_deadline_is_started_again(monkeypatch):
    """Ray gives a starting node 30 s to register (a constant); on one core shared by two
    suites a node can miss it. The cluster script then starts the cluster again, and any
    other start-up error still fails at once."""
    import importlib.util

    import ray.cluster_utils

    spec = importlib.util.spec_from_file_location("cluster_sweep_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    made = []

    class FlakyCluster:  # the first start misses the deadline, the second comes up
        def __init__(self, initialize_head, head_node_args):
            made.append(self)
            self.nodes, self.down = [], False
            if len(made) == 1:
                raise Exception("The current node timed out during startup. This could happen ...")

        def add_node(self, **node):
            self.nodes.append(node)

        def wait_for_nodes(self):
            pass

        def shutdown(self):
            self.down = True

    monkeypatch.setattr(ray.cluster_utils, "Cluster", FlakyCluster)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # running before the start
    try:
        cluster, attempts = script.start_cluster([{"num_cpus": 1}, {"num_cpus": 1}])
        assert child.poll() is None  # the retry kills only what the failed start left, not this
    finally:
        child.kill()
        child.wait()
    assert attempts == 2 and cluster is made[1] and len(cluster.nodes) == 2

    class BrokenCluster(FlakyCluster):
        def __init__(self, initialize_head, head_node_args):
            made.append(self)
            raise ValueError("not a start-up deadline")

    monkeypatch.setattr(ray.cluster_utils, "Cluster", BrokenCluster)
    made.clear()
    with pytest.raises(ValueError, match="not a start-up deadline"):
        script.start_cluster([{"num_cpus": 1}])
    assert len(made) == 1  # not retried


QUARTER_GPU_SPACE = """
name: gpu
scenario:
  datasets: [digits]
  arrangements: [exclusive-op]
  models: ["flipsearch_faults:gated"]
  scale: 0.5
  training: {epochs: 2, batch_size: 64, amp: true}
objectives: [accuracy_new:max, nfr:min]
search: {sampler: random, trials_per_scenario: 4, seed: 0}
methods:
  ce: {init: {choice: [old, scratch]}}
"""


@pytest.fixture(scope="module")
def cluster_sweeps(tmp_path_factory):
    """Two sweeps on one real cluster (starting one is the costly part): a head with no CPUs,
    node A with 1 CPU, node B with 1 CPU and 1 GPU (logical: this machine has none).
    1. SHARED_REFS_SPACE, 1 CPU a trial: every trial waits at the gate until both nodes' CPUs
       are held at once, so two trials run on different nodes at the same time, by construction.
    2. QUARTER_GPU_SPACE with --gpus-per-trial 0.25 --cpus-per-trial 0.25: its trials wait
       until four quarter GPUs are held at once, so Ray runs four trials on B's one GPU.
    Returns (the folder holding both sweeps' --out, the script's report)."""
    base = tmp_path_factory.mktemp("cluster")
    (base / "shared.yaml").write_text(SHARED_REFS_SPACE)
    (base / "gpu.yaml").write_text(QUARTER_GPU_SPACE)
    report = run_on_cluster(base, [{"num_cpus": 1}, {"num_cpus": 1, "num_gpus": 1}], [
        {"args": [str(base / "shared.yaml"), "--out", str(base / "shared"), "--quiet"],  # one disk for all nodes: NFS
         "release_when": {"CPU": 0.0}},
        {"args": [str(base / "gpu.yaml"), "--out", str(base / "gpu"), "--quiet", "--gpus-per-trial", "0.25",
                  "--cpus-per-trial", "0.25", "--concurrency", "4"], "release_when": {"GPU": 0.0}}])
    assert report["total"] == {"CPU": 2.0, "GPU": 1.0}
    return base, report


@pytest.mark.cluster
@pytest.mark.slow
def test_sweep_on_a_multinode_cluster_shares_reference_models(cluster_sweeps):
    base, report = cluster_sweeps
    out, run = base / "shared", report["sweeps"][0]
    assert run.get("released") and run["min_available"]["CPU"] == 0.0

    from flipsearch.results import read_results

    rows = read_results(str(out))
    # Complete: every trial exactly once, all ok, all from this one run.
    assert sorted(rows["trial_number"]) == list(range(6)) and len(rows) == 6
    assert set(rows["status"]) == {"ok"} and rows["run_id"].nunique() == 1
    assert sorted(rows["method"]) == ["ce"] + ["mpt"] * 5

    # Trials ran on both worker nodes (above: at the same time), never on the 0-CPU head.
    workers = set(report["worker_node_ids"])
    assert set(rows["node_id"]) == workers and report["head_node_id"] not in set(rows["node_id"])

    # Each reference model was trained exactly once across nodes; every other use loaded it.
    assert (rows["ref_m1"] == "miss").sum() == 1 and (rows["ref_m1"] == "hit").sum() == 5
    mpt = rows[rows["method"] == "mpt"]
    assert (mpt["ref_phi_new"] == "miss").sum() == 1 and (mpt["ref_phi_new"] == "hit").sum() == 4
    assert rows.loc[rows["method"] == "ce", "ref_phi_new"].isna().all()
    models = sorted(p.name.split("-")[0] for p in (out / "references").glob("*.pt"))
    assert models == ["m1", "phi_new"]
    assert "6 trials this run (ok 6); reference models: 2 trained, 9 cache hits" in run["stdout"]
    # No GPU asked for, none handed over (node B has one)
    assert rows["device"].eq("cpu").all() and rows["gpu_ids"].fillna("").eq("").all()


@pytest.mark.cluster
@pytest.mark.slow
def test_quarter_gpus_pack_four_trials_on_one_logical_gpu_and_fall_back_to_cpu(cluster_sweeps):
    """A node that declares one GPU (logical: this machine has none). With
    --gpus-per-trial 0.25 Ray runs four trials on it at once, each is handed GPU 0, and torch,
    finding no CUDA, trains on the CPU, mixed precision requested or not."""
    base, report = cluster_sweeps
    run = report["sweeps"][1]
    # The trials waited at the gate until four quarter GPUs were held at one time.
    assert run.get("released") and run["min_available"]["GPU"] == 0.0

    from flipsearch.results import read_results

    rows = read_results(str(base / "gpu"))
    assert len(rows) == 4 and set(rows["status"]) == {"ok"}
    assert set(rows["gpu_ids"]) == {"0"}  # Ray's assignment reached every trial
    assert set(rows["device"]) == {"cpu"} and rows["m1_amp"].all() and rows["update_amp"].all()
    assert rows["node_id"].nunique() == 1 and set(rows["node_id"]) < set(report["worker_node_ids"])


# ---------------------------------------------------------------------------------------
# an object-store output: a local S3 server on loopback


@pytest.fixture
def s3_out(tmp_path, monkeypatch):
    """An empty bucket on a moto S3 server on 127.0.0.1; yields the `--out` URI. Endpoint and
    (dummy) credentials ride in the URI, so Ray's workers reach the server as the driver does."""
    import logging

    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud for credentials
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        # moto keeps its buckets per process, not per server: each test gets a folder of its own
        uri = (f"s3://testing:testing@flipsearch/runs/{tmp_path.name}?endpoint_override=127.0.0.1:{port}"
               "&scheme=http&region=us-east-1")
        fs, _ = pafs.FileSystem.from_uri(uri + "&allow_bucket_creation=true")
        fs.create_dir("flipsearch")  # the bucket exists beforehand, as a real one would
        yield uri
    finally:
        server.stop()


@pytest.mark.ray
@pytest.mark.slow
def test_sweep_resume_report_and_export_on_an_s3_uri(ray_local, tiny_space, s3_out, tmp_path, monkeypatch):
    import optuna
    import pyarrow.fs as pafs
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from flipsearch.results import read_results
    from flipsearch import sweep
    from flipsearch.storage import Storage

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the driver's journal mirror goes here
    space = tiny_space(SHARED_REFS_SPACE.replace('"flipsearch_faults:gated"', "small"))
    summary = sweep(space, out=s3_out, trials_per_scenario=4, quiet=True)
    assert summary.trials_run == 4 and not summary.interrupted

    out = Storage.open(s3_out)
    assert not out.is_local
    rows = read_results(s3_out)
    assert sorted(rows["trial_number"]) == [0, 1, 2, 3] and set(rows["status"]) == {"ok"}
    # The lease-lock actor let exactly one trial train each model; the first two trials
    # (ce and mpt) asked for M1 at the same time on the session's two CPUs.
    assert (rows["ref_m1"] == "miss").sum() == 1 and (rows["ref_phi_new"] == "miss").sum() == 1
    refs = out.sub("references")
    assert sorted(n.split("-")[0] for n in refs.list(suffix=".pt")) == ["m1", "phi_new"]
    assert len(refs.list(suffix=".sha256")) == 2 and not refs.list(suffix=".lock")
    assert out.exists("optuna.journal") and out.exists("sweep.json") and not out.exists("sweep.lock")
    tune_dirs = out.fs.get_file_info(pafs.FileSelector(out.path("ray")))
    assert any(i.base_name.startswith("tune-") for i in tune_dirs)  # Tune's storage_path is the bucket

    # Resume from the bucket alone: the local journal mirror is gone, the studies come back
    # from the bucket's journal, and trial numbers continue instead of starting over.
    shutil.rmtree(tmp_path / "home" / ".cache")
    summary = sweep(space, out=s3_out, resume=True, trials_per_scenario=6, quiet=True)
    assert summary.trials_run == 2
    rows = read_results(s3_out)
    assert sorted(rows["trial_number"]) == list(range(6)) and set(rows["status"]) == {"ok"}
    assert (rows["ref_m1"] == "miss").sum() == 1  # the resumed trials loaded M1 from the bucket

    journal = tmp_path / "journal"
    journal.write_bytes(out.read_bytes("optuna.journal"))
    study = optuna.load_study(study_name="digits__exclusive-op__small",
                              storage=JournalStorage(JournalFileBackend(str(journal))))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6

    # The report reads the sweep from the bucket and writes its files back there.
    from click.testing import CliRunner

    from flipsearch.cli import cli

    result = CliRunner().invoke(cli, ["report", s3_out, "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["counts"] == {"ok": 6}
    written = out.sub("report")
    assert {"index.html", "summary.md", "front.parquet"} <= set(written.list())
    assert b"mpt" in written.read_bytes("summary.md")

    # The models of the validation front (search.keep's default) are kept in the bucket, and the
    # recommended one is exported from it, its test metrics recomputed from the loaded model;
    # its card names the sweep without credentials or endpoint options.
    from flipsearch import export_update
    from flipsearch.kept_models import kept_uids
    from test_kept_models import independent_front

    front = independent_front(rows)
    assert front and kept_uids(s3_out) == front
    files = export_update(s3_out, str(tmp_path / "ship"), recommended=True)
    card = json.loads((tmp_path / "ship" / "card.json").read_text())
    assert len(files) == 4 and card["trial_uid"] in front and card["check"]["test_metrics_reproduced"]
    assert card["sweep"] == f"s3://flipsearch/runs/{tmp_path.name}"
