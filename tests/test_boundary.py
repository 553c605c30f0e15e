"""Eq. 1 / Eq. 3 boundary masks and the majority-vote label downsampling, against loops."""

from __future__ import annotations

import pytest
import torch

from flexseg.losses.boundary import boundary_mask, downsample_labels, granularity_masks

torch.set_num_threads(1)
IGNORE = 255


def reference_boundary(labels: torch.Tensor, k_d: int, k_e: int) -> torch.Tensor:
    """Eq. 1 class by class: B = OR_c Dilate(M_c, k_d) AND NOT Erode(M_c, k_e), valid pixels only.

    Windows are clipped at the image border; void pixels are "don't care" for the erosion (a
    class pixel next to void stays inside its class) and never enter a dilation.
    """
    batch, height, width = labels.shape
    out = torch.zeros(batch, height, width, dtype=torch.bool)
    classes = sorted({int(v) for v in labels.unique()} - {IGNORE})
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                if int(labels[b, y, x]) == IGNORE:
                    continue
                for c in classes:

                    def window(k: int, b=b, y=y, x=x) -> list[int]:
                        r = k // 2
                        vals = []
                        for yy in range(max(0, y - r), min(height, y + r + 1)):
                            for xx in range(max(0, x - r), min(width, x + r + 1)):
                                vals.append(int(labels[b, yy, xx]))
                        return vals

                    dilated = c in window(k_d)
                    eroded = all(v == c for v in window(k_e) if v != IGNORE) and (
                        int(labels[b, y, x]) == c
                    )
                    if dilated and not eroded:
                        out[b, y, x] = True
    return out


