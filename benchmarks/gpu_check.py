"""One check of the paper-scale costs on a GPU: training steps, MRLF generation, HRDA evaluation.

    python benchmarks/gpu_check.py            # CUDA: the paper's sizes (a few minutes, H100/H200)
    python benchmarks/gpu_check.py --tiny     # tiny sizes on any device (seconds; without CUDA
                                              # this is what runs, and what the test suite runs)

Every figure is one ``key=value`` line (sizes in GiB, times in seconds); a figure with a goal
(issue 17) carries it on the same line, ``goal >= X: met`` or ``NOT met``. Lines starting with
``#`` are notes. All weights are random (the speed and memory of trained ones are the same).

1. Training (``train_<model>_<precision>_*``): one optimizer step of ``daformer_mitb5`` and
   ``hrda_mitb5`` as config/paper/gta_to_five.yaml builds them (MiT-B5, the paper crop: 512 and
   1024, batch 2, the paper recipe with the ImageNet feature distance against a frozen copy,
   the CE over all pixels and, for HRDA MiT-B5, SHADE's doubled batch from a random basis;
   plain CE: the ``source_only`` experiment), laid out channels-last like the trainer, in fp32,
   bf16 autocast and fp16 autocast with the gradient scaler: iterations per second, peak memory,
   the last loss (finite), and the bf16 / fp32 speed ratio (goal >= 1.5).
2. Generation (``gen_*``): one MRLF image at Stable Diffusion 1.5 size (random SD 1.5-sized U-Net,
   20-channel ControlNet, VAE, CLIP-L), the paper sampler geometry (512 crop, x2 pass 2, 64-latent
   tiles at stride 8: 81 tiles), ``--gen-steps`` DDIM steps (2: the per-step figures are the
   ones to read), three ways: a DGInStyle-style loop (float32, one tile per call, torch 2.1's
   TF32 defaults as DGInStyle ran: matmul off, cuDNN on), and the pipeline's batched tiles
   (``tile_batch`` of the paper config) in float32 (its ``tf32`` setting) and in bfloat16. Per
   way: seconds per image, seconds per tiled step (one pass-2 step over all tiles), the achieved
   TFLOP/s of the tiled step against the FLOPs counted with torch's FlopCounterMode on one
   guided call, peak memory, and an estimate of a 20-step image and of 10,000 images. Then the
   speedup of bf16 batched over the loop per tiled step (goal >= 5), the tiled step's share of
   the bf16 peak (goal >= 0.40; the peak from the device name, else a measured bf16 matmul), and
   the mean |difference| of the bf16 and fp32 images on one seed (0-255 scale).
3. Evaluation (``eval_*``): one Cityscapes-sized image (2048x1024) with ``hrda_mitb5`` through
   ``flexseg.inference.predict_image`` as the paper evaluates it (1024 windows at stride 512
   over the full-resolution image, HRDA's detail tiles inside), float32: seconds and peak memory.

Timings synchronise CUDA around the timed region; peak memory is torch.cuda.max_memory_allocated
after a reset per case (CUDA) or, on a CPU, the tensors alive at once during the case
(``live_memory.LiveTensorBytes``) plus the weights and optimizer state held before it.

Not run yet: the CUDA path of this script (no GPU was available where it was written); only the
tiny CPU form has run (tests/test_gpu_check.py). The CUDA-only parts (synchronisation, memory
counters, the peak table, fp16 with the CUDA scaler) were written from torch's documentation.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.utils.flop_counter as flop_counter

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from live_memory import LiveTensorBytes, parameter_bytes  # noqa: E402

from flexseg.config import build, load_config, stage_params  # noqa: E402
from flexseg.evaluate import EvalSettings  # noqa: E402
from flexseg.inference import predict_image  # noqa: E402
from flexseg.labels import to_onehot20  # noqa: E402
from flexseg.losses import Objective  # noqa: E402
from flexseg.models import attach_style, build_model  # noqa: E402
from flexseg.precision import apply_tf32  # noqa: E402
from flexseg.train import Recipe  # noqa: E402
from generation.components import (  # noqa: E402
    SD15_SPEC,
    TINY_SPEC,
    place_components,
    random_components,
)
from generation.sampler import (  # noqa: E402
    SamplerSettings,
    decode,
    denoise_tiles,
    encode,
    encode_prompt,
    generate,
    predict_noise,
    tile_boxes,
)

PAPER_CONFIG = REPO / "config" / "paper" / "gta_to_five.yaml"
GIB = 2**30
# MiT-B5 (SegFormer; training_and_evaluation.md §2), random weights instead of nvidia/mit-b5.
MIT_B5 = {
    "hidden_sizes": [64, 128, 320, 512],
    "depths": [3, 6, 40, 3],
    "num_attention_heads": [1, 2, 5, 8],
    "sr_ratios": [8, 4, 2, 1],
    "drop_path_rate": 0.1,
}
TINY_MIT = {
    "hidden_sizes": [16, 32, 64, 128],
    "depths": [1, 1, 1, 1],
    "num_attention_heads": [1, 1, 2, 4],
    "sr_ratios": [8, 4, 2, 1],
    "drop_path_rate": 0.0,
}
# Dense bf16 tensor-core peaks (TFLOP/s, vendor data sheets), matched against the device name in
# this order; another device is compared with a measured bf16 matmul.
BF16_PEAKS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4))
BF16_PEAKS += (("A100", 312.0),)
PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_MODELS = ("daformer_mitb5", "hrda_mitb5")
STEPS_FOR_ESTIMATE = 20
IMAGES_FOR_ESTIMATE = 10000


def emit(key: str, value: float, goal: tuple[str, float] | None = None) -> None:
    """One figure: ``key=value``, with its goal when it has one."""
    text = f"{key}={value}" if isinstance(value, int) else f"{key}={value:.4g}"
    if goal is not None:
        op, limit = goal
        met = value >= limit if op == ">=" else value <= limit
        text += f"  goal {op} {limit:g}: {'met' if met else 'NOT met'}"
    print(text, flush=True)


def note(text: str) -> None:
    print(f"# {text}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(
    device: torch.device, fn: Callable[[], Any], resident: int = 0, repeats: int = 1
) -> tuple[float, float, Any]:
    """(seconds per call, peak GiB, last result) of ``fn`` run ``repeats`` times.

    CUDA: the allocator's peak over the timed calls (a reset first). CPU: one more, untimed call
    under LiveTensorBytes, plus ``resident`` bytes (weights and state that existed before)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(repeats):
        result = fn()
    sync(device)
    seconds = (time.perf_counter() - start) / repeats
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    else:
        with LiveTensorBytes() as meter:
            fn()
        peak = resident + meter.peak
    return seconds, peak / GIB, result


