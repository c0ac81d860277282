"""Issue 13: broken run directories, bad flags and other verbs.

One small finished sweep is made once per module; each test breaks a copy of it the way a user
or a crash would (deleted media, a symlink out, a damaged or read-only store, a full disk) and
checks the message, the exit code, and that nothing was lost or written outside.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from repro.cli import main
from repro.store import Store
from tests.conftest import ROOT, tiny_spec_dict

pytestmark = pytest.mark.slow


def small_spec(run_dir: Path, **changes) -> dict:
    gen = changes.pop("generation", None) or {"height": 16, "width": 16, "num_frames": 5, "num_inference_steps": 2,
                                              "guidance_scale": 5.0, "max_sequence_length": 16}
    return tiny_spec_dict(run_dir, prompts=["a red fox in snow"], generation=gen,
                          methods=[{"name": "first_block_cache", "sweep": {"threshold": [0.3]}}], **changes)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(out, code: int, needle: str) -> str:
    assert out.exit_code == code, out.output
    assert "Traceback" not in out.output and (out.exception is None or isinstance(out.exception, SystemExit))
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and len(lines[0]) < 1000, out.stderr
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    base = tmp_path_factory.mktemp("finished")
    spec_path = base / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(small_spec(base / "run")))
    out = invoke("sweep", spec_path)
    assert out.exit_code == 0, out.output
    return base / "run"


@pytest.fixture
def run_copy(finished, tmp_path):
    """A copy of the finished run and a spec that writes to it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(run)))
    return run, spec


def cached_row(run: Path) -> dict:
    store = Store(run)
    row = store.generations(role="cached")[0]
    store.close()
    return row


# -- media -----------------------------------------------------------------------------------


def test_deleted_media_is_not_trusted_and_is_regenerated(run_copy):
    run, spec = run_copy
    row = cached_row(run)
    shutil.rmtree(run / row["media_dir"])

    listed = invoke("pareto", run)
    assert listed.exit_code == 0, listed.output
    assert "t=0.3" not in listed.stdout  # a point without its media is not on any front

    rescored = invoke("score", run, "--force")
    assert rescored.exit_code == 0, rescored.output
    assert "lost their media" in rescored.stderr

    again = invoke("sweep", spec)
    assert again.exit_code == 0, again.output
    assert re.search(r"(^|\n)1 generation\(s\) .*to run", again.stderr), again.stderr
    assert (run / row["media_dir"]).is_dir()
    assert "t=0.3" in invoke("pareto", run).stdout


def test_run_dir_with_a_png_per_frame_is_read_as_before(run_copy):
    """A run directory written before videos became one lossless file (frames.mkv): its folders of
    frame_*.png are trusted as they are (nothing regenerated or rewritten), rescore to the same values."""
    import numpy as np
    from PIL import Image

    from experiments.media import read_frames

    run, spec = run_copy
    store = Store(run)
    before, gens = store.scores(), store.generations(status="ok")
    store.close()
    decoded = {g["key"]: read_frames(run / g["media_dir"]) for g in gens}  # differences need their baselines
    for g in gens:  # rewrite each folder as the PNG-per-frame code wrote it
        folder = run / g["media_dir"]
        frames = decoded[g["key"]]
        for f in folder.iterdir():
            f.unlink()
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(folder / f"frame_{i:05d}.png", compress_level=1)
        assert np.array_equal(read_frames(folder), frames)
    legacy = {g["key"]: sorted(os.listdir(run / g["media_dir"])) for g in gens}

    again = invoke("sweep", spec)
    assert again.exit_code == 0, again.output
    rescored = invoke("score", run, "--force")
    assert rescored.exit_code == 0, rescored.output
    assert "lost their media" not in rescored.stderr
    store = Store(run)
    after, rows = store.scores(), store.generations()
    store.close()
    assert {g["key"]: g["attempts"] for g in rows} == {g["key"]: g["attempts"] for g in gens}  # none regenerated
    assert {g["key"]: sorted(os.listdir(run / g["media_dir"])) for g in gens} == legacy  # none rewritten
    assert after.keys() == before.keys() and after
    for key, metrics in before.items():
        for name, s in metrics.items():
            assert after[key][name]["per_frame"] == s["per_frame"], (key, name)


def test_media_symlink_out_of_the_run_dir_is_refused(run_copy, tmp_path):
    run, spec = run_copy
    outside = tmp_path / "elsewhere"
    shutil.move(run / "media", outside)
    (outside / ".tmp-precious").write_text("not ours")
    os.symlink(outside, run / "media")
    before = sorted(p.name for p in outside.iterdir())
    one_line_error(invoke("sweep", spec), 2, "outside the run directory")
    assert sorted(p.name for p in outside.iterdir()) == before
    assert (outside / ".tmp-precious").read_text() == "not ours"


