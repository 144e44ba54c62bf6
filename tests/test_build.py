"""Config -> components: the AVA file paths a run reads, the detector families, the split datasets."""

import shutil

import pytest
import torch
from torch import nn

from bmvit.build import SINGLE_STAGE, create_dataset, family_of, read_class_info, resolve_data_paths
from bmvit.config import load_config


def test_ava_paths_follow_the_data_ava_section(tiny_dataset, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(tiny_dataset, root)
    (root / "annotations" / "ava_val_v2.2.csv").rename(root / "annotations" / "held_out.csv")
    config = load_config(None, [f"data.root={root}"])
    with pytest.raises(FileNotFoundError, match=r"data.ava.val_csv: .*ava_val_v2.2.csv does not exist"):
        resolve_data_paths(config.data)
    config = load_config(None, [f"data.root={root}", "data.ava.val_csv=annotations/held_out.csv",
                                "data.ava.exclusions=null"])
    paths = resolve_data_paths(config.data)
    assert paths["val_csv"] == root / "annotations" / "held_out.csv" and paths["exclusions"] is None
    classes = read_class_info(config.data)
    val = create_dataset(config.data, "val", classes.class_ids, (4, 64, 64), train=False)
    assert val.annotation_file == str(paths["val_csv"]) and len(val) > 0


def test_the_single_stage_family_is_the_default_and_ddp_is_looked_through():
    class Plain(nn.Module):
        pass

    class Wrapper(nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    assert family_of(Plain()) is SINGLE_STAGE and family_of(Wrapper(Plain())) is SINGLE_STAGE
    clips = torch.zeros(2, 3, 4, 8, 8)
    assert SINGLE_STAGE.inputs(clips, [{}, {}]) == (clips,)
