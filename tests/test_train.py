"""The training job on a tiny model and a small on-disk tree: the loss goes down for every
method, a resumed run is bitwise identical, non-finite losses stop the run, bad input fails."""

from __future__ import annotations

import csv
import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from train_fixtures import (  # noqa: E402
    make_tree,
    options,
    run_file_args,
    run_files,
    train_params,
    write_lists,
)

from flexseg import train as T  # noqa: E402
from flexseg.checkpoint import ModelMeta, load_model, load_training_state  # noqa: E402
from flexseg.config import ConfigError, build, read_stage  # noqa: E402
from flexseg.data.training_set import window_end  # noqa: E402
from flexseg.io import DataError  # noqa: E402
from flexseg.losses.objective import Objective, cross_entropy  # noqa: E402
from flexseg.models import Segmentor  # noqa: E402


@pytest.fixture(scope="module")
def lists(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    make_tree(root)
    return write_lists(root)


def _log(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _experiment(
    name: str, gap: bool, ube: bool, has: bool, data: str = "combined", boundary: bool = False
) -> dict:
    return {
        "name": name,
        "data": data,
        "gap": gap,
        "ube": ube,
        "has": has,
        "boundary_weight": boundary,
    }


# HAS switches to loss-based draws early so that it is really exercised in 30 iterations.
FAST_HAS = {"has": {"refresh_every": 5, "midpoint": 8, "k": 0.5}}


@pytest.mark.parametrize(
    "name, gap, ube, has, boundary",
    [
        ("baseline", False, False, False, False),
        ("gap", True, False, False, False),
        ("ube", False, True, False, False),
        ("has", False, False, True, False),
        ("all", True, True, True, False),
        ("eq2", False, False, False, True),
    ],
)
def test_loss_goes_down(lists, tmp_path, name, gap, ube, has, boundary) -> None:
    params = train_params(seed=0, **FAST_HAS)
    params["experiment"] = _experiment(name, gap, ube, has, boundary=boundary)
    result = T.train(params, lists["combined"], run_files(tmp_path), options())
    assert result.completed and result.iterations_done == 30
    rows = _log(tmp_path / "loss_log.csv")
    assert [int(r["iteration"]) for r in rows] == list(range(1, 31))
    total = [float(r["total"]) for r in rows]
    first, last = sum(total[:5]) / 5, sum(total[-5:]) / 5
    assert last < 0.9 * first, f"{name}: mean loss {first:.3f} (first 5) -> {last:.3f} (last 5)"
    assert (float(rows[-1]["gap"]) > 0) == gap
    assert (rows[-1]["has_threshold"] != "") == has
    if has:
        # the threshold follows Eq. 11 at the logged iteration (t = iteration - 1)
        assert float(rows[-1]["has_threshold"]) == pytest.approx(
            T.HardnessSampler(1, 1, k=0.5, midpoint=8).threshold(29)
        )
        assert result.sampler.draws == 30 * 2
        assert float(result.sampler.scores.abs().sum()) > 0
    if gap:
        assert int(result.bank.counts.sum()) > 0


def test_outputs_and_model_file(lists, tmp_path, capsys) -> None:
    params = train_params(seed=3, iterations=4)
    params["experiment"] = _experiment("dginstyle", False, False, False)
    args = ["--params", json.dumps(params), "--data", str(lists["combined"])]
    args += [*run_file_args(tmp_path), "--checkpoint-every", "2", "--log-every", "2"]
    assert T.main([*args, "--threads", "1", "--workers", "0", "--device", "cpu"]) == 0
    config = json.loads((tmp_path / "config.json").read_text())
    params = read_stage(params, "train")  # the params as validated: with the schema's defaults
    assert config["seed"] == 3 and config["params"] == params and config["world_size"] == 1
    assert "git_revision" in config
    rows = _log(tmp_path / "loss_log.csv")
    assert [r["iteration"] for r in rows] == ["2", "4"]
    assert list(rows[0]) == list(T.LOG_COLUMNS)
    model, meta = load_model(tmp_path / "model.pt")
    assert isinstance(model, Segmentor) and not model.training
    assert isinstance(meta, ModelMeta)
    assert (meta.experiment, meta.model, meta.seed, meta.iterations) == (
        "dginstyle",
        "tiny_test",
        3,
        4,
    )
    assert meta.params == params
    result_state = torch.load(tmp_path / "model.pt", weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, result_state[key])
    # checkpoints were written at 2 and 4; the resume point is gone once model.pt holds the result
    out = capsys.readouterr().out
    assert "checkpoint at iteration 2: " in out and "checkpoint at iteration 4: " in out
    assert not (tmp_path / "checkpoints").exists()
    (peak,) = [line for line in out.splitlines() if line.startswith("peak memory: RSS ")]
    assert "GPU" not in peak  # a CPU run


def test_resume_is_bitwise_identical(lists, tmp_path) -> None:
    params = train_params(seed=1, iterations=12, has={"refresh_every": 3, "midpoint": 4, "k": 1.0})
    params["experiment"] = _experiment("flexseg", True, True, True)
    run = options(checkpoint_every=4)
    whole = T.train(params, lists["combined"], run_files(tmp_path / "whole"), run)

    killed = T.train(params, lists["combined"], run_files(tmp_path / "resumed"), run, stop_after=6)
    assert not killed.completed and killed.iterations_done == 6
    assert not (tmp_path / "resumed" / "model.pt").exists()
    ckpt = load_training_state(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert ckpt["iteration"] == 4  # iterations 5 and 6 are lost, as in a kill
    resumed = T.train(params, lists["combined"], run_files(tmp_path / "resumed"), run)
    assert resumed.resumed_from == 4 and resumed.completed

    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "model.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    for key, value in whole.bank.state_dict().items():
        assert torch.equal(value, resumed.bank.state_dict()[key]), key
    assert torch.equal(whole.sampler.scores, resumed.sampler.scores)
    assert whole.sampler.generator.get_state().equal(resumed.sampler.generator.get_state())

    rows_a = _log(tmp_path / "whole" / "loss_log.csv")
    rows_b = _log(tmp_path / "resumed" / "loss_log.csv")
    assert [r["iteration"] for r in rows_b] == [str(i) for i in range(1, 13)]
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for col in ("iteration", "lr", "total", "seg", "gap", "fd", "has_threshold"):
            assert ra[col] == rb[col], (ra["iteration"], col)


def test_changed_params_start_fresh(lists, tmp_path, capsys) -> None:
    params = train_params(seed=0, iterations=4)
    params["experiment"] = _experiment("dginstyle", False, False, False)
    T.train(
        params, lists["combined"], run_files(tmp_path), options(checkpoint_every=2), stop_after=2
    )
    changed = train_params(seed=0, iterations=4, lr=1e-4)
    changed["experiment"] = params["experiment"]
    result = T.train(changed, lists["combined"], run_files(tmp_path), options(checkpoint_every=2))
    assert result.resumed_from == 0 and result.completed
    assert "starting fresh" in capsys.readouterr().out


def test_non_finite_loss_stops_without_checkpoint(lists, tmp_path, monkeypatch) -> None:
    params = train_params(seed=0, iterations=10)
    params["experiment"] = _experiment("ube_only", False, True, False)
    original = Segmentor.forward_train
    calls = {"n": 0}

    def poisoned(self, images, labels):
        outputs = original(self, images, labels)
        calls["n"] += 1
        if calls["n"] == 3:
            outputs[0].logits = outputs[0].logits * float("nan")
        return outputs

    monkeypatch.setattr(Segmentor, "forward_train", poisoned)
    with pytest.raises(T.TrainingError, match=r"iteration 3: the seg loss is nan"):
        T.train(params, lists["combined"], run_files(tmp_path), options(checkpoint_every=2))
    assert load_training_state(tmp_path / "checkpoints" / "last.pt")["iteration"] == 2
    assert not (tmp_path / "model.pt").exists()


def test_part_counts_checked(lists, tmp_path, capsys) -> None:
    params = train_params(seed=0, iterations=2)
    params["experiment"] = _experiment("dginstyle", False, False, False, data="combined")
    with pytest.raises(DataError, match="no generated rows"):
        T.train(params, lists["source"], run_files(tmp_path), options())
    assert "8 source rows, 0 generated rows" in capsys.readouterr().out
    params["experiment"] = _experiment("source_only", False, False, False, data="source")
    with pytest.raises(DataError, match="6 generated rows"):
        T.train(params, lists["combined"], run_files(tmp_path), options())
    args = ["--params", json.dumps(params), "--data", str(lists["generated"])]
    assert T.main([*args, *run_file_args(tmp_path), "--threads", "1", "--device", "cpu"]) == 1
    assert "no source rows" in capsys.readouterr().err


def test_refusals(lists, tmp_path) -> None:
    params = train_params(seed=0, iterations=2, amp="bf16")
    with pytest.raises(ConfigError, match="amp is bf16, which needs a CUDA device"):
        T.train(params, lists["combined"], run_files(tmp_path), options())
    params = train_params(seed=0, iterations=2, feature_distance={"enabled": True})
    with pytest.raises(ConfigError, match="encoder.pretrained is null"):
        T.train(params, lists["combined"], run_files(tmp_path), options())
    # params written by hand are checked against the schema, naming the key
    params = train_params(seed=0, iterations=2, lr="fast")
    with pytest.raises(ConfigError, match="training.lr: 'fast' is not of type 'number'"):
        T.train(params, lists["combined"], run_files(tmp_path), options())
    params = train_params(seed=0, iterations=2, threads=1)
    with pytest.raises(ConfigError, match="'threads' was unexpected"):
        T.train(params, lists["combined"], run_files(tmp_path), options())
    with pytest.raises(ConfigError, match="train options:\n  workers: -1 is less than the minimum"):
        T.train(train_params(), lists["combined"], run_files(tmp_path), options(workers=-1))
    with pytest.raises(DataError, match="data list not found"):
        T.train(train_params(), tmp_path / "missing.csv", run_files(tmp_path), options())


def test_feature_distance_with_pretrained_encoder(lists, tmp_path) -> None:
    # "ImageNet" weights: a saved tiny encoder, loaded through the real from_pretrained path.
    from flexseg.models import build_model

    params = train_params(seed=0, iterations=3, feature_distance={"enabled": True})
    params["experiment"] = _experiment("dginstyle", False, False, False)
    reference = build_model(params["model"])
    reference.encoder.model.save_pretrained(tmp_path / "imagenet")
    params["model"]["encoder"]["pretrained"] = str(tmp_path / "imagenet")
    result = T.train(params, lists["combined"], run_files(tmp_path / "run"), options())
    rows = _log(tmp_path / "run" / "loss_log.csv")
    assert float(rows[0]["fd"]) == 0.0  # the student starts from the ImageNet weights
    model, _ = load_model(tmp_path / "run" / "model.pt")  # loads offline without the source
    for key, value in result.model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key])


def test_feature_distance_on_hrda_resnet(lists, tmp_path) -> None:
    # The paper config's HRDA ResNet-101 recipe keeps the feature distance on (the anchor's R101
    # run): HRDA + ResNet + DeepLabV2 with "ImageNet" weights from a saved timm file.
    import timm

    torch.manual_seed(3)
    torch.save(timm.create_model("resnet10t", pretrained=False).state_dict(), tmp_path / "w.pth")
    params = train_params(
        seed=0,
        iterations=1,
        crop_size=64,
        source_resize=[128, 72],
        lr=1e-2,
        feature_distance={"enabled": True},
    )
    params["experiment"] = _experiment("dginstyle", False, False, False)
    params["model"] = {
        "name": "hr",
        "architecture": "hrda",
        "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": str(tmp_path / "w.pth")},
        "head": {"type": "deeplabv2", "fusion_dim": 16},
        "hrda": {"context_scale": 0.5, "detail_crop": 32},
    }
    T.train(params, lists["combined"], run_files(tmp_path / "run"), options(log_every=1))
    fd = [float(r["fd"]) for r in _log(tmp_path / "run" / "loss_log.csv")]
    # The term is computed on the ResNet's last stage. It is above 0 from the first step although
    # the student starts from the ImageNet weights: its BatchNorm runs in training mode, the
    # frozen copy in eval mode (as DAFormer's calc_feat_dist runs its ImageNet model).
    assert len(fd) == 1 and math.isfinite(fd[0]) and fd[0] > 0.0


