"""The ablation configs and the ViT-B / Hiera-L recipes load, validate, build and train.

``configs/ablations/*.yaml`` hold only the keys an ablation changes. ``bmvit train`` reads one ``--config``
file, so an ablation is used as ``key=value`` overrides on top of the base its ``# base:`` line names, as
docs/ablations.md's commands do. Here each file goes through that path:
``load_config(base, overrides)``, where the loader refuses an unknown key and ``validate`` refuses a bad
value. ``configs/bmvit_vit_b_ava22.yaml`` and ``configs/bmvit_hiera_l_ava22.yaml`` are complete recipes
and load on their own.

For the training step the real presets keep their names. ``bmvit_mvitv2_s``, ``bmvit_vit_b`` and
``bmvit_hiera_l`` keep their heads, poolings and token selection. Only the backbone is shrunk, through
``model.backbone_overrides`` (depth, width), merged with the recipe's own backbone overrides and never
replacing one of them. The clips shrink to 4x64x64 and the weights start random. The data is the tiny
synthetic set of ``tests/conftest.py``; for an ablation that trains on non-actor people
(``loss.nonactor_boxes``) the same set written with them (``non_actors=True``). No preset had to be swapped
for its tiny sibling.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from pathlib import Path

import pytest
import yaml

from bmvit import trainer
from bmvit.build import create_model_from_config
from bmvit.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "configs" / "bmvit_mvitv2_s_ava22.yaml"
ABLATIONS = sorted((REPO / "configs" / "ablations").glob("*.yaml"))
RECIPES = [REPO / "configs" / "bmvit_vit_b_ava22.yaml", REPO / "configs" / "bmvit_hiera_l_ava22.yaml"]
CONFIGS = ABLATIONS + RECIPES
DOC = REPO / "docs" / "ablations.md"

# Backbone fields that shrink each family to a few blocks of a few channels (the geometry of the tiny
# presets mvit_tiny / vit_tiny / hiera_tiny); poolings, patch sizes and heads stay the preset's.
SHRINK = {
    "bmvit_mvitv2_s": {"depths": [1, 1, 2, 1], "embed_dim": 24, "num_heads": 1},
    "bmvit_vit_b": {"depth": 2, "embed_dim": 96, "num_heads": 3},
    "bmvit_hiera_l": {"stages": [1, 1, 2, 1], "embed_dim": 24, "num_heads": 1},
}
# Launch-specific keys a documented command adds to the file's own (docs/ablations.md).
LAUNCH_KEYS = {"data.root", "model.backbone_weights"}


def _ids(paths: list[Path]) -> list[str]:
    return [p.relative_to(REPO / "configs").as_posix() for p in paths]


def base_of(path: Path) -> Path | None:
    """The config an ablation sits on (its ``# base: F`` header line), None for a complete recipe."""
    match = re.search(r"^# base: (\S+)\s*$", path.read_text(), re.M)
    return REPO / match.group(1) if match else None


def _text(value: object) -> str:
    """A YAML value as the right-hand side of ``key=value`` (flow style for lists and mappings)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def as_overrides(data: dict, section: object | None = None, prefix: str = "") -> list[str]:
    """A partial config (nested sections) as dotted ``key=value`` overrides. A mapping goes down only
    into config sections; a mapping-valued field (``model.backbone_overrides``) stays one value. An unknown
    key passes through unchanged, so that the loader is the one to refuse it."""
    section = Config() if section is None else section
    out = []
    for key, value in data.items():
        child = getattr(section, key, None)
        if isinstance(value, dict) and child is not None and hasattr(child, "__dataclass_fields__"):
            out += as_overrides(value, child, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={_text(value)}")
    return out


def load(path: Path, extra: list[str] | tuple[str, ...] = ()) -> Config:
    """The run config of ``path``: an ablation on top of its base, a recipe on its own; validated."""
    base = base_of(path)
    if base is not None:
        data = yaml.safe_load(path.read_text()) or {}
        config = load_config(base, [*as_overrides(data), *extra])
    else:
        config = load_config(path, list(extra))
    config.validate()
    return config


def shrink(config: Config) -> Config:
    """The recipe's backbone made tiny, its own backbone overrides kept (a shrink key never replaces one)."""
    small = SHRINK[config.model.name]
    own = dict(config.model.backbone_overrides)
    assert not set(own) & set(small), f"the shrink would replace the recipe's backbone keys {set(own) & set(small)}"
    config.model.backbone_overrides = {**own, **small}
    return config


def build_tiny(path: Path, extra: list[str] | tuple[str, ...] = ()):
    config = shrink(load(path, ["model.input_size=[4, 64, 64]", "model.backbone_weights=", *extra]))
    return config, create_model_from_config(config.model, num_classes=9)


# ------------------------------------------------------------------------------------------------


def test_the_configs_are_there():
    names = {p.stem for p in ABLATIONS}
    assert {"token_temporal_mean", "token_all", "scale5_pooling_kept", "input_letterbox",
            "box_token_local"} <= names, names
    assert all(p.is_file() for p in RECIPES)


@pytest.mark.parametrize("path", ABLATIONS, ids=_ids(ABLATIONS))
def test_ablation_changes_its_keys_of_the_base_and_nothing_else(path: Path):
    """Its base exists and every key it sets differs from the base's value; the rest is the base's."""
    base = base_of(path)
    assert base is not None and base.is_file(), f"{path.name}: no '# base: F' line naming an existing config"
    before, after = load_config(base).to_dict(), load(path).to_dict()
    assert after["train"]["out_dir"].startswith("runs/ablations/"), "an ablation writes to its own run folder"
    changed = [o.split("=", 1)[0] for o in as_overrides(yaml.safe_load(path.read_text()))]
    assert changed, f"{path.name} changes nothing"
    for key in changed:
        section, name = key.rsplit(".", 1)
        old, new = before, after
        for part in section.split("."):
            old, new = old[part], new[part]
        assert old[name] != new[name], f"{path.name}: {key} is the base's value already"
        old.pop(name), new.pop(name)
    assert before == after, f"{path.name} changes keys it does not list"


@pytest.mark.parametrize("path", ABLATIONS, ids=_ids(ABLATIONS))
def test_layering_the_file_on_its_base_equals_its_overrides(path: Path):
    """``--config base --config ablation`` and ``--config base key=value...`` give the same run config."""
    assert load_config([base_of(path), path]).to_dict() == load(path).to_dict()


# Candidate tokens per clip at 4x64x64 (a 2x4x4 token grid after the shrink, 2x2x2 with scale5's pooling kept).
CANDIDATES = {"token_temporal_mean": 16, "token_all": 32, "scale5_pooling_kept": 4, "input_letterbox": 16,
              "input_short_side": 16, "box_token_local": 16, "scale5_kv_full": 16,
              "layer_decay_per_stage": 16, "nonactor_boxes": 16, "bmvit_vit_b_ava22": 16, "bmvit_hiera_l_ava22": 16}


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_loads_validates_and_builds(path: Path):
    import torch

    config, model = build_tiny(path)
    with torch.no_grad():
        outputs = model.eval()(torch.zeros(1, 3, 4, 64, 64))
    assert outputs["pred_boxes"].shape[1] == CANDIDATES[path.stem], outputs["pred_boxes"].shape
    assert model.config.token_selection == config.model.token_selection
    if config.model.box_reference is not None:
        assert model.config.box_reference == config.model.box_reference
    built = model.config.to_dict()["backbone_overrides"]
    for key, value in config.model.backbone_overrides.items():
        assert built[key] == value, key


@pytest.mark.parametrize("path", RECIPES, ids=_ids(RECIPES))
def test_recipe_launch_names_a_known_weights_file_of_its_backbone(path: Path):
    """The launch line's weights file is a KNOWN_WEIGHTS record (which then supplies mean/std) of this backbone."""
    from bmvit.models.weights import KNOWN_WEIGHTS

    match = re.search(r"model\.backbone_weights=(\S+)", path.read_text())
    assert match, f"{path.name}: no launch line with model.backbone_weights="
    spec = next((s for s in KNOWN_WEIGHTS.values() if s.file_name == Path(match.group(1)).name), None)
    assert spec is not None, f"{path.name}: {match.group(1)} matches no KNOWN_WEIGHTS record"
    config = load(path)
    assert config.data.mean is None and config.data.std is None, "the normalisation is the weights' own"
    _, model = build_tiny(path)
    assert model.config.backbone == f"{spec.backbone}_det", (model.config.backbone, spec.name)


def _bad(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(f"# base: {BASE.relative_to(REPO)}\n{body}")
    return path


@pytest.mark.parametrize("body, error", [
    ("model:\n  token_selction: all\n", "unknown config key 'model.token_selction'"),
    ("modle:\n  token_selection: all\n", "unknown config key 'modle'"),
    ("model:\n  token_selection: every\n", "model.token_selection must be"),
    ("data:\n  resize: crop\n", "data.resize must be"),
    ("matcher:\n  cost_center: -1.0\n", "matcher.cost_center must be >= 0"),
    ("model:\n  backbone_overrides: {stride_qq: [[1, 1, 1]]}\n", "unknown MViT config field"),
    ("model:\n  backbone_overrides: {stride_q: [[1, 2, 2]]}\n", "stride_q needs one"),
], ids=["key", "section", "token_selection", "resize", "cost_center", "backbone_key", "backbone_value"])
def test_a_bad_ablation_fails(tmp_path: Path, body: str, error: str):
    with pytest.raises((ConfigError, ValueError), match=re.escape(error)):
        build_tiny(_bad(tmp_path, body))


def _doc_commands() -> list[list[str]]:
    """Every ``bmvit train`` command of docs/ablations.md (inline spans and fenced lines), as tokens."""
    text = DOC.read_text().replace("\\\n", " ")
    found = re.findall(r"`(bmvit train [^`]+)`", text)
    found += [line for line in text.splitlines() if "-m bmvit train" in line]
    return [shlex.split(c.strip().strip("`")) for c in found]


@pytest.mark.parametrize("path", ABLATIONS, ids=_ids(ABLATIONS))
def test_docs_give_the_files_overrides(path: Path):
    """Every command of docs/ablations.md that writes to this ablation's run folder passes exactly its keys."""
    expected = {o.split("=", 1)[0]: yaml.safe_load(o.split("=", 1)[1])
                for o in as_overrides(yaml.safe_load(path.read_text()))}
    folder = f"train.out_dir={expected['train.out_dir']}"
    commands = [c for c in _doc_commands() if folder in c]
    assert len(commands) >= 2, f"docs/ablations.md has no table row and launch command for {path.name}"
    for tokens in commands:
        assert tokens[tokens.index("--config") + 1] == base_of(path).relative_to(REPO).as_posix()
        given = {t.split("=", 1)[0]: yaml.safe_load(t.split("=", 1)[1]) for t in tokens
                 if re.match(r"^[a-z_]+(\.\w+)+=", t) and t.split("=", 1)[0] not in LAUNCH_KEYS}
        assert given == expected, f"docs/ablations.md: {' '.join(tokens)}\nthe file says {expected}"
    assert f"configs/ablations/{path.name}" in DOC.read_text()


@pytest.fixture(scope="session")
def tiny_dataset_non_actors(tmp_path_factory) -> Path:
    """``tiny_dataset`` written with its people who are not acting (rows with an empty action id)."""
    from bmvit.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("synth_non_actors")
    write_synthetic_dataset(root, seed=3, num_videos=2, num_val_videos=1, seconds=6, size=(160, 120), workers=1,
                            non_actors=True)
    assert ",," in (root / "annotations" / "ava_train_v2.2.csv").read_text(), "no non-actor rows to train on"
    return root


@pytest.mark.parametrize("path", CONFIGS, ids=_ids(CONFIGS))
def test_one_training_step(path: Path, tiny_overrides, tmp_path, request):
    """One optimiser step and the evaluation after it, on the tiny synthetic set, CPU, fp32."""
    tiny_dataset = request.getfixturevalue(
        "tiny_dataset_non_actors" if load(path).loss.nonactor_boxes else "tiny_dataset")
    out = tmp_path / "run"
    extra = {
        "model.backbone_weights": "",       # the real recipes name no file; the tiny ones cannot take a real one
        "data.source": "video",             # the synthetic set is videos; AVA's recipes read frames
        "train.amp": "off",                 # CPU: fp32
        "train.epochs": 1,
        "train.max_steps": 1,
        "train.checkpoint_every_steps": 0,
    }
    config = shrink(load(path, tiny_overrides(tiny_dataset, out, **extra)))
    recipe = load(path)
    trainer.fit(config)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 1 and math.isfinite(records[0]["loss"]), records
    assert "mAP" in records[0]
    saved = yaml.safe_load((out / "config.yaml").read_text())["model"]
    for key in ("name", "token_selection", "box_reference", "box_local_range", "drop_path_rate"):
        assert saved[key] == getattr(recipe.model, key), key
    for key, value in recipe.model.backbone_overrides.items():
        assert saved["backbone_overrides"][key] == value, key
    assert (out / "model.safetensors").is_file()


def test_nonactor_boxes_reaches_the_dataset_and_the_criterion(tiny_dataset_non_actors, tiny_overrides, tmp_path):
    """loss.nonactor_boxes: the training targets keep the non-actors (is_actor False) and the criterion
    matches them; the base keeps neither."""
    from bmvit.build import create_split_dataset, family_of, read_class_info

    path = REPO / "configs" / "ablations" / "nonactor_boxes.yaml"
    for config_path, on in ((path, True), (BASE, False)):
        extra = tiny_overrides(tiny_dataset_non_actors, tmp_path, **{"model.backbone_weights": "", "data.source": "video"})
        config = shrink(load(config_path, extra) if on else load_config(BASE, extra))
        model = create_model_from_config(config.model, num_classes=9)
        classes = read_class_info(config.data)
        for split in ("train", "val"):
            dataset = create_split_dataset(config, model, split, classes.class_ids, train=split == "train")
            assert dataset.keep_non_actors is on
        targets = [dataset[i][1] for i in range(len(dataset))]
        assert any((~t["is_actor"]).any() for t in targets) if on else all("is_actor" not in t for t in targets)
        assert family_of(model).criterion(config, len(classes.class_ids)).nonactor_boxes is on


# ------------------------------------------------------------------------------------------------
# slow: the GMACs on docs/ablations.md are what the configs build


def _documented_gmacs() -> dict[str, float]:
    rows = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"^\|\s*(.+?)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+) M\s*\|", line)
        if match:
            names = re.findall(r"`([^`]+)`", match.group(1))
            names += ["base"] if match.group(1).startswith("base") else []
            for name in names:
                rows[name] = float(match.group(2))
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("path", [BASE, *CONFIGS], ids=_ids([BASE, *CONFIGS]))
def test_documented_gmacs(path: Path):
    from bmvit.flops import count_flops

    rows = _documented_gmacs()
    name = "base" if path == BASE else (path.stem if path in ABLATIONS else path.relative_to(REPO).as_posix())
    documented = rows.get(name)
    assert documented is not None, f"docs/ablations.md's cost table has no row for {name}"
    config = load_config(path) if path == BASE else load(path)
    model = create_model_from_config(config.model, num_classes=80).eval()
    report = count_flops(model, (1, 3, *config.model.input_size))
    assert f"{report.gmacs:.2f}" == f"{documented:.2f}", (name, report.gmacs)
