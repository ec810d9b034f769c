"""Controller stability as a hypothesis state machine: subclass it with your own law.

:class:`ControllerMachine` runs the closed bias loop of one registered law on
the expected-load map (:func:`routesim.theory.load_map`, sigmoid gate, normal
noise) with Poisson counting noise of the batch's ``T`` tokens, one window
per global batch, through the same :func:`routesim.controllers.update_bias`
as every engine. Hypothesis drives the rules (step the loop, jump the
popularity, start a drift, change the batch size, wait for settling) and
checks the invariants after each one:

* the bias is finite and bounded (``bias_bound``);
* a centred law keeps the bias sum;
* a sign law moves each bias by at most ``max_move`` per window.

The ``settle`` rule is the property with the theory as the oracle: after any
perturbation the loop returns MaxVio_batch below ``threshold`` plus the
counting-noise floor ``noise_sd * sqrt(N / (K T))`` within ``safety`` times
the predicted settling time (plus ``slack`` windows). The prediction is
:func:`routesim.theory.settling_steps` on the loop gains at the equilibrium
(``proportional``, ``ema``, ``momentum_tanh``; the last plus the distance to
the equilibrium over the rate, the slew of its saturated tanh), the distance to the
equilibrium over the rate or the relay's transient (the sign laws, whose
band is the noise-free limit cycle's largest MaxVio on the linearised plant,
:func:`routesim.theory.relay_cycle`, plus ``lambda_max u`` for one lattice
step of noise), or the
class's ``settling_windows`` (any other law). An unstable loop (rate above
:func:`routesim.theory.critical_rate`) has no finite prediction and gets
``max_windows``; it fails, naming the critical rate.

Shape legend: E experts.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar, Mapping

import numpy as np
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from .. import controllers, metrics, theory
from ..controllers.registry import CONFIG_FIELDS

__all__ = ["ControllerMachine", "CENTRED_LAWS", "SIGN_LAWS"]

#: Built-in laws whose update keeps the bias sum (proportional: the errors sum to 0).
CENTRED_LAWS = ("sign_centred", "proportional", "ema", "rms", "momentum_tanh")
#: Relay laws, analysed by :mod:`routesim.theory.limit_cycle`.
SIGN_LAWS = ("sign", "sign_centred")
_NODES = 32  # quadrature nodes of the load map: error below 2e-4, far under any threshold


@functools.lru_cache(maxsize=64)
def _linearisation(mu: tuple[float, ...], topk: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # cached: a shrinking run replays the same few popularities many times
    mu_E = np.asarray(mu)
    b_star = theory.equilibrium(mu_E, topk=topk)
    jac = theory.jacobian(mu_E, b_star, topk=topk)
    return b_star, jac * (mu_E.size / topk), theory.loop_gains(jac, topk)


class ControllerMachine(RuleBasedStateMachine):
    """Rule-based stability check of one registered law (subclass and set the attributes).

    Attributes
    ----------
    law : str
        A registered law (``routesim.controllers.registered()``).
    rate : float > 0
        ``controller.bias_update_rate``.
    params : mapping
        Other controller fields (``momentum``, ``tanh_scale``, ...) and the
        law's own registered parameters.
    num_experts, topk : int
        ``N`` (8-16 keeps one example cheap) and ``K``.
    skew : float > 0
        Popularity logits are drawn in ``[-skew, skew]``.
    tokens : tuple of int
        Batch sizes ``T`` the ``resize`` rule draws from.
    threshold, noise_sd, safety, slack : float
        The settling criterion (see the module notes).
    settling_windows : int or None
        Predicted settling windows for a law the theory does not cover.
    max_windows : int
        Cap on one ``settle`` run.
    bias_bound : float
        ``max |b - mean(b)|`` allowed at any time.
    centred, max_move : bool or None, float or None
        Invariants; ``None`` takes the built-in law's (``CENTRED_LAWS``;
        ``rate`` for ``sign``, ``2 rate`` for ``sign_centred``).

    Examples
    --------
    >>> from hypothesis import settings
    >>> class ProportionalMachine(ControllerMachine):
    ...     law, rate = "proportional", 0.1
    >>> ProportionalMachine.TestCase.settings = settings(max_examples=2,
    ...     stateful_step_count=3, deadline=None, derandomize=True, database=None)
    >>> ProportionalMachine.TestCase().runTest()
    """

    law: ClassVar[str] = "proportional"
    rate: ClassVar[float] = 0.1
    params: ClassVar[Mapping[str, float]] = {}
    num_experts: ClassVar[int] = 8
    topk: ClassVar[int] = 2
    skew: ClassVar[float] = 1.0
    tokens: ClassVar[tuple[int, ...]] = (2 ** 14, 2 ** 16, 2 ** 18)
    threshold: ClassVar[float] = 0.05
    noise_sd: ClassVar[float] = 6.0
    safety: ClassVar[float] = 3.0
    slack: ClassVar[int] = 5
    settling_windows: ClassVar[int | None] = None
    max_windows: ClassVar[int] = 200
    bias_bound: ClassVar[float] = 10.0
    centred: ClassVar[bool | None] = None
    max_move: ClassVar[float | None] = None

    def __init__(self) -> None:
        super().__init__()
        n = self.num_experts
        fields = {k: v for k, v in self.params.items() if k in CONFIG_FIELDS}
        own = {k: v for k, v in self.params.items() if k not in CONFIG_FIELDS}
        self._ctrl = controllers.ControllerParams.from_columns(
            (self.law,), {"bias_update_rate": self.rate, **fields}, [own])
        self.mu_E = np.zeros(n)
        self.drift_E = np.zeros(n)
        self.drift_left = 0
        self.bias = np.zeros((1, 1, n))
        self.memory = np.zeros((1, 1, n))
        self.windows = 0
        self.batch = self.tokens[0]
        self.rng = np.random.default_rng(0)
        self.maxvio_history: list[float] = []
        self._prev_bias = self.bias

    # -- the loop ---------------------------------------------------------------

    def window(self) -> float:
        """Route one batch at the current bias, update the bias; returns its MaxVio_batch.

        The popularity moves one drift step while a drift lasts, and the
        per-window invariants (:meth:`check_window`) are checked.

        Returns
        -------
        float
            MaxVio_batch of the batch just routed (also in ``maxvio_history``).

        Examples
        --------
        >>> m = ControllerMachine()          # proportional, rate 0.1, N = 8, K = 2
        >>> m.start(0)
        >>> vio = m.window()
        >>> m.windows, m.maxvio_history == [vio], m.bias.shape
        (1, True, (1, 1, 8))
        """
        p_E = theory.load_map(self.mu_E, self.bias[0, 0], topk=self.topk, nodes=_NODES)
        load_E = self.rng.poisson(self.batch * np.clip(p_E, 0.0, None)).astype(np.float64)
        self._prev_bias = self.bias
        self.bias, self.memory = controllers.update_bias(
            np, self._ctrl, self.bias, self.memory, load_E[None, None, :], None, self.windows)
        self.windows += 1
        if self.drift_left > 0:
            self.mu_E = np.clip(self.mu_E + self.drift_E, -self.skew, self.skew)
            self.drift_left -= 1
        vio = float(metrics.maxvio(load_E))
        self.maxvio_history.append(vio)
        self.check_window()
        return vio

    def check_window(self) -> None:
        """The per-window invariants (bias sum of a centred law, move of a sign law).

        Raises
        ------
        AssertionError
            Naming the law and the broken invariant.

        Examples
        --------
        >>> import numpy as np
        >>> class SignMachine(ControllerMachine):
        ...     law, rate = "sign", 0.01
        >>> m = SignMachine()
        >>> m.start(0)
        >>> _ = m.window()                   # checks itself: each bias moved by the rate
        >>> m.bias = m.bias + 0.5            # as if the law had jumped
        >>> m.check_window()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AssertionError: law 'sign' moved a bias by 0.51 > 0.01 in one window...
        """
        step = self.bias - self._prev_bias
        centred = self.law in CENTRED_LAWS if self.centred is None else self.centred
        if centred:
            scale = 1.0 + float(np.max(np.abs(self.bias)))
            assert abs(float(np.sum(step))) <= 1e-9 * self.num_experts * scale, (
                f"law {self.law!r} is centred but moved the bias sum by {float(np.sum(step)):.3g}")
        move = self.max_move
        if move is None and self.law in SIGN_LAWS:
            move = self.rate * (1.0 if self.law == "sign" else 2.0)
        if move is not None:
            largest = float(np.max(np.abs(step)))
            assert largest <= move * (1 + 1e-9), (
                f"law {self.law!r} moved a bias by {largest:.6g} > {move:.6g} in one window")

    def noise_floor(self) -> float:
        """``noise_sd`` standard deviations of one expert's relative load error.

        Returns
        -------
        float
            ``noise_sd * sqrt(N / (K T))`` at the current batch size ``T``.

        Examples
        --------
        >>> m = ControllerMachine()          # N = 8, K = 2, T = 2**14, 6 sd
        >>> m.noise_floor() == 6 * (8 / (2 * 2 ** 14)) ** 0.5
        True
        """
        return self.noise_sd * math.sqrt(self.num_experts / (self.topk * self.batch))

    def _linearisation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``b*``, ``A = (N/K) J`` at ``b*`` and its loop gains, at the current popularity."""
        return _linearisation(tuple(self.mu_E.tolist()), self.topk)

    def prediction(self) -> tuple[float, float, str]:
        """Predicted settling windows from here, the steady MaxVio band, and a note.

        Returns
        -------
        windows : float
            Predicted settling windows (``inf`` above the critical rate or
            for a law without a prediction).
        band : float
            Steady MaxVio_batch the loop settles into (before the noise floor).
        note : str
            What the prediction rests on (critical rate, relay transient, ...).

        Examples
        --------
        >>> import numpy as np
        >>> m = ControllerMachine()
        >>> m.mu_E = np.linspace(-1.0, 1.0, 8)   # a skewed popularity
        >>> windows, band, note = m.prediction()
        >>> round(windows, 2), band, note
        (3.75, 0.05, 'critical rate 0.2345')
        """
        if self.law not in theory.stability.LINEAR_LAWS + SIGN_LAWS:
            if self.settling_windows is None:
                return math.inf, self.threshold, "no prediction (set settling_windows)"
            return float(self.settling_windows), self.threshold, "settling_windows"
        b_star, a_EE, lam = self._linearisation()
        if self.law in SIGN_LAWS:
            # the noise-free relay on the linearised plant, from the current bias
            cycle = theory.relay_cycle(theory.linear_plant(a_EE, b_star), self.rate,
                                       self.bias[0, 0], centred=self.law == "sign_centred")
            off = self.bias[0, 0] - b_star
            dist = float(np.max(np.abs(off - off.mean())))
            steps = max(cycle["transient"] + cycle["period"], dist / self.rate)
            # counting noise knocks the relay off its cycle by about one lattice step
            band = max(self.threshold, float(np.max(-cycle["error_SE"]))) + lam[-1] * self.rate
            return float(steps), band, f"relay transient {cycle['transient']}"
        kw = {k: float(self.params[k]) for k in ("momentum", "tanh_scale") if k in self.params}
        now = max(self.maxvio_history[-1] if self.maxvio_history else 1.0, self.threshold)
        steps = float(theory.settling_steps(self.law, self.rate, lam[1:],
                                            num_experts=self.num_experts,
                                            reduction=min(self.threshold / now, 0.5), **kw))
        if self.law == "momentum_tanh":
            # beyond |e| > kappa the tanh saturates: the bias slews at most u per window first
            off = self.bias[0, 0] - b_star
            steps += float(np.max(np.abs(off - off.mean()))) / self.rate
        uc = float(theory.critical_rate(self.law, lam[-1], num_experts=self.num_experts, **kw))
        return steps, self.threshold, f"critical rate {uc:.4g}"

    # -- rules ------------------------------------------------------------------

    @initialize(seed=st.integers(0, 2 ** 32 - 1))
    def start(self, seed: int) -> None:
        """Seed the counting noise (the first rule of every run).

        Parameters
        ----------
        seed : int
            Seed of the Poisson draws of the loads.

        Examples
        --------
        >>> a, b = ControllerMachine(), ControllerMachine()
        >>> a.start(7)
        >>> b.start(7)
        >>> a.window() == b.window()         # same seed, same loads
        True
        """
        self.rng = np.random.default_rng(seed)

    @rule(n=st.integers(1, 8))
    def step(self, n: int) -> None:
        """Run ``n`` windows of the loop.

        Parameters
        ----------
        n : int
            Windows to run.

        Examples
        --------
        >>> m = ControllerMachine()
        >>> m.start(0)
        >>> m.step(3)
        >>> m.windows, len(m.maxvio_history)
        (3, 3)
        """
        for _ in range(n):
            self.window()

    @rule(data=st.data())
    def jump_popularity(self, data: st.DataObject) -> None:
        """Jump to a new popularity (logits on a grid in ``[-skew, skew]``); ends a drift.

        Parameters
        ----------
        data : hypothesis DataObject
            Draws the ``N`` popularity logits.

        Examples
        --------
        >>> import numpy as np
        >>> from hypothesis import given, settings, strategies as st
        >>> @settings(max_examples=5, database=None, derandomize=True)
        ... @given(st.data())
        ... def jumps(data):
        ...     m = ControllerMachine()
        ...     m.jump_popularity(data)
        ...     assert m.mu_E.shape == (8,) and np.all(np.abs(m.mu_E) <= m.skew)
        >>> jumps()
        """
        grid = st.integers(-8, 8).map(lambda i: i * self.skew / 8)
        mu = data.draw(st.lists(grid, min_size=self.num_experts, max_size=self.num_experts),
                       label="mu_E")
        self.mu_E = np.asarray(mu, dtype=np.float64)
        self.drift_left = 0

    @rule(data=st.data(), windows=st.integers(1, 10))
    def start_drift(self, data: st.DataObject, windows: int) -> None:
        """Drift the popularity by a drawn step per window for ``windows`` windows.

        Parameters
        ----------
        data : hypothesis DataObject
            Draws the per-window drift of each logit (up to ``skew / 10``).
        windows : int
            How many windows the drift lasts.

        Examples
        --------
        >>> import numpy as np
        >>> from hypothesis import given, settings, strategies as st
        >>> @settings(max_examples=5, database=None, derandomize=True)
        ... @given(st.data())
        ... def drifts(data):
        ...     m = ControllerMachine()
        ...     m.start_drift(data, windows=3)
        ...     m.step(5)                    # the drift stops after 3 windows
        ...     assert m.drift_left == 0 and np.all(np.abs(m.mu_E) <= m.skew)
        >>> drifts()
        """
        grid = st.integers(-4, 4).map(lambda i: i * self.skew / 40)
        d = data.draw(st.lists(grid, min_size=self.num_experts, max_size=self.num_experts),
                      label="drift_E")
        self.drift_E = np.asarray(d, dtype=np.float64)
        self.drift_left = windows

    @rule(data=st.data())
    def resize(self, data: st.DataObject) -> None:
        """Change the batch size ``T`` to one of ``tokens``.

        Parameters
        ----------
        data : hypothesis DataObject
            Draws the new batch size.

        Examples
        --------
        >>> from hypothesis import given, settings, strategies as st
        >>> @settings(max_examples=5, database=None, derandomize=True)
        ... @given(st.data())
        ... def resizes(data):
        ...     m = ControllerMachine()
        ...     m.resize(data)
        ...     assert m.batch in ControllerMachine.tokens
        >>> resizes()
        """
        self.batch = data.draw(st.sampled_from(self.tokens), label="tokens")

    @rule()
    def settle(self) -> None:
        """Hold the popularity still; MaxVio must fall into the band within the prediction.

        Raises
        ------
        AssertionError
            When MaxVio_batch is still above the band after ``safety`` times the
            predicted windows plus ``slack`` (``max_windows`` for an unstable loop).

        Examples
        --------
        >>> import numpy as np
        >>> m = ControllerMachine()
        >>> m.start(0)
        >>> m.mu_E = np.linspace(-1.0, 1.0, 8)
        >>> m.settle()
        >>> m.maxvio_history[-1] < m.threshold + m.noise_floor()
        True
        >>> class TooFast(ControllerMachine):  # above the critical rate 0.2345
        ...     rate, max_windows = 1.0, 20
        >>> f = TooFast()
        >>> f.start(0)
        >>> f.mu_E = np.linspace(-1.0, 1.0, 8)
        >>> f.settle()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AssertionError: law 'proportional' at rate 1.0: MaxVio_batch ... after 20 windows (predicted inf, critical rate 0.2345) ...
        """
        while self.drift_left > 0:
            self.window()
        predicted, band, note = self.prediction()
        budget = (self.max_windows if not math.isfinite(predicted)
                  else min(self.max_windows, math.ceil(self.safety * predicted) + self.slack))
        band += self.noise_floor()
        vio = [self.window() for _ in range(budget)]
        assert vio[-1] < band, (
            f"law {self.law!r} at rate {self.rate!r}: MaxVio_batch {vio[-1]:.4g} after {budget} "
            f"windows (predicted {predicted:.4g}, {note}) is not below {band:.4g}; "
            f"popularity {np.round(self.mu_E, 4).tolist()}, T = {self.batch}")

    # -- invariants -------------------------------------------------------------

    @invariant()
    def bias_finite_and_bounded(self) -> None:
        """Invariant: the bias is finite and ``max |b - mean(b)| <= bias_bound``.

        Raises
        ------
        AssertionError
            Naming the bias or its spread.

        Examples
        --------
        >>> import numpy as np
        >>> m = ControllerMachine()
        >>> m.bias_finite_and_bounded()      # the zero bias
        >>> m.bias = m.bias + np.array([0.0] * 7 + [20.0])
        >>> m.bias_finite_and_bounded()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        AssertionError: bias spread 17.5 > 10.0...
        """
        b = self.bias[0, 0]
        assert np.all(np.isfinite(b)), f"bias not finite: {b.tolist()}"
        spread = float(np.max(np.abs(b - b.mean())))
        assert spread <= self.bias_bound, f"bias spread {spread:.4g} > {self.bias_bound}"
