"""MRLF sampler and component loading, on tiny random components loaded from disk."""

from __future__ import annotations

import json
import math
import shutil
from collections import deque
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from flexseg.config import ConfigError, build, load_config, read_stage, stage_params
from flexseg.labels import to_onehot20
from generation.architecture import CONDITIONING_CHANNELS, SD15_SCHEDULER_CONFIG
from generation.components import (
    TINY_SPEC,
    load_components,
    place_components,
    random_components,
)
from generation.sampler import (
    SamplerSettings,
    TileBox,
    denoise_tiles,
    downsample_nearest,
    encode_prompt,
    generate,
    impose_large_segments,
    large_component_mask,
    predict_noise,
    tile_boxes,
    tile_origins,
)

pytest_plugins = ["diffusion_fixtures"]  # tiny_model_dirs, tiny_components

torch.set_num_threads(1)

# 32 px crops, pass 2 at 64 px = an 8x8 latent canvas, tiles of 4 at stride 2: 3 x 3 tiles.
SMALL = SamplerSettings(
    steps=2,
    guidance_scale=7.5,
    upscale=2,
    tile_latent=4,
    tile_stride=2,
    tile_batch=4,
    large_component_px=100,
    dtype="float32",
    tf32=False,
    controlnet_scale=1.0,
)


