"""Reasoning jobs: difficulty levels, verifiers and the test-time strategies (single, best-of-N,
self-consistency, revision, beam search, adaptive) a job class runs."""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import Field, model_validator

from sim.config.base import Auc, Frozen, KeyedError, PosInt, Prob, Tokens, check_unique
from sim.config.distributions import LengthDist, ShareDist

# the default difficulty mix's level names (sim.models.quality.DEFAULT_LEVELS has the figures)
DEFAULT_LEVEL_NAMES = ("easy", "medium", "hard")


class EarlyExit(Frozen):
    """A sample stops thinking early (confident) with ``probability``, at a fraction ``at``
    of the thinking it would otherwise have done; its accuracy is that of a full sample."""

    probability: Prob
    at: ShareDist


class Level(Frozen):
    """One difficulty level of a job mix: how often it occurs, how right one sample is, how
    long it thinks and answers: ``thinking_tokens`` and ``answer_tokens``, or the whole
    ``output_tokens`` with the ``reasoning_share`` of it spent thinking (as production traces
    such as ServeGen's DeepSeek-R1 data report them)."""

    name: str = Field(min_length=1)
    weight: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    accuracy: Prob  # one sample that thinks as long as it wants
    truncated_accuracy: Prob  # one sample whose thinking the budget cut off (forced to answer)
    thinking_tokens: Optional[LengthDist] = None
    answer_tokens: Optional[LengthDist] = None
    output_tokens: Optional[LengthDist] = None
    reasoning_share: Optional[ShareDist] = None
    early_exit: Optional[EarlyExit] = None
    # Share of the level's questions the model can solve at all; the rest are wrong in every
    # sample, so no search gets past it. 1: samples of a question are independent draws.
    coverage: Prob = 1.0

    @model_validator(mode="after")
    def _within_coverage(self):
        if max(self.accuracy, self.truncated_accuracy) > self.coverage:
            raise ValueError(f"accuracy and truncated_accuracy must be <= coverage ({self.coverage})")
        split = self.thinking_tokens is not None and self.answer_tokens is not None
        total = self.output_tokens is not None and self.reasoning_share is not None
        given = [k for k in ("thinking_tokens", "answer_tokens", "output_tokens", "reasoning_share") if getattr(self, k) is not None]
        if split == total or len(given) != 2:
            raise ValueError("give 'thinking_tokens' and 'answer_tokens', or 'output_tokens' and 'reasoning_share' "
                             f"(got {given or 'none'})")
        return self


class Verifier(Frozen):
    """A reward-model call that scores candidates. ``auc`` is how well its scores separate
    right from wrong candidates (ROC AUC; None takes the fitted default of sim.models.quality).
    ``pool`` (default: the job's pool) serves it; it reads the question plus each candidate's
    answer (``reads: answers``) or whole output (``outputs``) and writes ``output_tokens``."""

    pool: Optional[str] = None
    auc: Optional[Auc] = None
    output_tokens: Tokens = 1
    reads: Literal["answers", "outputs"] = "answers"


class SingleStrategy(Frozen):
    """One sample; its answer is the job's answer."""

    kind: Literal["single"]
    thinking_budget: Optional[Tokens] = None


class BestOfN(Frozen):
    """``n`` parallel samples sharing the prompt's KV, then one verifier call scoring all n; the
    best-scored answer is the job's."""

    kind: Literal["best_of_n"]
    n: PosInt
    verifier: Verifier = Verifier()
    thinking_budget: Optional[Tokens] = None


class SelfConsistency(Frozen):
    """``n`` parallel samples, majority vote; with ``early_stop`` the remaining samples are
    cancelled as soon as one answer holds more than n/2 votes."""

    kind: Literal["self_consistency"]
    n: PosInt
    early_stop: bool = False
    thinking_budget: Optional[Tokens] = None


class Revision(Frozen):
    """A sample, then ``rounds`` sequential revisions, each reading the question and the
    previous answer (``carry: answer``) or whole output (``carry: output``). A wrong answer
    is fixed with ``p_fix`` per round, a right one broken with ``p_break`` (None: fitted defaults)."""

    kind: Literal["revision"]
    rounds: PosInt
    p_fix: Optional[Prob] = None
    p_break: Optional[Prob] = None
    carry: Literal["answer", "output"] = "answer"
    thinking_budget: Optional[Tokens] = None


class BeamSearch(Frozen):
    """Step-level beam search guided by a process reward model: ``depth`` steps of
    ``step_tokens``; each depth expands the kept beams into ``width * expansions`` candidate
    steps (the root into as many), the PRM scores each, the best ``width`` are kept."""

    kind: Literal["beam_search"]
    width: PosInt
    expansions: PosInt
    depth: PosInt
    step_tokens: Tokens
    prm: Verifier = Verifier()


FixedStrategy = Annotated[Union[SingleStrategy, BestOfN, SelfConsistency, Revision, BeamSearch],
                          Field(discriminator="kind")]


class Adaptive(Frozen):
    """Adaptive compute: a difficulty predictor that is right with ``predictor_accuracy``
    (else names another level uniformly) picks the strategy mapped to the predicted level."""

    kind: Literal["adaptive"]
    predictor_accuracy: Prob
    policies: dict[str, FixedStrategy]


Strategy = Annotated[Union[SingleStrategy, BestOfN, SelfConsistency, Revision, BeamSearch, Adaptive],
                     Field(discriminator="kind")]


class JobSpec(Frozen):
    """What a job is: a question of some difficulty, answered by a strategy of calls.
    ``levels`` None takes the default mix fitted to published curves (sim.models.quality)."""

    levels: Optional[list[Level]] = None
    strategy: Strategy

    @model_validator(mode="after")
    def _levels(self):
        if self.levels is not None:
            if not self.levels:
                raise ValueError("'levels' must not be empty")
            check_unique([lv.name for lv in self.levels], "levels")
        if isinstance(self.strategy, Adaptive):
            names = [lv.name for lv in self.levels] if self.levels else list(DEFAULT_LEVEL_NAMES)
            missing = [n for n in names if n not in self.strategy.policies]
            extra = [n for n in self.strategy.policies if n not in names]
            if missing or extra:
                raise KeyedError("strategy.policies", f"needs one strategy per level {names}"
                                  + (f"; missing {missing}" if missing else "") + (f"; unknown {extra}" if extra else ""))
        return self


def verifier_pools(strategy, prefix: str = ""):
    """(key path, pool) of every verifier / PRM a strategy names."""
    if isinstance(strategy, Adaptive):
        for level, s in strategy.policies.items():
            yield from verifier_pools(s, f"policies.{level}.")
    elif isinstance(strategy, BestOfN):
        yield prefix + "verifier", strategy.verifier.pool
    elif isinstance(strategy, BeamSearch):
        yield prefix + "prm", strategy.prm.pool
