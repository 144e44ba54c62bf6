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


class _Report:
    def __init__(self, spec):
        self.spec = spec


class _Weighted(nn.Module):
    """A model whose backbone weights matched ``spec`` (None: a file that matches no record)."""

    def __init__(self, spec):
        super().__init__()
        self.backbone_weights_report = _Report(spec)


IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_normalisation_defaults_to_the_weights_own():
    from bmvit.build import resolve_normalisation
    from bmvit.config import DataConfig
    from bmvit.models.weights import weights_normalisation

    videomae = weights_normalisation(_Weighted("vit_b_16x4.videomae_k400_ft_k400"))
    assert (videomae.mean, videomae.std) == IMAGENET and "videomae" in videomae.source
    resolved = resolve_normalisation(DataConfig(), videomae, weights_given=True)
    assert (resolved.mean, resolved.std) == IMAGENET
    # A bmvit model file's own metadata comes first.
    own = weights_normalisation(_Weighted("vit_b_16x4.videomae_k400_ft_k400"), {"mean": [0.5] * 3, "std": [0.25] * 3})
    assert own.mean == (0.5, 0.5, 0.5) and own.source == "the model file of model.init_weights"


def test_a_normalisation_that_contradicts_the_weights_is_used_only_with_a_warning():
    from bmvit.build import resolve_normalisation
    from bmvit.config import ConfigError, DataConfig
    from bmvit.models.weights import weights_normalisation

    videomae = weights_normalisation(_Weighted("vit_b_16x4.videomae_k400"))
    kinetics = DataConfig(mean=[0.45] * 3, std=[0.225] * 3)
    with pytest.warns(UserWarning, match=r"differ from the normalisation the weights were trained with, "
                                         r"\[0.485, 0.456, 0.406\]/\[0.229, 0.224, 0.225\] \(the record of "
                                         r"vit_b_16x4.videomae_k400\)"):
        chosen = resolve_normalisation(kinetics, videomae, weights_given=True)
    assert chosen.mean == (0.45, 0.45, 0.45)
    with pytest.raises(ConfigError, match="set both data.mean and data.std"):
        resolve_normalisation(DataConfig(mean=[0.5] * 3), videomae, weights_given=True)


def test_weights_of_unknown_normalisation_get_kinetics_with_a_warning_saying_so(recwarn):
    from bmvit.build import resolve_normalisation
    from bmvit.config import DataConfig
    from bmvit.models.weights import weights_normalisation

    assert weights_normalisation(_Weighted(None)) is None  # a bare state dict: no record matched
    with pytest.warns(UserWarning, match=r"match no known record.*assumed Kinetics' mean \[0.45, 0.45, 0.45\]"):
        assumed = resolve_normalisation(DataConfig(), None, weights_given=True)
    assert (assumed.mean, assumed.std) == ((0.45,) * 3, (0.225,) * 3)
    recwarn.clear()
    resolve_normalisation(DataConfig(), None, weights_given=False)  # random weights: nothing to contradict
    assert not recwarn.list