def scene_label(size: int = 32) -> np.ndarray:
    """Sky on top (a large segment), road below, a small car, a void strip on the left."""
    label = np.full((size, size), 10, dtype=np.uint8)
    label[size // 2 :] = 0
    label[size // 2 + 4 : size // 2 + 8, 10:16] = 13
    label[:, :3] = 255
    return label


# ---------------------------------------------------------------------------------------------
# Geometry


def test_tile_count_of_the_paper_layout():
    # 1024 px / 8 = 128 latent pixels, 64-latent tiles: 9 per side at stride 8, 5 at stride 16.
    assert len(tile_origins(128, 64, 8)) == (128 - 64) // 8 + 1 == 9
    assert len(tile_origins(128, 64, 16)) == 5
    assert len(tile_boxes(128, 128, 64, 8)) == 81
    assert tile_origins(128, 64, 8) == list(range(0, 65, 8))


@pytest.mark.parametrize("length,tile,stride", [(30, 8, 5), (17, 4, 3), (10, 10, 3), (9, 4, 4)])
def test_tile_origins_general_formula(length, tile, stride):
    origins = tile_origins(length, tile, stride)
    assert len(origins) == math.ceil((length - tile) / stride) + 1
    assert origins[0] == 0 and origins[-1] == length - tile
    assert all(0 < b - a <= stride for a, b in zip(origins[:-1], origins[1:], strict=True))
    covered = np.zeros(length, dtype=int)
    for o in origins:
        covered[o : o + tile] += 1
    assert (covered > 0).all()


def test_tiles_cover_every_latent_pixel_of_a_non_square_canvas():
    boxes = tile_boxes(13, 22, 6, 4)
    count = np.zeros((13, 22), dtype=int)
    for b in boxes:
        assert b.y1 - b.y0 == 6 and b.x1 - b.x0 == 6
        assert 0 <= b.y0 and b.y1 <= 13 and 0 <= b.x0 and b.x1 <= 22
        count[b.y0 : b.y1, b.x0 : b.x1] += 1
    assert (count > 0).all()


def test_tile_larger_than_canvas_or_gaps_are_errors():
    with pytest.raises(ValueError, match="does not fit"):
        tile_origins(8, 16, 4)
    with pytest.raises(ValueError, match="exceeds the tile size"):
        tile_origins(9, 2, 7)


def _components_reference(label: np.ndarray, min_area: int) -> np.ndarray:
    """Breadth-first 8-connected flood fill per class, plainly."""
    h, w = label.shape
    seen = np.zeros((h, w), dtype=bool)
    out = np.zeros((h, w), dtype=bool)
    for sy in range(h):
        for sx in range(w):
            if seen[sy, sx] or label[sy, sx] >= 19:
                continue
            cls = label[sy, sx]
            queue, members = deque([(sy, sx)]), []
            seen[sy, sx] = True
            while queue:
                y, x = queue.popleft()
                members.append((y, x))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = y + dy, x + dx
                        if 0 <= ny < h and 0 <= nx < w and not seen[ny, nx]:
                            if label[ny, nx] == cls:
                                seen[ny, nx] = True
                                queue.append((ny, nx))
            if len(members) > min_area:
                for y, x in members:
                    out[y, x] = True
    return out


def test_large_component_mask_on_a_hand_made_label():
    label = np.full((12, 12), 255, dtype=np.uint8)  # a large void area never counts
    label[0:3, 0:3] = 1  # 9 px
    label[3:5, 3:5] = 1  # 4 px touching the first block diagonally: one component of 13 px
    label[8:12, 8:12] = 2  # 16 px
    label[0:2, 9:12] = 2  # 6 px, separate from the other class-2 block
    mask = large_component_mask(label, min_area=12)
    expected = np.zeros_like(mask)
    expected[0:3, 0:3] = expected[3:5, 3:5] = True
    expected[8:12, 8:12] = True
    np.testing.assert_array_equal(mask, expected)
    # The threshold is strict: a component of exactly min_area pixels is not large.
    assert not large_component_mask(label, min_area=16)[8:12, 8:12].any()
    assert not large_component_mask(label, min_area=0)[label == 255].any()


def test_large_component_mask_matches_flood_fill_on_random_labels():
    rng = np.random.default_rng(0)
    for trial in range(4):
        label = rng.choice(
            np.array([0, 1, 2, 255], dtype=np.uint8), size=(20, 24), p=[0.4, 0.3, 0.2, 0.1]
        )
        min_area = int(rng.integers(1, 30))
        np.testing.assert_array_equal(
            large_component_mask(label, min_area),
            _components_reference(label, min_area),
            err_msg=f"{trial}",
        )


def test_downsample_nearest_matches_a_loop_and_torch():
    rng = np.random.default_rng(1)
    mask = rng.random((32, 48)) > 0.5
    small = downsample_nearest(mask, 8, 12)
    for i in range(8):
        for j in range(12):
            assert small[i, j] == mask[int(i * 32 / 8), int(j * 48 / 12)]
    torch_small = F.interpolate(
        torch.from_numpy(mask)[None, None].float(), size=(8, 12), mode="nearest"
    )
    np.testing.assert_array_equal(small, torch_small[0, 0].numpy() > 0.5)


# ---------------------------------------------------------------------------------------------
# Scheduler, guidance, tiles, inpainting


def test_ddim_schedule_and_step_follow_the_ddim_update():
    sched = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    sched.set_timesteps(20)
    assert [int(t) for t in sched.timesteps] == list(range(951, 0, -50))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 3, generator=gen)
    eps = torch.randn(2, 4, 3, 3, generator=gen)
    for t in (951, 1):
        acp = sched.alphas_cumprod
        a_t = acp[t]
        a_prev = acp[t - 50] if t - 50 >= 0 else acp[0]  # set_alpha_to_one is False in SD1.5
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        # Twice at the same timestep: a stateless step gives the same answer.
        for _ in range(2):
            torch.testing.assert_close(sched.step(eps, t, x, eta=0.0).prev_sample, expected)


def test_guided_prediction_is_the_cfg_combination(tiny_components):
    c = tiny_components
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 4, 4, generator=gen)
    cond = torch.from_numpy(
        np.stack([to_onehot20(scene_label(32)), to_onehot20(scene_label(32).T)])
    )
    embeds = encode_prompt(c, "road sky car", guided=True)
    t = 501
    with torch.no_grad():

        def plain_eps(text: torch.Tensor) -> torch.Tensor:
            text = text.expand(2, -1, -1)
            down, mid = c.controlnet(
                x, t, encoder_hidden_states=text, controlnet_cond=cond, return_dict=False
            )
            return c.unet(
                x,
                t,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample

        eps_u, eps_c = plain_eps(embeds[:1]), plain_eps(embeds[1:])
    got = predict_noise(c, x, cond, t, embeds, SMALL)
    torch.testing.assert_close(got, eps_u + 7.5 * (eps_c - eps_u), rtol=1e-4, atol=1e-5)
    # The unconditional branch is the empty prompt.
    torch.testing.assert_close(embeds[:1], encode_prompt(c, "", guided=False))


def _fused_reference(c, latents, condition, t, embeds, boxes, settings):
    """Each tile alone through the model and a DDIM step, then a per-pixel mean by loops."""
    f = c.vae_scale_factor
    outs = []
    for b in boxes:
        view = latents[:, :, b.y0 : b.y1, b.x0 : b.x1]
        cond = condition[:, :, b.y0 * f : b.y1 * f, b.x0 * f : b.x1 * f]
        eps = predict_noise(c, view, cond, t, embeds, settings)
        outs.append(c.scheduler.step(eps, t, view, eta=0.0).prev_sample)
    _, ch, h, w = latents.shape
    fused = torch.zeros_like(latents)
    for y in range(h):
        for x in range(w):
            values = [
                o[0, :, y - b.y0, x - b.x0]
                for o, b in zip(outs, boxes, strict=True)
                if b.y0 <= y < b.y1 and b.x0 <= x < b.x1
            ]
            fused[0, :, y, x] = torch.stack(values).mean(0)
    return fused


def test_batched_tiles_equal_sequential_tiles_and_the_fusion_mean(tiny_components):
    c = tiny_components
    c.scheduler.set_timesteps(SMALL.steps)
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 8, 10, generator=gen)
    blocks = np.random.default_rng(3).choice(np.array([0, 2, 10, 13, 255], np.uint8), (8, 10))
    condition = torch.from_numpy(to_onehot20(np.kron(blocks, np.ones((8, 8), np.uint8))))[None]
    embeds = encode_prompt(c, "road sky", guided=True)
    boxes = tile_boxes(8, 10, 4, 3)  # origins 0, 3, 4 / 0, 3, 6: overlaps of 1 to 3 tiles
    t = int(c.scheduler.timesteps[0])
    one, four = replace(SMALL, tile_batch=1), replace(SMALL, tile_batch=4)
    sequential = denoise_tiles(c, latents, condition, t, embeds, boxes, one)
    batched = denoise_tiles(c, latents, condition, t, embeds, boxes, four)
    torch.testing.assert_close(batched, sequential, rtol=1e-4, atol=1e-5)
    reference = _fused_reference(c, latents, condition, t, embeds, boxes, SMALL)
    torch.testing.assert_close(batched, reference, rtol=1e-4, atol=1e-5)


