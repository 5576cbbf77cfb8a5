"""The docs are tested: every ```bash and ```python block of README.md and docs/en/*.md runs here, in
order, at a tiny budget; the zh-TW guides must match the English ones section for section and
command for command.

A block is marked by the HTML comment on the line before its fence:

    <!-- test: run -->               run it (bash: `set -e`, every line must succeed)
    <!-- test: run: exit N -->       run it; its last command must exit with status N (error examples)
    <!-- test: skip: REASON -->      not runnable here (a real Slurm cluster, a GPU, the network, …)

Each document runs in its own scratch workspace that looks like a checkout: `configs/`, `scripts/`,
`cluster/`, `benchmarks/`, `src/`, `Makefile` and `pyproject.toml` link to this repository (`docs/figures/`
is an empty folder of its own), and
`.venv/bin` holds a `flowpwm` that appends tiny-budget overrides (the command the reader sees is the
real one; `FAST` below is what the test adds), a `python` that is this interpreter and an
`activate`; `.venv/bin` is first on PATH, as after `source .venv/bin/activate`. So `make demo`,
`flowpwm train …`, `.venv/bin/flowpwm …` and `scripts/mt_mini.sh` all run tiny. `cluster/submit_job.sh`
gets `--dry-run` appended (every argument and config is checked, nothing is submitted).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ("quickstart.md", "flow-comparison.md", "cluster.md", "implementation.md", "technical.md")
EN, ZH = ROOT / "docs" / "en", ROOT / "docs" / "zh-TW"
RUN_DOCS = [ROOT / "README.md"] + [EN / g for g in GUIDES]
ALL_DOCS = RUN_DOCS + [ZH / g for g in GUIDES] + [ROOT / "docs" / "results.md"]
COMMAND_LANGS = {"bash", "sh", "shell", "console", "python"}
MARK = re.compile(r"^<!-- test: (run|run: exit (\d+)|skip: (.+\S)) -->$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")

# What the test appends to each flowpwm command (later overrides win in Hydra).
FAST_TRAIN = ("env.num_envs=2 train.seed_steps=40 train.pretrain_iterations=2 train.steps_per_epoch=4 "
              "train.eval_episodes=1 train.eval_every=2 train.checkpoint_every=1 train.esnr_every=1 "
              "train.esnr_samples=2 alg.wm_batch_size=16 alg.wm_iterations=2 alg.actor_batch_size=8 "
              "alg.critic_iterations=1 alg.policy_iterations=2 alg.horizon=4 train.threads=1 "
              "wandb.mode=disabled monitor.progress=off train.plots=false")
FAST_PRETRAIN = ("pretrain.iterations=4 pretrain.log_every=2 pretrain.eval_every=2 pretrain.checkpoint_every=2 "
                 "pretrain.batch_size=16 pretrain.eval_batch_size=16 pretrain.threads=1 alg.horizon=4 "
                 "wandb.mode=disabled monitor.progress=off")
FAST_POLICY = ("policy.iterations=4 policy.log_every=2 policy.eval_every=4 policy.eval_episodes=1 "
               "policy.checkpoint_every=2 policy.esnr_every=0 policy.eval_envs=1 policy.threads=1 alg.horizon=4 "
               "alg.actor_batch_size=8 alg.critic_iterations=1 wandb.mode=disabled monitor.progress=off")
FAST_FIT_WM = "fit_wm.iterations=20 fit_wm.log_every=10 fit_wm.episodes=4 fit_wm.episode_length=20"

WRAPPER = f"""#!/bin/bash
# flowpwm at a tiny budget (tests/test_docs.py): the reader's overrides, then the test's.
real={shlex.quote(str(Path(sys.executable).parent / "flowpwm"))}
case " $* " in *" --help "*|*" -h "*) exec "$real" "$@" ;; esac
extra=()
case ${{1:-}} in
  train|demo)
    steps=20000  # env steps map to 1-3 tiny epochs, in order, so a resume with a larger budget goes on
    for a in "$@"; do [[ $a == train.env_steps=* && ${{a#*=}} != *,* ]] && steps=${{a#*=}}; done
    n=$(( (steps + 10000) / 20000 )); (( n < 1 )) && n=1; (( n > 3 )) && n=3
    extra=({FAST_TRAIN} train.env_steps=$((40 + 8 * n))) ;;
  pretrain) extra=({FAST_PRETRAIN}) ;;
  train-policy) extra=({FAST_POLICY}) ;;
  fit-wm) extra=({FAST_FIT_WM}) ;;
  compare) extra=(--bootstrap 200 --diagnose-slices 8) ;;
  diagnose) extra=(--slices 8) ;;
  evaluate) extra=(--episodes 2 --envs 2) ;;
