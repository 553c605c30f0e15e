"""Backbones: the Mix Transformer (MiT, SegFormer's encoder) and a dilated ResNet.

Both return a list of feature maps ``(B, C_i, H / s_i, W / s_i)``, shallowest first, and carry
``channels`` and ``strides`` so that a head can be built for them without a dummy forward.

- MiT comes from ``transformers.SegformerModel``: its four hidden states are the maps at strides
  4/8/16/32 (MiT-B5 for the paper's DAFormer and HRDA; ``nvidia/mit-b5`` on the hub holds the
  ImageNet-1k weights). ``pretrained`` is a hub id or a local folder for ``from_pretrained``;
  ``config`` fields then override the saved config (e.g. ``drop_path_rate``). Without
  ``pretrained`` the encoder is built with random weights from ``SegformerConfig(**config)``;
  every key is checked against SegformerConfig's constructor first, so a typo is an error.
  Loading fails loudly when any encoder weight is missing from the checkpoint or has another
  shape: an encoder left at random init trains to a far lower mIoU without any other symptom.
- ResNet comes from timm with ``features_only`` and only the last stage returned, at output
  stride 8 (dilations 2 and 4 in the last two stages), as DeepLabV2 uses it. The paper's ResNet-101
  is mmseg's ResNetV1c (deep 3x3 stem 32-32-64), which is timm's ``resnet101c``, the default
  ``name``. ``pretrained`` is a weight file, a folder holding ``model.safetensors`` or
  ``pytorch_model.bin`` (timm's hub layout), or a hub id; weights load with timm's strict
  state-dict check. open-mmlab's ``resnet101_v1c`` checkpoint uses other key names and must be
  converted to timm's first (not done here).

SHADE (``flexseg.models.style_hallucination``, training only): an encoder may carry a ``style``
module (``attach_style``); ``forward(images, stylize=True)`` then doubles the batch after the
first stage (MiT: stage 1, ``hidden_sizes[0]`` channels; ResNet: the stem after its max-pool,
``bn1`` channels, stride 4), and ``style_features`` gives that first-stage feature alone (what
the basis is computed from). MiT then runs its stages one by one (``SegformerModel.stages``,
transformers >= 5), which is the loop of ``SegformerModel.forward``; without ``stylize`` the
encoder is called whole, as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import SegformerConfig, SegformerModel

from flexseg.config import ConfigError, looks_local
from flexseg.models.style_hallucination import StyleHallucination

# Constructor arguments of SegformerConfig; the generic PretrainedConfig ones (return_dict,
# id2label, ...) are accepted too because the constructor takes them.
MIT_CONFIG_FIELDS: frozenset[str] = frozenset(
    name
    for name, param in inspect.signature(SegformerConfig.__init__).parameters.items()
    if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL)
)

RESNET_CONFIG_FIELDS: frozenset[str] = frozenset({"output_stride", "drop_path_rate"})

# MiT-B5, the paper's DAFormer and HRDA backbone, as SegformerConfig fields: the architecture of
# lhoyer/DAFormer's mit_b5 (mmseg/models/backbones/mix_transformer.py: widths 64/128/320/512,
# depths 3/6/40/3, heads 1/2/5/8, reduction ratios 8/4/2/1, drop path 0.1), which nvidia/mit-b5's
# config.json holds. For random stand-ins of the hub weights (generation.random_weights) and
# paper-size tests and benchmarks.
MIT_B5: dict[str, Any] = {
    "hidden_sizes": [64, 128, 320, 512],
    "depths": [3, 6, 40, 3],
    "num_attention_heads": [1, 2, 5, 8],
    "sr_ratios": [8, 4, 2, 1],
    "drop_path_rate": 0.1,
    "decoder_hidden_size": 768,
}

DEFAULT_RESNET = "resnet101c"


def check_mit_config(config: Mapping[str, Any], where: str = "encoder.config") -> None:
    """Raise ConfigError naming the first key of ``config`` that SegformerConfig does not take."""
    for key in config:
        if key not in MIT_CONFIG_FIELDS:
            raise ConfigError(
                f"{where}: unknown key {key!r}: not a field of transformers.SegformerConfig "
                f"(fields: {', '.join(sorted(MIT_CONFIG_FIELDS))})"
            )


class MiTEncoder(nn.Module):
    """SegFormer's hierarchical transformer; ``forward`` gives the 4 stage outputs."""

    def __init__(self, model: SegformerModel) -> None:
        super().__init__()
        if not model.config.reshape_last_stage:
            raise ConfigError("encoder.config.reshape_last_stage must be true for a segmentor")
        self.model = model
        self.channels: tuple[int, ...] = tuple(model.config.hidden_sizes)
        strides, total = [], 1
        for s in model.config.strides:
            total *= s
            strides.append(total)
        self.strides: tuple[int, ...] = tuple(strides)
        self.style: StyleHallucination | None = None

    @property
    def style_channels(self) -> int:
        """Channels of the first stage (the feature SHADE re-styles)."""
        return int(self.channels[0])

    def _stages(self) -> nn.ModuleList:
        stages = getattr(self.model, "stages", None)
        if not isinstance(stages, nn.ModuleList):
            raise ConfigError(
                "training.shade needs a transformers SegformerModel with per-stage modules "
                "(SegformerModel.stages, transformers >= 5)"
            )
        return stages

    @classmethod
    def build(
        cls, config: Mapping[str, Any], pretrained: str | None = None, where: str = "encoder"
    ) -> MiTEncoder:
        check_mit_config(config, where=f"{where}.config")
        fields = dict(config)
        if pretrained is None:
            return cls(SegformerModel(SegformerConfig(**fields)))
        return cls(load_segformer(pretrained, overrides=fields, where=f"{where}.pretrained"))

    def forward(self, images: torch.Tensor, stylize: bool = False) -> list[torch.Tensor]:
        if not stylize:
            out = self.model(pixel_values=images, output_hidden_states=True, return_dict=True)
            return list(out.hidden_states)
        style = _require_style(self.style)
        feats, hidden = [], images
        for i, stage in enumerate(self._stages()):
            hidden = stage(hidden)
            if i == 0:
                hidden = style(hidden)
            feats.append(hidden)
        return feats

    def style_features(self, images: torch.Tensor) -> torch.Tensor:
        """The first stage's output (B, C_1, H / 4, W / 4), never stylized."""
        return self._stages()[0](images)