def test_inpainting_uses_timestep_t_minus_one_and_clamps_at_zero():
    sched = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG)
    gen = torch.Generator().manual_seed(4)
    latents, init, noise = (torch.randn(1, 4, 4, 4, generator=gen) for _ in range(3))
    keep = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    keep[..., :2, 1:3] = True
    acp = sched.alphas_cumprod
    for t, level in ((951, 950), (1, 0), (0, 0)):
        got = impose_large_segments(sched, latents, init, keep, t, noise)
        for y in range(4):
            for x in range(4):
                if keep[0, 0, y, x]:
                    want = (
                        acp[level].sqrt() * init[0, :, y, x]
                        + (1 - acp[level]).sqrt() * noise[0, :, y, x]
                    )
                else:
                    want = latents[0, :, y, x]
                torch.testing.assert_close(got[0, :, y, x], want)


# ---------------------------------------------------------------------------------------------
# generate()


def test_generate_shapes_mask_and_determinism(tiny_components):
    label = scene_label(32)
    first = generate(tiny_components, to_onehot20(label), "road sky car", 7, SMALL)
    again = generate(tiny_components, to_onehot20(label), "road sky car", 7, SMALL)
    other = generate(tiny_components, to_onehot20(label), "road sky car", 8, SMALL)
    assert first.image.shape == (32, 32, 3) and first.image.dtype == np.uint8
    assert first.pass1_image.shape == (32, 32, 3)
    assert first.num_tiles == 9
    assert first.image.tobytes() == again.image.tobytes()
    assert first.image.tobytes() != other.image.tobytes()
    np.testing.assert_array_equal(
        first.large_mask, large_component_mask(label, SMALL.large_component_px)
    )
    assert first.large_mask[:16, 3:].all() and not first.large_mask[:, :3].any()


