"""RoIAlign against a per-sample loop written from torchvision's CPU kernel, and hand-computed cases."""

import math

import pytest
import torch

from bmvit.baselines.twostage.roi_align import RoIAlign, boxes_to_rois, roi_align


def _bilinear(fmap, y, x):
    """torchvision's ``bilinear_interpolate`` for one [H, W] channel-stack ``fmap [C, H, W]``."""
    _, height, width = fmap.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return torch.zeros(fmap.shape[0], dtype=fmap.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * fmap[:, y_low, x_low] + hy * lx * fmap[:, y_low, x_high]
            + ly * hx * fmap[:, y_high, x_low] + ly * lx * fmap[:, y_high, x_high])


def reference_roi_align(input, rois, out_h, out_w, spatial_scale, sampling_ratio, aligned):
    """The straightforward loop: box, bin, sample."""
    out = torch.zeros(rois.shape[0], input.shape[1], out_h, out_w, dtype=input.dtype)
    offset = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois.tolist()):
        sx, sy = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        w, h = x2 * spatial_scale - offset - sx, y2 * spatial_scale - offset - sy
        if not aligned:
            w, h = max(w, 1.0), max(h, 1.0)
        bw, bh = w / out_w, h / out_h
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(h / out_h)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(w / out_w)
        count = max(gh * gw, 1)
        for ph in range(out_h):
            for pw in range(out_w):
                acc = torch.zeros(input.shape[1], dtype=input.dtype)
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(input[int(b)], y, x)
                out[k, :, ph, pw] = acc / count
    return out


def _rois(batch_index, boxes):
    return torch.cat([torch.tensor(batch_index, dtype=torch.float64)[:, None],
                      torch.tensor(boxes, dtype=torch.float64)], dim=1)