def _require_style(style: StyleHallucination | None) -> StyleHallucination:
    if style is None:
        raise RuntimeError("stylize=True but no style hallucination is attached (attach_style)")
    return style


def _check_local(pretrained: str, where: str) -> None:
    """A source written as a path (absolute, relative with ./ or ~, or nested folders) must
    exist: a hub id is ``name`` or ``namespace/name``."""
    if looks_local(pretrained) and not Path(pretrained).expanduser().exists():
        raise ConfigError(f"{where}: no such file or folder: {pretrained}")


def load_segformer(
    pretrained: str, overrides: Mapping[str, Any], where: str = "encoder.pretrained"
) -> SegformerModel:
    """``SegformerModel.from_pretrained`` with errors that name the source, and a check that every
    encoder weight came from the checkpoint."""
    _check_local(pretrained, where)
    local = Path(pretrained).expanduser()
    source = str(local) if local.exists() else pretrained
    if local.exists() and not local.is_dir():
        raise ConfigError(f"{where}: {pretrained!r} is a file; expected a folder or a hub id")
    try:
        model, info = SegformerModel.from_pretrained(
            source, output_loading_info=True, **dict(overrides)
        )
    except OSError as err:
        raise ConfigError(
            f"{where}: could not load {pretrained!r}: it is not an existing local folder and "
            f"loading it as a hub id failed (offline, or no such repository?): {err}"
        ) from err
    except RuntimeError as err:
        raise ConfigError(
            f"{where}: the checkpoint {pretrained!r} does not fit the encoder config "
            f"(mis-shaped weights; check encoder.config): {err}"
        ) from err
    bad = sorted(info.get("missing_keys", ())) + sorted(
        str(k) for k in info.get("mismatched_keys", ())
    )
    if bad or info.get("error_msgs"):
        raise ConfigError(
            f"{where}: the checkpoint {pretrained!r} does not fit the encoder: missing or "
            f"mis-shaped weights {bad[:8]}{' ...' if len(bad) > 8 else ''} "
            f"{info.get('error_msgs') or ''}"
        )
    return model


