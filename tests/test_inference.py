"""Test-time resize, sliding-window inference and the evaluation loop on a tiny conv model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flexseg.evaluate import EvalSettings, Sample, evaluate_samples, panel_indices, prefetch
from flexseg.inference import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InferenceSettings,
    keep_ratio_size,
    normalize,
    predict_image,
    resize_for_test,
    slide_logits,
    whole_logits,
    window_grid,
)
from flexseg.labels import CLASS_NAMES
from flexseg.metrics import confusion_matrix, gt_boundary, mean_iou

torch.set_num_threads(1)


class TinyConv(nn.Module):
    """A two-layer conv net whose output at a pixel depends on its neighbourhood (and padding)."""

    def __init__(self, classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, classes, 3, padding=1)
        self.calls: list[tuple[int, ...]] = []

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(images.shape))
        return self.b(torch.relu(self.a(images)))


def settings(**kw) -> InferenceSettings:
    base = dict(mode="slide", window=16, stride=8, batch_size=4, scale=(64, 32), scale_factor=1.0)
    base.update(kw)
    return InferenceSettings(**base)


def mmcv_rescale(w, h, long_side, short_side):
    scale = min(long_side / max(h, w), short_side / min(h, w))
    return int(w * scale + 0.5), int(h * scale + 0.5)


def test_keep_ratio_size_follows_the_protocol_table():
    # Sizes quoted in the evaluation protocol (DAFormer boxes; HRDA doubles them).
    assert keep_ratio_size(2048, 1024, (1024, 512)) == (1024, 512)
    assert keep_ratio_size(1280, 720, (1024, 512)) == (910, 512)
    assert keep_ratio_size(1920, 1080, (960, 540)) == (960, 540)
    assert keep_ratio_size(1920, 1080, (960, 540), factor=2) == (1920, 1080)
    assert keep_ratio_size(1280, 720, (1024, 512), factor=2) == (1820, 1024)
    rng = np.random.default_rng(0)
    for _ in range(50):
        w, h = (int(v) for v in rng.integers(20, 3000, size=2))
        box = tuple(sorted((int(v) for v in rng.integers(16, 2000, size=2)), reverse=True))
        assert keep_ratio_size(w, h, box) == mmcv_rescale(w, h, *box)
        # The order of the box's sides does not matter.
        assert keep_ratio_size(w, h, box[::-1]) == mmcv_rescale(w, h, *box)


def test_resize_for_test_keeps_uint8_and_size():
    rgb = np.random.default_rng(1).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    out = resize_for_test(rgb, settings(scale=(64, 32)))
    assert out.dtype == np.uint8 and out.shape == (32, 64, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        resize_for_test(rgb[..., 0], settings())


def test_normalize_matches_per_channel_formula():
    rgb = np.random.default_rng(2).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    x = normalize(rgb)
    assert x.shape == (1, 3, 4, 5)
    for c in range(3):
        for y in range(4):
            for i in range(5):
                ref = (float(rgb[y, i, c]) - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
                assert x[0, c, y, i].item() == pytest.approx(ref, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize(
    "height,width,window,stride",
    [
        (32, 64, 16, 8),
        (37, 53, 16, 8),
        (10, 70, 16, 12),
        (16, 16, 16, 8),
        (5, 9, 16, 8),
        (40, 40, 16, 5),
    ],
)
def test_window_grid_covers_every_pixel(height, width, window, stride):
    wins = window_grid(height, width, window, stride)
    covered = np.zeros((height, width), dtype=int)
    for w in wins:
        assert 0 <= w.y0 < w.y1 <= height and 0 <= w.x0 < w.x1 <= width
        assert w.y1 - w.y0 == min(window, height) and w.x1 - w.x0 == min(window, width)
        covered[w.y0 : w.y1, w.x0 : w.x1] += 1
    assert (covered > 0).all()
    # The last window of each direction is flush with the far edge.
    assert max(w.y1 for w in wins) == height and max(w.x1 for w in wins) == width
    # mmseg's count: ceil((size - window) / stride) + 1 steps per direction.
    rows = max(-(-(height - window) // stride), 0) + 1
    cols = max(-(-(width - window) // stride), 0) + 1
    assert len(wins) == rows * cols
    assert len(set(wins)) == len(wins)


def test_one_window_equals_whole_image():
    model = TinyConv()
    image = normalize(np.random.default_rng(3).integers(0, 256, (12, 14, 3), dtype=np.uint8))
    slid, n = slide_logits(model, image, window=16, stride=8, batch_size=4)
    assert n == 1
    torch.testing.assert_close(slid, whole_logits(model, image))
    # Exactly window-sized image: still one window.
    image = image[:, :, :12, :12]
    slid, n = slide_logits(model, image, window=12, stride=4, batch_size=2)
    assert n == 1
    torch.testing.assert_close(slid, whole_logits(model, image))


def test_slide_averages_overlapping_windows_like_a_loop():
    model = TinyConv(classes=3)
    image = normalize(np.random.default_rng(4).integers(0, 256, (20, 29, 3), dtype=np.uint8))
    window, stride = 12, 7
    got, n = slide_logits(model, image, window, stride, batch_size=3)
    wins = window_grid(20, 29, window, stride)
    assert n == len(wins)
    with torch.no_grad():
        crops = [model.predict(image[:, :, w.y0 : w.y1, w.x0 : w.x1])[0] for w in wins]
    for y in range(20):
        for x in range(29):
            hits = [
                crop[:, y - w.y0, x - w.x0]
                for w, crop in zip(wins, crops, strict=True)
                if w.y0 <= y < w.y1 and w.x0 <= x < w.x1
            ]
            torch.testing.assert_close(got[0, :, y, x], sum(hits) / len(hits))
    # Overlaps change the result: the windows see different padding than the whole image.
    assert not torch.allclose(got, whole_logits(model, image))


def test_batch_size_does_not_change_the_result():
    model = TinyConv()
    image = normalize(np.random.default_rng(5).integers(0, 256, (24, 40, 3), dtype=np.uint8))
    model.calls.clear()
    one, n = slide_logits(model, image, 16, 8, batch_size=1)
    assert len(model.calls) == n
    model.calls.clear()
    many, _ = slide_logits(model, image, 16, 8, batch_size=4)
    assert [c[0] for c in model.calls] == [4] * (n // 4) + ([n % 4] if n % 4 else [])
    torch.testing.assert_close(one, many)


def test_predict_image_softmax_then_bilinear_then_argmax():
    model = TinyConv()
    rgb = np.random.default_rng(6).integers(0, 256, (30, 60, 3), dtype=np.uint8)
    s = settings(scale=(40, 20), window=16, stride=8)
    pred = predict_image(model, rgb, (30, 60), s)
    assert pred.labels.shape == (30, 60) and pred.labels.dtype == np.uint8
    assert pred.input_size == (40, 20)
    logits, n = slide_logits(model, normalize(resize_for_test(rgb, s)), 16, 8, 4)
    assert pred.num_windows == n
    probs = F.interpolate(torch.softmax(logits, 1), size=(30, 60), mode="bilinear")
    np.testing.assert_array_equal(pred.labels, probs.argmax(1)[0].numpy())
    whole = predict_image(model, rgb, (30, 60), settings(mode="whole", scale=(40, 20)))
    assert whole.num_windows == 1 and whole.labels.shape == (30, 60)


def test_bad_settings_and_model_output_raise():
    with pytest.raises(ValueError, match="mode"):
        settings(mode="tiles")
    with pytest.raises(ValueError, match="stride"):
        settings(stride=0)

    class Shrinks:
        def predict(self, images):
            return torch.zeros(images.shape[0], 3, 4, 4)

    image = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="input size"):
        whole_logits(Shrinks(), image)


def test_panel_indices_spread_over_the_split():
    idx = panel_indices(10, 3)
    assert len(idx) == 3 and min(idx) == 0 and max(idx) == 9
    assert panel_indices(2, 5) == {0, 1}
    assert panel_indices(0, 3) == set() and panel_indices(5, 0) == set()


def test_prefetch_keeps_order_and_raises_loader_errors():
    assert [s.name for s in prefetch([1, 2, 3], lambda i: Sample(str(i), None, None))] == [
        "1",
        "2",
        "3",
    ]

    def load(i):
        if i == 2:
            raise OSError("broken file 2")
        return Sample(str(i), None, None)

    with pytest.raises(OSError, match="broken file 2"):
        list(prefetch([1, 2, 3], load))


def test_evaluate_samples_scores_and_panels():
    rng = np.random.default_rng(7)
    model = TinyConv(classes=4)
    samples = []
    for i in range(4):
        rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        label = rng.integers(0, 4, (24, 40)).astype(np.uint8)
        label[:3] = 255
        samples.append(Sample(f"img{i}", rgb, label, "fog" if i < 2 else "night"))
    s = EvalSettings(
        inference=settings(scale=(40, 24), window=16, stride=8),
        boundary_kernel=3,
        panels=2,
    )
    result = evaluate_samples(model, iter(samples), len(samples), s, torch.device("cpu"))
    scores = result.scores
    assert scores.num_images == 4 and len(result.panels) == 2
    conf = np.zeros((19, 19), dtype=np.int64)
    bw = bv = 0
    for smp in samples:
        pred = predict_image(model, smp.rgb, smp.label.shape, s.inference).labels
        conf += confusion_matrix(pred, smp.label)
        b = gt_boundary(torch.from_numpy(smp.label), 3).numpy()
        valid = smp.label != 255
        bw += int(((pred != smp.label) & valid & b).sum())
        bv += int((valid & b).sum())
    np.testing.assert_array_equal(scores.confusion, conf)
    assert scores.miou == pytest.approx(mean_iou(conf))
    assert scores.boundary.boundary_error == pytest.approx(100 * bw / bv)
    assert set(scores.per_condition()) == {"fog", "night"}


# --------------------------------------------------------------------------------------------
# The command end to end: a checkpoint of a tiny model and a small ACDC-layout tree.

TINY_MODEL = {
    "name": "tiny",
    "architecture": "daformer",
    "encoder": {
        "type": "mit",
        "pretrained": None,
        "config": {
            "hidden_sizes": [8, 16, 16, 16],
            "depths": [1, 1, 1, 1],
            "num_attention_heads": [1, 1, 1, 1],
            "sr_ratios": [4, 2, 1, 1],
        },
    },
    "head": {"embed_dim": 8, "fusion_dim": 8, "dilations": [1, 2], "dropout": 0.0},
    "test_scale_factor": 1,
}


def write_acdc_tree(root, rng):
    from flexseg.io import write_image, write_label

    for cond in ("fog", "snow"):
        for i in range(2):
            seq = f"GOPR000{1 if cond == 'fog' else 2}"
            stem = f"{seq}_frame_{i:06d}"
            rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
            label = rng.integers(0, 3, (24, 40)).astype(np.uint8)
            label[:, :10] = 13
            label[0] = 255
            write_image(root / "rgb_anon" / cond / "val" / seq / f"{stem}_rgb_anon.png", rgb)
            write_label(root / "gt" / cond / "val" / seq / f"{stem}_gt_labelTrainIds.png", label)


def test_evaluate_command_end_to_end(tmp_path, capsys):
    import json

    from flexseg.checkpoint import load_model, save_model
    from flexseg.data.readers import list_samples, load_sample
    from flexseg.evaluate import main
    from flexseg.models import build_model

    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    ckpt = tmp_path / "model.pt"
    save_model(ckpt, model, TINY_MODEL, "flexseg", 2, {}, "test", 1)
    write_acdc_tree(tmp_path / "acdc", np.random.default_rng(8))
    dataset = {
        "name": "acdc",
        "format": "acdc",
        "root": str(tmp_path / "acdc"),
        "split": "val",
        "conditions": ["fog", "snow"],
    }
    evaluation = {
        "mode": "slide",
        "window": 16,
        "stride": 8,
        "batch_size": 4,
        "boundary_kernel": 3,
        "panels": 2,
    }
    params = json.dumps({"evaluation": evaluation, "scale": [32, 20], "dataset": dataset})
    out = tmp_path / "out"
    files = ["--metrics", str(out / "m.json"), "--panels", str(out / "p.png")]
    files += ["--tiles", str(out / "p.npz")]
    args = ["--params", params, "--checkpoint", str(ckpt), *files]
    assert main([*args, "--device", "cpu"]) == 0
    record = json.loads((out / "m.json").read_text())
    assert (record["experiment"], record["model"], record["seed"]) == ("flexseg", "tiny", 2)
    assert record["dataset"] == "acdc" and record["num_images"] == 4
    assert set(record["per_condition"]) == {"fog", "snow"}
    assert list(record["per_class"]) == list(CLASS_NAMES)
    assert (out / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == ["m.json", "p.npz", "p.png"]
    # The same numbers from the pieces: load, predict, accumulate.
    loaded, _ = load_model(ckpt)
    s = EvalSettings.from_params(evaluation, [32, 20], 1.0)
    conf = np.zeros((19, 19), dtype=np.int64)
    for ref in list_samples(dataset):
        rgb, label = load_sample(ref)
        conf += confusion_matrix(predict_image(loaded, rgb, label.shape, s.inference).labels, label)
    assert record["miou"] == pytest.approx(mean_iou(conf), abs=1e-4)
    assert np.array_equal(np.array(record["confusion"]), conf)
    union = conf.sum(0) + conf.sum(1)
    for c, name in enumerate(CLASS_NAMES):
        # null exactly for the classes in neither ground truth nor prediction.
        assert (record["per_class"][name] is None) == (union[c] == 0), name
    assert (union == 0).any()

    dataset["root"] = str(tmp_path / "missing")
    params = json.dumps({"evaluation": evaluation, "scale": [32, 20], "dataset": dataset})
    capsys.readouterr()
    assert main(["--params", params, "--checkpoint", str(ckpt), *files]) == 1
    assert str(tmp_path / "missing") in capsys.readouterr().err
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--params", params, "--checkpoint", str(bad), *files]) == 1
    assert "broken.pt" in capsys.readouterr().err


def test_eval_settings_scale_windows_with_the_model():
    from flexseg.config import ConfigError, read_stage

    dataset = {"name": "acdc", "format": "acdc", "root": "unused"}
    params = {
        "evaluation": {"window": 512, "stride": 256},
        "scale": [1024, 512],
        "dataset": dataset,
    }
    p = read_stage(params, "evaluate")  # the schema's defaults filled in
    hrda = EvalSettings.from_params(p["evaluation"], p["scale"], 2.0).inference
    assert (hrda.window, hrda.stride, hrda.scale_factor) == (1024, 512, 2.0)
    assert hrda.scale == (1024, 512)
    daformer = EvalSettings.from_params(p["evaluation"], p["scale"], 1.0).inference
    assert (daformer.window, daformer.stride) == (512, 256)
    params["evaluation"]["boundary_kernel"] = 4
    with pytest.raises(ConfigError, match="evaluation.boundary_kernel: 4 should not be valid"):
        read_stage(params, "evaluate")
    with pytest.raises(ConfigError, match="'scale' is a required property"):
        read_stage({"evaluation": {}, "dataset": dataset}, "evaluate")
