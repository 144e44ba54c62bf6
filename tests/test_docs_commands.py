"""The commands the documentation shows still exist, take the flags shown, and the cheap ones run.

Commands are read from README.md, BENCHMARKS.md and docs/*.md: every line of a fenced code block (``\\``
continuations joined, ``$`` prompts and ``# comments`` dropped) and every inline code span holding a
``bmvit`` command (also after ``torchrun ... -m``). For each ``bmvit`` command:

- its subcommand path (``bmvit data check``) exists, and ``bmvit <path> --help`` exits 0 (in this
  process; ``python -m bmvit --help`` runs as a separate one);
- every ``--flag`` it shows comes after the last subcommand (one grammar) and is listed in that help;
- its ``key=value`` overrides go to a command that takes overrides, and the config loads with them
  (``bmvit.config.load_config`` with the command's ``--config``) without an error or a FutureWarning:
  a renamed config key fails here.

``python scripts/X.py`` commands: the script exists and its flags are in its ``--help``. Markdown tables
in the same files must render: a header separator, and every row with the header's number of cells.

Run for real on a tiny synthetic dataset: ``bmvit config show``, ``bmvit synth``, ``bmvit data check`` and
the cheapest ``bmvit flops`` row of the README's table (its numbers must equal the table's). Marked
``slow`` (``make test-all``): the other ``bmvit flops`` rows, every documented training command on the
synthetic configs for one step, the inference commands (eval, predict, explain, export) with the shipped
checkpoint, and ``scripts/oracle_breakdown.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md"))]
PLACEHOLDERS = {"...", "…"}
SEPARATORS = {"&&", "||", ";", "|", ">", ">>", "2>&1"}
OVERRIDE = re.compile(r"^[A-Za-z_]\w*(?:\.\w+)+=")
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
FENCE = re.compile(r"^\s*(```|~~~)")
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "toml", "text", "txt"}


@dataclass(frozen=True)
class DocCommand:
    where: str  # "README.md:57"
    text: str  # the command as the documentation shows it
    program: str  # "bmvit" or a script path such as "scripts/oracle_breakdown.py"
    argv: tuple[str, ...]  # what follows the program

    def __str__(self) -> str:
        return f"{self.where}: {self.text}"


def _tokens(text: str) -> list[str] | None:
    try:
        return shlex.split(text, comments=True)
    except ValueError:
        return None


def _commands_in(text: str, where: str) -> list[DocCommand]:
    """``bmvit`` and ``scripts/...`` commands in one shell line (several when joined by ``&&``)."""
    tokens = _tokens(text)
    if tokens is None:
        # Only a line that names bmvit must tokenise; prose in a text block may hold a lone quote.
        if re.search(r"(^|\s)bmvit\s", text):
            return [DocCommand(where, text, "bmvit", ("<unbalanced quotes>",))]
        return []
    found = []
    for i, token in enumerate(tokens):
        is_script = re.fullmatch(r"scripts/[\w.-]+\.(py|sh)", token) is not None
        if token != "bmvit" and not is_script:
            continue
        if token == "bmvit" and i > 0 and tokens[i - 1] not in {"-m", "$", "time", *SEPARATORS} \
                and not tokens[i - 1].isdigit():  # ``taskset -c 1 bmvit ...``
            continue
        rest = []
        for t in tokens[i + 1:]:
            if t in SEPARATORS:
                break
            rest.append(t)
        found.append(DocCommand(where, " ".join(text.split()), token, tuple(rest)))
    return found


def extract_commands(path: Path) -> list[DocCommand]:
    text = path.read_text()
    name = path.relative_to(REPO).as_posix()
    commands: list[DocCommand] = []
    lines = text.splitlines()
    in_fence, language, pending, start = False, "", "", 0
    prose = []
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            in_fence = not in_fence
            language = line.strip().strip("`~").strip().lower() if in_fence else ""
            prose.append("")
            continue
        if not in_fence:
            prose.append(line)
            continue
        prose.append("")
        if language in NOT_SHELL:
            continue
        if not pending:
            start = number
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical = (pending + stripped).strip()
        pending = ""
        if logical.startswith("$ "):
            logical = logical[2:]
        commands += _commands_in(logical, f"{name}:{start}")
    # Inline code spans, outside fences; a span may run over a line break.
    body = "\n".join(prose)
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", body):
        span = " ".join(match.group(1).split())
        if not re.search(r"(^|\s)bmvit\s", span) and not re.search(r"scripts/\S+\.(py|sh)\b", span):
            continue
        line = body.count("\n", 0, match.start()) + 1
        commands += _commands_in(span, f"{name}:{line}")
    return commands


ALL_COMMANDS = [c for path in DOC_FILES for c in extract_commands(path)]
BMVIT_COMMANDS = [c for c in ALL_COMMANDS if c.program == "bmvit"]
SCRIPT_COMMANDS = [c for c in ALL_COMMANDS if c.program != "bmvit"]


def _ids(commands: list[DocCommand]) -> list[str]:
    return [f"{c.where} {' '.join(c.argv[:2])}" for c in commands]


# ------------------------------------------------------------------------------------------------
# helpers


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _run(args: list[str], timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _bmvit(*argv: str, timeout: float = 600, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return _run([sys.executable, "-m", "bmvit", *argv], timeout=timeout, cwd=cwd)


def resolve(argv: tuple[str, ...]) -> tuple[tuple[str, ...], list[str]]:
    """Split ``argv`` into the subcommand path (``("data", "check")``) and the rest; AssertionError
    when a token where a subcommand must stand is not one (renamed, or an option before it)."""
    from bmvit.cli import build_parser

    parser: argparse.ArgumentParser = build_parser()
    path: list[str] = []
    rest = list(argv)
    while True:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups or not rest or rest[0] in PLACEHOLDERS:
            return tuple(path), rest
        token = rest.pop(0)
        if token.startswith("-"):
            raise AssertionError(f"option {token!r} before the subcommand of 'bmvit {' '.join(path)}': options "
                                 f"go after it ({', '.join(groups[0].choices)})")
        if token not in groups[0].choices:
            raise AssertionError(f"'bmvit {' '.join(path)}' has no subcommand {token!r}; "
                                 f"it has {', '.join(groups[0].choices)}")
        path.append(token)
        parser = groups[0].choices[token]


def _help(args: tuple[str, ...]) -> tuple[int, str]:
    done = _run([*args, "--help"], timeout=120)
    return done.returncode, done.stdout + done.stderr


def _cli_help(path: tuple[str, ...]) -> tuple[int, str]:
    """``bmvit <path> --help`` in this process: the parser of ``python -m bmvit`` without a new interpreter
    (one import of torch per subcommand would cost seconds each); ``test_entry_point`` runs the real one."""
    from bmvit.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = main([*path, "--help"])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue()


@pytest.fixture(scope="module")
def all_help() -> dict[tuple[str, ...], tuple[int, str]]:
    """``--help`` of every documented subcommand path (keyed ``("bmvit", *path)``) and script."""
    results: dict[tuple[str, ...], tuple[int, str]] = {}
    for command in BMVIT_COMMANDS:
        try:
            path, _ = resolve(command.argv)
        except AssertionError:
            continue  # reported by the test of that command
        if ("bmvit", *path) not in results:
            results[("bmvit", *path)] = _cli_help(path)
    scripts = sorted({c.program for c in SCRIPT_COMMANDS if c.program.endswith(".py") and (REPO / c.program).is_file()})
    with ThreadPoolExecutor(max_workers=2) as pool:
        for script, result in zip(scripts, pool.map(lambda s: _help((sys.executable, s)), scripts)):
            results[("python", script)] = result
    return results


def _checked_help(all_help, program: tuple[str, ...]) -> str:
    code, text = all_help[program]
    assert code == 0, f"{' '.join(program)} --help exited {code}:\n{text[-2000:]}"
    return text


def test_entry_point():
    """``python -m bmvit --help`` starts and lists every subcommand."""
    from bmvit.cli import COMMANDS

    done = _bmvit("--help", timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    missing = [name for name in COMMANDS if name not in done.stdout]
    assert not missing, f"python -m bmvit --help does not list {missing}:\n{done.stdout}"


def _option_value(rest: list[str], name: str) -> str | None:
    for i, token in enumerate(rest):
        if token == name and i + 1 < len(rest):
            return rest[i + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


# ------------------------------------------------------------------------------------------------
# every documented command: exists, flags, overrides


def test_commands_were_found():
    files = {c.where.split(":")[0] for c in BMVIT_COMMANDS}
    assert len(BMVIT_COMMANDS) >= 30 and "README.md" in files, files
    assert not [c for c in BMVIT_COMMANDS if c.argv == ("<unbalanced quotes>",)], "a bmvit line does not tokenise"


@pytest.mark.parametrize("command", BMVIT_COMMANDS, ids=_ids(BMVIT_COMMANDS))
def test_documented_command_parses(command: DocCommand, all_help):
    from bmvit.config import ConfigError, load_config

    try:
        path, rest = resolve(command.argv)
    except AssertionError as err:
        pytest.fail(f"{command}\n{err}")
    text = _checked_help(all_help, ("bmvit", *path))
    known = set(OPTION.findall(text))
    # "-" alone is a value (standard input), as is a negative number
    flags = [t.split("=", 1)[0] for t in rest if t.startswith("-") and t != "-" and not re.fullmatch(r"-[\d.]+", t)]
    unknown = [f for f in flags if f not in known]
    assert not unknown, f"{command}\n'bmvit {' '.join(path)}' has no option {unknown}; it has {sorted(known)}"
    overrides = [t for t in rest if OVERRIDE.match(t)]
    if not overrides:
        return
    assert "key=value" in text, f"{command}\n'bmvit {' '.join(path)}' takes no key=value overrides"
    config = _option_value(rest, "--config")
    if config is None and path == ("demo",):
        config = "configs/synthetic_tiny.yaml"
    if config is not None and (config in PLACEHOLDERS or not (REPO / config).is_file()):
        config = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # a renamed key still loads, with a FutureWarning
            load_config(REPO / config if config else None, overrides)
    except (ConfigError, FutureWarning) as err:
        pytest.fail(f"{command}\nits overrides do not load cleanly: {err}")


def _documented_paths() -> list[tuple[str, ...]]:
    """The subcommand paths the documentation uses, read without building the parser."""
    paths = set()
    for command in BMVIT_COMMANDS:
        words = []
        for token in command.argv:
            if token.startswith("-") or token in PLACEHOLDERS or "=" in token or "/" in token or len(words) == 2:
                break
            words.append(token)
        paths.add(tuple(words[:1]) if words[:1] != ["data"] and words[:1] != ["config"] else tuple(words))
    return sorted(p for p in paths if p)


@pytest.mark.slow
@pytest.mark.parametrize("path", _documented_paths(), ids=" ".join)
def test_subcommand_help_in_a_fresh_process(path: tuple[str, ...]):
    """``python -m bmvit <path> --help`` as its own process, for every documented subcommand path."""
    done = _bmvit(*path, "--help", timeout=120)
    assert done.returncode == 0, f"python -m bmvit {' '.join(path)} --help exited {done.returncode}:\n{done.stderr}"
    assert "usage: bmvit " + " ".join(path) in done.stdout


@pytest.mark.parametrize("command", SCRIPT_COMMANDS, ids=_ids(SCRIPT_COMMANDS))
def test_documented_script_exists_and_takes_its_flags(command: DocCommand, all_help):
    script = REPO / command.program
    assert script.is_file(), f"{command}\n{command.program} is not in the repository"
    if script.suffix != ".py":
        return
    text = _checked_help(all_help, ("python", command.program))
    known = set(OPTION.findall(text))
    unknown = [t.split("=", 1)[0] for t in command.argv if t.startswith("--") and t.split("=", 1)[0] not in known]
    assert not unknown, f"{command}\n{command.program} has no option {unknown}"


def test_every_script_is_documented():
    """Each file in scripts/ has a header with its usage and is named in the docs' list of scripts."""
    listed = (REPO / "docs" / "scripts.md").read_text()
    for script in sorted((REPO / "scripts").iterdir()):
        if script.name.startswith(".") or script.name == "__pycache__":
            continue
        assert f"scripts/{script.name}" in listed, f"docs/scripts.md does not list scripts/{script.name}"
        head = script.read_text()[:3000]
        assert f"scripts/{script.name}" in head, f"scripts/{script.name}: its header shows no usage line"


