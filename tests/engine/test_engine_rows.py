"""``predict_rows``: detection rows in the original frame's coordinates, top rows per key frame."""

import pytest
import torch
from torch import nn

from bmvit.data.transforms import letterbox_geometry
from bmvit.engine import StepContext, predict_rows
from bmvit.postprocess import PostProcess


class FixedDetector(nn.Module):
    """Two tokens per clip: an actor at a fixed input-normalised box and a non-actor."""

    def forward(self, clips: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = clips.shape[0]
        boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1]]).expand(batch, 2, 4)
        actor = torch.tensor([[4.0, 0.0], [-4.0, 0.0]]).expand(batch, 2, 2)
        actions = torch.tensor([[2.0, -2.0, 0.0], [0.0, 0.0, 0.0]]).expand(batch, 2, 3)
        return {"pred_boxes": boxes, "pred_actor": actor, "pred_actions": actions}


def _loader(letterbox):
    target = {"video_id": "vidA", "timestamp": 902}
    if letterbox is not None:
        target["letterbox"] = letterbox
    return [(torch.zeros(1, 3, 2, 40, 40), [target])]


def test_rows_undo_a_letterbox_for_a_single_stage_model():
    ctx = StepContext(device=torch.device("cpu"))
    model, postprocess = FixedDetector(), PostProcess(threshold=0.5)
    square = predict_rows(model, postprocess, _loader(None), [1, 2, 3], None, ctx)
    # The kept token's input box is (0.4, 0.3, 0.6, 0.7); its three classes, best score first.
    assert [r[6] for r in square] == [1, 3, 2]
    assert square[0][:2] == ("vidA", 902)
    assert square[0][2:6] == pytest.approx((0.4, 0.3, 0.6, 0.7))
    # A 60x80 (H, W) frame letterboxed into 40x40: 30x40 content between 5-pixel bars at the top and
    # bottom, so y_frame = (40 y_input - 5) / 30 and x is unchanged.
    box = letterbox_geometry((60, 80), (40, 40))
    boxed = predict_rows(model, postprocess, _loader(box), [1, 2, 3], {1, 3}, ctx, max_rows_per_keyframe=1)
    assert len(boxed) == 1 and boxed[0][6] == 1
    assert boxed[0][2:6] == pytest.approx((0.4, (12 - 5) / 30, 0.6, (28 - 5) / 30))
