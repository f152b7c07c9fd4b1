"""`neurecover`: NeuRecover (Tokui et al., SANER 2022), a repair of the updated model.

Not a retraining: it takes M2 (M1 fine-tuned with plain CE on D_update, the shared
"ce_update" reference, `reference.py`; its *repair split* is a share of the rows it trained
on) and the weights of its
last two epochs, picks a few weights of the fully connected head, and searches their
values so M2 wins back the repair-split samples it broke without breaking the others.

1. Repair inputs. I_neg = repair-split samples M1 classifies correctly and M2 wrongly (M2's
   negative flips); I_pos = repair-split samples M2 classifies correctly.
2. Localisation (`localise`), over the weight matrices of the `nn.Linear` layers of the
   head (no conv layers, no biases). From the history, deg = inputs correct under the
   epoch N−1 weights and wrong under epoch N, imp = the reverse. Per layer l:
   Δ_l = |W_N − W_{N−1}|, share d_l = mean Δ_l / Σ_l' mean Δ_l';
   gradient impact G(w) = |∂(Σ_x Σ_c z_c(x)) / ∂w| on deg (and on imp), z = logits;
   forward impact FI(w_ij) = mean_x |a_i(x) · w_ij| = |w_ij| · mean_x |a_i(x)| (a = the
   layer's input), with layer share f_l = mean FI_l / Σ_l' mean FI_l';
   susp_l = f_deg,l / (f_deg,l + f_imp,l) · d_l (0 when f_deg,l = 0);
   k_l = round(n_weights_l · susp_l · reduction_rate);
   chosen_l = (top_k FI_deg ∩ top_k G_deg ∩ top_k Δ) − (top_k FI_imp ∩ top_k G_imp).
3. Search (`swarm.pso` / `swarm.de`) over the chosen values, maximising
   fitness = (N_patched/|I_neg| + 1)/(L_neg + 1) + α·(N_intact/|I_pos'| + 1)/(L_pos + 1),
   L = mean cross-entropy, I_pos' = `pos_samples` positives drawn with replacement (seeded)
   afresh for every swarm evaluation (`resample: iteration`, the default; new candidates
   and incumbents share each draw, see `_swarm`) or once per search (`resample: once`,
   the reference code's behaviour). Per-iteration draws let the search see all of I_pos
   over time, but the best of P noisy scores beats the incumbent on most draws, so the
   `patience` stop seldom fires and the search usually runs all `iterations`; with `once`
   scores are exact and the stop works (on the digits: ~30-50 iterations instead of 100).

Where this differs from the reference toolkit (jst-qaml/eAI-Repair-Toolkit,
`methods/neurecover`), deliberately:
- deg/imp are computed on all of the update's training inputs (`train_idx`, the whole
  D_update), the data whose predictions the last epoch actually changed; the toolkit
  computes them on the repair inputs (I_neg ∪ I_pos), a subset of the same rows.
  A converged update may have changed no training prediction in its last
  epoch (digits, 10 epochs); then deg = I_neg, the negative flips against M1 that the
  repair must undo (`info["deg_source"]` says which).
- "outputs" in the gradient impact are logits: the toolkit's Keras models end in a softmax,
  whose outputs sum to 1, so that gradient is numerically zero there.
- Δ and FI shares are normalised over the head's Linear weight matrices only (the toolkit
  sums over every weight tensor, conv kernels and biases included, which only rescales
  Δ_l and therefore the budgets).
- The toolkit samples the positives once per search; here afresh per evaluation by
  default (METHODS.md), `resample: once` for the toolkit's way.
- An empty imp set removes nothing (its zero scores would otherwise make top-k arbitrary).

Evaluation is vectorised: the head's input over the repair split is computed once (the
output of `features` for a `FlipNet`), the part of the head before the first edited layer
is run once, and every particle is scored in one batched pass (`PatchedHead`), where an
edited layer adds Σ_k δ_k · x[:, i_k] to output column j_k of its unedited output. A model
that is not a `FlipNet` has only its last `nn.Linear` repaired (its input captured by a
forward hook); `info["scope"]` says which.

Everything before the budgets (steps 1-2: the forward passes over the repair split and the
training inputs, Δ, the impacts and their top-k orders, `prepare`) depends on M1, M2 and
D_update only, not on the hyperparameters; for reference models from a `ReferenceStore`
it is computed once per process and reused by later trials (`UpdateContext.cache`, `info["cache"]`), so a sweep's trial pays for the budget selection and the search only.
"""

from .evaluate import Fitness, PatchedHead, fitness
from .localisation import (Localisation, LayerScores, Scope, Target, find_scope, history_split, impacts, localise,
                       score, select)
from .method import HPARAMS, NeuRecover, Prepared, prepare
from .reference import REPAIR_FRACTION, CEUpdate, CEUpdateRef, repair_split

__all__ = ["NeuRecover", "HPARAMS", "CEUpdate", "CEUpdateRef", "REPAIR_FRACTION", "repair_split", "prepare",
           "Prepared", "Scope", "Target", "Localisation", "LayerScores", "find_scope", "history_split", "impacts",
           "localise", "score", "select", "Fitness", "PatchedHead", "fitness"]