def test_objective_sums_the_terms() -> None:
    """Eq. 9 with the feature distance, against the loss functions called one by one."""
    import copy

    from flexseg.losses import boundary_mask, feature_distance, gap_loss, ube_loss
    from flexseg.losses.gap import PrototypeBank
    from flexseg.models import build_model

    torch.manual_seed(0)
    params = train_params(feature_distance={"enabled": True, "weight": 0.005})
    recipe = build(T.Recipe, params["training"])
    student = build_model(params["model"]).eval()
    imagenet = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.encoder.parameters():
            p.add_(0.05 * torch.randn_like(p))
    images = torch.randn(2, 3, 64, 64)
    labels = torch.full((2, 64, 64), 13, dtype=torch.long)  # a thing class everywhere
    labels[:, :, :20] = 0
    labels[0, :4] = 255
    bank = PrototypeBank(19, 3, 16)
    classes = torch.arange(19).repeat_interleave(3)
    bank.update(torch.randn(57, 16), classes, torch.arange(3).repeat(19), 0.99)
    bank_copy = copy.deepcopy(bank)
    objective = Objective(recipe.ube, recipe.gap, bank, recipe.feature_distance, imagenet)
    outputs = student.forward_train(images, labels)
    terms = objective(outputs, images)

    out = outputs[0]
    logits = torch.nn.functional.interpolate(
        out.logits, size=(64, 64), mode="bilinear", align_corners=False
    )
    ube = ube_loss(logits, labels, boundary_mask(labels, 5, 5), alpha=3.0, eps=1e-6).loss
    gap = gap_loss(out.features, labels, bank_copy, (3, 5, 7), 0.07, 0.99).loss
    fd = feature_distance(out.stage_features, imagenet.encode_last_stage(images), labels)
    ube, gap, fd = float(ube.detach()), float(gap.detach()), float(fd.detach())
    assert fd > 0 and gap > 0
    values = terms.values().tolist()
    assert values[1] == pytest.approx(ube, rel=1e-6)
    assert values[2] == pytest.approx(gap, rel=1e-6)
    assert values[3] == pytest.approx(fd, rel=1e-6)
    assert values[0] == pytest.approx(ube + 0.5 * gap + 0.005 * fd, rel=1e-6)
    for key, value in bank.state_dict().items():
        assert torch.equal(value, bank_copy.state_dict()[key])
    assert terms.per_image.shape == (2,)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_plain_cross_entropy_matches_torch(layout: torch.memory_format) -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 19, 8, 9)
    labels = torch.randint(0, 19, (3, 8, 9))
    labels[0, :3] = 255
    loss, per_image = cross_entropy(logits.contiguous(memory_format=layout), labels)
    ref = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255)
    assert float(loss.detach()) == pytest.approx(float(ref), rel=1e-6)
    for b in range(3):
        valid = labels[b] != 255
        per = (
            torch.nn.functional.cross_entropy(
                logits[b : b + 1], labels[b : b + 1], ignore_index=255, reduction="sum"
            )
            / valid.sum()
        )
        assert float(per_image[b]) == pytest.approx(float(per), rel=1e-6)