def random_labels(
    seed: int, shape=(2, 9, 11), classes: int = 4, void: float = 0.15
) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Blocky maps (upsampled coarse noise) so that there are regions as well as edges.
    coarse = torch.randint(
        0, classes, (shape[0], shape[1] // 2 + 1, shape[2] // 2 + 1), generator=g
    )
    labels = coarse.repeat_interleave(2, 1).repeat_interleave(2, 2)[:, : shape[1], : shape[2]]
    noise = torch.rand(shape, generator=g)
    labels = torch.where(noise < 0.1, torch.randint(0, classes, shape, generator=g), labels)
    return torch.where(noise > 1 - void, torch.full_like(labels, IGNORE), labels).long()


@pytest.mark.parametrize("k_d,k_e", [(3, 3), (5, 5), (3, 5), (5, 3), (1, 3), (1, 1), (7, 3)])
@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_mask_matches_per_class_morphology(k_d: int, k_e: int, seed: int) -> None:
    labels = random_labels(seed)
    got = boundary_mask(labels, k_d, k_e)
    assert got.dtype == torch.bool and got.shape == labels.shape
    assert torch.equal(got, reference_boundary(labels, k_d, k_e))


def test_vertical_edge_gives_band_of_kernel_radius() -> None:
    labels = torch.zeros(1, 6, 12, dtype=torch.long)
    labels[:, :, 6:] = 1
    for k in (1, 3, 5, 7):
        mask = boundary_mask(labels, k, k)
        cols = mask[0].any(dim=0).nonzero().flatten().tolist()
        r = k // 2
        assert cols == list(range(6 - r, 6 + r)), (k, cols)
        assert bool(mask[0].all(dim=0)[6 - r : 6 + r].all()) if r else not mask.any()


def test_void_is_neither_boundary_nor_makes_one() -> None:
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    labels[:, :, 4:] = IGNORE
    assert not boundary_mask(labels, 5, 5).any()
    labels[:, 0, 0] = 3  # a real class edge next to void still counts on the class side
    mask = boundary_mask(labels, 3, 3)
    assert mask[0, 0, 0] and mask[0, 1, 1] and not mask[0, :, 4:].any()


def test_image_border_is_not_a_boundary() -> None:
    labels = torch.full((2, 7, 5), 2, dtype=torch.long)
    assert not boundary_mask(labels, 7, 7).any()


@pytest.mark.parametrize("bad", [0, 2, 4, -3])
def test_even_or_nonpositive_kernels_are_rejected(bad: int) -> None:
    with pytest.raises(ValueError, match="odd"):
        boundary_mask(torch.zeros(1, 4, 4, dtype=torch.long), bad, 3)


def test_rejects_non_integer_or_wrong_rank_labels() -> None:
    with pytest.raises(ValueError, match="integer"):
        boundary_mask(torch.zeros(1, 4, 4), 3, 3)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        boundary_mask(torch.zeros(4, 4, dtype=torch.long), 3, 3)


def test_granularity_masks_three_kernels_nested() -> None:
    labels = random_labels(3, shape=(2, 12, 10), classes=5)
    masks = granularity_masks(labels, (3, 5, 7))
    assert masks.shape == (2, 3, 12, 10)
    for g, k in enumerate((3, 5, 7)):
        assert torch.equal(masks[:, g], reference_boundary(labels, k, k))
    assert bool((masks[:, 0] <= masks[:, 1]).all() and (masks[:, 1] <= masks[:, 2]).all())
    assert bool((masks[:, 2] & ~masks[:, 0]).any()), "thick must add pixels on this map"


def reference_downsample(labels: torch.Tensor, h: int, w: int, classes: int, share: float):
    batch, height, width = labels.shape
    out = torch.empty(batch, h, w, dtype=torch.long)
    for b in range(batch):
        for i in range(h):
            for j in range(w):
                counts: dict[int, int] = {}
                total = 0
                for y in range(height):
                    for x in range(width):
                        if y * h // height == i and x * w // width == j:
                            v = int(labels[b, y, x])
                            counts[v] = counts.get(v, 0) + 1
                            total += 1
                # Highest count; ties to the lowest class id, a class before void.
                best = max(
                    counts.items(), key=lambda kv: (kv[1], -(classes if kv[0] == IGNORE else kv[0]))
                )
                value = best[0]
                if best[1] / total < share:
                    value = IGNORE
                out[b, i, j] = value
    return out


@pytest.mark.parametrize(
    "size,share", [((3, 4), 0.0), ((4, 3), 0.75), ((9, 11), 0.0), ((2, 5), 0.5), ((1, 1), 0.0)]
)
def test_downsample_labels_majority_vote(size, share) -> None:
    labels = random_labels(5, shape=(2, 9, 11), classes=3, void=0.3)
    got = downsample_labels(labels, size, num_classes=3, share=share)
    assert got.dtype == torch.long
    assert torch.equal(got, reference_downsample(labels, *size, classes=3, share=share))


def test_downsample_exact_stride_and_ties() -> None:
    labels = torch.tensor([[[1, 1, 2, 2], [0, 0, 255, 255]]])  # 2x4 -> 1x2 with s = 2
    got = downsample_labels(labels, (1, 2), num_classes=3)
    assert got.tolist() == [[[0, 2]]]  # tie 1 vs 0 -> 0; tie 2 vs void -> 2


def test_downsample_rejects_bad_values_and_sizes() -> None:
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[0, 1, 2] = 40
    with pytest.raises(ValueError, match="40"):
        downsample_labels(labels, (2, 2), num_classes=19)
    with pytest.raises(ValueError, match="not larger"):
        downsample_labels(torch.zeros(1, 4, 4, dtype=torch.long), (8, 2))


def test_label_ids_beyond_int16_take_the_wide_path() -> None:
    # Raw ids outside int16 (and a negative one) must not alias after the narrowing cast.
    base = random_labels(8, shape=(2, 9, 11), classes=4)
    wide = torch.tensor([70000, -40000, 2**40, 3])
    labels = torch.where(base == IGNORE, base, wide[base.clamp(max=3)])
    narrow = torch.where(base == IGNORE, base, base.clamp(max=3))
    for k_d, k_e in [(3, 3), (5, 3)]:
        got = boundary_mask(labels, k_d, k_e)
        assert torch.equal(got, reference_boundary(labels, k_d, k_e))
        assert torch.equal(got, boundary_mask(narrow, k_d, k_e))


def test_granularity_masks_any_kernel_order() -> None:
    labels = random_labels(9, shape=(2, 12, 10), classes=5)
    kernels = (7, 1, 3, 5, 3)
    masks = granularity_masks(labels, kernels)
    for g, k in enumerate(kernels):
        assert torch.equal(masks[:, g], reference_boundary(labels, k, k)), k


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("kernels", [(3,), (5,), (3, 5, 7), (7, 1, 3)])
def test_byte_and_wide_windows_agree(seed: int, kernels) -> None:
    # Ids 0..254 take uint8 passes (void 255 or another void value), others int16 / int64.
    labels = random_labels(seed, shape=(3, 13, 17), classes=6, void=0.2)
    void_250 = torch.where(labels == IGNORE, 250, labels)
    wide = torch.where(labels == IGNORE, labels, labels + 1000)  # int16 passes
    as_bytes = granularity_masks(labels.to(torch.uint8), kernels)
    for other in (
        granularity_masks(labels, kernels),
        granularity_masks(void_250, kernels, ignore_index=250),
        granularity_masks(wide, kernels),
    ):
        assert torch.equal(other, as_bytes)
    for g, k in enumerate(kernels):
        assert torch.equal(as_bytes[:, g], reference_boundary(labels, k, k)), k


def test_id_255_is_a_class_when_void_is_elsewhere() -> None:
    labels = torch.tensor([[[255, 255, 3, 3], [255, 255, 3, 3], [0, 0, 0, 0]]])
    got = boundary_mask(labels, 3, 3, ignore_index=0)
    assert got[0, 0].tolist() == [False, True, True, False]
    assert got[0, 2].tolist() == [False, False, False, False]


def test_downsample_wide_cells_count_in_int64() -> None:
    # A 64 x 64 cell holds more votes than the int16 counts allow: the bincount path.
    labels = random_labels(6, shape=(2, 64, 64), classes=19, void=0.3)
    for size in [(1, 1), (2, 1), (8, 8)]:
        got = downsample_labels(labels, size, num_classes=19)
        assert torch.equal(got, reference_downsample(labels, *size, classes=19, share=0.0))


def test_downsample_rejects_the_void_slot_as_a_class() -> None:
    # The value num_classes is where void is counted: a valid pixel holding it is bad input.
    labels = torch.full((1, 4, 4), IGNORE, dtype=torch.long)
    labels[0, 0, 0] = 19
    with pytest.raises(ValueError, match="label value 19"):
        downsample_labels(labels, (2, 2), num_classes=19)