def test_a_planted_wandb_ledger_link_out_of_the_run_dir_is_refused_and_never_written(run_copy, tmp_path):
    from repro.tracking import LEDGER

    run, spec = run_copy
    outside = tmp_path / "someone-elses-file"
    outside.write_text("not ours\n")
    os.symlink(outside, run / LEDGER)  # the tracker appends to this path
    one_line_error(invoke("sweep", spec, "--set", "wandb.mode=offline"), 2, "outside the run directory")
    assert outside.read_text() == "not ours\n"


def test_generation_folder_symlink_out_is_refused(run_copy, tmp_path):
    run, spec = run_copy
    row = cached_row(run)
    target = tmp_path / "gen-elsewhere"
    shutil.move(run / row["media_dir"], target)
    os.symlink(target, run / row["media_dir"])
    one_line_error(invoke("sweep", spec), 2, "symbolic link")


# -- the store ---------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_damaged_store_gives_one_message_and_is_never_overwritten(run_copy, damage):
    run, spec = run_copy
    db = run / "results.sqlite"
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (run / extra).unlink(missing_ok=True)
    if damage == "garbage":
        db.write_bytes(b"this is not a database\n" * 100)
    else:
        data = db.read_bytes()
        db.write_bytes(data[: len(data) // 2])
    before = db.read_bytes()
    for args in (("sweep", spec), ("pareto", run), ("export", run), ("best", run, "--min", "psnr=10"),
                 ("score", run), ("figures", run)):
        one_line_error(invoke(*args), 2, "results.sqlite")
    assert db.read_bytes() == before


def test_run_killed_before_its_first_row_says_no_results_yet(tmp_path):
    run = tmp_path / "run"
    store = Store(run)
    store.set_meta(spec={"name": "t"})
    store.close()
    for args in (("pareto", run), ("figures", run), ("best", run, "--max", "lpips=0.1"), ("export", run)):
        out = invoke(*args)
        assert out.exit_code == 1, out.output
        assert "no results yet" in out.stderr and "Traceback" not in out.output


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


needs_namespaces = pytest.mark.skipif(not _can_unshare(), reason="needs unshare (user + mount namespaces)")


def in_namespace(script: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a shell script as root of a private mount namespace (so it may mount tmpfs or read-only binds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


@needs_namespaces
def test_read_only_run_dir_can_be_inspected(run_copy, tmp_path):
    run, _ = run_copy
    out = tmp_path / "out"
    out.mkdir()
    py = f"{sys.executable} -m repro.cli"
    script = (f"set -e; mount --bind {run} {run}; mount -o remount,bind,ro {run}; "
              f"{py} pareto {run}; {py} best {run} --min psnr=1; {py} export {run} --out {out}; "
              f"{py} figures {run} --out {out}/figures --format png; "
              f"if {py} score {run} --force 2>{out}/score.err; then echo score-wrote; exit 1; fi")
    done = in_namespace(script)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "points.csv").is_file() and any((out / "figures").glob("*.png"))
    err = (out / "score.err").read_text()
    assert "read-only" in err and "Traceback" not in err


@needs_namespaces
def test_disk_full_names_the_disk_and_a_rerun_recovers(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    spec = tmp_path / "spec.yaml"
    # about 300 KB of lossless media per generation: the disk holds the store and the first one, not the second
    gen = {"height": 256, "width": 256, "num_frames": 9, "num_inference_steps": 2, "guidance_scale": 5.0,
           "max_sequence_length": 16}
    spec.write_text(yaml.safe_dump(small_spec(disk / "run", generation=gen)))
    py = f"{sys.executable} -m repro.cli"
    script = (f"mount -t tmpfs -o size=512k tmpfs {disk}; {py} sweep {spec} 2>{tmp_path}/first.err; "
              f"echo first=$?; mount -o remount,size=64m {disk}; {py} sweep {spec} 2>{tmp_path}/second.err; "
              f"echo second=$?; {py} pareto {disk}/run; ls {disk}/run/media")
    done = in_namespace(script)
    first = (tmp_path / "first.err").read_text()
    assert "first=6" in done.stdout, first
    errors = [ln for ln in first.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no space left on the disk mounted at" in errors[0] and "MiB free" in errors[0]
    assert "Traceback" not in first
    assert "second=0" in done.stdout, (tmp_path / "second.err").read_text()
    assert "t=0.3" in done.stdout


# -- output dir and --only -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["root", "home", "foreign"])
def test_out_dir_that_is_not_a_run_dir_is_refused(tmp_path, monkeypatch, where):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    foreign = tmp_path / "papers"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    out = {"root": "/", "home": str(home), "foreign": str(foreign)}[where]
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(tmp_path / "run")))
    # --dry-run: code without the check would write into `/` for real; a dry run only prints
    one_line_error(invoke("sweep", spec, "--out", out, *(["--dry-run"] if where == "root" else [])), 2, "--out")
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    assert list(home.iterdir()) == []


def test_only_matching_nothing_is_refused_before_anything_exists(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(small_spec(tmp_path / "run")))
    one_line_error(invoke("sweep", spec, "--only", "seed=99"), 2, "matches no generation")
    assert not (tmp_path / "run").exists()


# -- other verbs --------------------------------------------------------------------------------


def test_best_refuses_a_nan_bound(finished):
    one_line_error(invoke("best", finished, "--min", "psnr=nan"), 2, "finite number")
    one_line_error(invoke("best", finished, "--max", "lpips=inf"), 2, "finite number")


def test_best_on_a_metric_that_was_not_scored_says_so(finished):
    one_line_error(invoke("best", finished, "--max", "lpips=0.1"), 2, "LPIPS was not scored")


def test_methods_with_an_unknown_family(tmp_path):
    one_line_error(invoke("methods", "--family", "nope"), 2, "unknown model family 'nope'")


def test_score_with_an_unknown_metric(run_copy):
    run, _ = run_copy
    one_line_error(invoke("score", run, "--set", "metrics.names=[fid]"), 2, "metrics.names[0]")


def _stored_spec(run: Path) -> dict:
    store = Store(run)
    try:
        return store.meta()["spec"]
    finally:
        store.close()


@pytest.mark.parametrize("override", ["generation.num_inference_steps=3", "model.dtype=bfloat16", "timing.repeats=3",
                                      "prompt_set.reportable=true", "seeds=[0, 1, 2]"])
def test_score_refuses_a_change_to_how_the_outputs_were_made(run_copy, override):
    run, spec = run_copy
    before = _stored_spec(run)
    field = override.partition("=")[0]
    line = one_line_error(invoke("score", run, "--set", "metrics.names=[psnr]", "--set", override), 2, field)
    assert "only metrics.*" in line and "repro sweep" in line  # what makes outputs with other settings
    assert _stored_spec(run) == before
    again = invoke("sweep", spec)  # the run directory still holds the experiment it was made with
    assert again.exit_code == 0, again.output


def test_score_changes_a_metric_network_only_when_rescoring_everything(run_copy):
    run, spec = run_copy
    before = _stored_spec(run)
    one_line_error(invoke("score", run, "--set", "metrics.lpips_net=vgg"), 2, "--force")
    assert _stored_spec(run) == before  # no scores of two networks mixed in one run
    out = invoke("score", run, "--force", "--set", "metrics.lpips_net=vgg")
    assert out.exit_code == 0, out.output
    assert _stored_spec(run)["metrics"]["lpips_net"] == "vgg"


def test_a_new_metric_network_never_leaves_the_old_networks_scores_behind(tmp_path):
    """Rescoring with another LPIPS network: a generation that cannot be rescored (its media are gone) loses its
    old-network score instead of keeping it beside the new network's scores of the others."""
    run, spec = tmp_path / "run", tmp_path / "spec.yaml"
    data = small_spec(run, generation={"height": 32, "width": 32, "num_frames": 5, "num_inference_steps": 2,
                                       "guidance_scale": 5.0, "max_sequence_length": 16})  # LPIPS needs 31 pixels
    data["prompts"] = ["a red fox in snow", "a lighthouse at night"]
    spec.write_text(yaml.safe_dump(data))
    assert invoke("sweep", spec).exit_code == 0
    added = invoke("score", run, "--set", "metrics.names=[psnr,ssim,lpips]", "--set", "metrics.allow_random_weights=true")
    assert added.exit_code == 0 and "scored 2 generation(s)" in added.output, added.output
    row = cached_row(run)
    shutil.rmtree(run / row["media_dir"])
    out = invoke("score", run, "--force", "--set", "metrics.lpips_net=vgg")
    assert out.exit_code == 0, out.output
    store = Store(run)
    labels = {k: s["lpips"]["label"] for k, s in store.scores().items() if "lpips" in s}
    store.close()
    assert row["key"] not in labels, labels[row["key"]]
    assert labels and all("vgg" in label for label in labels.values()), labels


def test_figures_are_never_left_truncated_under_their_final_names(tmp_path):
    """A figure whose drawing fails half-way (the PDF header is already written) leaves the old file intact."""
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist

    from paper_figures.figure import save_figure

    class Exploding(Artist):
        def draw(self, renderer):
            raise OSError("disk went away mid-figure")

    (tmp_path / "fig.pdf").write_bytes(b"%PDF-old complete file")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.add_artist(Exploding())
    with pytest.raises(OSError):
        save_figure(fig, tmp_path, "fig", ["pdf"])
    assert (tmp_path / "fig.pdf").read_bytes() == b"%PDF-old complete file"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.pdf"]