def test_box_on_pixel_centres_returns_the_pixels():
    # aligned=True: the box (0, 0, W, H) with one bin per pixel samples each pixel centre exactly.
    fmap = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(1, 2, 4, 5)
    out = roi_align(fmap, [torch.tensor([[0.0, 0.0, 5.0, 4.0]])], (4, 5), sampling_ratio=1, aligned=True)
    torch.testing.assert_close(out[0], fmap[0], rtol=0, atol=1e-5)
    # A 2x2-pixel box on the centre of pixels (1..2, 1..2) -> their mean at output 1x1, 2x2 samples.
    out = roi_align(fmap, [torch.tensor([[1.0, 1.0, 3.0, 3.0]])], 1, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(out[0, :, 0, 0], fmap[0, :, 1:3, 1:3].mean(dim=(1, 2)), rtol=0, atol=1e-5)
    # The legacy model (aligned=False) samples pixel i at coordinate i: the same box shifted by 0.5.
    out = roi_align(fmap, [torch.tensor([[0.5, 0.5, 2.5, 2.5]])], 1, sampling_ratio=2, aligned=False)
    torch.testing.assert_close(out[0, :, 0, 0], fmap[0, :, 1:3, 1:3].mean(dim=(1, 2)), rtol=0, atol=1e-5)


def test_half_pixel_sample_is_the_mean_of_two_neighbours():
    fmap = torch.tensor([[[[0.0, 10.0, 30.0]]]])  # 1x1x1x3
    # aligned=True: box x in [1, 2] has its single sample at x = 1.5 - 0.5 = 1.0 -> pixel 1 exactly;
    # box x in [1.5, 2.5] samples at 1.5 -> halfway between pixels 1 and 2.
    out = roi_align(fmap, [torch.tensor([[1.0, 0.0, 2.0, 1.0], [1.5, 0.0, 2.5, 1.0]])], 1, sampling_ratio=1)
    assert out.flatten().tolist() == pytest.approx([10.0, 20.0])


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_matches_the_loop_reference_with_boxes_partly_outside(aligned, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64)
    rois = _rois(
        [0, 1, 1, 0, 1, 0],
        [[0.3, 0.2, 4.1, 5.7],        # inside
         [-2.0, -1.5, 3.0, 2.0],      # over the top-left corner
         [5.2, 4.4, 9.5, 8.0],        # over the bottom-right corner, past the one-pixel margin
         [-6.0, 1.0, -3.0, 3.0],      # entirely left of the map
         [2.0, 2.0, 2.3, 2.1],        # tiny
         [6.9, 5.9, 7.0, 6.0]],       # on the last pixel's far edge
    )
    expected = reference_roi_align(fmap, rois, 3, 2, 1.0, sampling_ratio, aligned)
    got = roi_align(fmap, rois, (3, 2), 1.0, sampling_ratio, aligned)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert got[3].abs().max() == 0  # entirely beyond the one-pixel margin -> zeros


def test_spatial_scale_and_adaptive_grid_follow_the_reference():
    g = torch.Generator().manual_seed(1)
    fmap = torch.randn(1, 2, 8, 8, generator=g, dtype=torch.float64)
    rois = _rois([0, 0], [[8.0, 4.0, 120.0, 60.0], [0.0, 0.0, 128.0, 128.0]])  # image pixels, stride 16
    expected = reference_roi_align(fmap, rois, 7, 7, 1 / 16, 0, True)
    torch.testing.assert_close(roi_align(fmap, rois, 7, 1 / 16, 0, True), expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(RoIAlign(7, 1 / 16, 0, True)(fmap, rois), expected, rtol=1e-10, atol=1e-10)


def test_list_of_boxes_equals_rows_and_per_image_calls():
    g = torch.Generator().manual_seed(2)
    fmap = torch.randn(3, 4, 5, 5, generator=g)
    per_image = [torch.tensor([[0.0, 0.0, 3.0, 4.0], [1.0, 1.5, 4.5, 5.0]]), torch.zeros(0, 4),
                 torch.tensor([[2.0, 0.5, 5.0, 3.0]])]
    batched = roi_align(fmap, per_image, 2, sampling_ratio=2)
    rows = boxes_to_rois(per_image)
    assert rows[:, 0].tolist() == [0, 0, 2]
    torch.testing.assert_close(roi_align(fmap, rows, 2, sampling_ratio=2), batched)
    singles = [roi_align(fmap[i : i + 1], [b], 2, sampling_ratio=2) for i, b in enumerate(per_image)]
    torch.testing.assert_close(torch.cat(singles), batched, rtol=1e-6, atol=1e-6)


def test_empty_box_lists():
    fmap = torch.randn(2, 4, 5, 5, requires_grad=True)
    out = roi_align(fmap, [torch.zeros(0, 4), torch.zeros(0, 4)], (7, 3))
    assert out.shape == (0, 4, 7, 3)
    assert roi_align(fmap, torch.zeros(0, 5), 2).shape == (0, 4, 2, 2)
    out.sum().backward()  # an empty batch still back-propagates (zero gradient)
    assert fmap.grad is None or fmap.grad.abs().sum() == 0


def test_gradcheck_float64():
    g = torch.Generator().manual_seed(3)
    fmap = torch.randn(2, 2, 4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rois = _rois([0, 1, 1], [[0.2, 0.3, 3.1, 3.9], [-0.8, 1.1, 2.5, 4.6], [3.3, 0.0, 6.0, 2.2]])
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, 2, 1.0, 0, True), (fmap,))
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 3), 1.0, 2, False), (fmap,))


def test_bad_input_is_named():
    fmap = torch.zeros(2, 1, 3, 3)
    with pytest.raises(ValueError, match=r"\[K, 5\]"):
        roi_align(fmap, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match="2 box lists for a batch of 2|1 box lists for a batch of 2"):
        roi_align(fmap, [torch.zeros(1, 4)], 2)
    with pytest.raises(ValueError, match="batch indices"):
        roi_align(fmap, torch.tensor([[2.0, 0, 0, 1, 1]]), 2)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        roi_align(torch.zeros(1, 3, 3), torch.zeros(0, 5), 2)