def test_plain_cross_entropy_over_all_pixels_is_mmseg_s_mean() -> None:
    """training.ce_reduction all: mmseg 0.16's CrossEntropyLoss (weight_reduce_loss 'mean' over
    the unreduced loss, ignored pixels 0 but counted); each image over its own pixels."""
    torch.manual_seed(1)
    logits = torch.randn(2, 19, 6, 7, dtype=torch.float64)
    labels = torch.randint(0, 19, (2, 6, 7))
    labels[0, :4] = 255
    loss, per_image = cross_entropy(logits, labels, "all")
    unreduced = torch.nn.functional.cross_entropy(
        logits, labels, ignore_index=255, reduction="none"
    )
    assert float(loss) == pytest.approx(float(unreduced.mean()), rel=1e-12)
    torch.testing.assert_close(per_image, unreduced.mean(dim=(1, 2)))
    valid, _ = cross_entropy(logits, labels, "valid")
    assert float(loss) < float(valid)


def _online_setup(root, tmp_path):
    """An online RCS table over the tree's source (min_pixels 60) and a list of every source row
    (rcs_class -1) with the generated rows, as the combined_full list has them."""
    from flexseg.data.lists import entry_from_ref, write_data_list
    from flexseg.data.rcs import compute_class_stats, online_table, run_online
    from flexseg.data.readers import list_samples

    entry = {"name": "gta", "format": "gta", "root": str(root / "gta")}
    stats = compute_class_stats(entry, workers=1)
    table_path = tmp_path / "online_rcs.json"
    run_online(
        {"rcs": {"temperature": 0.01, "min_pixels": 60}}, _write_stats(stats, tmp_path), table_path
    )
    gen = list_samples({"name": "gen", "format": "generated", "root": str(root / "gen")})
    rows = [entry_from_ref(r, "source") for r in list_samples(entry)]
    rows += [entry_from_ref(r, "generated") for r in gen]
    write_data_list(tmp_path / "combined_full.csv", rows)
    return table_path, tmp_path / "combined_full.csv", online_table(stats, 60, 0.01)


