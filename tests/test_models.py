"""Segmentation models: build from config, forward/backward per variant, the DAFormer and
DeepLabV2 heads and HRDA's fusion against plainly written references, predict sizes, AdamW
parameter groups, and loading pretrained weights through the real from_pretrained paths."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from flexseg.config import ConfigError, load_config, stage_params  # noqa: E402
from flexseg.labels import NUM_CLASSES  # noqa: E402
from flexseg.models import (  # noqa: E402
    CropBox,
    HRDASegmentor,
    Segmentor,
    SegOutput,
    build_model,
    parse_model_config,
)
from flexseg.models.hrda import tile_starts  # noqa: E402

MIT = {
    "type": "mit",
    "pretrained": None,
    "config": {
        "hidden_sizes": [8, 16, 16, 32],
        "depths": [1, 1, 1, 1],
        "num_attention_heads": [1, 1, 2, 2],
        "sr_ratios": [4, 2, 1, 1],
        "drop_path_rate": 0.0,
    },
}
HEAD = {
    "type": "daformer",
    "embed_dim": 8,
    "fusion_dim": 12,
    "dilations": [1, 2, 3],
    "dropout": 0.1,
}
DAFORMER = {"name": "t", "architecture": "daformer", "encoder": MIT, "head": HEAD}
HRDA = {
    "name": "h",
    "architecture": "hrda",
    "encoder": MIT,
    "head": HEAD,
    "hrda": {"context_scale": 0.5, "detail_crop": 32, "attention_embed_dim": 8},
    "test_scale_factor": 2,
}
DLV2 = {
    "name": "r",
    "architecture": "daformer",
    "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": None},
    "head": {"type": "deeplabv2", "fusion_dim": 16},
}


def _batch(b=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(b, 3, h, w, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (b, h, w), generator=g)
    labels[:, :4, :4] = 255
    return images, labels


def _loss(outputs: list[SegOutput]) -> torch.Tensor:
    total = 0.0
    for out in outputs:
        logits = F.interpolate(out.logits, out.labels.shape[-2:], mode="bilinear")
        seg = F.cross_entropy(logits, out.labels, ignore_index=255)
        total = total + out.weight * seg + 0.1 * out.features.square().mean()
    return total


def _assert_encoder_gets_gradients(model: Segmentor) -> None:
    grads = [p.grad for n, p in model.encoder.named_parameters()]
    assert all(g is not None for g in grads), "an encoder parameter got no gradient"
    first = next(model.encoder.parameters())
    assert first.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# config


def test_demo_config_builds() -> None:
    cfg = load_config()
    for name in cfg["models"]:
        entry = stage_params(cfg, "train", experiment="flexseg", model=name, seed=0)["model"]
        if entry["encoder"]["pretrained"] is None:
            assert isinstance(build_model(entry), Segmentor)
    tiny = build_model(
        stage_params(cfg, "train", experiment="flexseg", model="tiny", seed=0)["model"]
    )
    assert tiny.name == "tiny" and tiny.output_stride == 4 and tiny.num_classes == NUM_CLASSES


def test_unknown_segformer_field_is_named() -> None:
    cfg = copy.deepcopy(DAFORMER)
    cfg["encoder"]["config"]["hiden_sizes"] = [8, 8, 8, 8]
    with pytest.raises(ConfigError, match="hiden_sizes"):
        build_model(cfg)


@pytest.mark.parametrize(
    "path, value, match",
    [
        ((), ("colour", 1), "colour"),
        (("encoder",), ("weights", "x"), "weights"),
        (("head",), ("depth", 2), "depth"),
        (("hrda",), ("scales", [1]), "scales"),
    ],
)
def test_unknown_keys_are_errors(path, value, match) -> None:
    cfg = copy.deepcopy(DAFORMER)
    node = cfg
    for key in path:
        node = node.setdefault(key, {})
    node[value[0]] = value[1]
    with pytest.raises(ConfigError, match=match):
        parse_model_config(cfg)


def test_bad_values_are_errors() -> None:
    for key, value in [("architecture", "segformer")]:
        with pytest.raises(ConfigError, match="architecture"):
            build_model({**DAFORMER, key: value})
    with pytest.raises(ConfigError, match="encoder.type"):
        build_model({**DAFORMER, "encoder": {"type": "vit"}})
    with pytest.raises(ConfigError, match="not a timm model"):
        build_model({**DLV2, "encoder": {"type": "resnet", "name": "resnet_nope"}})
    with pytest.raises(ConfigError, match="only resnet"):
        build_model({**DAFORMER, "encoder": {**MIT, "name": "resnet18"}})
    with pytest.raises(ValueError, match="detail_crop"):
        build_model({**HRDA, "hrda": {"detail_crop": 36}})
    with pytest.raises(ValueError, match="context_scale"):
        build_model({**HRDA, "hrda": {"context_scale": 0.3, "detail_crop": 32}})


def test_head_dilations_default_by_type() -> None:
    spec = parse_model_config({**DLV2, "head": {"type": "deeplabv2"}})
    assert spec.head.dilations == (6, 12)
    spec = parse_model_config({**DAFORMER, "head": {"type": "daformer"}})
    assert spec.head.dilations == (1, 6, 12, 18)


# ---------------------------------------------------------------------------------------------
# DAFormer


def test_daformer_forward_backward() -> None:
    torch.manual_seed(0)
    model = build_model(DAFORMER)
    images, labels = _batch()
    outputs = model(images, labels)
    assert len(outputs) == 1
    out = outputs[0]
    assert out.logits.shape == (2, NUM_CLASSES, 16, 16)
    assert out.features.shape == (2, 12, 16, 16)
    assert out.stage_features.shape == (2, 32, 2, 2)
    assert out.weight == 1.0 and out.labels.dtype == torch.long
    assert torch.equal(out.labels, labels)
    _loss(outputs).backward()
    _assert_encoder_gets_gradients(model)
    assert all(p.grad is not None for p in model.decode_head.parameters())


def _conv(x, conv, dilation=1, groups=1):
    pad = dilation * (conv.weight.shape[-1] - 1) // 2
    return F.conv2d(x, conv.weight, conv.bias, padding=pad, dilation=dilation, groups=groups)


def _cbr(x, block, dilation=1, groups=1):
    y = _conv(x, block.conv, dilation, groups)
    bn = block.bn
    y = (y - bn.running_mean[None, :, None, None]) / torch.sqrt(
        bn.running_var[None, :, None, None] + bn.eps
    )
    return torch.clamp(y * bn.weight[None, :, None, None] + bn.bias[None, :, None, None], min=0)


def test_daformer_head_matches_reference_and_feature_is_bottleneck() -> None:
    torch.manual_seed(1)
    model = build_model(DAFORMER)
    head = model.decode_head
    for m in head.modules():  # non-trivial BN statistics so that eval-mode BN is exercised
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    images, _ = _batch(seed=3)
    feats = model.encoder(images)
    seen = {}
    handle = head.bottleneck.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    out = head(feats)
    handle.remove()
    assert torch.equal(out.features, seen["out"])

    # reference: per-level 1x1 embedding, upsample to stride 4, concat, ASPP, 3x3 bottleneck
    size = feats[0].shape[-2:]
    embedded = []
    for level, f in enumerate(feats):
        e = _conv(f, head.embed[level])
        embedded.append(F.interpolate(e, size=size, mode="bilinear", align_corners=False))
    x = torch.cat(embedded, dim=1)
    branches = []
    for k, d in enumerate(HEAD["dilations"]):
        branch = head.context.branches[k]
        if d == 1:
            branches.append(_cbr(x, branch))
        else:
            dw = _cbr(x, branch[0], dilation=d, groups=x.shape[1])
            branches.append(_cbr(dw, branch[1]))
    bottleneck = _cbr(torch.cat(branches, dim=1), head.bottleneck)
    logits = _conv(bottleneck, head.classifier)
    torch.testing.assert_close(out.features, bottleneck, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.logits, logits, rtol=1e-4, atol=1e-5)
    assert head.context.branches[1][0].conv.groups == x.shape[1]  # depthwise
    assert abs(head.classifier.weight.std().item() - 0.01) < 0.003


@pytest.mark.parametrize("size", [(64, 80), (50, 70)])
def test_predict_returns_input_size(size) -> None:
    model = build_model(DAFORMER).eval()
    images, _ = _batch(h=size[0], w=size[1])
    with torch.no_grad():
        logits = model(images)
        direct = model.decode_head(model.encoder(images)).logits
    assert logits.shape == (2, NUM_CLASSES, *size)
    expected = F.interpolate(direct, size=size, mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits, expected)


def test_bad_batch_shapes_raise() -> None:
    model = build_model(DAFORMER)
    images, labels = _batch()
    with pytest.raises(ValueError, match="labels must be"):
        model.forward_train(images, labels[:, :32])
    with pytest.raises(ValueError, match="images must be"):
        model.predict(images[:, :2])


# ---------------------------------------------------------------------------------------------
# ResNet + DeepLabV2


def test_deeplabv2_forward_backward_and_reference() -> None:
    torch.manual_seed(2)
    model = build_model(DLV2)
    assert model.output_stride == 8
    images, labels = _batch()
    outputs = model.forward_train(images, labels)
    out = outputs[0]
    assert out.logits.shape == (2, NUM_CLASSES, 8, 8)
    assert out.features.shape == (2, 16, 8, 8)
    assert out.stage_features.shape == (2, 512, 8, 8)
    _loss(outputs).backward()
    _assert_encoder_gets_gradients(model)

    model.eval()
    with torch.no_grad():
        last = model.encoder(images)[-1]
        head = model.decode_head
        expected = sum(
            F.conv2d(last, conv.weight, conv.bias, padding=d, dilation=d)
            for conv, d in zip(head.classifiers, (6, 12), strict=True)
        )
        torch.testing.assert_close(head([last]).logits, expected, rtol=1e-4, atol=1e-5)
        assert model.predict(images).shape == (2, NUM_CLASSES, 64, 64)


def test_deeplabv2_without_gap_features_has_no_projection(tmp_path) -> None:
    """GAP off: no GAP-only parameters (every one gets a gradient, as DDP needs); model.pt
    records it, and a file without the record (written before it existed) loads with them."""
    from flexseg.checkpoint import load_model, save_model

    torch.manual_seed(2)
    model = build_model(DLV2, gap_features=False)
    assert not model.gap_features and model.decode_head.projection is None
    images, labels = _batch()
    (out,) = model.forward_train(images, labels)
    assert out.features is None
    F.cross_entropy(out.logits.float(), labels[:, ::8, ::8], ignore_index=255).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert build_model(DAFORMER, gap_features=False).gap_features  # its feature feeds the logits

    save_model(tmp_path / "new.pt", model, DLV2, "source_only", 0, {}, "test", 1)
    loaded, _ = load_model(tmp_path / "new.pt")
    assert not loaded.gap_features and set(loaded.state_dict()) == set(model.state_dict())

    with_projection = build_model(DLV2)
    save_model(tmp_path / "old.pt", with_projection, DLV2, "source_only", 0, {}, "test", 1)
    payload = torch.load(tmp_path / "old.pt", weights_only=True)
    del payload["gap_features"]
    torch.save(payload, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.gap_features
    torch.testing.assert_close(
        loaded.decode_head.projection.conv.weight,
        with_projection.decode_head.projection.conv.weight,
    )


# ---------------------------------------------------------------------------------------------
# HRDA


def test_hrda_forward_backward_shapes() -> None:
    torch.manual_seed(3)
    model = build_model(HRDA)
    assert isinstance(model, HRDASegmentor) and model.align == 8
    assert model.test_scale_factor == 2.0
    images, labels = _batch()
    outputs = model.forward_train(images, labels)
    fused, detail = outputs
    assert (fused.weight, detail.weight) == (0.9, 0.1)
    assert fused.logits.shape == (2, NUM_CLASSES, 16, 16)
    assert fused.features.shape == (2, 12, 8, 8)  # context branch: stride 8 of the crop
    assert fused.stage_features.shape == (2, 32, 1, 1)
    assert detail.logits.shape == (2, NUM_CLASSES, 8, 8)
    assert detail.features.shape == (2, 12, 8, 8)
    assert detail.labels.shape == (2, 32, 32) and detail.stage_features is None
    assert torch.equal(fused.labels, labels)
    _loss(outputs).backward()
    _assert_encoder_gets_gradients(model)
    assert all(p.grad is not None for p in model.scale_attention_head.parameters())


def test_hrda_fused_output_matches_reference() -> None:
    torch.manual_seed(4)
    model = build_model(HRDA).eval()
    images, labels = _batch(seed=5)
    box = CropBox(y0=16, y1=48, x0=8, x1=40)
    with torch.no_grad():
        fused, detail = model.forward_train(images, labels, detail_box=box)

        context = F.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        lr_feats = model.encoder(context)
        lr = model.decode_head(lr_feats).logits  # (2, C, 8, 8): 8 px per cell
        att = torch.sigmoid(model.scale_attention_head(lr_feats).logits)
        hr = model.decode_head(model.encoder(images[:, :, 16:48, 8:40])).logits  # (2, C, 8, 8)

    # attention zeroed on context cells outside the detail window (cell = 8 x 8 input pixels)
    masked = att.clone()
    for i in range(masked.shape[-2]):
        for j in range(masked.shape[-1]):
            inside = 16 <= i * 8 and (i + 1) * 8 <= 48 and 8 <= j * 8 and (j + 1) * 8 <= 40
            if not inside:
                masked[:, :, i, j] = 0
    # detail logits placed at the window on the stride-4 grid, zeros elsewhere
    inserted = torch.zeros(2, NUM_CLASSES, 16, 16)
    for i in range(hr.shape[-2]):
        for j in range(hr.shape[-1]):
            inserted[:, :, 16 // 4 + i, 8 // 4 + j] = hr[:, :, i, j]

    def up(x):
        return F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)

    expected = up((1 - masked) * lr) + up(masked) * inserted
    torch.testing.assert_close(fused.logits, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(detail.logits, hr, rtol=1e-4, atol=1e-5)
    assert torch.equal(detail.labels, labels[:, 16:48, 8:40])
    # outside the window only the context logits (scaled by 1 - a) remain
    assert fused.logits[:, :, 0, 0].abs().sum() > 0
    torch.testing.assert_close(fused.logits[:, :, 0, 0], lr[:, :, 0, 0])


def test_hrda_detail_window_is_seeded_and_aligned() -> None:
    model = build_model(HRDA)
    boxes = []
    for seed in range(30):
        torch.manual_seed(seed)
        box = model.sample_detail_box(64, 96)
        torch.manual_seed(seed)
        assert model.sample_detail_box(64, 96) == box
        assert (box.height, box.width) == (32, 32)
        assert 0 <= box.y0 and box.y1 <= 64 and 0 <= box.x0 and box.x1 <= 96
        assert all(v % 8 == 0 for v in (box.y0, box.x0))
        boxes.append((box.y0, box.x0))
    ys, xs = {b[0] for b in boxes}, {b[1] for b in boxes}
    # HRDA's get_crop_bbox: randint((margin + 1) // 8) * 8, so the flush window is never drawn
    assert ys <= {0, 8, 16, 24} and len(ys) > 2 and len(xs) > 3
    assert max(xs) <= 56
    with pytest.raises(ValueError, match="divisible by 8"):
        model.forward_train(*_batch(h=60, w=64))
    with pytest.raises(ValueError, match="detail window"):
        model.forward_train(*_batch(), detail_box=CropBox(4, 36, 0, 32))


def test_hrda_detail_offsets_are_the_anchors_0_to_504() -> None:
    """A 512 window in a 1024 crop: offsets 0, 8, ..., 504 (HRDA's get_crop_bbox with
    crop_coord_divisible 8 draws randint(0, 513 // 8) * 8), never 512; a window as large as the
    side sits at 0."""
    model = build_model({**HRDA, "hrda": {**HRDA["hrda"], "detail_crop": 512}})
    torch.manual_seed(0)
    boxes = [model.sample_detail_box(1024, 512) for _ in range(3000)]
    assert {b.y0 for b in boxes} == set(range(0, 505, 8))
    assert {b.x0 for b in boxes} == {0}
    counts = np.bincount([b.y0 // 8 for b in boxes])
    assert counts.min() > 0.5 * counts.mean()  # uniform over the 64 offsets
    dlv2 = build_model({**HRDA_DLV2, "hrda": {**HRDA_DLV2["hrda"], "detail_crop": 384}})
    assert dlv2.align == 16
    offsets = {dlv2.sample_detail_box(1024, 1024).y0 for _ in range(3000)}
    assert offsets == set(range(0, 640 - 16 + 1, 16))  # margin 640: (641 // 16) = 40 offsets


HRDA_DLV2 = {
    "name": "hr",
    "architecture": "hrda",
    "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": None},
    "head": {"type": "deeplabv2", "fusion_dim": 16},
    "hrda": {"context_scale": 0.5, "detail_crop": 32},
}


def test_hrda_deeplabv2_scale_attention_is_a_deeplabv2_head() -> None:
    """HRDA builds the scale attention from the single-scale head's config (hrda_head.py): for
    DLV2Head that is the sum of dilated 3x3 convs (6, 12) on the last stage, no BN, no dropout."""
    from flexseg.models.heads import DeepLabV2Head

    torch.manual_seed(5)
    model = build_model(HRDA_DLV2)
    att = model.scale_attention_head
    assert isinstance(att, DeepLabV2Head) and att.projection is None
    assert [c.dilation for c in att.classifiers] == [(6, 6), (12, 12)]
    assert not [m for m in att.modules() if isinstance(m, nn.BatchNorm2d | nn.Dropout2d)]
    images, labels = _batch()
    outputs = model.forward_train(images, labels)
    _loss(outputs).backward()
    assert all(p.grad is not None for p in att.parameters())
    model.eval()
    with torch.no_grad():
        feats = model.encoder(F.interpolate(images, scale_factor=0.5, mode="bilinear"))
        expected = torch.sigmoid(
            sum(
                F.conv2d(feats[-1], c.weight, c.bias, padding=d, dilation=d)
                for c, d in zip(att.classifiers, (6, 12), strict=True)
            )
        )
        torch.testing.assert_close(model.attention(feats), expected, rtol=1e-4, atol=1e-5)


def test_tile_starts() -> None:
    assert tile_starts(64, 32, 16) == [0, 16, 32]
    assert tile_starts(70, 32, 16) == [0, 16, 32, 38]
    assert tile_starts(20, 20, 10) == [0]


def test_hrda_predict_matches_reference() -> None:
    torch.manual_seed(6)
    model = build_model(HRDA).eval()
    images, _ = _batch(h=44, w=72, seed=7)
    with torch.no_grad():
        logits = model.predict(images)
        context = F.interpolate(images, size=(22, 36), mode="bilinear", align_corners=False)
        lr_feats = model.encoder(context)
        lr = model.decode_head(lr_feats).logits
        att = torch.sigmoid(model.scale_attention_head(lr_feats).logits)
        total = torch.zeros(2, NUM_CLASSES, 44, 72)
        count = torch.zeros(44, 72)
        # 32 px tiles, stride 16, the last tile flush with the border
        for y in (0, 12):
            for x in (0, 16, 32, 40):
                tile = model.decode_head(model.encoder(images[:, :, y : y + 32, x : x + 32]))
                up = F.interpolate(tile.logits, (32, 32), mode="bilinear", align_corners=False)
                total[:, :, y : y + 32, x : x + 32] += up
                count[y : y + 32, x : x + 32] += 1
        hr = total / count
    assert count.min() >= 1

    def up(x):
        return F.interpolate(x, size=(44, 72), mode="bilinear", align_corners=False)

    expected = up((1 - att) * lr) + up(att) * hr
    assert logits.shape == (2, NUM_CLASSES, 44, 72)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert model.encode_last_stage(images).shape == lr_feats[-1].shape


# ---------------------------------------------------------------------------------------------
# optimizer parameter groups


@pytest.mark.parametrize("cfg", [DAFORMER, HRDA, DLV2], ids=["daformer", "hrda", "dlv2"])
def test_param_groups_cover_every_parameter_once(cfg) -> None:
    model = build_model(cfg)
    groups = model.param_groups(lr=1e-3, head_lr_mult=10.0, weight_decay=0.01)
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters()}
    where = {id(p): g for g in groups for p in g["params"]}
    for name, param in model.named_parameters():
        group = where[id(param)]
        in_head = name.startswith(("decode_head.", "scale_attention_head."))
        assert math.isclose(group["lr"], 1e-2 if in_head else 1e-3), name
        assert group["lr_mult"] == (10.0 if in_head else 1.0)
        assert group["weight_decay"] == (0.0 if "norm" in name else 0.01), name
    # every LayerNorm (MiT) has no decay; the decoder's BatchNorms keep it
    for mod_name, module in model.named_modules():
        if isinstance(module, torch.nn.LayerNorm):
            for p in module.parameters():
                assert where[id(p)]["weight_decay"] == 0.0, mod_name
        if isinstance(module, torch.nn.BatchNorm2d) and mod_name.startswith("decode_head"):
            assert where[id(module.weight)]["weight_decay"] == 0.01
            assert where[id(module.weight)]["lr"] == pytest.approx(1e-2)
    # MiT: per stage a patch-embedding and an output LayerNorm, per block two, plus one in
    # the spatial reduction where sr_ratio > 1
    mit = MIT["config"]
    expected = sum(
        2 + depth * (2 + (sr > 1))
        for depth, sr in zip(mit["depths"], mit["sr_ratios"], strict=True)
    )
    n_layernorms = sum(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert n_layernorms == (0 if cfg is DLV2 else expected)
    torch.optim.AdamW(groups)  # accepted as is (AdamW rejects a parameter in two groups)


# ---------------------------------------------------------------------------------------------
# pretrained weights through the real loading paths


def _segformer(tmp_path):
    from transformers import SegformerConfig, SegformerForImageClassification

    torch.manual_seed(8)
    fields = {k: v for k, v in MIT["config"].items()}
    source = SegformerForImageClassification(SegformerConfig(**fields, num_labels=5))
    folder = tmp_path / "mit"
    source.save_pretrained(folder)
    return source.segformer, folder


def test_mit_pretrained_folder_loads_its_weights(tmp_path) -> None:
    source, folder = _segformer(tmp_path)
    cfg = {**DAFORMER, "encoder": {"type": "mit", "pretrained": str(folder)}}
    model = build_model(cfg)
    loaded = model.encoder.model.state_dict()
    expected = source.state_dict()
    assert loaded.keys() == expected.keys()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    # config fields override the saved config without touching the weights
    cfg["encoder"]["config"] = {"drop_path_rate": 0.05}
    model = build_model(cfg)
    assert model.encoder.model.config.drop_path_rate == 0.05
    assert torch.equal(model.encoder.model.state_dict()[key], expected[key])


def test_mit_pretrained_mismatch_is_an_error(tmp_path) -> None:
    _, folder = _segformer(tmp_path)
    cfg = {
        **DAFORMER,
        "encoder": {
            "type": "mit",
            "pretrained": str(folder),
            "config": {"hidden_sizes": [8, 16, 16, 48]},
        },
    }
    with pytest.raises(ConfigError, match="mis-shaped"):
        build_model(cfg)


@pytest.mark.parametrize("source", ["/nonexistent/mit-folder", "nobody-here/no-such-mit"])
def test_missing_pretrained_source_fails_clearly(monkeypatch, source) -> None:
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="encoder.pretrained"):
        build_model({**DAFORMER, "encoder": {"type": "mit", "pretrained": source}})
    with pytest.raises(ConfigError, match="encoder.pretrained"):
        build_model(
            {**DLV2, "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": source}}
        )


def test_resnet_pretrained_file_and_folder_load(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(9)
    source = timm.create_model("resnet10t", pretrained=False)
    state = source.state_dict()
    torch.save(state, tmp_path / "weights.pth")
    folder = tmp_path / "timm"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    for where in (tmp_path / "weights.pth", folder):
        model = build_model({**DLV2, "encoder": {**DLV2["encoder"], "pretrained": str(where)}})
        loaded = model.encoder.model.state_dict()
        assert len(loaded) > 10
        for key, value in loaded.items():
            assert torch.equal(value, state[key]), key
    (folder / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="neither model.safetensors"):
        build_model({**DLV2, "encoder": {**DLV2["encoder"], "pretrained": str(folder)}})