def street_labels(batch: int, height: int, width: int, seed: int) -> np.ndarray:
    """Label maps with bands of sky, building, vegetation, road and boxes of small classes."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((batch, height, width), dtype=np.uint8)
    for b in range(batch):
        cuts = np.sort(rng.integers(0, height, size=3))
        labels[b, : cuts[0]] = 10
        labels[b, cuts[0] : cuts[1]] = 2
        labels[b, cuts[1] : cuts[2]] = 8
        for _ in range(8):
            y, x = rng.integers(0, height - 4), rng.integers(0, width - 4)
            h, w = rng.integers(2, max(height // 4, 3)), rng.integers(2, max(width // 4, 3))
            labels[b, y : y + h, x : x + w] = rng.choice([5, 6, 7, 11, 13, 18])
        labels[b, : max(height // 32, 1)] = 255
    return labels


def autocast_for(device: torch.device, precision: str) -> Callable[[], Any]:
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device_type=device.type, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# 1. Training


def model_configs(tiny: bool) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The paper config and its two MiT models, random weights (tiny: a tiny MiT, crop 64)."""
    config = load_config(PAPER_CONFIG)
    models = {}
    for name in TRAIN_MODELS:
        cfg = copy.deepcopy({"name": name, **config["models"][name]})
        cfg["encoder"] = {"type": "mit", "pretrained": None, "config": TINY_MIT if tiny else MIT_B5}
        if tiny:
            cfg["head"] = {**cfg["head"], "embed_dim": 16, "fusion_dim": 16}
            if "hrda" in cfg:
                cfg["hrda"] = {**cfg["hrda"], "detail_crop": 32, "attention_embed_dim": 16}
        models[name] = cfg
    return config, models


