"""A synthetic dataset in AVA v2.2's real file formats, whose actions need time to tell apart.

It stands in for AVA in tests, benchmarks and the demo (AVA cannot be downloaded on our machines).
Each video shows 2-4 articulated stick figures (head, torso, arms, legs with animated joint angles)
on a textured, slowly panning background, with noise, distractor objects and occlusion. Some
figures are actors whose actions change every few seconds; the others are idle bystanders who carry
no label (written as people with no action only with ``non_actors=True``). A figure's image depends
only on its pose, never on where it is going, so pairs such as walking left/right, walk/run and
wave/raised hand can be pixel-identical at a key frame (see ``docs/synthetic.md``).

The modules, each depending only on those above it:

- ``scene``: the classes, the body model and ``VideoSpec``, the full description of one video;
- ``render``: drawing figures and whole frames from a ``VideoSpec``;
- ``generate``: drawing a random ``VideoSpec`` (``create_video_spec``);
- ``keyframes``: the ground truth at AVA key frames (boxes, labels, visibility);
- ``write``: the dataset on disk (videos, frames, CSVs, label map, README);
- ``plot``: a figure of key frames read back from disk.

Every name below can be imported from ``bmvit.data.synthetic`` directly.
"""

from bmvit.data.synthetic.generate import HEIGHT_RANGE, create_video_spec
from bmvit.data.synthetic.keyframes import AVA_FIRST_SECOND, KeyframeBox, keyframe_boxes, keyframe_seconds
from bmvit.data.synthetic.plot import plot_keyframes
from bmvit.data.synthetic.render import Part, draw_parts, draw_rect, figure_parts, parts_box, render_frame
from bmvit.data.synthetic.scene import (
    ARMS,
    CLASS_DESCRIPTIONS,
    CLASSES,
    FLIP_SWAP_PAIRS,
    FOREARM,
    FPS,
    HEAD_R,
    KINDS,
    NECK,
    SHIN,
    STRIDE_PER_CYCLE,
    SWING,
    THIGH,
    TORSO,
    UPPER_ARM,
    BodyState,
    Distractor,
    FigureStyle,
    Motion,
    Pose,
    Segment,
    Track,
    VideoSpec,
    evolve,
)
from bmvit.data.synthetic.write import (
    EXCLUDE_BELOW_VISIBLE,
    GENERATOR_VERSION,
    NON_ACTOR_MIN_VISIBLE,
    SPLITS,
    SyntheticSummary,
    create_split_video_spec,
    encode_video,
    extract_frames,
    write_label_map,
    write_synthetic_dataset,
)

__all__ = [
    # scene
    "ARMS", "CLASS_DESCRIPTIONS", "CLASSES", "FLIP_SWAP_PAIRS", "FOREARM", "FPS", "HEAD_R", "KINDS", "NECK", "SHIN",
    "STRIDE_PER_CYCLE", "SWING", "THIGH", "TORSO", "UPPER_ARM", "BodyState", "Distractor", "FigureStyle", "Motion",
    "Pose", "Segment", "Track", "VideoSpec", "evolve",
    # render
    "Part", "draw_parts", "draw_rect", "figure_parts", "parts_box", "render_frame",
    # generate
    "HEIGHT_RANGE", "create_video_spec",
    # keyframes
    "AVA_FIRST_SECOND", "KeyframeBox", "keyframe_boxes", "keyframe_seconds",
    # write
    "EXCLUDE_BELOW_VISIBLE", "GENERATOR_VERSION", "NON_ACTOR_MIN_VISIBLE", "SPLITS", "SyntheticSummary",
    "create_split_video_spec", "encode_video", "extract_frames", "write_label_map", "write_synthetic_dataset",
    # plot
    "plot_keyframes",
]
