"""Qualitative panels: tiles saved by evaluation, the paper's Fig. 5 comparison and its Fig. 2
(predictions on generated training images)."""

from __future__ import annotations

import numpy as np
import pytest

from flexseg.figures import (
    PANEL_HEIGHT,
    comparison_image,
    load_tiles,
    main,
    panel_tiles,
    save_tiles,
    tiles_row,
)
from flexseg.io import DataError, read_image
from flexseg.labels import PALETTE


def _tiles(name: str, pred_value: int, h: int = 40, w: int = 60):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    gt = np.zeros((h, w), dtype=np.uint8)
    gt[:, w // 2 :] = 255
    pred = np.full((h, w), pred_value, dtype=np.int64)
    return panel_tiles(name, rgb, pred, gt, height=20)


def test_tiles_scale_labels_without_blending():
    t = _tiles("a.png", 5)
    assert t.rgb.shape == (20, 30, 3) and t.pred.shape == t.gt.shape == (20, 30)
    assert t.pred.dtype == np.uint8 and set(np.unique(t.pred)) == {5}
    assert set(np.unique(t.gt)) == {0, 255}  # nearest neighbour: no in-between ids
    row = tiles_row(t)
    assert row.shape == (20, 3 * 30 + 2 * 4, 3)
    assert (row[:, 34:64] == PALETTE[5]).all()


def test_panel_tiles_refuse_mismatched_prediction():
    with pytest.raises(ValueError, match="x.png"):
        panel_tiles("x.png", np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5)), np.zeros((4, 4)))


def test_save_and_load_round_trip(tmp_path):
    tiles = [_tiles("a.png", 1), _tiles("b.png", 2)]
    save_tiles(tmp_path / "p.npz", tiles)
    back = load_tiles(tmp_path / "p.npz")
    assert [t.name for t in back] == ["a.png", "b.png"]
    for a, b in zip(tiles, back, strict=True):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.pred, b.pred)
        assert np.array_equal(a.gt, b.gt)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_tiles(tmp_path / "bad.npz")


def test_comparison_puts_each_run_between_input_and_ground_truth():
    base = [_tiles("a.png", 1), _tiles("b.png", 1)]
    flex = [_tiles("a.png", 2), _tiles("b.png", 2)]
    image = comparison_image([("baseline", base), ("FLEX-Seg", flex)])
    tile_w = 30
    header = 24
    assert image.shape == (header + 2 * (20 + 4), 4 * tile_w + 3 * 4, 3)
    row = image[header : header + 20]
    assert np.array_equal(row[:, :tile_w], base[0].rgb)
    assert (row[:, tile_w + 4 : 2 * tile_w + 4] == PALETTE[1]).all()
    assert (row[:, 2 * tile_w + 8 : 3 * tile_w + 8] == PALETTE[2]).all()
    gt = row[:, 3 * tile_w + 12 :]
    assert (gt[:, :15] == PALETTE[0]).all() and (gt[:, 15:] == 0).all()


def test_comparison_refuses_runs_on_different_images():
    with pytest.raises(DataError, match="not evaluated on the same images"):
        comparison_image([("a", [_tiles("a.png", 1)]), ("b", [_tiles("z.png", 1)])])


def test_compare_command_writes_the_figure(tmp_path, capsys):
    save_tiles(tmp_path / "a.npz", [_tiles("a.png", 1)])
    save_tiles(tmp_path / "b.npz", [_tiles("a.png", 2)])
    out = tmp_path / "fig" / "cmp.png"
    args = ["compare", "--panels", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    assert main([*args, "--titles", "+ DGInStyle", "++ FLEX-Seg", "--out", str(out)]) == 0
    assert read_image(out).shape == (24 + 20 + 4, 4 * 30 + 12, 3)
    save_tiles(tmp_path / "c.npz", [_tiles("other.png", 2)])
    bad = ["compare", "--panels", str(tmp_path / "a.npz"), str(tmp_path / "c.npz")]
    assert main([*bad, "--titles", "x", "y", "--out", str(tmp_path / "no.png")]) == 1
    assert "other.png" in capsys.readouterr().err
    assert not (tmp_path / "no.png").exists()


def test_default_panel_height_is_used():
    t = panel_tiles("a", np.zeros((10, 20, 3), np.uint8), np.zeros((10, 20)), np.zeros((10, 20)))
    assert t.rgb.shape[0] == PANEL_HEIGHT


def test_generated_panels_show_each_run_on_the_same_generated_images(tmp_path):
    """Fig. 2: image | one prediction per checkpoint | label, for images spread over the set,
    each run's prediction that of its model fed the image whole."""
    import torch
    from test_quality import write_generated_set
    from train_fixtures import TINY_MODEL, train_params

    from flexseg.checkpoint import load_model, save_model
    from flexseg.data.readers import list_samples, load_sample
    from flexseg.figures import generated_panels
    from flexseg.inference import predict_image
    from flexseg.models import build_model
    from flexseg.quality import feed_settings

    manifest = write_generated_set(tmp_path / "gen", np.random.default_rng(2))
    paths = []
    for k, name in enumerate(("dginstyle", "boundary_weighted", "flexseg")):
        torch.manual_seed(k)
        path = tmp_path / f"{name}.pt"
        params = train_params(name)
        save_model(path, build_model(TINY_MODEL), TINY_MODEL, name, 0, params, "test", 1)
        paths.append(path)
    titles = ["+ DGInStyle", "Eq. 2", "++ FLEX-Seg"]
    image = generated_panels(manifest, paths, titles, images=2, device="cpu")
    refs = list_samples({"name": "g", "format": "generated", "root": str(manifest.parent)})
    chosen = [refs[0], refs[-1]]  # two images spread over six: the first and the last
    runs = []
    for title, path in zip(titles, paths, strict=True):
        model, _ = load_model(path)
        tiles = []
        for ref in chosen:
            rgb, label = load_sample(ref)
            pred = predict_image(model, rgb, label.shape, feed_settings(*label.shape, None)).labels
            tiles.append(panel_tiles(ref.name, rgb, pred, label))
        runs.append((title, tiles))
    np.testing.assert_array_equal(image, comparison_image(runs))
    out = tmp_path / "fig2.png"
    argv = ["generated", "--manifest", str(manifest), "--checkpoints", *map(str, paths)]
    argv += ["--titles", *titles, "--images", "2", "--device", "cpu", "--out", str(out)]
    assert main(argv) == 0
    np.testing.assert_array_equal(read_image(out), image)
    with pytest.raises(SystemExit):
        main([*argv, "--titles", "one"])  # one title for three runs