esac
[[ ${{1:-}} == demo ]] && set -- train "${{@:2}}"
exec "$real" "$@" "${{extra[@]}}"
"""
SUBMIT = f"""#!/bin/bash
# cluster/submit_job.sh with --dry-run appended (tests/test_docs.py): everything is checked, nothing submitted.
exec {shlex.quote(str(ROOT / "cluster" / "submit_job.sh"))} "$@" --dry-run
"""
ACTIVATE = """# tests/test_docs.py: this workspace's .venv/bin first on PATH
export VIRTUAL_ENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$VIRTUAL_ENV/bin:$PATH"
"""


@dataclass
class Block:
    doc: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    mark: str | None  # "run" | "skip" | None
    exit: int = 0
    reason: str = ""

    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """Every fenced code block of `doc`, with the test mark on the line before it."""
    lines, out, i = doc.read_text().splitlines(), [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang, start = m.group(1), m.group(2), i
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        code = "\n".join(line[len(indent):] for line in lines[i + 1:j]) + "\n"
        mark = MARK.match(lines[start - 1].strip()) if start > 0 else None
        b = Block(doc, start + 1, lang, code, None)
        if mark:
            b.mark = "skip" if mark.group(3) else "run"
            b.exit = int(mark.group(2) or 0)
            b.reason = mark.group(3) or ""
        out.append(b)
        i = j + 1
    return out


def headings(doc: Path) -> list[int]:
    """Heading levels in order (outside code blocks)."""
    levels, fenced = [], False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^(#{1,6}) \S", line)):
            levels.append(len(m.group(1)))
    return levels


# -- structure ------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_block_is_marked_run_or_skip_with_a_reason(doc):
    assert doc.is_file(), f"{doc} is missing"
    for b in blocks(doc):
        assert b.lang, f"{b.where()}: a fence without a language (use text for output, bash for commands)"
        if b.lang in COMMAND_LANGS and doc.name != "results.md":  # results.md: the lead's measurement log
            assert b.mark, f"{b.where()}: mark the {b.lang} block <!-- test: run --> or <!-- test: skip: why -->"
        if b.mark == "skip":
            assert len(b.reason) > 10, f"{b.where()}: say why the block cannot run here"


@pytest.mark.parametrize("guide", GUIDES)
def test_zh_tw_and_en_guides_have_the_same_sections_and_the_same_commands(guide):
    en, zh = EN / guide, ZH / guide
    assert headings(en) == headings(zh), f"{guide}: heading levels differ: en {headings(en)} zh-TW {headings(zh)}"
    be, bz = blocks(en), blocks(zh)
    assert [(b.lang, b.code) for b in be] == [(b.lang, b.code) for b in bz], \
        f"{guide}: code blocks (commands, output examples, diagrams) differ between en and zh-TW"
    assert [(b.mark, b.exit) for b in be] == [(b.mark, b.exit) for b in bz], f"{guide}: test marks differ"
    assert len(be) == len(bz)


def test_zh_tw_guides_are_written_in_traditional_chinese():
    simplified = set("们这进时为说对发么实现开关过还设计数据运")  # common simplified-only characters
    for guide in GUIDES:
        text = re.sub(r"```.*?```", "", (ZH / guide).read_text(), flags=re.S)
        assert len(re.findall(r"[\u4e00-\u9fff]", text)) > 200, f"zh-TW/{guide} has little Chinese prose"
        found = sorted(simplified & set(text))
        assert not found, f"zh-TW/{guide}: simplified characters {found}"


def test_no_email_addresses_personal_paths_or_accounts_in_the_docs():
    email = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
    for doc in ALL_DOCS + [EN.parent / "figures"]:
        for path in ([doc] if doc.is_file() else sorted(doc.glob("*.md"))):
            text = path.read_text()
            assert not email.search(text), f"{path}: an e-mail address: {email.search(text).group()}"
            assert "/work/" not in text and "/home/" not in text, f"{path}: a path of one machine"


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (letters of any script kept),
    spaces to hyphens."""
    out, fenced = set(), False
    for line in doc.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.+)$", line)):
            out.add(re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_relative_links_images_and_anchors_in_the_docs_exist():
    for doc in ALL_DOCS:
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path = (doc.parent / target) if target else doc
            assert path.exists(), f"{doc.relative_to(ROOT)}: broken link {target}"
            if anchor and path.suffix == ".md":
                assert anchor in anchors(path), f"{doc.relative_to(ROOT)}: no heading #{anchor} in {target or doc.name}"


def test_the_readme_figures_were_made_by_flowpwm_compare_and_the_command_is_beside_them():
    text = (ROOT / "README.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((docs/figures/[^)]+\.png)\)", text)
    assert figures, "README.md shows no figure from docs/figures/"
    for fig in figures:
        assert (ROOT / fig).stat().st_size > 10_000
        assert f"cp comparison-" in text and "flowpwm compare" in text and Path(fig).name in text


# -- the commands run -----------------------------------------------------------------------------
def workspace(tmp: Path) -> Path:
    ws = tmp / "checkout"
    ws.mkdir()
    for name in ("configs", "scripts", "benchmarks", "src", "Makefile", "pyproject.toml"):
        (ws / name).symlink_to(ROOT / name)
    (ws / "docs" / "figures").mkdir(parents=True)  # the docs' own commands write here: never into the repo
    cluster = ws / "cluster"
    cluster.mkdir()
    for f in (ROOT / "cluster").iterdir():
        (cluster / f.name).symlink_to(f)
    (cluster / "submit_job.sh").unlink()
    (cluster / "submit_job.sh").write_text(SUBMIT)
    bin_ = ws / ".venv" / "bin"
    bin_.mkdir(parents=True)
    (bin_ / "flowpwm").write_text(WRAPPER)
    (bin_ / "python").write_text(f'#!/bin/bash\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_ / "activate").write_text(ACTIVATE)
    for f in ((bin_ / "flowpwm"), (bin_ / "python"), (cluster / "submit_job.sh")):
        f.chmod(0o755)
    (bin_ / "python3").symlink_to("python")
    (ws / ".venv" / ".installed").touch()  # `make setup` is done: newer than pyproject.toml
    (ws / "home").mkdir()
    return ws


def run_env(ws: Path) -> dict[str, str]:
    path = f"{ws / '.venv' / 'bin'}:{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    return {"PATH": path, "HOME": str(ws / "home"), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
            "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "VIRTUAL_ENV": str(ws / ".venv"),
            "LANG": "C.UTF-8", "TERM": "dumb"}


def run_block(b: Block, ws: Path, env: dict[str, str]) -> None:
    if b.lang == "python":
        script = ws / f"block_{b.line}.py"
        script.write_text("import torch\ntorch.set_num_threads(1)\n" + b.code)
        cmd = [sys.executable, str(script)]
    else:
        cmd = ["bash", "-c", ("set -eo pipefail\n" if b.exit == 0 else "") + b.code]
    start = time.monotonic()
    r = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=300)
    print(f"{b.where()}: {time.monotonic() - start:.1f} s")  # pytest -s shows each block's time
    out = f"\n--- {b.where()} ---\n{b.code}--- stdout ---\n{r.stdout[-4000:]}--- stderr ---\n{r.stderr[-4000:]}"
    assert r.returncode == b.exit, f"exit status {r.returncode}, expected {b.exit}{out}"


@pytest.mark.parametrize("doc", RUN_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_runnable_block_of_the_doc_runs(doc, tmp_path):
    ws = workspace(tmp_path)
    env = run_env(ws)
    runnable = [b for b in blocks(doc) if b.mark == "run"]
    assert runnable, f"{doc}: no runnable block"
    for b in runnable:
        run_block(b, ws, env)
