"""Population searches over a real vector, used by NeuRecover: PSO with constriction and
differential evolution.

Both maximise an `objective(positions [P', K]) -> fitness [P']` that is called once per
iteration on a batch of rows (no Python loop over particles here or in the objective).
With `rescore=True` the objective may be noisy (e.g. draw a fresh sample of positive
inputs on every call, so two calls are not comparable): each iteration then scores the
new candidates *and* the incumbents (personal bests / current population) in the same
call, and every comparison is made between scores of one call. With `rescore=False` the
objective must be deterministic and incumbents keep their stored scores. All random
numbers come from the CPU generator `gen`, so a seed gives the same search on any device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Objective = Callable[[torch.Tensor], torch.Tensor]

PHI = 4.1
# Clerc's constriction factor χ = 2 / (φ − 2 + √(φ² − 4φ)) ≈ 0.7298 for φ = 4.1.
CHI = 2.0 / (PHI - 2.0 + math.sqrt(PHI * PHI - 4.0 * PHI))


@dataclass
class SearchResult:
    """What one particle-swarm search found: the best position, its score, iterations run and improvements
    made."""
    best: torch.Tensor  # [K], the best position found
    score: float  # its fitness on the last call's draw
    iterations: int  # iterations run (after the initial scoring)
    improvements: int  # iterations in which the incumbent best was beaten


def _uniform(shape, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def pso(objective: Objective, x0: torch.Tensor, vmin: torch.Tensor, vmax: torch.Tensor, *,
        iterations: int, patience: int, gen: torch.Generator, rescore: bool = True) -> SearchResult:
    """Particle swarm with constriction (Arachne / NeuRecover).

    Per iteration, for every particle with position x, velocity v, personal best p and the
    swarm's best g:  v ← χ·(v + ρ1·(p − x) + ρ2·(g − x)),  ρ1, ρ2 ~ U(0, φ);  then |v| is
    clamped per dimension to [vmin, vmax] keeping its sign;  x ← x + v.
    Velocities start at 0. Stops after `patience` iterations without beating the incumbent.

    Choices that follow the reference code (eAI-Repair-Toolkit `Arachne._update_velocity`):
    ρ1 and ρ2 are one scalar per particle and iteration (shared by its dimensions), drawn
    from U(0, φ) rather than the textbook U(0, φ/2) per coefficient; and the lower clamp is
    applied literally: a speed below vmin (= range/5 of the layer's weights) is *raised* to
    vmin, with sign −1 for an exactly zero velocity. So no particle ever stands still: each
    weight moves by at least a fifth of its layer's weight range per step, the swarm keeps
    exploring around p and g instead of contracting onto them, and the answer is the best
    personal best ever scored. (The one deviation: the reference moves x with the old v
    before computing the new v, which only re-scores the initial positions once; here the
    textbook order, v then x, is used.)
    """
    x = x0.clone()
    n = len(x)
    v = torch.zeros_like(x)
    pbest, pscore = x.clone(), objective(x).cpu()
    g = int(torch.argmax(pscore))
    stale = improvements = it = 0
    for it in range(1, iterations + 1):
        r1, r2 = _uniform((n, 1), 0.0, PHI, gen), _uniform((n, 1), 0.0, PHI, gen)
        v = CHI * (v + r1 * (pbest - x) + r2 * (pbest[g] - x))
        speed = v.abs().clamp(min=vmin, max=vmax)
        v = torch.where(v > 0, speed, -speed)
        x = x + v
        if rescore:
            scores = objective(torch.cat([x, pbest])).cpu()
            sx, sp = scores[:n], scores[n:]
        else:
            sx, sp = objective(x).cpu(), pscore
        better = sx > sp
        pbest = torch.where(better[:, None], x, pbest)
        pscore = torch.where(better, sx, sp)
        incumbent = sp[g]  # the previous global best, scored on this iteration's draw
        g = int(torch.argmax(pscore))
        stale, improvements = _progress(pscore[g] > incumbent, stale, improvements)
        if stale >= patience:
            break
    return SearchResult(pbest[g].clone(), float(pscore[g]), it, improvements)


def _progress(improved, stale: int, improvements: int) -> tuple[int, int]:
    """Early-stopping bookkeeping: (iterations without improvement, improvements so far)."""
    return (0, improvements + 1) if bool(improved) else (stale + 1, improvements)


def de(objective: Objective, x0: torch.Tensor, *, iterations: int, patience: int, gen: torch.Generator,
       rescore: bool = True, crossover: float = 0.7, f_low: float = 0.5, f_high: float = 1.0) -> SearchResult:
    """Differential evolution DE/rand/1/bin (Arachne v2's search), population = rows of x0.

    Per generation: F ~ U(f_low, f_high) (one draw per generation, "dither" as in SciPy);
    for each member i, three distinct others a, b, c give the mutant m = a + F·(b − c); the
    trial takes each coordinate from m with probability `crossover` (and at least one, at a
    random position), else from i; the trial replaces i when its fitness is >= i's.
    Needs at least 4 members. Stops after `patience` generations without beating the best.
    """
    pop = x0.clone()
    n, k = pop.shape
    if n < 4:
        raise ValueError("differential evolution needs a population of at least 4")
    score = objective(pop).cpu()
    b = int(torch.argmax(score))
    rows = torch.arange(n)
    stale = improvements = it = 0
    for it in range(1, iterations + 1):
        f = float(_uniform((), f_low, f_high, gen))
        # three distinct partners per member, none equal to the member: the 3 smallest of
        # a random row with the diagonal pushed to the end.
        keys = torch.rand((n, n), generator=gen)
        keys[rows, rows] = 2.0
        abc = keys.argsort(dim=1)[:, :3]
        mutant = pop[abc[:, 0]] + f * (pop[abc[:, 1]] - pop[abc[:, 2]])
        cross = torch.rand((n, k), generator=gen) < crossover
        cross[rows, torch.randint(k, (n,), generator=gen)] = True
        trial = torch.where(cross, mutant, pop)
        if rescore:
            scores = objective(torch.cat([trial, pop])).cpu()
            st, sp = scores[:n], scores[n:]
        else:
            st, sp = objective(trial).cpu(), score
        take = st >= sp
        pop = torch.where(take[:, None], trial, pop)
        score = torch.where(take, st, sp)
        incumbent = sp[b]
        b = int(torch.argmax(score))
        stale, improvements = _progress(score[b] > incumbent, stale, improvements)
        if stale >= patience:
            break
    return SearchResult(pop[b].clone(), float(score[b]), it, improvements)