def train_step_case(
    device: torch.device,
    model_cfg: dict[str, Any],
    recipe: Recipe,
    crop: int,
    precision: str,
    steps: int,
    warmup: int,
) -> tuple[float, float, float]:
    """(iterations per second, peak GiB, last loss) of the paper's CE step + feature distance."""
    torch.manual_seed(0)
    model = build_model(model_cfg, gap_features=False).to(device).train()
    model = model.to(memory_format=torch.channels_last)
    imagenet = None
    if recipe.feature_distance.enabled:
        imagenet = copy.deepcopy(model).eval().requires_grad_(False)
    shade = recipe.shade if recipe.shade.enabled else None
    if shade is not None:  # the doubled batch the run trains on, from a random basis
        style = attach_style(model.encoder, shade.basis_styles, shade.concentration).to(device)
        g = torch.Generator().manual_seed(0)
        k, c = style.basis_styles, style.channels
        style.set_basis(torch.randn(k, c, generator=g), torch.rand(k, c, generator=g) + 0.1)
    autocast = autocast_for(device, precision)
    # source_only: plain cross-entropy, no GAP, with the recipe's feature distance, CE reduction
    # and SHADE
    objective = Objective(
        None,
        None,
        None,
        recipe.feature_distance,
        imagenet,
        autocast=autocast,
        ce_reduction=recipe.ce_reduction,
        shade=shade,
    )
    optimizer = torch.optim.AdamW(
        model.param_groups(recipe.lr, recipe.head_lr_mult, recipe.weight_decay),
        lr=recipe.lr,
        betas=recipe.betas,
        weight_decay=recipe.weight_decay,
    )
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(recipe.batch_size, 3, crop, crop, generator=generator).to(device)
    images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.from_numpy(street_labels(recipe.batch_size, crop, crop, 0)).long().to(device)

    def step() -> float:
        with autocast():
            outputs = model(images, labels)
        terms = objective(outputs, images)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(terms.total).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            terms.total.backward()
            optimizer.step()
        return terms.total.detach()

    for _ in range(warmup):
        step()
    state = sum(
        t.untyped_storage().nbytes()
        for s in optimizer.state.values()
        for t in s.values()
        if isinstance(t, torch.Tensor)
    )
    resident = state + parameter_bytes(model, *([imagenet] if imagenet is not None else []))
    seconds, peak, loss = measure(device, step, resident=resident, repeats=steps)
    return 1.0 / seconds, peak, float(loss)


def check_training(device: torch.device, tiny: bool, args: argparse.Namespace) -> None:
    config, models = model_configs(tiny)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # as the trainer
    for name in TRAIN_MODELS:
        params = stage_params(config, "train", experiment="source_only", model=name, seed=0)
        training = params["training"]
        apply_tf32(args.tf32 or training["tf32"])
        recipe = build(Recipe, training)
        crop = 64 if tiny else int(training["crop_size"])
        note(
            f"training {name}: crop {crop}, batch {recipe.batch_size}, "
            f"FD {recipe.feature_distance.enabled}, SHADE {recipe.shade.enabled}"
        )
        speeds = {}
        for precision in PRECISIONS:
            speed, peak, loss = train_step_case(
                device, models[name], recipe, crop, precision, args.train_steps, args.warmup
            )
            release(device)
            speeds[precision] = speed
            key = f"train_{name}_{precision}"
            emit(f"{key}_it_per_s", speed)
            emit(f"{key}_peak_gib", peak)
            emit(f"{key}_loss", loss)
            emit(f"{key}_loss_finite", int(math.isfinite(loss)), (">=", 1))
        emit(f"train_{name}_bf16_over_fp32_speed", speeds["bf16"] / speeds["fp32"], (">=", 1.5))
        emit(f"train_{name}_fp16_over_fp32_speed", speeds["fp16"] / speeds["fp32"])


# ---------------------------------------------------------------------------------------------
# 2. Generation


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn`` (torch's FlopCounterMode; the CPU's flash attention counted like CUDA's)."""
    attention = {
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_flop_count(q, k, v)
        )
    }
    with flop_counter.FlopCounterMode(display=False, custom_mapping=attention) as counter:
        fn()
    return int(counter.get_total_flops())


