import numpy as np
import pytest
import torch

from bmvit.box_ops import box_cxcywh_to_xyxy, box_iou, box_xyxy_to_cxcywh, generalized_box_iou


def test_round_trip():
    g = torch.Generator().manual_seed(0)
    boxes = torch.rand(50, 4, generator=g)
    assert torch.allclose(box_xyxy_to_cxcywh(box_cxcywh_to_xyxy(boxes)), boxes, atol=1e-6)


def test_hand_computed_iou_and_giou():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0]])
    # Overlap 1, union 4 + 4 - 1 = 7, enclosing box 3x3 = 9.
    assert torch.allclose(box_iou(a, b), torch.tensor([[1 / 7, 0.0]]))
    assert torch.allclose(generalized_box_iou(a, b), torch.tensor([[1 / 7 - (9 - 7) / 9, 0.0 - (10 - 5) / 10]]))


def test_giou_bounds_and_identity():
    g = torch.Generator().manual_seed(1)
    boxes = box_cxcywh_to_xyxy(torch.rand(30, 4, generator=g) * 0.5 + 0.1)
    giou = generalized_box_iou(boxes, boxes)
    assert torch.allclose(giou.diagonal(), torch.ones(30), atol=1e-6)
    assert bool((giou >= -1).all()) and bool((giou <= 1).all())


def test_degenerate_boxes():
    point = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    assert box_iou(point, point).item() == 0.0
    giou = generalized_box_iou(point, box)
    # IoU 0, union 1 (the point adds no area), enclosing box = the unit box: GIoU = 0 - 0/1.
    assert giou.item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="x2 < x1"):
        generalized_box_iou(torch.tensor([[0.6, 0.0, 0.5, 1.0]]), box)


def test_giou_gradients_finite_for_degenerate():
    boxes = torch.tensor([[0.5, 0.5, 0.0, 0.0]], requires_grad=True)
    loss = (1 - generalized_box_iou(box_cxcywh_to_xyxy(boxes), torch.tensor([[0.1, 0.1, 0.4, 0.4]]))).sum()
    loss.backward()
    assert torch.isfinite(boxes.grad).all()


def test_grid_cell_centres_are_row_major():
    from bmvit.box_ops import grid_cell_centres

    centres = grid_cell_centres(2, 4)
    assert centres.shape == (8, 2)
    assert torch.allclose(centres[1], torch.tensor([0.375, 0.25]))  # row 0, column 1
    assert torch.allclose(centres[4], torch.tensor([0.125, 0.75]))  # row 1, column 0


def test_grid_cell_index_inverts_grid_cell_centres_and_clamps_edges():
    from bmvit.box_ops import grid_cell_centres, grid_cell_index

    assert grid_cell_index(grid_cell_centres(2, 4), 2, 4).tolist() == list(range(8))
    # (0.74, 0.5): column 2 of 4, row 1 of 2 -> 6; the corner (1, 1) is the last cell, (0, 0) the first.
    points = torch.tensor([[0.74, 0.5], [1.0, 1.0], [0.0, 0.0]])
    assert grid_cell_index(points, 2, 4).tolist() == [6, 7, 0]


def test_numpy_iou_hand_computed_pairwise_and_matched():
    from bmvit.box_ops import box_iou_numpy, matched_box_iou_numpy

    a = np.array([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 5.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    # Continuous coordinates, no +1: [0,0,2,2] vs [1,1,3,3] overlap 1x1, union 4 + 4 - 1 = 7;
    # vs [0,0,2,1] overlap 2x1 = 2, union 4 + 2 - 2 = 4. [0,0,1,1] vs [1,1,3,3] touch at a corner only.
    expected = np.array([[1 / 7, 0.0, 2 / 4], [0.0, 0.0, 1 / 2]])
    pairwise = box_iou_numpy(a, b)
    assert pairwise.shape == (2, 3)
    np.testing.assert_allclose(pairwise, expected, rtol=0, atol=1e-15)
    # The same numbers row by row, against one box, and against per-row candidates.
    np.testing.assert_allclose(matched_box_iou_numpy(a, b[[0, 2]]), [1 / 7, 1 / 2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(matched_box_iou_numpy(b, a[0]), expected[0], rtol=0, atol=1e-15)
    candidates = np.stack([b[[2, 0]], b[[1, 2]]])  # [2 rows, 2 candidates, 4]
    np.testing.assert_allclose(matched_box_iou_numpy(a[:, None, :], candidates), [[2 / 4, 1 / 7], [0.0, 1 / 2]],
                               rtol=0, atol=1e-15)
    # Agrees with the torch box_iou on well-formed boxes.
    np.testing.assert_allclose(pairwise, box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy(), rtol=0, atol=1e-15)


def test_numpy_iou_of_two_empty_boxes_is_nan():
    from bmvit.box_ops import box_iou_numpy

    point = np.array([[0.5, 0.5, 0.5, 0.5]])
    # 0 / 0, as ACT's iou2d: its evaluators rely on argmax ranking NaN first and on NaN never being a hit.
    assert np.isnan(box_iou_numpy(point, point)[0, 0])
    assert box_iou_numpy(point, np.array([[0.0, 0.0, 1.0, 1.0]]))[0, 0] == 0.0
    assert box_iou_numpy(np.zeros((0, 4)), point).shape == (0, 1)