def test_bfloat16_generation_is_close_to_float32():
    """Same components, condition, prompt and seed, U-Net / ControlNet / text encoder in bf16
    (the canvas, DDIM and VAE stay float32) against float32, 4 steps, on the CPU. Measured here
    (tiny random components, 32 px): mean |image difference| 0.46 of 255 (max 6), final latent
    off by 2.0 % (relative L2), against 19 of 255 and 120 % between two seeds."""
    settings = replace(SMALL, steps=4)
    components = random_components(TINY_SPEC, seed=0)
    label = to_onehot20(scene_label(32))
    fp32 = generate(components, label, "road sky car", 3, settings)
    other_seed = generate(components, label, "road sky car", 4, settings)
    bf16_components = place_components(components, "cpu", "bfloat16")
    assert bf16_components.unet.dtype == torch.bfloat16
    bf16 = generate(bf16_components, label, "road sky car", 3, settings)

    def image_diff(a, b) -> float:
        return float(np.abs(a.image.astype(np.int16) - b.image.astype(np.int16)).mean())

    def latent_diff(a, b) -> float:
        return float((a.final_latent - b.final_latent).norm() / a.final_latent.norm())

    assert 0 < image_diff(fp32, bf16) < 2.0
    assert 0 < latent_diff(fp32, bf16) < 0.05
    assert image_diff(fp32, bf16) < image_diff(fp32, other_seed) / 10
    assert latent_diff(fp32, bf16) < latent_diff(fp32, other_seed) / 10


def test_large_segments_end_at_the_pass1_latent(tiny_components):
    """Every pixel in one large segment: after the last step (t = 1) the canvas is the initial
    latent noised to timestep 0 with the last noise draw (pass-1 noise, VAE sample, pass-2 noise,
    then one draw per step, in that order)."""
    label = np.full((32, 32), 8, dtype=np.uint8)
    settings = replace(SMALL, large_component_px=10)
    result = generate(tiny_components, to_onehot20(label), "vegetation", 5, settings)
    assert result.large_mask.all()
    gen = torch.Generator().manual_seed(5)
    for shape in [(1, 4, 4, 4), (1, 4, 8, 8), (1, 4, 8, 8)] + [(1, 4, 8, 8)] * settings.steps:
        last = torch.randn(shape, generator=gen)
    acp0 = DDIMScheduler.from_config(SD15_SCHEDULER_CONFIG).alphas_cumprod[0]
    expected = acp0.sqrt() * result.initial_latent + (1 - acp0).sqrt() * last
    torch.testing.assert_close(result.final_latent, expected)
    # Without large segments pass 2 ends far from the pass-1 latent.
    free = generate(
        tiny_components,
        to_onehot20(label),
        "vegetation",
        5,
        replace(SMALL, large_component_px=10**6),
    )
    assert not free.large_mask.any()
    assert (free.final_latent - free.initial_latent).abs().mean() > 10 * (
        result.final_latent - result.initial_latent
    ).abs().mean()


def test_generate_rejects_bad_inputs(tiny_components):
    with pytest.raises(ValueError, match="20, H, W"):
        generate(tiny_components, np.zeros((19, 32, 32), np.float32), "x", 0, SMALL)
    with pytest.raises(ValueError, match="multiple of 16"):
        generate(tiny_components, to_onehot20(scene_label(24)), "x", 0, SMALL)
    with pytest.raises(ValueError, match="exceeds the pass-2 latent canvas"):
        generate(
            tiny_components,
            to_onehot20(scene_label(32)),
            "x",
            0,
            replace(SMALL, tile_latent=16, steps=1),
        )


