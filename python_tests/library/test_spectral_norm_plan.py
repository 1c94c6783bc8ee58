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


# --- the kernels' algorithms replayed in float64 from the plan (what each warp / block computes, in plan order) ---

def _layers(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ws = [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]
    us = [torch.nn.functional.normalize(torch.randn(s[0], generator=g, dtype=torch.float64), dim=0) for s in shapes]
    vs = [torch.nn.functional.normalize(torch.randn(s[1], generator=g, dtype=torch.float64), dim=0) for s in shapes]
    return Ws, us, vs


def _segments(w):
    return (w + SEGMENT - 1) // SEGMENT


def _emulate_power_iteration(Ws, us, vs, n, eps, blocks):
    shapes = [tuple(W.shape) for W in Ws]
    pieces, tasks, tiles = power_plan(shapes, blocks)
    piece_at = [0]
    for h, w in shapes:
        piece_at.append(piece_at[-1] + h * _segments(w))
    u_pieces = torch.zeros(len(pieces), dtype=torch.float64)
    v_parts = [torch.zeros(max(1, -(-h // ROW_BLOCK)), w, dtype=torch.float64) for h, w in shapes]
    v_raw = [torch.zeros(w, dtype=torch.float64) for _, w in shapes]
    tile_ss = torch.zeros(len(tiles), dtype=torch.float64)
    tile_layer = tiles[:, 2]

    def v_inv(l):
        return 1 / max(float(tile_ss[tile_layer == l].sum()) ** 0.5, eps)

    def u_raw(l):
        h, w = shapes[l]
        return u_pieces[piece_at[l]:piece_at[l + 1]].reshape(h, _segments(w)).sum(1) if w else torch.zeros(h, dtype=torch.float64)

    for it in range(n):
        for p, _, l, r, c0, c1 in pieces.tolist():  # A
            v = vs[l] if it == 0 else v_raw[l] * v_inv(l)
            u_pieces[p] = Ws[l][r, c0:c1] @ v[c0:c1]
        for _, _, l, rb, ct, r0, r1, c0, c1 in tasks.tolist():  # B
            ur = u_raw(l)
            ur = ur[r0:r1] / max(float(ur.norm()), eps)
            if ct == 0:
                us[l][r0:r1] = ur
            v_parts[l][rb, c0:c1] = Ws[l][r0:r1, c0:c1].t() @ ur
        for k, _, l, _, c0, c1 in tiles.tolist():  # C
            v_raw[l][c0:c1] = v_parts[l][:, c0:c1].sum(0)
            tile_ss[k] = (v_raw[l][c0:c1] ** 2).sum()
    for _, _, l, _, c0, c1 in tiles.tolist():  # E
        vs[l][c0:c1] = v_raw[l][c0:c1] * v_inv(l)


@pytest.mark.parametrize("blocks", [1, 5, 1000])
def test_the_power_iteration_kernel_algorithm_is_torchs_power_method(blocks):
    need_plan()
    shapes = [(1, 1), (3, 2049), (130, 600), (0, 3), (3, 0), (5000, 1), (1, 5000), (70, 300)]
    Ws, us, vs = _layers(shapes)
    ru, rv = [u.clone() for u in us], [v.clone() for v in vs]
    _emulate_power_iteration(Ws, us, vs, 3, 1e-12, blocks)
    from wgan_ext import _reference
    _reference.spectral_norm_power_iteration_(Ws, ru, rv, 3, 1e-12)
    for a, b in zip(us + vs, ru + rv):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("blocks", [1, 5, 1000])
def test_the_normalize_kernels_algorithm_is_the_reference(blocks):
    need_plan()
    from wgan_ext import _reference
    shapes = [(1, 1), (3, 2049), (130, 600), (0, 3), (3, 0), (5000, 1), (1, 5000)]
    Ws, us, vs = _layers(shapes, seed=1)
    pieces, chunks = plan(shapes, blocks)
    wv = torch.zeros(len(pieces), dtype=torch.float64)
    for p, _, l, r, c0, c1 in pieces.tolist():  # phase 1
        wv[p] = Ws[l][r, c0:c1] @ vs[l][c0:c1]
    at = [0]
    for h, w in shapes:
        at.append(at[-1] + h * _segments(w))
    outs = [torch.full(W.shape, float("nan"), dtype=torch.float64) for W in Ws]
    sigmas = {}
    for _, _, l, local, b, e in chunks.tolist():  # phase 2: sigma recomputed from the pieces, then W / sigma
        h, w = shapes[l]
        rows = wv[at[l]:at[l + 1]].reshape(h, _segments(w)).sum(1) if w else torch.zeros(h, dtype=torch.float64)
        sigma = float(us[l] @ rows)
        if local == 0:
            sigmas[l] = sigma
        outs[l].view(-1)[b:e] = Ws[l].reshape(-1)[b:e] / sigma
    want, saved = _reference.spectral_norm_normalize(Ws, us, vs)
    assert sorted(sigmas) == list(range(len(shapes)))  # every layer's sigma written once
    torch.testing.assert_close(torch.tensor([sigmas[l] for l in range(len(shapes))], dtype=torch.float64),
                               saved[:len(shapes)], rtol=1e-12, atol=1e-12)
    for o, w in zip(outs, want):
        torch.testing.assert_close(o, w, rtol=1e-12, atol=1e-12)  # every element written (no NaN left)
    # the backward: partial <G, W> per chunk, added per layer in chunk order
    Gs = [torch.randn(W.shape, dtype=torch.float64) for W in Ws]
    part = torch.zeros(len(chunks), dtype=torch.float64)
    for k, _, l, _, b, e in chunks.tolist():
        part[k] = Gs[l].reshape(-1)[b:e] @ Ws[l].reshape(-1)[b:e]
    for l, (G, W) in enumerate(zip(Gs, Ws)):
        torch.testing.assert_close(part[chunks[:, 2] == l].sum(), (G * W).sum(), rtol=1e-12, atol=1e-12)
