"""The paper's sizes, checked cheaply: model and sampler geometry on the meta device, the smoke
config against the paper config, the random hub-layout weights through the loaders' own paths.

The smoke run itself (config/paper/smoke.yaml, every stage at the real sizes) is the benchmark
``benchmarks/paper_scale.py`` and the opt-in test at the end (``pytest -m paper_scale``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_workflow import REPO, job_counts, snakemake

from flexseg.config import ConfigError, load_config, read_stage, stage_params
from flexseg.labels import NUM_CLASSES
from flexseg.models import CropBox, HRDASegmentor, build_model
from flexseg.models.encoders import MIT_B5
from flexseg.peak_memory import PeakMemory, format_line, read_peak

PAPER = REPO / "config" / "paper" / "gta_to_five.yaml"
SMOKE = REPO / "config" / "paper" / "smoke.yaml"
TILES81 = REPO / "config" / "paper" / "smoke_tiles81.yaml"
HELD_OUT = REPO / "config" / "paper" / "smoke_held_out.yaml"


def paper_model(name: str) -> dict:
    """models.<name> of the paper config with random weights (MiT-B5's architecture spelled out,
    as nvidia/mit-b5's config.json would give it)."""
    cfg = load_config(PAPER)["models"][name]
    encoder = {**cfg["encoder"], "pretrained": None}
    if encoder["type"] == "mit":
        encoder["config"] = dict(MIT_B5)
    return {"name": name, **{k: v for k, v in cfg.items() if k != "training"}, "encoder": encoder}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------
# Model geometry at the paper's crops (meta tensors: shapes without memory or arithmetic)


def test_daformer_mitb5_at_the_512_crop() -> None:
    with torch.device("meta"):
        model = build_model(paper_model("daformer_mitb5"))
        (out,) = model.forward_train(torch.empty(2, 3, 512, 512), torch.empty(2, 512, 512))
    # MiT-B5 has 81.4M parameters (SegFormer, Table 1)
    assert round(n_params(model.encoder) / 1e6, 1) == 81.4
    assert model.encoder.channels == (64, 128, 320, 512)
    assert model.encoder.strides == (4, 8, 16, 32)
    assert out.logits.shape == (2, NUM_CLASSES, 128, 128)
    assert out.features.shape == (2, 256, 128, 128)  # the GAP feature: fusion_dim at stride 4


@pytest.mark.parametrize(
    "name, align, fused, detail", [("hrda_mitb5", 8, 256, 128), ("hrda_r101", 16, 128, 64)]
)
def test_hrda_crop_and_detail_geometry_at_1024(name, align, fused, detail) -> None:
    config = load_config(PAPER)
    training = {**config["training"], **config["models"][name]["training"]}
    assert training["crop_size"] == 1024 and training["source_resize"] == [2560, 1440]
    cfg = paper_model(name)
    with torch.device("meta"):
        model = build_model(cfg)
    assert isinstance(model, HRDASegmentor)
    assert model.align == align and model.detail_crop == 512 and model.context_scale == 0.5
    assert model.context_size(1024, 1024) == (512, 512)
    # detail windows: 512 px, inside the crop, corners on multiples of align (real RNG)
    torch.manual_seed(0)
    boxes = [model.sample_detail_box(1024, 1024) for _ in range(200)]
    assert {(b.height, b.width) for b in boxes} == {(512, 512)}
    corners = {v for b in boxes for v in (b.y0, b.x0)}
    assert all(v % align == 0 and 0 <= v <= 512 for v in corners) and len(corners) > 10
    # inference tiles the detail view with 512 windows at stride 256: 3 x 3 on a 1024 window
    assert len(model.detail_boxes(1024, 1024)) == 9
    box = CropBox(256, 768, 512 - align, 1024 - align)
    with torch.device("meta"):
        out_fused, out_detail = model.forward_train(
            torch.empty(2, 3, 1024, 1024), torch.empty(2, 1024, 1024), detail_box=box
        )
    assert out_fused.logits.shape == (2, NUM_CLASSES, fused, fused)
    assert out_detail.logits.shape == (2, NUM_CLASSES, detail, detail)
    assert out_detail.labels.shape == (2, 512, 512)
    assert out_fused.features.shape[1] == 256


def test_resnet101c_is_mmseg_v1c_at_output_stride_8() -> None:
    with torch.device("meta"):
        model = build_model(paper_model("hrda_r101"))
    stem = model.encoder.model.conv1
    # ResNetV1c's deep stem: three 3x3 convs 32-32-64 (timm's resnet101c)
    assert [m.out_channels for m in stem if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]
    assert model.encoder.channels == (2048,) and model.encoder.strides == (8,)
    # ResNet-101 without its 1000-class fc (44.6M - 2.05M)
    assert round(n_params(model.encoder) / 1e6, 1) == 42.5


# ---------------------------------------------------------------------------------------------
# The diffusion side at Stable Diffusion 1.5's sizes


def test_sampler_tiles_at_the_paper_geometry() -> None:
    from generation.sampler import tile_boxes

    config = load_config(PAPER)["generation"]
    crop, sampler = config["jobs"]["crop_size"], config["sampler"]
    latent = crop * sampler["upscale"] // 8
    assert latent == 128
    boxes = tile_boxes(latent, latent, sampler["tile_latent"], sampler["tile_stride"])
    assert len(boxes) == 81  # 9 x 9: 20 x (1 + 81) = 1640 guided calls per image
    assert len(tile_boxes(128, 128, 64, 16)) == 25  # the fast mode: 20 x 26 = 520
    smoke = load_config(PAPER, SMOKE)["generation"]["sampler"]
    assert len(tile_boxes(128, 128, smoke["tile_latent"], smoke["tile_stride"])) == 4
    full = load_config(PAPER, SMOKE, TILES81)["generation"]["sampler"]
    assert len(tile_boxes(128, 128, full["tile_latent"], full["tile_stride"])) == 81


def test_sd15_components_and_the_vae_at_1024() -> None:
    from generation.components import SD15_SPEC, random_components

    with torch.device("meta"):
        c = random_components(SD15_SPEC)
        latent = c.vae.encode(torch.empty(1, 3, 1024, 1024)).latent_dist.mean
        image = c.vae.decode(torch.empty(1, 4, 128, 128)).sample
        x, text = torch.empty(2, 4, 64, 64), torch.empty(2, 77, 768)
        down, mid = c.controlnet(
            x,
            torch.tensor(981),
            encoder_hidden_states=text,
            controlnet_cond=torch.empty(2, 20, 512, 512),
            return_dict=False,
        )
        eps = c.unet(
            x,
            torch.tensor(981),
            encoder_hidden_states=text,
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
    # Stable Diffusion 1.5 and its ControlNet, parameter for parameter
    counts = {n: n_params(getattr(c, n)) for n in ("unet", "controlnet", "vae", "text_encoder")}
    assert counts == {
        "unet": 859_520_964,
        "controlnet": 361_281_568,
        "vae": 83_653_863,
        "text_encoder": 123_060_480,
    }
    assert c.vae_scale_factor == 8
    assert latent.shape == (1, 4, 128, 128) and image.shape == (1, 3, 1024, 1024)
    assert eps.shape == (2, 4, 64, 64)


# ---------------------------------------------------------------------------------------------
# The smoke config cuts counts only


def test_smoke_config_keeps_the_paper_geometry() -> None:
    paper, smoke = load_config(PAPER), load_config(PAPER, SMOKE)
    assert smoke["run"]["models"] == paper["run"]["models"]
    for name in paper["run"]["models"]:
        p, s = paper["models"][name], smoke["models"][name]
        for key in ("architecture", "head", "hrda", "test_scale_factor"):
            assert p.get(key) == s.get(key), (name, key)
        # the one count cut per model: HRDA MiT-B5 trains with SHADE (a doubled batch) on 1 image
        assert {**p.get("training", {}), "batch_size": None} == {
            **s.get("training", {}),
            "batch_size": None,
        }, name
        assert {**p["encoder"], "pretrained": None} == {**s["encoder"], "pretrained": None}
        train = {"experiment": "flexseg", "model": name, "seed": 0}
        pt, st = (stage_params(c, "train", **train)["training"] for c in (paper, smoke))
        for key in ("crop_size", "source_resize", "generated_resize", "lr"):
            assert pt[key] == st[key], (name, key)
        assert st["batch_size"] == (1 if name == "hrda_mitb5" else pt["batch_size"]), name
        for key in ("gap", "ube", "feature_distance", "rcs_recrop_min_pixels", "warmup_iters"):
            assert pt[key] == st[key], (name, key)
    for key in ("mode", "window", "stride", "batch_size", "boundary_kernel"):
        assert paper["evaluation"][key] == smoke["evaluation"][key], key
    for name in paper["evaluation"]["datasets"]:
        assert paper["evaluation"]["scales"][name] == smoke["evaluation"]["scales"][name]
    # the paper config's evaluations, and with smoke_held_out.yaml also the held-out source
    assert smoke["evaluation"]["datasets"] == paper["evaluation"]["datasets"]
    assert smoke["held_out"] is paper["held_out"] is None
    held_out = load_config(PAPER, SMOKE, HELD_OUT)
    assert held_out["held_out"] == "source_val"
    assert held_out["evaluation"]["datasets"] == [*paper["evaluation"]["datasets"], "source_val"]
    for key in ("tile_latent", "upscale", "guidance_scale", "large_component_px", "dtype"):
        assert paper["generation"]["sampler"][key] == smoke["generation"]["sampler"][key]
    assert paper["generation"]["jobs"]["crop_size"] == smoke["generation"]["jobs"]["crop_size"]
    assert paper["rcs"]["min_pixels"] == smoke["rcs"]["min_pixels"]
    # the rendered datasets have the real ones' image sizes
    demo = smoke["demo"]
    assert demo["source"]["size"] == demo["source_val"]["size"] == [1914, 1052]
    sizes = {k: v["size"] for k, v in demo["targets"].items()}
    assert sizes["cityscapes"] == [2048, 1024] and sizes["bdd100k"] == [1280, 720]
    assert sizes["acdc"] == sizes["dark_zurich"] == [1920, 1080]
    assert sizes["mapillary"][0] * 3 == sizes["mapillary"][1] * 4
    # and the counts are cut
    assert smoke["training"]["iterations"] == 3 and smoke["generation"]["jobs"]["num_images"] == 2
    # the paper config fails without a GPU; the smoke run also runs on a CPU-only machine
    stages = ("training", "evaluation", "generation.sampler")
    for config, device in ((paper, "cuda"), (smoke, "auto")):
        for stage in stages:
            section = config
            for key in stage.split("."):
                section = section[key]
            assert section["device"] == device, stage


def test_paper_config_has_no_demo_dataset() -> None:
    config = load_config(PAPER)
    assert "source_val" not in config["datasets"]
    assert all(not e["root"].startswith("resources/") for e in config["datasets"].values())
    with pytest.raises(ConfigError, match="held_out 'source_val' is not in evaluation.datasets"):
        load_config(PAPER, overrides={"held_out": "source_val"})
    with pytest.raises(ConfigError, match="datasets: {} should be non-empty"):
        load_config(overrides={"datasets": {k: None for k in load_config()["datasets"]}})


def test_random_weights_need_local_folders() -> None:
    with pytest.raises(ConfigError, match="generation.models.base is the hub id"):
        load_config(PAPER, overrides={"random_weights": {"enabled": True}})
    smoke = load_config(PAPER, SMOKE)
    hub = {"models": {"hrda_r101": {"encoder": {"pretrained": "timm/resnet101c.gluon_in1k"}}}}
    with pytest.raises(ConfigError, match="models.hrda_r101.encoder.pretrained is the hub id"):
        load_config(PAPER, SMOKE, overrides=hub)
    shared = {"models": {"hrda_r101": {"encoder": {"pretrained": "resources/w/mit-b5"}}}}
    shared["models"]["daformer_mitb5"] = {"encoder": {"pretrained": "resources/w/mit-b5"}}
    with pytest.raises(ConfigError, match="also the folder of another encoder"):
        load_config(PAPER, SMOKE, overrides=shared)
    p = stage_params(smoke, "random_weights_encoders")
    assert p["encoders"] == {
        "resources/paper_smoke/weights/mit-b5": {"type": "mit", "name": None},
        "resources/paper_smoke/weights/resnet101c": {"type": "resnet", "name": "resnet101c"},
    }


def test_smoke_dry_run_plans_every_stage(tmp_path) -> None:
    # the benchmark's own command line, planned (snakemake -n)
    script = REPO / "benchmarks" / "paper_scale.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--dry-run", "--no-tiles81", "--workdir", str(tmp_path)],
        capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert f"--directory {tmp_path} all" in proc.stdout and " -n " in proc.stdout
    assert not (tmp_path / "results").exists()  # planned, not run
    counts = job_counts(proc.stdout)
    for rule in ("random_weights_diffusion", "random_weights_encoders", "render_demo", "tables"):
        assert counts[rule] == 1, rule
    assert counts["generate_shard"] == 2
    assert counts["train"] == 3 * 2
    assert counts["evaluate"] == 6 * 5  # 6 runs x 5 targets
    assert "domain_gap" not in counts  # no held-out source (smoke_held_out.yaml adds it)
    # a shard reads the prior and the ControlNet folders, a training run its encoder's
    assert "resources/paper_smoke/weights/DGInStyle" in proc.stdout
    train_inputs = [line for line in proc.stdout.splitlines() if "input: results/dataset" in line]
    assert any("resources/paper_smoke/weights/resnet101c" in line for line in train_inputs)


# ---------------------------------------------------------------------------------------------
# Random weights in the hub layouts, read back by the loaders


def test_random_diffusion_weights_load_as_the_release_does(tmp_path) -> None:
    from generation.components import TINY_SPEC, load_components, random_components
    from generation.random_weights import write_diffusion

    params = {
        "random_weights": {"size": "tiny", "seed": 3},
        "controlnet_subfolder": "ControlNet_UNet-S",
    }
    write_diffusion(
        read_stage(params, "random_weights_diffusion"), tmp_path / "sd15", tmp_path / "DGInStyle"
    )
    saved = json.loads((tmp_path / "DGInStyle/ControlNet_UNet-S/config.json").read_text())
    assert "conditioning_channels" not in saved  # as the released DGInStyle config
    models = {
        "kind": "pretrained",
        "base": str(tmp_path / "sd15"),
        "controlnet": str(tmp_path / "DGInStyle"),
        "controlnet_subfolder": "ControlNet_UNet-S",
    }
    loaded = load_components(models, device="cpu")
    assert loaded.controlnet.config.conditioning_channels == 20
    fresh = random_components(TINY_SPEC, seed=3)
    for name in ("unet", "controlnet", "vae", "text_encoder"):
        a, b = getattr(loaded, name).state_dict(), getattr(fresh, name).state_dict()
        assert a.keys() == b.keys(), name
        assert all(torch.equal(a[k], b[k]) for k in a), name


def test_random_encoder_weights_load_through_pretrained(tmp_path) -> None:
    from safetensors.torch import load_file
    from transformers import SegformerConfig, SegformerForImageClassification

    from generation.random_weights import MIT_TINY, write_encoders

    mit, resnet = tmp_path / "mit-b5", tmp_path / "resnet10t"
    encoders = {str(mit): {"type": "mit", "name": None}, str(resnet): {"type": "resnet"}}
    encoders[str(resnet)]["name"] = "resnet10t"
    params = {"random_weights": {"size": "tiny", "seed": 0}, "encoders": encoders}
    write_encoders(read_stage(params, "random_weights_encoders"))
    with pytest.raises(ConfigError, match="random_weights.size"):
        read_stage({**params, "random_weights": {"size": "huge"}}, "random_weights_encoders")
    assert sorted(p.name for p in mit.iterdir()) == ["config.json", "model.safetensors"]
    head = {"type": "daformer", "embed_dim": 8, "fusion_dim": 8, "dilations": [1, 2]}
    model = build_model(
        {
            "architecture": "daformer",
            "encoder": {"type": "mit", "pretrained": str(mit)},
            "head": head,
        }
    )
    # the written weights, not a fresh initialisation: the writer's model rebuilt from its seed
    torch.manual_seed(0)
    written = SegformerForImageClassification(SegformerConfig(**MIT_TINY, num_labels=1000))
    state, expected = model.encoder.model.state_dict(), written.segformer.state_dict()
    assert state.keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in state.items())
    model = build_model(
        {
            "architecture": "daformer",
            "encoder": {"type": "resnet", "name": "resnet10t", "pretrained": str(resnet)},
            "head": {"type": "deeplabv2", "fusion_dim": 8, "dilations": [1]},
        }
    )
    saved = load_file(resnet / "model.safetensors")
    state = model.encoder.model.state_dict()
    assert len(state) > 10 and all(torch.equal(v, saved[k]) for k, v in state.items())


