"""What every model of the zoo shares beyond its layers: timm's forward API, drop-path schedule, input checks
and strict loading with errors that say what did not match."""

from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

from ..utils.tracing import is_fx_tracing
from ..weights import check_state_dict, model_name


def drop_path_schedule(drop_path_rate: float, depths: Sequence[int]) -> List[List[float]]:
    """Stochastic depth rising linearly from 0 over all blocks, split per stage."""
    total = sum(depths)
    rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start : start + d])
        start += d
    return out


def check_input_channels(model: nn.Module, x: torch.Tensor) -> None:
    """A clear error for a wrong input shape. Call it under `if not torch.jit.is_scripting():` (TorchScript cannot
    pass modules around); under FX tracing shapes are symbolic, so it checks nothing there."""
    if is_fx_tracing():
        return
    if x.dim() != 4 or x.shape[1] != model.in_chans:
        raise ValueError(
            f"{model_name(model)} expects a (batch, {model.in_chans}, height, width) image tensor, "
            f"got shape {tuple(x.shape)}"
        )


def min_input_size(model: nn.Module) -> int:
    """The smallest image side the model takes: its total stride (32 for InceptionNeXt and ConvNeXt), whose
    last downsampling conv needs at least one full window."""
    info = getattr(model, "feature_info", None)
    try:
        return int(info[-1]["reduction"]) if info else 1
    except (TypeError, KeyError, IndexError):
        return 1


# The largest input side any command takes: a 3 x 8192 x 8192 float image is 800 MB before the first layer, so
# a larger size is a typo (1000000) that would only end in an out-of-memory error.
MAX_IMG_SIZE = 8192


def check_img_size(model: nn.Module, size: Optional[int], option: str = "img_size") -> None:
    """A ValueError naming `option` and the minimum (or the maximum, MAX_IMG_SIZE) unless `size` is None (use
    the weights' own) or in range; 0 and negative sizes are errors everywhere, never a silent default."""
    if size is None:
        return
    if size > MAX_IMG_SIZE:
        raise ValueError(
            f"{option} {size} is too large: at most {MAX_IMG_SIZE} px (a larger input would not fit in memory); "
            f"leave {option} out to use the weights' own size"
        )
    least = max(min_input_size(model), 1)
    if size < least:
        raise ValueError(
            f"{option} {size} is too small: {model_name(model)} needs images of at least {least} px "
            f"(its total stride); leave {option} out to use the weights' own size"
        )


class TimmModelMixin:
    """forward / forward_intermediates / strict loading on top of `_stem_and_stages`, `forward_features`
    and `forward_head`, which each model defines."""

    def _stem_and_stages(self) -> Tuple[nn.Module, List[nn.Module]]:
        raise NotImplementedError

    @torch.jit.ignore
    def no_weight_decay(self):
        return set()

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ):
        """Stage outputs at `indices` (last n if int, all if None); with the final features unless only asked for them."""
        if output_fmt != "NCHW":
            raise ValueError(f"{model_name(self)} returns NCHW intermediates only, not {output_fmt!r}")
        stem, stages = self._stem_and_stages()
        take_indices, max_index = feature_take_indices(len(stages), indices)
        check_input_channels(self, x)
        x = stem(x)
        if stop_early or intermediates_only:
            stages = stages[: max_index + 1]
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take_indices:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """As nn.Module's, but a strict load that does not fit raises an error naming the model and the keys."""
        if strict:
            check_state_dict(state_dict, self, "state dict")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)