def _write_stats(stats, folder):
    from flexseg.data.rcs import write_class_stats

    write_class_stats(folder / "class_stats.json", stats)
    return folder / "class_stats.json"


def test_online_rcs_run_draws_its_source_samples_by_rcs(lists, tmp_path) -> None:
    from flexseg.data.lists import read_data_list
    from flexseg.data.rcs import OnlineRcs
    from flexseg.data.training_set import TrainingSet, item_rng
    from flexseg.train import Recipe

    root = lists["source"].parent
    table_path, data, table = _online_setup(root, tmp_path)
    entries = read_data_list(data)
    names, parts = [e.name for e in entries], [e.part for e in entries]
    online = OnlineRcs.read(table_path, names, parts)
    params = train_params(seed=2, iterations=6, online_rcs=True, rcs_recrop_min_pixels=40)
    params["experiment"] = _experiment("exp61", False, False, False)
    recipe = build(Recipe, read_stage(params, "train")["training"])
    dataset = TrainingSet(entries, recipe.transforms, seed=2, online=online)
    candidates = {c["class"]: set(c["images"]) for c in table["classes"]}
    first_generated = parts.index("generated")
    for draw in range(40):
        item = dataset[(draw, draw % first_generated)]  # a source row: an online RCS draw
        pick = online.draw(item_rng(2, draw, draw % first_generated))
        assert item.index == pick.index and names[item.index] in candidates[pick.rcs_class]
    assert dataset[(0, first_generated)].index == first_generated  # generated rows stay
    result = T.train(params, data, run_files(tmp_path / "run"), options(), online_rcs=table_path)
    assert result.completed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["online_rcs"] == str(table_path)
    # the table's bytes are part of the resume hash
    other = T.params_hash(config["params"], data, 1, None)
    assert other != config["params_hash"]