def _table_cells(line: str) -> int:
    body = re.sub(r"\\\|", "", line.strip())
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return len(body.split("|"))


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.relative_to(REPO).as_posix() for p in DOC_FILES])
def test_markdown_tables_render(path: Path):
    lines = path.read_text().splitlines()
    problems, in_fence, i = [], False, 0
    while i < len(lines):
        if FENCE.match(lines[i]):
            in_fence = not in_fence
        if in_fence or not lines[i].lstrip().startswith("|"):
            i += 1
            continue
        start, rows = i + 1, []
        while i < len(lines) and lines[i].lstrip().startswith("|"):
            rows.append(lines[i])
            i += 1
        if len(rows) < 2 or not re.match(r"^\s*\|?\s*:?-{3,}", rows[1]):
            problems.append(f"line {start}: a table without its header separator (a blank line inside a table?)")
        problems += [f"line {start + k}: {_table_cells(r)} cells, the header has {_table_cells(rows[0])}"
                     for k, r in enumerate(rows) if _table_cells(r) != _table_cells(rows[0])]
    assert not problems, f"{path.name}: " + "; ".join(problems)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file: lower case, punctuation dropped, spaces to hyphens."""
    anchors, in_fence = set(), False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


@pytest.mark.parametrize("path", DOC_FILES, ids=[p.relative_to(REPO).as_posix() for p in DOC_FILES])
def test_local_links_resolve(path: Path):
    """Every relative link ``[text](file#anchor)`` and ``docs/x.md#anchor`` citation points at a file and heading."""
    text = path.read_text()
    targets = [(m.group(1), path.parent) for m in re.finditer(r"\]\(([^)\s]+)\)", text)]
    targets += [(m.group(1), REPO) for m in re.finditer(r"(?<![\w/.])((?:docs/)?[\w-]+\.md(?:#[\w-]+)?)", text)
                if "/" in m.group(1) or "#" in m.group(1) or m.group(1).isupper()]
    problems = []
    for target, base in targets:
        if re.match(r"^[a-z]+:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        if not file_part.endswith(".md") and not anchor and (base / file_part).exists():
            continue
        resolved = (base / file_part) if file_part else path
        if not resolved.exists() and base == REPO and not file_part.startswith("docs/"):
            resolved = path.parent / file_part
        if not resolved.exists():
            problems.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            problems.append(f"{target}: no heading with anchor #{anchor}")
    assert not problems, f"{path.name}: " + "; ".join(sorted(set(problems)))


# ------------------------------------------------------------------------------------------------
# the cheap ones, for real


def _documented(program: str, *prefix: str, where: str | None = None) -> list[DocCommand]:
    return [c for c in ALL_COMMANDS if c.program == program and c.argv[:len(prefix)] == prefix
            and (where is None or c.where.startswith(where))]


def test_config_show_runs_as_documented():
    command = next(c for c in _documented("bmvit", "config", "show") if "--config" in c.argv)
    done = _bmvit(*command.argv, "train.epochs=2", timeout=120)
    assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert "init_weights" in done.stdout and re.search(r"^\s*epochs: 2\b", done.stdout, re.M), done.stdout[:2000]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """The README's ``bmvit synth`` command, shrunk: 2 train and 1 val video of 10 s at 160x120."""
    command = next(c for c in _documented("bmvit", "synth", where="README.md") if "--out" in c.argv)
    root = tmp_path_factory.mktemp("synth") / "data"
    argv = list(command.argv)
    argv[argv.index("--out") + 1] = str(root)
    done = _bmvit(*argv, "--videos", "2", "--val-videos", "1", "--seconds", "10", "--size", "160x120",
                  "--workers", "1", timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    return root


def test_data_check_runs_as_documented(tiny_root: Path):
    command = next(c for c in _documented("bmvit", "data", "check") if "--expected-frames" in c.argv)
    argv = [str(tiny_root) if token.startswith("data/") else token for token in command.argv]
    done = _bmvit(*argv, timeout=300)
    assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}{done.stderr[-2000:]}"
    assert "ready to train" in done.stdout


def _flops_rows() -> list[tuple[str, str, str, DocCommand]]:
    """(GMACs, params, where, command) of each row of the README's table that names a `bmvit flops` command."""
    rows = []
    for number, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        match = re.search(r"\|\s*([\d.]+)\s*\|\s*([\d.]+ M)\s*\|\s*`(bmvit flops [^`]+)`", line)
        if match:
            tokens = shlex.split(match.group(3))
            rows.append((match.group(1), match.group(2), f"README.md:{number}",
                         DocCommand(f"README.md:{number}", match.group(3), "bmvit", tuple(tokens[1:]))))
    return rows


FLOPS_ROWS = _flops_rows()


def _gmacs(row) -> float:
    return float(row[0])


@pytest.mark.parametrize(
    "row", [pytest.param(r, marks=() if r is min(FLOPS_ROWS, key=_gmacs) else pytest.mark.slow, id=r[2])
            for r in FLOPS_ROWS])
def test_flops_table_matches_the_command(row):
    gmacs, params, _, command = row
    done = _bmvit(*command.argv, timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert f"GMACs: {gmacs}" in done.stdout and f"params: {params}" in done.stdout, \
        f"{command}: the table says {gmacs} GMACs, {params}; the command prints\n{done.stdout}"


def test_flops_table_found():
    assert len(FLOPS_ROWS) >= 3, "the README's models table lost its `bmvit flops` commands"


# ------------------------------------------------------------------------------------------------
# slow: training, inference and the scripts on the tiny dataset


def _shipped(name: str) -> Path:
    import bmvit

    path = Path(bmvit.__file__).parent / "assets" / name
    assert path.is_file(), path
    return path


def _localise(argv: tuple[str, ...], work: Path, root: Path) -> list[str]:
    """A documented command made to run here: data on the tiny root, outputs under ``work``, trained
    model files that only exist after a long run replaced by the shipped checkpoints."""
    detector = _shipped("bmvit_mvit_tiny_synthetic.safetensors")
    pretrained = _shipped("bmvit_mvit_tiny_synthetic_pretrain.safetensors")
    video = root / "videos" / "syn_val_000.mp4"
    out: list[str] = []
    tokens = list(argv)
    for i, token in enumerate(tokens):
        before = tokens[i - 1] if i else ""
        if before in {"--out", "--json", "--plot"}:
            token = str(work / Path(token).name)
        elif before == "--weights":
            token = str(detector)
        elif before == "--source":
            token = str(video)
        elif before == "--data":
            token = str(root)
        elif OVERRIDE.match(token):
            key, value = token.split("=", 1)
            if key == "data.root":
                token = f"{key}={root}"
            elif key == "train.out_dir":
                token = f"{key}={work / 'run'}"
            elif value.endswith(".safetensors") and not (REPO / value).is_file():
                token = f"{key}={pretrained}"
        out.append(token)
    return out


TRAIN_COMMANDS = [c for c in BMVIT_COMMANDS
                  if c.argv[:1] == ("train",) and "--resume" not in c.argv
                  and _option_value(list(c.argv), "--config") in {"configs/synthetic_tiny.yaml",
                                                                  "configs/synthetic_pretrain.yaml"}]


@pytest.fixture(scope="module")
def tiny_root_frames(tmp_path_factory) -> Path:
    """3 train videos of 12 s: every one of the 9 classes has a training actor, as the shipped detector's heads
    need (``model.init_weights`` refuses data with other classes); frames too, for synthetic_pretrain.yaml."""
    root = tmp_path_factory.mktemp("synth_frames") / "data"
    done = _bmvit("synth", "--out", str(root), "--seed", "0", "--videos", "3", "--val-videos", "1", "--seconds",
                  "12", "--size", "160x120", "--workers", "1", "--frames", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return root


@pytest.mark.slow
@pytest.mark.parametrize("command", TRAIN_COMMANDS, ids=[c.where for c in TRAIN_COMMANDS])
def test_documented_training_starts(command: DocCommand, tiny_root_frames: Path, tmp_path: Path):
    """One optimiser step and an evaluation of every documented training command on the synthetic configs."""
    argv = _localise(command.argv, tmp_path, tiny_root_frames)
    if not any(t.startswith("data.root=") for t in argv):
        argv.append(f"data.root={tiny_root_frames}")
    if not any(t.startswith("train.out_dir=") for t in argv):
        argv.append(f"train.out_dir={tmp_path / 'run'}")
    done = _bmvit(*argv, "train.epochs=1", "train.max_steps=1", "train.max_minutes=0", "train.eval_every=1",
                  timeout=600)
    assert done.returncode == 0, f"{command}\nran: bmvit {' '.join(argv)}\n{done.stderr[-3000:]}"
    assert "mAP" in done.stdout + done.stderr


INFERENCE_COMMANDS = [c for c in BMVIT_COMMANDS if c.where.startswith("README.md")
                      and c.argv[:1] in {("eval",), ("predict",), ("explain",), ("export",)} and "--weights" in c.argv]


@pytest.mark.slow
@pytest.mark.parametrize("command", INFERENCE_COMMANDS, ids=[c.where for c in INFERENCE_COMMANDS])
def test_documented_inference_runs(command: DocCommand, tiny_root: Path, tmp_path: Path):
    argv = _localise(command.argv, tmp_path, tiny_root)
    if argv[0] == "explain":
        argv[argv.index("--time") + 1] = "5"  # inside the 10-s test video
    done = _bmvit(*argv, timeout=600)
    assert done.returncode == 0, f"{command}\nran: bmvit {' '.join(argv)}\n{done.stderr[-3000:]}"


@pytest.mark.slow
def test_oracle_breakdown_runs(tiny_root: Path, tmp_path: Path):
    command = next(c for c in SCRIPT_COMMANDS if c.program == "scripts/oracle_breakdown.py" and "--weights" in c.argv)
    argv = _localise(command.argv, tmp_path, tiny_root)
    done = _run([sys.executable, command.program, *argv, f"data.root={tiny_root}"], timeout=600)
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    assert (tmp_path / "oracle" / "oracle_breakdown.json").is_file()