def bf16_peak(device: torch.device, tiny: bool) -> tuple[float, str]:
    """The device's dense bf16 peak (TFLOP/s) from its name, else a measured bf16 matmul."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, peak in BF16_PEAKS:
            if key in name:
                return peak, f"data sheet of {name}"
    n = 1024 if tiny or device.type != "cuda" else 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    sync(device)
    reps = 3 if device.type != "cuda" else 20
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    tflops = 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
    return tflops, f"measured {n}^3 bf16 matmul"


def generation_setup(tiny: bool, steps: int) -> tuple[Any, SamplerSettings, int]:
    """Random components, the paper sampler settings with ``steps``, the crop size."""
    config = load_config(PAPER_CONFIG)
    sampler = config["generation"]["sampler"]
    settings = replace(SamplerSettings.from_section(sampler), steps=steps)
    crop = int(config["generation"]["jobs"]["crop_size"])
    if tiny:
        # 3 x 3 tiles of 8 latents at stride 4 on the 16-latent canvas of a 64 px crop
        settings = replace(settings, tile_latent=8, tile_stride=4, large_component_px=300)
        crop = 64
    components = random_components(TINY_SPEC if tiny else SD15_SPEC)
    return components, settings, crop


def check_generation(device: torch.device, tiny: bool, args: argparse.Namespace) -> None:
    torch.backends.cudnn.benchmark = False  # as the shard
    components, settings, crop = generation_setup(tiny, args.gen_steps)
    f = components.vae_scale_factor
    canvas = crop * settings.upscale // f
    boxes = tile_boxes(canvas, canvas, settings.tile_latent, settings.tile_stride)
    tile = settings.tile_latent
    prompt = "A city street scene with road sidewalk building pole vegetation sky car"
    label = street_labels(1, crop, crop, 3)[0]
    onehot = to_onehot20(label)
    note(
        f"generation: crop {crop}, {len(boxes)} tiles of {tile} latents at stride "
        f"{settings.tile_stride}, {settings.steps} steps, tile_batch {settings.tile_batch}"
    )
    emit("gen_tiles", len(boxes))
    emit("gen_steps", settings.steps)

    components = place_components(components, device, "float32")
    scheduler = components.scheduler
    scheduler.set_timesteps(settings.steps)
    t = int(scheduler.timesteps[0])
    embeds = encode_prompt(components, prompt, guided=True)
    generator = torch.Generator().manual_seed(0)
    window = torch.randn(1, 4, tile, tile, generator=generator).to(device)
    window_cond = torch.from_numpy(onehot[:, : tile * f, : tile * f]).float()[None].to(device)
    call_flops = count_flops(
        partial(predict_noise, components, window, window_cond, t, embeds, settings)
    )
    calls_per_step = 1 + len(boxes)  # pass 1's window and pass 2's tiles, all of one tile's size
    emit("gen_tflop_per_guided_call", call_flops / 1e12)
    emit("gen_pflop_per_image_counted", settings.steps * calls_per_step * call_flops / 1e15)
    emit(
        "gen_pflop_per_image_20steps",
        STEPS_FOR_ESTIMATE * calls_per_step * call_flops / 1e15,
    )
    peak_tflops, source = bf16_peak(device, tiny)
    emit("bf16_peak_tflops", peak_tflops)
    note(f"bf16 peak: {source}")

    canvas_latents = torch.randn(1, 4, canvas, canvas, generator=generator).to(device)
    # the VAE stays float32 in every mode: its first calls (kernel loading) before any timing
    decode(components, canvas_latents)
    encode(components, np.zeros((canvas * f, canvas * f, 3), np.uint8), generator)
    condition_up = torch.from_numpy(np.ascontiguousarray(onehot, dtype=np.float32))[None]
    condition_up = condition_up.repeat_interleave(settings.upscale, 2)
    condition_up = condition_up.repeat_interleave(settings.upscale, 3).to(device)
    modes = (
        ("loop_fp32", "float32", replace(settings, tile_batch=1)),
        ("batched_fp32", "float32", settings),
        ("batched_bf16", "bfloat16", settings),
    )
    results: dict[str, dict[str, Any]] = {}
    for mode, dtype, mode_settings in modes:
        if mode == "loop_fp32":  # torch 2.1's defaults, which DGInStyle ran with
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = True
        else:
            apply_tf32(args.tf32 or load_config(PAPER_CONFIG)["generation"]["sampler"]["tf32"])
        components = place_components(components, device, dtype)
        embeds = encode_prompt(components, prompt, guided=True)
        resident = parameter_bytes(
            components.unet, components.controlnet, components.vae, components.text_encoder
        )

        tiled_step = partial(
            denoise_tiles, components, canvas_latents, condition_up, t, embeds, boxes, mode_settings
        )
        one_call = partial(predict_noise, components, window, window_cond, t, embeds, mode_settings)
        image = partial(generate, components, onehot, prompt, 7, mode_settings)
        tiled_step()  # warm-up
        step_s, _, _ = measure(device, tiled_step, resident, repeats=args.gen_repeats)
        call_s, _, _ = measure(device, one_call, resident, repeats=max(args.gen_repeats, 3))
        image_s, peak, result = measure(device, image, resident)
        tflops = len(boxes) * call_flops / step_s / 1e12
        image_20 = image_s + (STEPS_FOR_ESTIMATE - settings.steps) * (step_s + call_s)
        results[mode] = {"step": step_s, "image": image_s, "tflops": tflops, "result": result}
        emit(f"gen_{mode}_s_per_image", image_s)
        emit(f"gen_{mode}_s_per_tiled_step", step_s)
        emit(f"gen_{mode}_tiled_tflops", tflops)
        emit(f"gen_{mode}_peak_gib", peak)
        emit(f"gen_{mode}_s_per_image_20steps_est", image_20)
        emit(f"gen_{mode}_device_hours_10k_images_est", image_20 * IMAGES_FOR_ESTIMATE / 3600)
    loop, fp32, bf16 = (results[m] for m in ("loop_fp32", "batched_fp32", "batched_bf16"))
    emit("gen_speedup_bf16_vs_loop_per_step", loop["step"] / bf16["step"], (">=", 5.0))
    emit("gen_speedup_bf16_vs_loop_per_image", loop["image"] / bf16["image"])
    emit("gen_speedup_fp32_batched_vs_loop_per_step", loop["step"] / fp32["step"])
    emit("gen_bf16_tiled_fraction_of_peak", bf16["tflops"] / peak_tflops, (">=", 0.40))

    def image_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
        x, y = a["result"].image.astype(np.int16), b["result"].image.astype(np.int16)
        return float(np.abs(x - y).mean())

    emit("gen_image_diff_bf16_vs_fp32", image_diff(bf16, fp32))
    emit("gen_image_diff_batched_vs_loop_fp32", image_diff(fp32, loop))


# ---------------------------------------------------------------------------------------------
# 3. Evaluation


def check_evaluation(device: torch.device, tiny: bool, args: argparse.Namespace) -> None:
    torch.backends.cudnn.benchmark = False  # as the evaluation
    config, models = model_configs(tiny)
    params = stage_params(config, "evaluate", dataset="cityscapes")
    evaluation, scale = params["evaluation"], params["scale"]
    if tiny:  # a 256 x 128 image in 3 windows of 128 (x2 test size, as HRDA's)
        evaluation, scale = {**evaluation, "window": 64, "stride": 32}, [128, 64]
    apply_tf32(args.tf32 or evaluation["tf32"])
    torch.manual_seed(0)
    model = build_model(models["hrda_mitb5"], gap_features=False).to(device).eval()
    settings = EvalSettings.from_params(evaluation, scale, model.test_scale_factor).inference
    width, height = (256, 128) if tiny else (2048, 1024)
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    note(
        f"evaluation: hrda_mitb5 on a {width}x{height} image, windows {settings.window} at "
        f"stride {settings.stride}, test size x{settings.scale_factor}"
    )
    predict = partial(predict_image, model, rgb, (height, width), settings, device)
    predict()  # warm-up
    seconds, peak, prediction = measure(device, predict, parameter_bytes(model))
    emit("eval_hrda_mitb5_s_per_image", seconds)
    emit("eval_hrda_mitb5_peak_gib", peak)
    emit("eval_hrda_mitb5_windows", prediction.num_windows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (always without CUDA)")
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="TF32 on for every fp32 case but the DGInStyle-style loop (else each stage's tf32)",
    )
    parser.add_argument("--train-steps", type=int, default=None, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first")
    parser.add_argument("--gen-steps", type=int, default=None, help="DDIM steps per image")
    parser.add_argument("--gen-repeats", type=int, default=None, help="timed tiled steps")
    parser.add_argument(
        "--sections", nargs="+", choices=["train", "gen", "eval"], default=["train", "gen", "eval"]
    )
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (no CUDA)")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tiny = args.tiny or not cuda
    if not cuda:
        torch.set_num_threads(args.threads)
    args.train_steps = args.train_steps or (2 if tiny else 10)
    args.warmup = args.warmup or (1 if tiny else 3)
    args.gen_repeats = args.gen_repeats or (1 if tiny else 2)
    args.gen_steps = args.gen_steps or (1 if tiny else 2)
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    note(f"device {name}, {'tiny' if tiny else 'paper'} sizes, torch {torch.__version__}")
    if tiny:
        note("tiny sizes: the goals are the paper sizes' on a GPU, shown here for the form only")
    start = time.perf_counter()
    sections = {"train": check_training, "gen": check_generation, "eval": check_evaluation}
    for section in args.sections:
        sections[section](device, tiny, args)
        release(device)
    emit("total_seconds", time.perf_counter() - start, None if tiny else ("<=", 480))
    return 0


if __name__ == "__main__":
    sys.exit(main())