def _timm_weights(pretrained: str, where: str) -> dict[str, Any]:
    """The timm ``pretrained_cfg_overlay`` that points at ``pretrained`` (file, folder or hub id)."""
    _check_local(pretrained, where)
    path = Path(pretrained).expanduser()
    if path.is_file():
        return {"file": str(path)}
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return {"file": str(path / name)}
        raise ConfigError(
            f"{where}: folder {path} holds neither model.safetensors nor pytorch_model.bin"
        )
    return {"source": "hf-hub", "hf_hub_id": pretrained}


class ResNetEncoder(nn.Module):
    """A timm ResNet returning its last stage at ``output_stride`` (8: DeepLabV2's dilated net)."""

    def __init__(
        self,
        name: str = DEFAULT_RESNET,
        pretrained: str | None = None,
        output_stride: int = 8,
        drop_path_rate: float = 0.0,
        where: str = "encoder",
    ) -> None:
        super().__init__()
        import timm  # imported here: timm costs seconds at import and MiT models never need it

        if not timm.is_model(name):
            raise ConfigError(f"{where}.name: {name!r} is not a timm model name")
        if output_stride not in (8, 16, 32):
            raise ConfigError(f"{where}.config.output_stride: {output_stride} not in (8, 16, 32)")
        overlay = None if pretrained is None else _timm_weights(pretrained, f"{where}.pretrained")
        try:
            self.model = timm.create_model(
                name,
                pretrained=pretrained is not None,
                pretrained_cfg_overlay=overlay,
                features_only=True,
                out_indices=(-1,),
                output_stride=output_stride,
                drop_path_rate=drop_path_rate,
            )
        except (OSError, RuntimeError, ValueError) as err:
            raise ConfigError(
                f"{where}.pretrained: could not load {pretrained!r} into timm {name!r}: {err}"
            ) from err
        self.channels: tuple[int, ...] = tuple(self.model.feature_info.channels())
        self.strides: tuple[int, ...] = tuple(self.model.feature_info.reduction())
        self.style: StyleHallucination | None = None

    @property
    def style_channels(self) -> int:
        """Channels of the stem (the feature SHADE re-styles)."""
        self._stem_end()
        return int(self.model.bn1.num_features)

    def _stem_end(self) -> list[str]:
        """The names of the stem's modules, ending with its max-pool."""
        names = list(self.model.keys())
        if "maxpool" not in names or not isinstance(
            getattr(self.model, "bn1", None), nn.BatchNorm2d
        ):
            raise ConfigError(
                f"training.shade: the timm model's modules {names} lack the conv1 / bn1 / act1 / "
                "maxpool stem SHADE re-styles after"
            )
        return names[: names.index("maxpool") + 1]

    @classmethod
    def build(
        cls,
        config: Mapping[str, Any],
        pretrained: str | None = None,
        name: str | None = None,
        where: str = "encoder",
    ) -> ResNetEncoder:
        for key in config:
            if key not in RESNET_CONFIG_FIELDS:
                raise ConfigError(
                    f"{where}.config: unknown key {key!r} for a resnet encoder "
                    f"(known: {sorted(RESNET_CONFIG_FIELDS)})"
                )
        return cls(
            name=name or DEFAULT_RESNET,
            pretrained=pretrained,
            output_stride=int(config.get("output_stride", 8)),
            drop_path_rate=float(config.get("drop_path_rate", 0.0)),
            where=where,
        )

    def forward(self, images: torch.Tensor, stylize: bool = False) -> list[torch.Tensor]:
        if not stylize:
            return list(self.model(images))
        style, stem = _require_style(self.style), self._stem_end()
        x = images
        for name, module in self.model.items():
            x = module(x)
            if name == stem[-1]:
                x = style(x)
        return [x]

    def style_features(self, images: torch.Tensor) -> torch.Tensor:
        """The stem's output (B, C_stem, H / 4, W / 4), never stylized."""
        x = images
        for name in self._stem_end():
            x = self.model[name](x)
        return x


Encoder = MiTEncoder | ResNetEncoder


def attach_style(
    encoder: MiTEncoder | ResNetEncoder, basis_styles: int, concentration: float
) -> StyleHallucination:
    """Give ``encoder`` a style hallucination module after its first stage (no basis yet)."""
    encoder.style = StyleHallucination(encoder.style_channels, basis_styles, concentration)
    return encoder.style
