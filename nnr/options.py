"""Encoder options: one typed, validated object whose JSON form is stored in every file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from nnr.codec.allocation import RULES as STEP_RULES
from nnr.codec.quantizer_spec import RECONSTRUCTIONS
from nnr.codec.quantizer_spec import parse as parse_quantizer

from .errors import OptionError

NONFINITE_POLICIES = ("lossless", "refuse")
LEGACY_RECONSTRUCTION = "mse"          # what files from before the option were encoded with


@dataclass(frozen=True)
class EncoderOptions:
    """How to encode a model. Defaults give transparent quality without any data.

    qp: quality parameter; the base step is 2**(qp/4) times the tensor's (or channel's)
        Laplace scale mean|w|, so qp −4 halves every step (≈ +1 bit/weight, +6 dB).
    lossless: keep every float bit (byte-plane entropy coding) instead of quantizing.
    step_rule: how steps adapt: ``scale`` (per tensor, the default), ``channel`` (per
        output channel) or ``uniform`` (one absolute step for all tensors, qp as in NNC).
    vector_qp: qp offset for 1-D tensors (biases, normalisation): each element drives a whole
        channel and they are few, so they stay five step-halvings finer than the weights.
    rdo_lambda: Lagrangian of the rate–distortion decisions, in step² per bit; 0 is plain
        deadzone rounding, larger trades more distortion for fewer bits.
    reconstruction: where ``ecsq`` puts each tensor's nonzero levels: ``gain`` keeps the
        tensor's projection on itself (no shrinkage towards zero, which compounds through
        layers), ``mse`` minimises the weights' squared error. Tensors rounded with
        ``error_feedback`` keep ``mse``, the offset their rounding is decided for. An options
        record without this key (a file's, or one replayed with ``--options``) predates it and
        means ``mse``.
    min_elements: float tensors smaller than this stay in the graph untouched (lossless).
    nonfinite: tensors holding NaN/Inf are coded ``lossless`` (they survive exactly) or
        ``refuse`` makes encoding fail.
    tensor_qp: per-tensor qp offsets by tensor name (added to qp), as rate control sets
        them from measured sensitivities; replaying a file's options reproduces it.
    channel_steps: names of tensors whose steps follow their slices along axis 0 (output
        channels; a MatMul weight's input features) under the ``scale`` rule, as the probe
        chooses them with ``probe_channels``.
    probe_channels: let the probe give a tensor per-channel steps where, on its synthetic
        inputs, they move the output over 20 % less at the same entropy (docs/techniques.md,
        section 10); it steers the probe and is not recorded (``channel_steps`` is).
    quantizer: ``ecsq`` (the default RDO deadzone), ``midtread``, ``midrise``,
        ``deadzone:δ``, ``mulaw:μ`` or ``minifloat:EeMm`` (``fp16``, ``e4m3``, ``e5m2``);
        see codec/quantizers.py for the formulas.
    error_feedback: round Conv/Gemm/MatMul weights with error feedback through their
        inputs' second moments on calibration data (codec.error_feedback, GPTQ-style), so
        the layer outputs move less at the same rate; needs calibration inputs and ``ecsq``.
    prune: zero weights before quantizing (nnr/pruning.py): ``magnitude:F``, ``std:G`` or
        ``filters:RANKING:F`` (RANKING ``l1``, ``l2``, ``random:SEED``, ``activation``); "" = none.
    prune_global: one magnitude threshold over all prunable tensors instead of one per tensor.
    prune_criterion: how complex weights are ranked: ``modulus``, ``phase``, ``real``, ``imag``.
    prune_include, prune_exclude: tensor-name patterns (fnmatch) added to / removed from the
        prunable set (by default the weights of Conv, Gemm, MatMul, recurrent and attention ops).
    prune_steps: reach the pruning target in this many steps, re-measuring importance after each.
    prune_remove: physically remove the pruned output channels where that is exact (nnr/removal.py),
        zeroing the others; needs a ``filters`` spec. Changes the graph's weight shapes.
    prune_remove_multiple: removal keeps each layer's channel count a multiple of this (1: no
        rounding); 8 suits onnxruntime's blocked CPU convolutions.
    """

    qp: float = -32.0
    lossless: bool = False
    step_rule: str = "scale"
    vector_qp: float = -20.0
    size_exponent: float = 0.5
    rdo_lambda: float = 0.1
    reconstruction: str = "gain"
    min_elements: int = 16
    nonfinite: str = "lossless"
    tensor_qp: dict = dataclasses.field(default_factory=dict)
    channel_steps: tuple = ()
    probe_channels: bool = False
    quantizer: str = "ecsq"
    error_feedback: bool = False
    prune: str = ""
    prune_global: bool = False
    prune_criterion: str = "modulus"
    prune_include: tuple = ()
    prune_exclude: tuple = ()
    prune_steps: int = 1
    prune_remove: bool = False
    prune_remove_multiple: int = 8

    def __post_init__(self) -> None:
        if not isinstance(self.qp, (int, float)) or not math.isfinite(self.qp) or not -80 <= self.qp <= 40:
            raise OptionError(f"qp must be a number in [-80, 40], got {self.qp!r}")
        if self.step_rule not in STEP_RULES:
            raise OptionError(f"step_rule must be one of {', '.join(STEP_RULES)}, got {self.step_rule!r}")
        if not isinstance(self.vector_qp, (int, float)) or not -64 <= self.vector_qp <= 16:
            raise OptionError(f"vector_qp must be in [-64, 16], got {self.vector_qp!r}")
        if not isinstance(self.size_exponent, (int, float)) or not 0 <= self.size_exponent <= 1:
            raise OptionError(f"size_exponent must be in [0, 1], got {self.size_exponent!r}")
        if not isinstance(self.rdo_lambda, (int, float)) or not 0 <= self.rdo_lambda <= 10:
            raise OptionError(f"rdo_lambda must be in [0, 10], got {self.rdo_lambda!r}")
        if self.reconstruction not in RECONSTRUCTIONS:
            raise OptionError(f"reconstruction must be one of {', '.join(RECONSTRUCTIONS)}, "
                              f"got {self.reconstruction!r}")
        if not isinstance(self.min_elements, int) or self.min_elements < 1:
            raise OptionError(f"min_elements must be a positive integer, got {self.min_elements!r}")
        if self.nonfinite not in NONFINITE_POLICIES:
            raise OptionError(f"nonfinite must be one of {', '.join(NONFINITE_POLICIES)}, "
                              f"got {self.nonfinite!r}")
        if not isinstance(self.lossless, bool):
            raise OptionError(f"lossless must be true or false, got {self.lossless!r}")
        if not isinstance(self.tensor_qp, dict) or not all(
                isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) and -64 <= v <= 64 for k, v in self.tensor_qp.items()):
            raise OptionError("tensor_qp must map tensor names to qp offsets in [-64, 64]")
        if isinstance(self.channel_steps, str) or not isinstance(self.channel_steps, (list, tuple)) \
                or not all(isinstance(v, str) for v in self.channel_steps):
            raise OptionError(f"channel_steps must be a list of tensor names, got {self.channel_steps!r}")
        object.__setattr__(self, "channel_steps", tuple(self.channel_steps))
        if not isinstance(self.probe_channels, bool):
            raise OptionError(f"probe_channels must be true or false, got {self.probe_channels!r}")
        if (self.channel_steps or self.probe_channels) and self.step_rule != "scale":
            raise OptionError(f"channel_steps and probe_channels move tensors from the scale rule to "
                              f"per-channel steps; with step_rule {self.step_rule!r} they have no meaning")

        try:
            parse_quantizer(self.quantizer)
        except (ValueError, TypeError) as exc:
            raise OptionError(str(exc)) from None
        self._check_pruning()
        if not isinstance(self.error_feedback, bool):
            raise OptionError(f"error_feedback must be true or false, got {self.error_feedback!r}")
        if self.error_feedback and (self.lossless or self.quantizer != "ecsq"):
            raise OptionError("error_feedback works with the default ecsq quantizer only, not with "
                              + ("lossless" if self.lossless else f"quantizer {self.quantizer!r}"))

    def _check_pruning(self) -> None:
        from nnr.codec.pruning import CRITERIA

        for key in ("prune_include", "prune_exclude"):
            value = getattr(self, key)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) \
                    or not all(isinstance(v, str) and v for v in value):
                raise OptionError(f"{key} must be a list of tensor-name patterns, got {value!r}")
            object.__setattr__(self, key, tuple(value))
        if not isinstance(self.prune, str):
            raise OptionError(f"prune must be a pruning spec string, got {self.prune!r}")
        if self.prune:
            from .pruning import parse_spec

            spec = parse_spec(self.prune)
            if self.prune_global and spec.method != "magnitude":
                raise OptionError("a global threshold applies to magnitude pruning only "
                                  "(std and filters are per layer)")
            if self.prune_remove and not spec.structured:
                raise OptionError("removing channels needs structured pruning: --prune filters:RANKING:F "
                                  f"(got {self.prune!r}, which zeroes single weights)")
        elif self.prune_global or self.prune_include or self.prune_exclude or self.prune_steps != 1 \
                or self.prune_remove or self.prune_criterion != "modulus":
            raise OptionError("pruning options (global, criterion, include, exclude, steps, remove) need a "
                              "pruning spec (--prune)")
        if not isinstance(self.prune_remove_multiple, int) or isinstance(self.prune_remove_multiple, bool) \
                or not 1 <= self.prune_remove_multiple <= 1024:
            raise OptionError(f"prune_remove_multiple must be an integer in [1, 1024], "
                              f"got {self.prune_remove_multiple!r}")
        if self.prune_remove_multiple != 8 and not self.prune_remove:
            raise OptionError("a channel multiple applies to --remove only")
        if not isinstance(self.prune_remove, bool):
            raise OptionError(f"prune_remove must be true or false, got {self.prune_remove!r}")
        if not isinstance(self.prune_global, bool):
            raise OptionError(f"prune_global must be true or false, got {self.prune_global!r}")
        if self.prune_criterion not in CRITERIA:
            raise OptionError(f"unknown criterion {self.prune_criterion!r}; choose one of {', '.join(CRITERIA)}")
        if not isinstance(self.prune_steps, int) or isinstance(self.prune_steps, bool) \
                or not 1 <= self.prune_steps <= 100:
            raise OptionError(f"prune_steps must be an integer in [1, 100], got {self.prune_steps!r}")

    @property
    def needs_calibration(self) -> bool:
        """Whether encoding needs real inputs: error feedback fits layer statistics on them and
        ``filters:activation`` ranks channels by their output on them."""
        return self.error_feedback or self.prune.startswith("filters:activation")

    def qp_of(self, name: str) -> float:
        """The qp a tensor is coded at: qp plus its tensor_qp offset, if any."""
        return self.qp + self.tensor_qp.get(name, 0.0)

    def rule_of(self, name: str) -> str:
        """The step rule a tensor is coded with: ``channel`` if it is in channel_steps, else step_rule."""
        return "channel" if name in self.channel_steps else self.step_rule

    def to_json(self) -> dict:
        """JSON-able dict; tensor_qp, channel_steps, quantizer, error_feedback and pruning only
        when not the default, reconstruction only when not ``mse``, never probe_channels
        (compact metadata, and files from before an option existed keep their options text)."""
        d = dataclasses.asdict(self)
        if self.reconstruction == LEGACY_RECONSTRUCTION:
            del d["reconstruction"]
        if not self.tensor_qp:
            del d["tensor_qp"]
        if self.channel_steps:
            d["channel_steps"] = list(self.channel_steps)
        else:
            del d["channel_steps"]
        del d["probe_channels"]   # it steers the probe, whose choice channel_steps records
        if self.quantizer == "ecsq":
            del d["quantizer"]
        if not self.error_feedback:
            del d["error_feedback"]
        defaults = {"prune": "", "prune_global": False, "prune_criterion": "modulus", "prune_include": (),
                    "prune_exclude": (), "prune_steps": 1, "prune_remove": False, "prune_remove_multiple": 8}
        for key, default in defaults.items():
            if d[key] == default:
                del d[key]
            elif isinstance(d[key], tuple):
                d[key] = list(d[key])
        return d

    @classmethod
    def from_json(cls, d: dict) -> "EncoderOptions":
        """Build from an options record (a file's, or one replayed); unknown keys are refused,
        not ignored, and a record without ``reconstruction`` was written before it existed."""
        return cls.build(**{"reconstruction": LEGACY_RECONSTRUCTION, **d})

    @classmethod
    def build(cls, **kwargs) -> "EncoderOptions":
        """Like the constructor, but an unknown keyword is an OptionError, not a TypeError."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise OptionError(f"unknown encoder option(s): {', '.join(unknown)}")
        return cls(**kwargs)