def test_the_weight_rules_write_what_the_config_names(tmp_path) -> None:
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text(
        "random_weights: {size: tiny}\nmodels: {hrda_r101: {encoder: {name: resnet10t}}}\n"
    )
    targets = ["resources/paper_smoke/weights/stable-diffusion-v1-5"]
    targets += ["resources/paper_smoke/weights/mit-b5", "resources/paper_smoke/weights/resnet101c"]
    snakemake(
        "--cores", "2", *targets, "--configfile", str(PAPER), str(SMOKE), str(overlay),
        cwd=tmp_path,
    )  # fmt: skip
    weights = tmp_path / "resources" / "paper_smoke" / "weights"
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (weights / "stable-diffusion-v1-5" / sub).is_dir(), sub
    assert (weights / "DGInStyle/ControlNet_UNet-S/config.json").is_file()
    assert json.loads((weights / "resnet101c/config.json").read_text())["architecture"] == (
        "resnet10t"
    )
    log = (tmp_path / "logs/weights/encoders.log").read_text()
    assert read_peak(log) is not None and read_peak(log).gpu_gib is None


def test_peak_memory_lines_round_trip() -> None:
    one = PeakMemory(1.5)
    two = PeakMemory(2.25, 10.5, 12.0)
    text = f"x\n{format_line(one)}\nprogress\n{format_line(two)}\n"
    assert read_peak(text) == PeakMemory(2.25, 10.5, 12.0)
    assert read_peak(format_line(one)) == one and read_peak("nothing") is None


