"""The split of the CUDA spectral-norm kernels (csrc/ops/spectral_norm_plan.h), checked on the CPU through
wgan_ext::_spectral_norm_plan: every row segment, element and layer covered exactly once, sums in a fixed order, the
split independent of the grid size."""

import random

import pytest
import torch

import wgan_ext  # noqa: F401

SEGMENT, CHUNK, WARPS, MAX_LAYERS = 2048, 4096, 8, 36

CASES = {
    "tiny": [(1, 1)],
    "row": [(1, 5000)],
    "column": [(5000, 1)],
    "empty": [(0, 3), (3, 0), (2, 2), (0, 0)],
    "conv": [(64, 48), (128, 1024), (256, 2304), (1, 4096), (5, 4097)],
    "large": [(1024, 8192)] * 4,
    "many": [(random.Random(l).randint(1, 300), random.Random(l + 99).randint(1, 5000)) for l in range(MAX_LAYERS)],
}


def need_plan():
    if not hasattr(torch.ops.wgan_ext, "_spectral_norm_plan"):
        pytest.skip("the compiled library is not loaded")


def plan(shapes, blocks):
    pieces, chunks = torch.ops.wgan_ext._spectral_norm_plan([h for h, _ in shapes], [w for _, w in shapes], blocks)
    return pieces, chunks


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("blocks", [1, 7, 132 * 8, 100_000])
def test_pieces_cover_every_row_segment_once_in_order(case, blocks):
    need_plan()
    shapes = CASES[case]
    pieces, _ = plan(shapes, blocks)
    assert pieces.shape[1] == 6
    # the piece index is the workspace slot: 0, 1, 2, ... in (layer, row, column) order
    assert torch.equal(pieces[:, 0], torch.arange(len(pieces)))
    assert torch.equal(pieces[:, 1], pieces[:, 0] % (blocks * WARPS))  # warp p mod warps computes piece p
    expected = []
    for l, (h, w) in enumerate(shapes):
        for r in range(h if w > 0 else 0):
            for c in range(0, w, SEGMENT):
                expected.append((l, r, c, min(w, c + SEGMENT)))
    got = [tuple(row) for row in pieces[:, 2:].tolist()]
    assert got == expected


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("blocks", [1, 7, 132 * 8, 100_000])
def test_chunks_cover_every_element_once_and_blocks_take_contiguous_ranges(case, blocks):
    need_plan()
    shapes = CASES[case]
    _, chunks = plan(shapes, blocks)
    # every chunk once, walked in increasing order, by blocks in increasing order (contiguous ranges)
    assert torch.equal(chunks[:, 0], torch.arange(len(chunks)))
    block = chunks[:, 1]
    assert bool((block[1:] >= block[:-1]).all())
    per_block = torch.bincount(block, minlength=blocks)
    assert int(per_block.max()) - int(per_block.min()) <= 1  # balanced
    expected = []
    for l, (h, w) in enumerate(shapes):
        n = h * w
        starts = range(0, n, CHUNK) if n > 0 else [0]  # an empty layer still has chunk 0 (it writes sigma)
        for k, b in enumerate(starts):
            expected.append((l, k, b, min(n, b + CHUNK)))
    got = [tuple(row) for row in chunks[:, 2:].tolist()]
    assert got == expected


def test_the_split_does_not_depend_on_the_grid():
    need_plan()
    shapes = CASES["conv"]
    p1, c1 = plan(shapes, 1)
    p2, c2 = plan(shapes, 333)
    assert torch.equal(p1[:, [0, 2, 3, 4, 5]], p2[:, [0, 2, 3, 4, 5]])
    assert torch.equal(c1[:, [0, 2, 3, 4, 5]], c2[:, [0, 2, 3, 4, 5]])


def test_bad_arguments_are_refused():
    need_plan()
    with pytest.raises(RuntimeError, match="same length"):
        torch.ops.wgan_ext._spectral_norm_plan([1, 2], [1], 1)
    with pytest.raises(RuntimeError, match="layers"):
        torch.ops.wgan_ext._spectral_norm_plan([1] * (MAX_LAYERS + 1), [1] * (MAX_LAYERS + 1), 1)
    with pytest.raises(RuntimeError, match="blocks"):
        torch.ops.wgan_ext._spectral_norm_plan([1], [1], 0)
    with pytest.raises(RuntimeError, match=">= 0"):
        torch.ops.wgan_ext._spectral_norm_plan([-1], [1], 1)


# --- the power iteration kernel: pieces (W v), tasks (W^T u over row blocks x column tiles), column tiles --------

ROW_BLOCK, TILE = 64, 256


def power_plan(shapes, blocks):
    return torch.ops.wgan_ext._spectral_norm_power_plan([h for h, _ in shapes], [w for _, w in shapes], blocks)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("blocks", [1, 7, 132 * 8, 100_000])
def test_power_plan_covers_every_element_row_and_column_once(case, blocks):
    need_plan()
    shapes = CASES[case]
    pieces, tasks, tiles = power_plan(shapes, blocks)
    # phase A: the same pieces as the forward's
    assert torch.equal(pieces, plan(shapes, blocks)[0])
    # phase B: tasks in order, contiguous and balanced per block; every layer has one even when empty; the tasks of
    # a layer tile its (h, w) exactly once, row blocks of 64 rows in order, column tiles of 256 columns
    assert torch.equal(tasks[:, 0], torch.arange(len(tasks)))
    assert bool((tasks[1:, 1] >= tasks[:-1, 1]).all())
    counts = torch.bincount(tasks[:, 1], minlength=blocks)
    assert int(counts.max()) - int(counts.min()) <= 1
    expected = []
    for l, (h, w) in enumerate(shapes):
        row_starts = range(0, h, ROW_BLOCK) if h > 0 else [0]
        col_starts = range(0, w, TILE) if w > 0 else [0]
        for rb, r0 in enumerate(row_starts):
            for ct, c0 in enumerate(col_starts):
                expected.append((l, rb, ct, r0, min(h, r0 + ROW_BLOCK), c0, min(w, c0 + TILE)))
    assert [tuple(t) for t in tasks[:, 2:].tolist()] == expected
    # u is written by the tile-0 task of each row block: every row of every layer exactly once (w = 0 included)
    writers = [(l, r) for l, rb, ct, r0, r1, c0, c1 in expected if ct == 0 for r in range(r0, r1)]
    assert writers == [(l, r) for l, (h, w) in enumerate(shapes) for r in range(h)]
    # phases C and E: column tiles, every column once, contiguous per block
    assert torch.equal(tiles[:, 0], torch.arange(len(tiles)))
    assert bool((tiles[1:, 1] >= tiles[:-1, 1]).all())
    want_tiles = [(l, k, c0, min(w, c0 + TILE)) for l, (h, w) in enumerate(shapes)
                  for k, c0 in enumerate(range(0, w, TILE))]
    assert [tuple(t) for t in tiles[:, 2:].tolist()] == want_tiles


def test_power_plan_refuses_bad_arguments():
    need_plan()
    with pytest.raises(RuntimeError, match="same length"):
        torch.ops.wgan_ext._spectral_norm_power_plan([1, 2], [1], 1)
    with pytest.raises(RuntimeError, match="blocks"):
        torch.ops.wgan_ext._spectral_norm_power_plan([1], [1], 0)