def test_an_online_rcs_switch_without_its_table_stops_the_run(lists, tmp_path) -> None:
    params = train_params(iterations=2, online_rcs=True)
    with pytest.raises(ConfigError, match="--online-rcs"):
        T.train(params, lists["source"], run_files(tmp_path), options())
    params = train_params(iterations=2)
    with pytest.raises(ConfigError, match="online_rcs is off"):
        T.train(
            params, lists["source"], run_files(tmp_path), options(), online_rcs=tmp_path / "t.json"
        )


def test_help_runs() -> None:
    with pytest.raises(SystemExit) as exit_info:
        T.main(["--help"])
    assert exit_info.value.code == 0


def test_window_ends() -> None:
    assert window_end(0, 100, 30, 20) == 20
    assert window_end(20, 100, 30, 20) == 30
    assert window_end(30, 100, 30, 20) == 40
    assert window_end(0, 100, 30) == 30
    assert window_end(95, 100, 30) == 100


def test_workers_do_not_change_the_run(lists, tmp_path) -> None:
    params = train_params(seed=2, iterations=6, has={"refresh_every": 2})
    params["experiment"] = _experiment("has", False, False, True)
    one = T.train(
        params, lists["combined"], run_files(tmp_path / "w0"), options(checkpoint_every=3)
    )
    two = T.train(
        params,
        lists["combined"],
        run_files(tmp_path / "w2"),
        options(checkpoint_every=3, workers=2),
    )
    for key, value in one.model.state_dict().items():
        assert torch.equal(value, two.model.state_dict()[key]), key
    assert torch.equal(one.sampler.scores, two.sampler.scores)


def test_training_set_items(lists) -> None:
    from flexseg.data.lists import read_data_list
    from flexseg.data.training_set import Draw, TrainingSet

    recipe = build(T.Recipe, train_params()["training"])
    data = TrainingSet(read_data_list(lists["combined"]), recipe.transforms, seed=0)
    assert len(data) == 14
    item = data[Draw(5, 3)]
    assert item.image.shape == (3, 32, 32) and item.image.dtype == torch.float32
    assert item.label.shape == (32, 32) and item.label.dtype == torch.int64
    assert item.index == 3
    again = data[Draw(5, 3)]
    assert torch.equal(item.image, again.image) and torch.equal(item.label, again.label)
    other = data[Draw(6, 3)]
    assert not torch.equal(item.image, other.image)
    assert set(torch.unique(item.label).tolist()) <= {0, 2, 8, 10, 13, 255}
    generated = data[Draw(0, 12)]  # a 32 px generated image: no crop, no padding
    assert int((generated.label == 255).sum()) == 0
    with pytest.raises(IndexError, match="outside the data list"):
        data[Draw(0, 14)]


def test_load_model_errors_name_the_file(tmp_path) -> None:
    missing = tmp_path / "nothing" / "model.pt"
    with pytest.raises(DataError, match=f"model file not found: {missing}"):
        load_model(missing)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02 definitely not a checkpoint")
    with pytest.raises(DataError, match=f"{corrupt} is unreadable or corrupt"):
        load_model(corrupt)
    truncated = tmp_path / "truncated.pt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:300])
    with pytest.raises(DataError, match=f"{truncated} is unreadable or corrupt"):
        load_model(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(DataError, match=f"{foreign} is not a flexseg-model file"):
        load_model(foreign)
    with pytest.raises(DataError, match="training checkpoint not found"):
        load_training_state(tmp_path / "last.pt")