def test_the_benchmark_reads_each_jobs_figures(tmp_path, monkeypatch) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_scale", REPO / "benchmarks/paper_scale.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "paper_scale", bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    for job, rss_mb, line in (
        ("train/flexseg/hrda_r101/seed0", "2048", format_line(PeakMemory(9.9, 20.5, 22.0))),
        ("rcs/class_stats", "512", None),
    ):
        tsv = tmp_path / "results" / "benchmarks" / f"{job}.tsv"
        tsv.parent.mkdir(parents=True)
        tsv.write_text(header + f"12.5\t0:00:12\t{rss_mb}\t1\t1\t1\t0\t0\t50\t6.0\n")
        if line is not None:
            log = tmp_path / "logs" / f"{job}.log"
            log.parent.mkdir(parents=True)
            log.write_text(f"progress\n{line}\n")
    rows = {r.job: r for r in bench.collect(tmp_path)}
    train, stats = rows["train/flexseg/hrda_r101/seed0"], rows["rcs/class_stats"]
    assert (train.seconds, train.cpu_seconds, train.rss_gib, train.gpu_gib) == (
        12.5,
        6.0,
        9.9,
        20.5,
    )
    assert train.rss_source == "log" and bench.stage_of(train.job) == "train hrda_r101"
    assert (stats.rss_gib, stats.rss_source, stats.gpu_gib) == (0.5, "sampled", None)


# ---------------------------------------------------------------------------------------------
# The whole smoke run (opt-in: 68 jobs at the paper sizes, up to 13 GiB each on a CPU)


@pytest.mark.paper_scale
def test_paper_smoke_run(tmp_path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    script = REPO / "benchmarks" / "paper_scale.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--workdir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=3 * 3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "paper_smoke_minutes=" in proc.stdout
    table = (tmp_path / "results" / "table.csv").read_text()
    assert "hrda_r101" in table and "daformer_mitb5" in table
    assert not list((tmp_path / "results" / "train").rglob("last.pt"))
    assert Path(tmp_path / "results" / "generation" / "quality.csv").is_file()