def test_stateful_scheduler_is_refused(tiny_components, tiny_model_dirs):
    multistep = DPMSolverMultistepScheduler.from_config(SD15_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="DPMSolverMultistepScheduler is not stateless"):
        generate(
            replace(tiny_components, scheduler=multistep),
            to_onehot20(scene_label(32)),
            "x",
            0,
            SMALL,
        )
    with pytest.raises(ValueError, match="not stateless"):
        load_components(
            {"kind": "demo"},
            tiny_model_dirs.prior,
            tiny_model_dirs.controlnet,
            device="cpu",
            scheduler_class=DPMSolverMultistepScheduler,
        )


# ---------------------------------------------------------------------------------------------
# Loading


def test_loaded_components_match_the_saved_layout(tiny_components, tiny_model_dirs):
    c = tiny_components
    assert isinstance(c.scheduler, DDIMScheduler)
    assert c.controlnet.config.conditioning_channels == CONDITIONING_CHANNELS
    assert c.vae_scale_factor == 8
    assert c.ids.base == str(tiny_model_dirs.prior)
    assert not any(p.requires_grad for p in c.unet.parameters())


def test_controlnet_config_without_conditioning_channels_loads_with_20(tiny_model_dirs, tmp_path):
    """The released DGInStyle config lacks the key; stock diffusers would default to 3."""
    cn = tmp_path / "controlnet"
    shutil.copytree(tiny_model_dirs.controlnet, cn)
    config = json.loads((cn / "config.json").read_text())
    del config["conditioning_channels"]
    (cn / "config.json").write_text(json.dumps(config))
    loaded = load_components({"kind": "demo"}, tiny_model_dirs.prior, cn, device="cpu")
    assert loaded.controlnet.config.conditioning_channels == 20
    assert loaded.controlnet.controlnet_cond_embedding.conv_in.in_channels == 20


def test_pretrained_kind_reads_local_folders(tiny_model_dirs):
    models = {
        "kind": "pretrained",
        "base": str(tiny_model_dirs.prior),
        "controlnet": str(tiny_model_dirs.controlnet.parent),
        "controlnet_subfolder": tiny_model_dirs.controlnet.name,
    }
    c = load_components(models, device="cpu")
    assert (
        c.ids.controlnet == f"{tiny_model_dirs.controlnet.parent}/{tiny_model_dirs.controlnet.name}"
    )
    with pytest.raises(ConfigError, match="do not pass --prior"):
        load_components(models, tiny_model_dirs.prior, tiny_model_dirs.controlnet, device="cpu")


def test_loading_errors_are_clear(tiny_model_dirs, tmp_path):
    with pytest.raises(ConfigError, match="--prior DIR --controlnet DIR"):
        load_components({"kind": "demo"}, device="cpu")
    (tmp_path / "prior" / "unet").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"lacks the subfolder\(s\) \['vae'"):
        load_components(
            {"kind": "demo"}, tmp_path / "prior", tiny_model_dirs.controlnet, device="cpu"
        )
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        load_components(
            {"kind": "demo"},
            tiny_model_dirs.prior,
            tiny_model_dirs.controlnet,
            device="cpu",
            dtype="float16",
        )


def test_settings_from_the_config_sampler_section():
    config = load_config()
    sampler = config["generation"]["sampler"]
    sliced = read_stage(stage_params(config, "generate"), "generate")["sampler"]
    for key in ("tile_batch", "device", "threads"):
        assert key not in sliced, key  # they change no image
    s = build(SamplerSettings, {**sliced, "tile_batch": sampler["tile_batch"]})
    assert s == SamplerSettings.from_section(sampler)
    for key, value in sampler.items():
        assert key in ("device", "threads") or getattr(s, key) == value, key
    assert TileBox(0, 0, 4, 4) == tile_boxes(4, 4, 4, 1)[0]


def test_random_components_are_reproducible():
    first, again, other = (random_components(TINY_SPEC, seed=s) for s in (0, 0, 1))
    pairs = zip(first.unet.state_dict().values(), again.unet.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not torch.equal(first.unet.conv_in.weight, other.unet.conv_in.weight)
