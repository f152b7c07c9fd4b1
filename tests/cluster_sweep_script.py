"""Start a real multi-node Ray on this machine, run `flipsearch sweep --address` against it
(one sweep or several, one after the other), stop it.

tests/test_cluster.py runs this in a process of its own (the test session has its own Ray):

    python tests/cluster_sweep_script.py SPEC.json REPORT.json

SPEC is {"workers": [{"num_cpus": 1}, ...], "sweeps": [{"args": [arguments after `flipsearch
sweep`], "release_when": {"CPU": 0.0}}, ...], "timeout": seconds per sweep}. Each worker entry
is a node's `ray start` resources (`num_cpus`, `num_gpus`, `resources`). The head node has no
CPUs, so no trial can run on it: a trial that ran, ran on a worker node. Every node listens on
127.0.0.1, and Ray's files (sockets, logs, the address file that `ray.init()` looks for) live
under $RAY_TMPDIR, which the test points at a private directory: no other Ray on the machine
can find this cluster, nor this cluster another one. Starting the cluster is the costly part,
so tests that need the same nodes share one start.

REPORT gets the cluster's address, node ids and total resources, and per sweep its exit status
and output and the least of each resource Ray had free while it ran (`min_available`: 0 GPU
means every GPU share was held at once). With "release_when", the sweep's model is
tests/flipsearch_faults.py:gated (the test sets FLIPSEARCH_GATE): every trial waits at the gate
until this script has seen Ray's free resources fall to those values, and only then opens it
(the sweep's "released"); the gate is closed again before the next sweep. So trials that must
run at once on the cluster provably did, whatever the machine's speed. Every process is
stopped on the way out, on an error or SIGTERM too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

LOOPBACK = "127.0.0.1"
WATCHED = ("CPU", "GPU")


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)  # unwinds through the finally blocks below


def start_cluster(workers: list[dict], attempts: int = 3):
    """(the started cluster, attempts it took): a head with no CPUs and `workers`, every node
    on loopback. Ray gives a starting node 30 s to register with the GCS (a constant in
    ray/_private/node.py); a machine loaded enough to miss that (one core shared by two test
    suites) gets the cluster started again, whatever of it had started killed first, up to
    `attempts` times."""
    from ray.cluster_utils import Cluster

    import psutil  # Ray's bundled copy, on the path once ray is imported

    me = psutil.Process()
    for attempt in range(1, attempts + 1):
        cluster = None
        before = {c.pid for c in me.children(recursive=True)}  # never kill what was running before
        try:
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 0, "num_gpus": 0, "node_ip_address": LOOPBACK, "include_dashboard": False})
            for node in workers:
                cluster.add_node(node_ip_address=LOOPBACK, **node)
            cluster.wait_for_nodes()
            return cluster, attempt
        except Exception as e:  # noqa: BLE001 - only Ray's start-up deadline is retried
            if "timed out during startup" not in str(e) or attempt == attempts:
                raise
            if cluster is not None:
                cluster.shutdown()
            started = [c for c in me.children(recursive=True) if c.pid not in before]  # a node that half started
            for child in started:
                child.kill()
            psutil.wait_procs(started, timeout=30)


def _run_sweep(ray, address: str, job: dict, timeout: float, total: dict, stem: str, result: dict) -> None:
    """Run one sweep to its end (or `timeout`, or this script's SIGTERM: it is killed on the way
    out), watching the free resources; fills `result`."""
    gate = os.environ.get("FLIPSEARCH_GATE")
    if gate and os.path.exists(os.path.join(gate, "release")):
        os.remove(os.path.join(gate, "release"))  # closed again: this sweep's trials wait too
    low = dict(total)
    cmd = [sys.executable, "-m", "flipsearch.cli", "sweep", *job["args"], "--address", address]
    with open(f"{stem}.stdout", "w") as out, open(f"{stem}.stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    result["timed_out"] = True
                    break
                free = ray.available_resources()  # a fully used resource is absent
                for k in low:
                    low[k] = min(low[k], float(free.get(k, 0.0)))
                release_when = job.get("release_when")
                if release_when and not result.get("released") and \
                        all(low.get(k, float("inf")) <= v for k, v in release_when.items()):
                    open(os.path.join(gate, "release"), "w").close()
                    result["released"] = True  # the trials held at the gate held these resources at once
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    result.update(returncode=proc.returncode, min_available=low)
    for stream in ("stdout", "stderr"):
        with open(f"{stem}.{stream}") as f:
            result[stream] = f.read()[-20000:]


def main(spec_path: str, report_path: str) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    with open(spec_path) as f:
        spec = json.load(f)
    report: dict = {}
    workdir = os.path.dirname(os.path.abspath(report_path))
    cluster = None
    try:
        import ray

        cluster, report["start_attempts"] = start_cluster(spec["workers"])
        report.update(address=cluster.address, head_node_id=cluster.head_node.node_id,
                      worker_node_ids=[n.node_id for n in cluster.worker_nodes])

        # A second driver that only watches the cluster's free resources while a sweep runs.
        ray.init(address=cluster.address, log_to_driver=False)
        signal.signal(signal.SIGTERM, _on_sigterm)  # ray.init installed its own handler
        report["total"] = {k: v for k, v in ray.cluster_resources().items() if k in WATCHED}
        report["sweeps"] = []
        for i, job in enumerate(spec["sweeps"]):
            result: dict = {"returncode": None}
            report["sweeps"].append(result)
            _run_sweep(ray, cluster.address, job, float(spec.get("timeout", 120)), report["total"],
                              os.path.join(workdir, f"sweep-{i}"), result)
            if result["returncode"] != 0:
                break
    except BaseException as e:  # noqa: BLE001 - reported to the test, then cleaned up
        report["error"] = f"{type(e).__name__}: {e}"
    finally:  # a sweep's process is stopped by _run_sweep, also on SIGTERM
        try:
            import ray

            ray.shutdown()
        finally:
            if cluster is not None:
                cluster.shutdown()
            with open(report_path, "w") as f:
                json.dump(report, f, indent=1)
    ok = "error" not in report and len(report.get("sweeps", [])) == len(spec["sweeps"])
    return 0 if ok and all(r["returncode"] == 0 for r in report["sweeps"]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
