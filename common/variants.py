"""The four training variants of the seed post, as data, with the post's published figures.

A variant is a training path (``fit``: the framework-driven, graph-compiled path; ``loop``: a hand-written
per-batch loop) crossed with an output head (``probs``: softmax output and a probability cross-entropy;
``logits``: no output activation and a logit cross-entropy).

    >>> VARIANTS["loop_probs"].mode, VARIANTS["loop_probs"].head
    ('loop', 'probs')
"""

from __future__ import annotations

import dataclasses

MODES = ("fit", "loop")
HEADS = ("probs", "logits")


@dataclasses.dataclass(frozen=True)
class PostFigures:
    """What the post printed (TF <= 2.3, Keras 2): test accuracy and, for the loops, per-epoch cost."""

    test_accuracy: float
    test_loss: float | None = None
    epoch_costs: tuple[float, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    mode: str
    head: str
    post: PostFigures

    @property
    def uses_prob_loss(self) -> bool:
        """Only the softmax head has a probability-loss flavour (native or clipped)."""
        return self.head == "probs"


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("fit_probs", "fit", "probs", PostFigures(0.9715, test_loss=0.14218217134475708)),
        Variant(
            "loop_probs",
            "loop",
            "probs",
            PostFigures(
                0.2092,
                epoch_costs=(12.92622, 13.92229, 14.30269, 14.30322, 14.30376, 14.30323, 14.00320, 14.08859,
                             13.94928, 12.82328, 12.81979, 12.81952, 12.82301, 12.82463, 12.82113),
            ),
        ),
        Variant(
            "loop_logits",
            "loop",
            "logits",
            PostFigures(
                0.9701,
                epoch_costs=(3.10352, 0.43175, 0.31126, 0.25589, 0.22204, 0.20632, 0.19979, 0.18638, 0.18818,
                             0.18887, 0.18071, 0.18631, 0.17571, 0.17700, 0.16782),
            ),
        ),
        Variant("fit_logits", "fit", "logits", PostFigures(0.9725, test_loss=0.13028447329998016)),
    )
}
VARIANT_NAMES = tuple(VARIANTS)


class VariantError(ValueError):
    """An unknown variant name; the message lists the known ones."""


def parse_variants(names: str | list[str]) -> list[Variant]:
    """``'all'``, a comma-separated string, or a list of names -> variants in canonical order."""
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    if not names:  # an empty --variants is a slip, not a request for everything
        raise VariantError(f"no variant named; give all, or names from: {', '.join(VARIANT_NAMES)}")
    if names == ["all"]:
        return list(VARIANTS.values())
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise VariantError(f"unknown variant {', '.join(unknown)}; choose from: all, {', '.join(VARIANT_NAMES)}")
    return [v for v in VARIANTS.values() if v.name in names]
