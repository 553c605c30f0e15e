"""The demo generator: offline tokenizer, losses against plain references, data crops, and the
three training commands end to end on a tiny world written here (no demo renderer needed)."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import replace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from flexseg.config import ConfigError, load_config, schema_at, stage_params
from flexseg.io import DataError, write_image, write_label
from flexseg.labels import CITYSCAPES_ID_TO_TRAIN_ID, CLASS_NAMES
from flexseg.prompts import class_list
from generation.architecture import (
    build_controlnet,
    build_text_encoder,
    build_unet,
    build_vae,
    training_scheduler,
)
from generation.demo import __main__ as demo_model
from generation.demo.data import (
    LatentImage,
    TrainImage,
    read_captions,
    sample_crops,
    sample_pixel_crops,
    to_tensor,
)
from generation.demo.settings import demo_sizes, settings_from_params
from generation.demo.train import (
    DenoiserSetup,
    TextEmbedder,
    TrainLog,
    captions_with_dropout,
    class_list_prompts,
    denoising_loss,
    latent_scaling,
    learning_rate,
    narrow_posterior,
    onehot_batch,
    train_denoiser,
    vae_loss,
    zero_convolutions,
)
from generation.tokenizer import (
    MAX_LENGTH,
    TokenizerError,
    build_tokenizer,
    default_words,
    tokenize,
    word_merges,
)

torch.set_num_threads(1)

TRAIN_TO_RAW = {train: raw for raw, train in CITYSCAPES_ID_TO_TRAIN_ID.items()}


def tiny_params() -> dict:
    """A stage slice with the smallest sizes the architecture allows, two steps per model."""
    return {
        "demo_generator": {
            "seed": 0,
            "crop_size": 32,
            "log_every": 1,
            "prediction_type": "v_prediction",
            "train_text_encoder": True,
            "architecture": {
                "vae_channels": [8, 8, 8, 8],
                "vae_layers_per_block": 0,
                "unet_channels": [16, 16, 16],
                "text_width": 16,
                "text_layers": 1,
                "condition_embedding": [4, 4, 4, 8],
            },
            "vae": {
                "steps": 2,
                "batch_size": 2,
                "crop_size": 16,
                "lr": 1e-3,
                "kl_weight": 1e-4,
                "chroma_weight": 3.0,
            },
            "prior": {
                "steps": 2,
                "batch_size": 2,
                "lr": 1e-3,
                "caption_dropout": 0.5,
            },
            "source": {
                "steps": 2,
                "batch_size": 2,
                "lr": 1e-3,
                "caption_dropout": 0.0,
            },
            "controlnet": {
                "steps": 2,
                "batch_size": 2,
                "lr": 1e-3,
                "caption_dropout": 0.0,
                "zero_conv_lr_mult": 10.0,
            },
        },
    }


def scene_label(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Train ids: sky over building over road, with a car and a pole."""
    label = np.full((height, width), 10, np.uint8)
    label[height // 4 : height // 2] = 2
    label[height // 2 :] = 0
    x = int(rng.integers(0, width - 12))
    label[height // 2 + 4 : height // 2 + 12, x : x + 12] = 13
    label[height // 4 : height // 2 + 6, width - 6 - int(rng.integers(0, 8))] = 5
    label[0, 0] = 255
    return label


COLOURS = np.array([[128, 64, 128], [70, 70, 70], [0, 0, 142], [153, 153, 153], [70, 130, 180]])


def paint(label: np.ndarray, shift: int) -> np.ndarray:
    idx = np.select([label == 0, label == 2, label == 13, label == 5], [0, 1, 2, 3], 4)
    return np.clip(COLOURS[idx] + shift, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    rng = np.random.default_rng(0)
    for i in range(3):
        label = scene_label(rng, 40, 72)
        write_image(root / "gta" / "images" / f"{i:05d}.png", paint(label, 0))
        raw = np.vectorize(lambda t: TRAIN_TO_RAW.get(int(t), 0))(label).astype(np.uint8)
        write_label(root / "gta" / "labels" / f"{i:05d}.png", raw)
    rows = []
    for i, (condition, caption) in enumerate(
        [
            ("standard", "road building pole sky car"),
            ("fog", "A city street scene with road building pole sky car, in foggy weather."),
            ("night", "A city street scene with road building sky car, in night weather."),
        ]
    ):
        label = scene_label(rng, 32, 32)
        write_image(root / "prior" / "images" / f"p{i}.png", paint(label, 40 * i))
        rows.append({"name": f"p{i}", "condition": condition, "caption": caption})
    with (root / "prior" / "captions.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "condition", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def run(command: str, world, out, params: dict, *extra: str) -> int:
    return demo_model.main(
        [
            command,
            "--params",
            json.dumps(params),
            "--world",
            str(world),
            "--out",
            str(out),
            "--threads",
            "1",
            *extra,
        ]
    )


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """The three commands run once, in DAG order, with a few steps each."""
    out = tmp_path_factory.mktemp("model")
    params = tiny_params()
    assert run("prior", world, out / "prior", params) == 0
    assert run("source", world, out / "source_unet", params, "--prior", str(out / "prior")) == 0
    assert (
        run(
            "controlnet",
            world,
            out / "controlnet",
            params,
            "--prior",
            str(out / "prior"),
            "--source-unet",
            str(out / "source_unet"),
        )
        == 0
    )
    return out


# ---------------------------------------------------------------------------------------------
# Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> CLIPTokenizer:
    folder = tmp_path_factory.mktemp("tok")
    build_tokenizer(folder, ["A rainy boulevard"])
    return CLIPTokenizer.from_pretrained(folder)


def test_class_and_prompt_words_are_single_tokens(tokenizer):
    for word in [*default_words(), "boulevard"]:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, tokenizer.convert_ids_to_tokens(ids))
    # "rain" is a word of its own and a substring of "train" and "rainy": all three stay whole.
    for word in ("rain", "train", "rainy", "sign", "sidewalk"):
        assert tokenizer.convert_ids_to_tokens(
            tokenizer(word, add_special_tokens=False).input_ids
        ) == [word + "</w>"]


def test_prompt_round_trip_and_class_tokens(tokenizer):
    classes = " ".join(CLASS_NAMES)
    prompt = f"A city street scene with {classes}, in foggy weather."
    ids = tokenizer(prompt).input_ids
    words = prompt.lower().replace(",", " ,").replace(".", " .").split()
    assert len(ids) == len(words) + 2  # one token per word and punctuation mark, plus BOS/EOS
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    decoded = tokenizer.decode(ids, skip_special_tokens=True)
    assert decoded.split() == words
    # A word outside the list still round-trips, as letters.
    odd = tokenizer("zebra crossing")
    assert len(odd.input_ids) > 4
    assert tokenizer.decode(odd.input_ids, skip_special_tokens=True) == "zebra crossing"


def test_padding_and_truncation_at_77(tokenizer):
    short, empty, long = tokenize(tokenizer, ["road car", "", " ".join(["road"] * 200)])
    assert len(short) == len(empty) == len(long) == MAX_LENGTH
    assert short[:4] == [
        tokenizer.bos_token_id,
        *tokenizer("road car", add_special_tokens=False).input_ids,
        tokenizer.eos_token_id,
    ]
    assert set(short[4:]) == {tokenizer.pad_token_id}
    assert empty[0] == tokenizer.bos_token_id and set(empty[1:]) == {tokenizer.eos_token_id}
    assert long[0] == tokenizer.bos_token_id and long[-1] == tokenizer.eos_token_id
    assert len(set(long[1:-1])) == 1


def test_word_merges_reject_non_ascii():
    with pytest.raises(TokenizerError, match="straße"):
        word_merges(["road", "straße"])


# ---------------------------------------------------------------------------------------------
# Losses against plain references


def scaled_linear_alphas_cumprod() -> list[float]:
    """SD 1.5's schedule written out: betas on a line in sqrt space, then the running product."""
    n = 1000
    start, end = math.sqrt(0.00085), math.sqrt(0.012)
    out, prod = [], 1.0
    for i in range(n):
        beta = (start + (end - start) * i / (n - 1)) ** 2
        prod *= 1.0 - beta
        out.append(prod)
    return out


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_denoising_loss_matches_reference(prediction_type):
    torch.manual_seed(0)
    arch = demo_sizes(settings_from_params(tiny_params()).architecture)
    unet = build_unet(arch, sample_size=4).eval()
    latents = torch.randn(3, 4, 4, 4)
    noise = torch.randn(3, 4, 4, 4)
    timesteps = torch.tensor([0, 500, 999])
    text = torch.randn(3, MAX_LENGTH, 16)
    scheduler = training_scheduler(prediction_type)
    loss = denoising_loss(
        DenoiserSetup(unet=unet), scheduler, latents, noise, timesteps, text, None
    )

    abar = scaled_linear_alphas_cumprod()
    total, count = 0.0, 0
    for b in range(3):
        a = abar[int(timesteps[b])]
        noisy = math.sqrt(a) * latents[b] + math.sqrt(1 - a) * noise[b]
        if prediction_type == "epsilon":
            target = noise[b]
        else:
            target = math.sqrt(a) * noise[b] - math.sqrt(1 - a) * latents[b]
        with torch.no_grad():
            pred = unet(
                noisy[None], timesteps[b : b + 1], encoder_hidden_states=text[b : b + 1]
            ).sample[0]
        for value in (pred - target).reshape(-1).tolist():
            total += value * value
            count += 1
    assert loss.item() == pytest.approx(total / count, rel=1e-4)


def test_unknown_prediction_type_is_refused():
    with pytest.raises(ConfigError, match="prediction_type"):
        training_scheduler("sample")
    params = tiny_params()
    params["demo_generator"]["prediction_type"] = "x0"
    with pytest.raises(ConfigError, match="prediction_type"):
        settings_from_params(params)


def test_epsilon_loss_with_controlnet_matches_reference():
    torch.manual_seed(0)
    arch = demo_sizes(settings_from_params(tiny_params()).architecture)
    unet = build_unet(arch, sample_size=4).eval()
    controlnet = build_controlnet(arch, unet).eval()
    # The zero convolutions start at zero (as trained ControlNets do not): perturb them.
    with torch.no_grad():
        for module in [
            *controlnet.controlnet_down_blocks,
            controlnet.controlnet_mid_block,
            controlnet.controlnet_cond_embedding.conv_out,
        ]:
            module.weight.normal_(0, 0.1)
    setup = DenoiserSetup(unet=unet, controlnet=controlnet)
    latents, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    timesteps, text = torch.tensor([10, 700]), torch.randn(2, MAX_LENGTH, 16)
    # Two layouts that differ at the latent scale: road left / car right, and the mirror image.
    layout = np.zeros((2, 32, 32), np.uint8)
    layout[:, :, 16:] = 13
    conditions = [onehot_batch(layout), onehot_batch(np.ascontiguousarray(layout[:, :, ::-1]))]
    abar = scaled_linear_alphas_cumprod()
    preds = []
    for condition in conditions:
        with torch.no_grad():
            loss = denoising_loss(
                setup, training_scheduler("epsilon"), latents, noise, timesteps, text, condition
            )
            a = torch.tensor([abar[int(t)] for t in timesteps]).view(2, 1, 1, 1)
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            down, mid = controlnet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                controlnet_cond=condition,
                return_dict=False,
            )
            pred = unet(
                noisy,
                timesteps,
                encoder_hidden_states=text,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        assert loss.item() == pytest.approx(((pred - noise) ** 2).mean().item(), rel=1e-4)
        preds.append(pred)
    # The label layout reaches the prediction.
    assert (preds[0] - preds[1]).abs().max().item() > 1e-3


def test_onehot_batch_marks_void_in_channel_19():
    labels = np.array([[[0, 255], [18, 5]]], np.uint8)
    onehot = onehot_batch(labels)
    assert onehot.shape == (1, 20, 2, 2)
    for y in range(2):
        for x in range(2):
            expected = 19 if labels[0, y, x] == 255 else labels[0, y, x]
            assert onehot[0, :, y, x].argmax().item() == expected
            assert onehot[0, :, y, x].sum().item() == 1.0


def test_vae_loss_matches_reference():
    torch.manual_seed(0)
    arch = demo_sizes(settings_from_params(tiny_params()).architecture)
    vae = build_vae(arch, sample_size=16)
    batch = torch.rand(2, 3, 16, 16) * 2 - 1
    loss = vae_loss(vae, batch, 0.5, torch.Generator().manual_seed(3))

    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(batch))
    mean, logvar = moments[:, :4], moments[:, 4:].clamp(-30.0, 20.0)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        recon = vae.decode(mean + std * eps).sample
    l1 = sum(abs(v) for v in (recon - batch).reshape(-1).tolist()) / batch.numel()
    kl_per_sample = []
    for b in range(2):
        kl = 0.0
        for m, lv in zip(mean[b].reshape(-1).tolist(), logvar[b].reshape(-1).tolist(), strict=True):
            kl += 0.5 * (m * m + math.exp(lv) - 1.0 - lv)
        kl_per_sample.append(kl / mean[b].numel())
    expected = l1 + 0.5 * sum(kl_per_sample) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_vae_chroma_term_matches_reference():
    torch.manual_seed(0)
    vae = build_vae(demo_sizes(settings_from_params(tiny_params()).architecture), sample_size=16)
    batch = torch.rand(2, 3, 16, 16) * 2 - 1
    plain = vae_loss(vae, batch, 1e-4, torch.Generator().manual_seed(3))
    with_chroma = vae_loss(vae, batch, 1e-4, torch.Generator().manual_seed(3), chroma_weight=2.0)
    with torch.no_grad():
        moments = vae.quant_conv(vae.encoder(batch))
        std = torch.exp(0.5 * moments[:, 4:].clamp(-30.0, 20.0))
        eps = torch.randn(std.shape, generator=torch.Generator().manual_seed(3))
        error = vae.decode(moments[:, :4] + std * eps).sample - batch
    r, g, b = error[:, 0], error[:, 1], error[:, 2]
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b
    expected = 2.0 * (cb.abs().sum() + cr.abs().sum()).item() / (2 * error[:, 0].numel())
    assert (with_chroma - plain).item() == pytest.approx(expected, rel=1e-4)


def test_build_vae_is_variance_preserving_and_shallow():
    arch = demo_sizes(settings_from_params(tiny_params()).architecture)
    vae = build_vae(arch, sample_size=16)
    assert vae.config.layers_per_block == 0
    assert all(len(block.resnets) == 0 for block in vae.encoder.down_blocks)
    for module in vae.modules():
        if isinstance(module, torch.nn.Conv2d):
            fan_in = module.weight[0].numel()
            assert module.bias.abs().max().item() == 0.0
            if module.weight.numel() >= 256:
                assert module.weight.std().item() == pytest.approx(fan_in**-0.5, rel=0.25)


def test_area_crops_weigh_images_by_area():
    small = TrainImage("s", np.zeros((16, 16, 3), np.uint8), None, "")
    large = TrainImage("l", np.full((16, 48, 3), 255, np.uint8), None, "")
    batch = sample_pixel_crops([small, large], 4000, 8, np.random.default_rng(0))
    assert batch.shape == (4000, 3, 8, 8)
    share_large = (batch[:, 0, 0, 0] > 0).float().mean().item()
    assert share_large == pytest.approx(0.75, abs=0.03)


def test_vae_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    vae = build_vae(demo_sizes(settings_from_params(tiny_params()).architecture), sample_size=16)
    narrow_posterior(vae)
    rng = np.random.default_rng(0)
    scenes = [paint(scene_label(rng, 16, 24), 30 * k)[:, :16] for k in range(4)]
    batch = to_tensor(np.stack(scenes))
    optimizer = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    losses = []
    for _ in range(10):
        loss = vae_loss(vae, batch, 1e-4, torch.Generator().manual_seed(0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


@pytest.mark.parametrize("trainable", [True, False])
def test_text_encoder_learns_only_when_trainable(trainable, tmp_path):
    settings = settings_from_params(tiny_params())
    arch = demo_sizes(settings.architecture)
    tokenizer = build_tokenizer(tmp_path, ["road car"])
    torch.manual_seed(0)
    text_encoder = build_text_encoder(arch, tokenizer)
    before = {k: v.clone() for k, v in text_encoder.state_dict().items()}
    unet = build_unet(arch, sample_size=4)
    items = [LatentImage("a", torch.randn(4, 4, 4), torch.ones(4, 4, 4), None, "road car")]
    text = TextEmbedder(tokenizer, text_encoder, trainable=trainable)
    train_denoiser(
        DenoiserSetup(unet=unet),
        items,
        text,
        captions_with_dropout(0.0),
        settings.prior,
        "v_prediction",
        4,
        8,
        1.0,
        0,
        TrainLog("t", 1),
    )
    after = text_encoder.state_dict()
    changed = any(not torch.equal(before[k], after[k]) for k in before)
    assert changed == trainable
    # Either way the encoder ends frozen, for the source fine-tune and the ControlNet.
    assert not text.trainable and not any(p.requires_grad for p in text_encoder.parameters())


def test_zero_convolutions_learn_at_the_multiplied_rate(tmp_path):
    settings = settings_from_params(tiny_params())
    sizes, cfg = demo_sizes(settings.architecture), settings.controlnet
    tokenizer = build_tokenizer(tmp_path, ["road car"])
    torch.manual_seed(0)
    text = TextEmbedder(tokenizer, build_text_encoder(sizes, tokenizer))
    unet = build_unet(sizes, sample_size=4)
    controlnet = build_controlnet(sizes, unet)
    # Reference: the zero convolutions are the layers whose weights start as zeros (with their
    # biases; many other biases start at zero too).
    params = dict(controlnet.named_parameters())
    zero_layers = {n.rsplit(".", 1)[0] for n, p in params.items() if n.endswith(".weight")}
    zero_layers = {layer for layer in zero_layers if not params[f"{layer}.weight"].any()}
    zeros = {n for n in params if n.rsplit(".", 1)[0] in zero_layers}
    chosen = {id(p) for p in zero_convolutions(controlnet)}
    assert zeros == {n for n, p in params.items() if id(p) in chosen}
    before = {name: p.detach().clone() for name, p in controlnet.named_parameters()}
    rng = np.random.default_rng(0)
    items = [
        LatentImage("a", torch.randn(4, 4, 4), torch.ones(4, 4, 4), scene_label(rng, 32, 32), "")
    ]
    one_step = replace(cfg, steps=1)
    train_denoiser(
        DenoiserSetup(unet=unet, controlnet=controlnet),
        items,
        text,
        class_list_prompts(class_list),
        one_step,
        "v_prediction",
        4,
        8,
        1.0,
        0,
        TrainLog("t", 1),
    )
    moved = {
        name: (p.detach() - before[name]).abs().max().item()
        for name, p in controlnet.named_parameters()
    }
    # Adam's first step moves each weight by the learning rate (times the sign of its gradient).
    lr = learning_rate(0, 1, cfg.lr)
    assert max(moved[n] for n in zeros) == pytest.approx(cfg.zero_conv_lr_mult * lr, rel=1e-3)
    assert max(v for n, v in moved.items() if n not in zeros) <= 1.001 * lr


def test_latent_scaling_gives_unit_variance():
    rng = torch.Generator().manual_seed(0)
    items = [
        LatentImage(
            f"i{k}", torch.randn(4, 3, 5, generator=rng) * 3, torch.full((4, 3, 5), 0.5), None, ""
        )
        for k in range(4)
    ]
    scale = latent_scaling(items, seed=7)
    generator = torch.Generator().manual_seed(7)
    values = []
    for it in items:
        sample = it.mean + it.std * torch.randn(it.mean.shape, generator=generator)
        values.extend(sample.reshape(-1).tolist())
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    assert scale == pytest.approx(1 / math.sqrt(var), rel=1e-4)


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    steps, peak = 200, 1e-3
    rates = [learning_rate(s, steps, peak) for s in range(steps)]
    warmup = 20
    assert rates[0] == pytest.approx(peak / warmup)
    assert rates[warmup - 1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(rates[warmup - 1 :], rates[warmup:], strict=False))
    assert learning_rate(steps, steps, peak) == pytest.approx(0.1 * peak)


# ---------------------------------------------------------------------------------------------
# Data


def test_latent_and_label_crops_align():
    height, width, factor = 5, 7, 8
    mean = torch.zeros(4, height, width)
    for y in range(height):
        for x in range(width):
            mean[:, y, x] = 100 * y + x
    label = np.zeros((height * factor, width * factor), np.uint8)
    for y in range(height * factor):
        for x in range(width * factor):
            label[y, x] = (y // factor) * 10 + x // factor
    item = LatentImage("a", mean, torch.zeros_like(mean), label, "cap")
    crops = sample_crops([item], 6, 2, factor, 2.0, np.random.default_rng(0), torch.Generator())
    assert crops.latents.shape == (6, 4, 2, 2) and crops.labels.shape == (6, 16, 16)
    for latent, lab in zip(crops.latents, crops.labels, strict=True):
        y0, x0 = divmod(int(latent[0, 0, 0].item() / 2), 100)
        assert lab[0, 0] == y0 * 10 + x0 and lab[15, 15] == (y0 + 1) * 10 + x0 + 1
        assert latent[0, 1, 1].item() / 2 == 100 * (y0 + 1) + x0 + 1
    assert crops.captions == ["cap"] * 6


def test_captions_errors_name_the_file(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "captions.csv").write_text("name,caption\na,road\n")
    with pytest.raises(DataError, match="captions.csv.*condition"):
        read_captions(tmp_path)
    (tmp_path / "captions.csv").write_text("name,condition,caption\nmissing,fog,road\n")
    with pytest.raises(DataError, match="line 2.*missing"):
        read_captions(tmp_path)


# ---------------------------------------------------------------------------------------------
# Settings


def test_default_config_slice_reads():
    settings = settings_from_params(stage_params(load_config(), "demo_generator"))
    assert settings.architecture.vae_channels and len(settings.architecture.vae_channels) == 4


@pytest.mark.parametrize(
    "section,key,value,match",
    [
        ("architecture", "vae_channels", [8, 8, 8], "architecture.vae_channels.*too short"),
        ("architecture", "condition_embedding", [4, 4, 8], "condition_embedding.*too short"),
        ("architecture", "vae_channels", [8, 8, 16, 16], "equal vae_channels"),
        ("architecture", "vae_layers_per_block", -1, "vae_layers_per_block: -1 is less than"),
        ("vae", "chroma_weight", -1.0, "vae.chroma_weight: -1.0 is less than"),
        (None, "crop_size", 36, "multiple of 8"),
        (None, "crop_size", 40, "cannot halve"),
        ("controlnet", "zero_conv_lr_mult", 0.0, "zero_conv_lr_mult: 0.0 is less than or equal"),
    ],
)
def test_bad_settings_raise(section, key, value, match):
    params = tiny_params()
    target = params["demo_generator"] if section is None else params["demo_generator"][section]
    target[key] = value
    with pytest.raises(ConfigError, match=match):
        settings_from_params(params)


def test_bad_value_is_named_and_missing_one_defaults():
    params = tiny_params()
    params["demo_generator"]["vae"]["kl_weight"] = "small"
    with pytest.raises(ConfigError, match="demo_generator.vae.kl_weight"):
        settings_from_params(params)
    del params["demo_generator"]["vae"]["kl_weight"]
    default = schema_at("generation.demo_generator.vae.kl_weight")["default"]
    assert settings_from_params(params).vae.kl_weight == default


# ---------------------------------------------------------------------------------------------
# The commands


def test_prior_folder_loads_offline(trained):
    prior = trained / "prior"
    tokenizer = CLIPTokenizer.from_pretrained(prior, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(prior, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(prior, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(prior, subfolder="unet")
    scheduler = DDIMScheduler.from_pretrained(prior, subfolder="scheduler")
    assert text_encoder.config.vocab_size == len(tokenizer)
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert unet.config.in_channels == vae.config.latent_channels == 4
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    assert vae.config.scaling_factor != 0.18215  # measured on the demo latents, not SD's
    cfg = scheduler.config
    assert (cfg.beta_start, cfg.beta_end, cfg.beta_schedule) == (0.00085, 0.012, "scaled_linear")
    assert (cfg.num_train_timesteps, cfg.steps_offset) == (1000, 1)
    assert cfg.prediction_type == "v_prediction"  # as tiny_params asks
    assert len(tokenizer("foggy", add_special_tokens=False).input_ids) == 1
    with torch.no_grad():
        states = text_encoder(torch.tensor(tokenize(tokenizer, ["road car"]))).last_hidden_state
        image = vae.decode(torch.zeros(1, 4, 4, 4)).sample
        eps = unet(torch.zeros(1, 4, 4, 4), 10, encoder_hidden_states=states).sample
    assert states.shape == (1, MAX_LENGTH, 16) and image.shape == (1, 3, 32, 32)
    assert eps.shape == (1, 4, 4, 4)


def test_logs_and_records_are_written(trained):
    for name, stages in (
        ("prior", {"vae", "prior_unet"}),
        ("source_unet", {"source_unet"}),
        ("controlnet", {"controlnet"}),
    ):
        with (trained / name / "train_log.csv").open() as handle:
            rows = list(csv.DictReader(handle))
        assert {r["stage"] for r in rows} == stages
        assert all(math.isfinite(float(r["loss"])) for r in rows)
        record = json.loads((trained / name / "demo_generator.json").read_text())
        assert record["prediction_type"] == "v_prediction"
        assert (
            record["command"]
            == {"prior": "prior", "source_unet": "source", "controlnet": "controlnet"}[name]
        )
        assert record["seed"] == 0
    leftovers = [p.name for p in trained.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_source_unet_is_a_finetuned_copy(trained):
    prior = UNet2DConditionModel.from_pretrained(trained / "prior", subfolder="unet")
    source = UNet2DConditionModel.from_pretrained(trained / "source_unet")

    def architecture(config):
        return {k: v for k, v in config.items() if k != "_name_or_path"}

    assert architecture(prior.config) == architecture(source.config)
    diffs = [
        (a - b).abs().max().item()
        for a, b in zip(prior.state_dict().values(), source.state_dict().values(), strict=True)
    ]
    assert max(diffs) > 0


def test_controlnet_has_20_condition_channels(trained):
    controlnet = ControlNetModel.from_pretrained(trained / "controlnet")
    assert controlnet.config.conditioning_channels == 20
    unet = UNet2DConditionModel.from_pretrained(trained / "prior", subfolder="unet")
    condition = torch.zeros(1, 20, 32, 32)
    condition[:, 19] = 1
    with torch.no_grad():
        down, mid = controlnet(
            torch.randn(1, 4, 4, 4),
            5,
            encoder_hidden_states=torch.randn(1, MAX_LENGTH, 16),
            controlnet_cond=condition,
            return_dict=False,
        )
        out = unet(
            torch.randn(1, 4, 4, 4),
            5,
            encoder_hidden_states=torch.randn(1, MAX_LENGTH, 16),
            down_block_additional_residuals=down,
            mid_block_additional_residual=mid,
        ).sample
    # The style swap: the residuals of a ControlNet trained against U^S fit the PRIOR U-Net.
    assert out.shape == (1, 4, 4, 4)


def test_same_seed_same_weights(world, tmp_path, trained):
    assert run("prior", world, tmp_path / "again", tiny_params()) == 0
    for part in ("unet", "vae", "text_encoder"):
        cls = {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}[
            part
        ]
        a = cls.from_pretrained(trained / "prior", subfolder=part).state_dict()
        b = cls.from_pretrained(tmp_path / "again", subfolder=part).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part


def test_failed_run_leaves_no_folder(world, tmp_path):
    out = tmp_path / "controlnet"
    code = run(
        "controlnet",
        world,
        out,
        tiny_params(),
        "--prior",
        str(tmp_path / "nowhere"),
        "--source-unet",
        str(tmp_path / "nowhere"),
    )
    assert code == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_help_exits_cleanly(capsys):
    with pytest.raises(SystemExit) as info:
        demo_model.main(["controlnet", "--help"])
    assert info.value.code == 0
    assert "--source-unet" in capsys.readouterr().out
