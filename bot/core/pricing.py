"""What a job costs: a flat price per image, or the tokens the provider counts, in integer micro-dollars.

A price per million tokens in dollars is, exactly, a price per token in micro-dollars times a
million, so ``tokens × price_per_million_in_micros`` is an amount in millionths of a micro-dollar;
one integer division (rounded up: a cost is never under-counted) turns it into micro-dollars.

A job priced by tokens is charged its most expensive outcome when it is accepted (its
**reservation**: the output tokens the catalog gives for its size and quality, plus its inputs:
the prompt's text tokens, bounded by its length in UTF-8 bytes, since a token is at least one
byte, and the catalog's tokens for each input image). When its answer comes, the charge is
settled to the real cost from the answer's ``usage``: one settlement row with the difference.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.core.money import MICROS_PER_USD

#: ``(most pixels, output tokens)``: an image of at most that many pixels costs at most that many tokens.
Tier = tuple[int, int]


@dataclass(frozen=True)
class Usage:
    """The tokens the API reports for a call (``input_tokens_details`` when it gives them)."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    text_tokens: int | None = None  # of the input tokens, those of the prompt
    image_tokens: int | None = None  # of the input tokens, those of the input images


def _micros(amount: int) -> int:
    """``tokens × micro-dollars per million tokens`` as micro-dollars, rounded up."""
    return -(-amount // MICROS_PER_USD)


@dataclass(frozen=True)
class TokenPrice:
    """A model priced by tokens: micro-dollars per million tokens, and what a reservation needs."""

    text_input: int
    image_input: int
    image_output: int
    input_image_tokens: int  # the most tokens one input image counts
    # Output tokens by quality, smallest size first; a quality not listed reserves the most of any.
    output_tokens: Mapping[str, tuple[Tier, ...]]
    partial_image_tokens: int = 0  # extra output tokens per streamed partial image

    def output_for(self, pixels: int | None, quality: str | None) -> int:
        """The most output tokens an image of ``pixels`` (``None``: the largest, for auto) costs at ``quality``."""
        row = self.output_tokens.get(quality) if quality is not None else None
        rows = [row] if row is not None else list(self.output_tokens.values())
        return max(_tier_tokens(row, pixels) for row in rows)

    def reservation(
        self, prompt: str, input_count: int, pixels: int | None, quality: str | None, partial_images: int = 0
    ) -> int:
        """The most a job can cost: its prompt, its input images, and its largest output (micro-dollars)."""
        text = len(prompt.encode("utf-8"))
        output = self.output_for(pixels, quality) + partial_images * self.partial_image_tokens
        images = input_count * self.input_image_tokens
        return _micros(text * self.text_input + images * self.image_input + output * self.image_output)

    def partials_cost(self, partials: int) -> int:
        """What ``partials`` streamed partial images add at most to a job (micro-dollars, rounded up)."""
        return _micros(partials * self.partial_image_tokens * self.image_output)

    def cost(self, usage: Usage, input_count: int) -> int:
        """What an answer's ``usage`` costs (micro-dollars).

        Without the split of its input tokens, a call with images prices them all at the dearer
        input rate (a cost is never under-counted); a call without images has only text.
        """
        if usage.text_tokens is not None and usage.image_tokens is not None:
            inputs = usage.text_tokens * self.text_input + usage.image_tokens * self.image_input
        elif input_count == 0:
            inputs = usage.input_tokens * self.text_input
        else:
            inputs = usage.input_tokens * max(self.text_input, self.image_input)
        return _micros(inputs + usage.output_tokens * self.image_output)


def _tier_tokens(row: tuple[Tier, ...], pixels: int | None) -> int:
    """The tokens of the first tier that holds ``pixels``; past the last, that tier's scaled up (rounded up)."""
    if pixels is None:
        return row[-1][1]
    for most, tokens in row:
        if pixels <= most:
            return tokens
    most, tokens = row[-1]
    return -(-tokens * pixels // most)


@dataclass(frozen=True)
class Settlement:
    """How a token-priced job's charge settles: the signed difference to its reservation, and why."""

    amount: int  # micro-dollars: negative gives back, positive charges more
    real: int  # what the call cost, as settled
    reason: str  # for the log line
