"""A new loss-based method is one module: written to a temporary folder, registered by its
own `@register_method`, named `module:name`, it runs as a trial and in a sweep (on Ray
workers, which import the module themselves) and its hyperparameters get typed columns."""

from __future__ import annotations

import os
import sys
import textwrap

import pytest

from flipsearch import TrialConfig, read_results, run_trial, sweep

TOY = textwrap.dedent('''
    import torch.nn.functional as F

    from flipsearch.methods import HParam, LossMethod, register_method


    @register_method
    class Smoothed(LossMethod):
        """Cross-entropy with label smoothing: a toy method for the plugin test."""

        name = "toy_smoothed"
        summary = "cross-entropy with label smoothing"
        hparams = (HParam("smoothing", "float", 0.1, low=0.0, high=0.9, help="label smoothing"),
                   HParam("init", "choice", "old", choices=("old", "scratch")))

        def make_loss(self, ctx, hp):
            return lambda logits, batch: F.cross_entropy(logits, batch.y, label_smoothing=hp["smoothing"])
''')


@pytest.fixture(scope="module")
def toy_module():
    name = "flipsearch_toy_plugin"
    folder = os.environ["FLIPSEARCH_PLUGIN_DIR"]
    with open(os.path.join(folder, f"{name}.py"), "w") as f:
        f.write(TOY)
    sys.path.insert(0, folder)
    yield f"{name}:toy_smoothed"
    # Leave the process's registry as the other tests expect it: built-ins only.
    from flipsearch.methods._base import _REGISTRY

    _REGISTRY.pop("toy_smoothed", None)
    sys.modules.pop(name, None)
    sys.path.remove(folder)


def test_a_method_in_a_user_module_runs_as_a_trial(toy_module):
    result = run_trial(TrialConfig(method=toy_module, hparams={"smoothing": 0.2}).with_settings({"epochs": 2}))
    assert result.status == "ok" and result.hparams == {"smoothing": 0.2, "init": "old"}
    assert result.metrics["accuracy_new"] > 0.5 and "val_nfr" in result.metrics


@pytest.mark.ray
@pytest.mark.slow
def test_a_method_in_a_user_module_is_swept(ray_local, tiny_space, tmp_path, toy_module):
    space = tiny_space(f"""
name: t-plugin
scenario: {{datasets: [digits], arrangements: [exclusive-op], models: [small], seeds: [0], training: {{epochs: 2}}}}
search: {{sampler: random, trials_per_scenario: 3, seed: 0, concurrency: 1}}
methods:
  "{toy_module}":
    smoothing: {{uniform: [0.0, 0.5]}}
""")
    sweep(space, out=str(tmp_path / "plugin"), quiet=True)
    rows = read_results(str(tmp_path / "plugin"))
    assert len(rows) == 3 and (rows["status"] == "ok").all() and (rows["method"] == toy_module).all()
    assert rows["hp_smoothing"].between(0.0, 0.5).all() and rows["hp_smoothing"].nunique() == 3
