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


# ------------------------------------------------------------------------------------------------
# layer-wise LR decay: per block (the default) or per stage (optim.layer_decay_unit)


class _Detector(nn.Module):
    """The parameter naming create_optimizer reads: ``backbone.*`` and a head outside it."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(4, 4)


def _scales(model: nn.Module, **optim) -> dict[str, float]:
    from bmvit.build import create_optimizer
    from bmvit.config import OptimConfig

    ids = {id(p): n for n, p in model.named_parameters()}
    optimizer = create_optimizer(model, OptimConfig(lr=1.0, head_lr_mult=3.0, **optim))
    return {ids[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}


def _depth_scale(scales: dict[str, float], prefix: str) -> set[float]:
    return {round(v, 12) for k, v in scales.items() if k.startswith(prefix)}


def test_layer_decay_per_block_and_per_stage_on_a_tiny_mvit():
    import bmvit

    model = _Detector(bmvit.create_backbone("mvit_tiny"))  # depths (1, 1, 2, 1)
    assert model.backbone.cfg.depths == (1, 1, 2, 1)
    d = 0.5
    # block: 5 blocks; stem 0.5^6, block i 0.5^(5 - i), the final norm 1, the head head_lr_mult.
    block = _scales(model, layer_decay=d)
    assert block == _scales(model, layer_decay=d, layer_decay_unit="block")  # the default
    expected_block = {"backbone.patch_embed.": 2**-6, "backbone.cls_token": 2**-6, "backbone.blocks.0.": 2**-5,
                      "backbone.blocks.1.": 2**-4, "backbone.blocks.2.": 2**-3, "backbone.blocks.3.": 2**-2,
                      "backbone.blocks.4.": 2**-1, "backbone.norm.": 1.0, "head.": 3.0}
    # stage: 4 stages; stem 0.5^5, stage s 0.5^(4 - s), the final norm 1.
    stage = _scales(model, layer_decay=d, layer_decay_unit="stage")
    expected_stage = {"backbone.patch_embed.": 2**-5, "backbone.cls_token": 2**-5, "backbone.blocks.0.": 2**-4,
                      "backbone.blocks.1.": 2**-3, "backbone.blocks.2.": 2**-2, "backbone.blocks.3.": 2**-2,
                      "backbone.blocks.4.": 2**-1, "backbone.norm.": 1.0, "head.": 3.0}
    for scales, expected in ((block, expected_block), (stage, expected_stage)):
        assert all(any(k.startswith(p) for p in expected) for k in scales), sorted(scales)
        for prefix, value in expected.items():
            assert _depth_scale(scales, prefix) == {value}, (prefix, _depth_scale(scales, prefix))


def test_layer_decay_per_block_is_the_formula_it_always_was():
    """The default reproduces the per-block rule stem 0, block i -> i + 1, the rest n + 1, on every family."""
    import re

    import bmvit

    for name in ("mvit_tiny", "hiera_tiny", "vit_tiny"):
        model = _Detector(bmvit.create_backbone(name))
        n = len(model.backbone.blocks)
        for key, scale in _scales(model, layer_decay=0.75).items():
            match = re.search(r"\.blocks\.(\d+)\.", key)
            if not key.startswith("backbone."):
                assert scale == 3.0, key
            elif match:
                assert scale == pytest.approx(0.75 ** (n - int(match.group(1)))), key
            elif re.search(r"(patch_embed|cls_token|pos_embed|rel_pos)", key):
                assert scale == pytest.approx(0.75 ** (n + 1)), key
            else:
                assert scale == 1.0, key


def test_layer_decay_per_stage_on_hiera_reads_its_stages():
    import bmvit

    model = _Detector(bmvit.create_backbone("hiera_tiny"))
    stages = model.backbone.cfg.stages
    scales = _scales(model, layer_decay=0.5, layer_decay_unit="stage")
    first = 0
    for s, depth in enumerate(stages):
        for i in range(first, first + depth):
            assert _depth_scale(scales, f"backbone.blocks.{i}.") == {0.5 ** (len(stages) - s)}, i
        first += depth


def test_layer_decay_per_stage_refuses_a_vit_naming_the_key():
    import bmvit
    from bmvit.config import ConfigError

    with pytest.raises(ConfigError, match=r"optim.layer_decay_unit=stage needs a hierarchical backbone.*"
                                          r"VisionTransformer has none"):
        _scales(_Detector(bmvit.create_backbone("vit_tiny")), layer_decay=0.75, layer_decay_unit="stage")


def test_layer_decay_unit_is_validated():
    from bmvit.config import ConfigError

    assert load_config(None, []).optim.layer_decay_unit == "block"
    assert load_config(None, ["optim.layer_decay_unit=stage"]).optim.layer_decay_unit == "stage"
    with pytest.raises(ConfigError, match="optim.layer_decay_unit must be block or stage, got 'layer'"):
        load_config(None, ["optim.layer_decay_unit=layer"]).validate()


def test_frozen_blocks_freeze_the_stem_and_the_first_blocks_and_the_optimiser_leaves_them_out():
    import bmvit
    from bmvit.build import create_optimizer, freeze_backbone
    from bmvit.config import ConfigError, OptimConfig

    model = _Detector(bmvit.create_backbone("mvit_tiny"))  # 5 blocks
    frozen = freeze_backbone(model, 2)
    still = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert still and all(n.startswith(("backbone.patch_embed.", "backbone.cls_token", "backbone.blocks.0.",
                                       "backbone.blocks.1.")) for n in still)
    assert any(n.startswith("backbone.blocks.1.") for n in still)
    assert frozen == sum(p.numel() for n, p in model.named_parameters() if n in still)
    optimizer = create_optimizer(model, OptimConfig(lr=1e-3))
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.backbone(torch.randn(1, 3, *model.backbone.cfg.input_size)).sum().backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and not changed & still
    assert freeze_backbone(model, 0) == 0
    whole = _Detector(bmvit.create_backbone("mvit_tiny"))
    freeze_backbone(whole, -1)
    assert {n for n, p in whole.named_parameters() if p.requires_grad} == {n for n, _ in whole.named_parameters()
                                                                           if not n.startswith("backbone.")}
    with pytest.raises(ConfigError, match="frozen_blocks=6 but the backbone has 5 blocks"):
        freeze_backbone(_Detector(bmvit.create_backbone("mvit_tiny")), 6)
