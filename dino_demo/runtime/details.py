"""What a result of a `transformers` family carries beside the common internals (no heavy imports:
`runtime.result.InferenceResult` names this type)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(eq=False)
class FamilyDetails:
    """The family-specific part of a `runtime.result.InferenceResult`.

    family: display name ("Deformable DETR", "Grounding DINO", ...); model_type: the config's.
    unavailable: view name ("proposals", "encoder", "token scores") -> one line saying why it does
        not apply to this model (the result's `unavailable` is this dict).
    model_inputs: the processor's output the model ran on (pixel_values [1, 3, h, w], pixel_mask,
        input_ids, ...), kept to re-run the encoder for a chosen token.
    points_per_level: decoder sampling points on each level (RT-DETR v2 / D-FINE may differ; then
        the common [.., L, P_max, ..] arrays are padded with NaN locations and zero weights).
    decoder_point_levels: [sum(P_l)] int64 level of each point in the decoder's flat point order.
    prompt: the text prompt (Grounding DINO), "" otherwise; tokens: its tokens as the tokenizer
        split them ([T]); token_logits: [K, Q, T] per-layer logits of every query on every token
        (the class logits of the common arrays are per phrase: the max over its tokens);
        phrase_tokens: per phrase, the token indices it spans.
    """

    family: str
    model_type: str
    unavailable: dict[str, str] = field(default_factory=dict)
    model_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    points_per_level: tuple[int, ...] = ()
    decoder_point_levels: torch.Tensor | None = None
    prompt: str = ""
    tokens: tuple[str, ...] = ()
    token_logits: torch.Tensor | None = None
    phrase_tokens: tuple[tuple[int, ...], ...] = ()

    def reason(self, view: str) -> str | None:
        """Why `view` does not apply, or None when it does."""
        return self.unavailable.get(view)

    def arrays(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The internals arrays a family's result adds to the common `arrays` (`io.internals`): the
        decoder's points per level and each point's level; for unequal counts the flat
        (unpadded) locations and weights; for a prompt its tokens and per-token logits."""
        counts = np.array(self.points_per_level, dtype=np.int64)
        extra = {"decoder_points_per_level": counts,
                 "decoder_point_levels": np.repeat(np.arange(len(counts)), counts)}
        if len(set(counts.tolist())) > 1:
            locations, weights = arrays["decoder_sampling_locations"], arrays["decoder_attention_weights"]
            extra["decoder_sampling_locations_flat"] = np.concatenate(
                [locations[..., level, :count, :] for level, count in enumerate(counts)], axis=-2)
            extra["decoder_attention_weights_flat"] = np.concatenate(
                [weights[..., level, :count] for level, count in enumerate(counts)], axis=-1)
        if self.token_logits is not None:
            extra["text_tokens"] = np.array(self.tokens, dtype=np.str_)
            extra["decoder_token_logits"] = self.token_logits.numpy()
        return extra
