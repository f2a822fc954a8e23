"""How the heal writes a file: through the pinned directory, atomically, and only what PHP was asked for."""

from __future__ import annotations

import base64
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from exporter.fs.pinned import TMP_MARK, BadName, ForeignSymlink, PinnedDirectory, open_directory
from exporter.heal.actions.base import ActionOutcome
from exporter.heal.actions.opcache_file_cache import FileCacheFindings, purge
from exporter.heal.actions.safety import UnsafeTarget
from exporter.heal.actions.views_recompile import (
    CompiledView,
    batches,
    compiled_mtime,
    compiled_views,
    write_views,
)
from exporter.php.agent import Agent
from exporter.php.endpoint import FpmEndpoint
from exporter.php.fastcgi import Response

NAME = "b" * 40 + ".php"


def pinned(path: Path, verify_fails: list[str] | None = None) -> PinnedDirectory:
    def verify() -> None:
        if verify_fails:
            raise UnsafeTarget(verify_fails[0])

    return PinnedDirectory(os.open(path, os.O_RDONLY | os.O_DIRECTORY), path, verify)


def test_replace_swaps_a_symlink_for_a_regular_file_and_leaves_its_target_alone(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("theirs")
    target.chmod(0o600)
    d = tmp_path / "d"
    d.mkdir()
    (d / NAME).symlink_to(target)
    with pinned(d) as p:
        p.replace(NAME, b"ours", uid=-1, gid=-1, mode=0o640)
    assert target.read_text() == "theirs"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    st = os.lstat(d / NAME)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (d / NAME).read_bytes() == b"ours"


def test_replace_never_sets_more_than_the_permission_bits(tmp_path: Path) -> None:
    with pinned(tmp_path) as p:
        p.replace(NAME, b"x", uid=-1, gid=-1, mode=0o6755, mtime=1_000_000_000.0)
    st = os.lstat(tmp_path / NAME)
    assert stat.S_IMODE(st.st_mode) == 0o755
    assert st.st_mtime == 1_000_000_000.0


def test_a_failed_replace_leaves_the_old_entry_and_no_temporary_file(tmp_path: Path) -> None:
    (tmp_path / NAME).mkdir()  # rename(2) cannot put a file over a directory
    with pinned(tmp_path) as p, pytest.raises(IsADirectoryError):
        p.replace(NAME, b"x", uid=-1, gid=-1, mode=0o644)
    assert sorted(e.name for e in tmp_path.iterdir()) == [NAME]


@pytest.mark.parametrize("name", ["", ".", "..", "../x.php", "a/b.php", "x\0.php"])
def test_only_names_directly_in_the_directory_are_accepted(tmp_path: Path, name: str) -> None:
    with pinned(tmp_path) as p:
        with pytest.raises(BadName):
            p.replace(name, b"x", uid=-1, gid=-1, mode=0o644)
        with pytest.raises(BadName):
            p.unlink(name)
        with pytest.raises(BadName):
            p.lstat(name)
    assert list(tmp_path.iterdir()) == []


def test_the_pinned_directory_is_used_even_after_its_path_was_swapped(tmp_path: Path) -> None:
    d, outside = tmp_path / "d", tmp_path / "outside"
    d.mkdir()
    outside.mkdir()
    with pinned(d) as p:
        d.rename(tmp_path / "moved")
        d.symlink_to(outside)
        p.replace(NAME, b"x", uid=-1, gid=-1, mode=0o644)
    assert list(outside.iterdir()) == []
    assert (tmp_path / "moved" / NAME).read_bytes() == b"x"


def view(source: str, text: bytes = b"<?php echo 1; ?>") -> CompiledView:
    return CompiledView(source, NAME, text, None)


def test_nothing_is_written_once_the_pin_no_longer_holds(tmp_path: Path) -> None:
    outcome = ActionOutcome()
    with pinned(tmp_path, verify_fails=["the compiled directory was replaced"]) as p:
        written = write_views(p, [view("/v/a.blade.php")], (-1, -1), 0o644, outcome)
    assert written == []
    assert list(tmp_path.iterdir()) == []
    assert outcome.errors == ["/v/a.blade.php: not written: the compiled directory was replaced"]


def test_a_new_compiled_file_gets_the_directorys_owner_and_the_configured_mode(tmp_path: Path) -> None:
    outcome = ActionOutcome()
    with pinned(tmp_path) as p:
        written = write_views(p, [view("/v/a.blade.php")], (-1, -1), 0o640, outcome)
    assert written == [f"{tmp_path}/{NAME}"]
    assert outcome.done == [f"compiled /v/a.blade.php -> {tmp_path}/{NAME}"]
    st, dir_st = os.lstat(tmp_path / NAME), tmp_path.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (dir_st.st_uid, dir_st.st_gid, 0o640)


def answer(*rows: dict[str, object]) -> dict[str, object]:
    return {"compiled": list(rows), "refused": [], "failed": []}


def test_a_compile_answer_is_taken_only_for_what_was_asked_and_named_like_a_view() -> None:
    ok = {"source": "/v/a.blade.php", "name": NAME, "contents": base64.b64encode(b"<p>").decode(),
          "source_mtime": 5}
    outcome = ActionOutcome()
    views = compiled_views(answer(
        ok,
        {**ok, "source": "/v/not-asked.blade.php"},
        {**ok, "name": "../../etc/cron.d/x"},
        {**ok, "name": f"{NAME}{TMP_MARK}1"},
        {**ok, "contents": "not base64!"},
    ), ["/v/a.blade.php"], outcome)
    assert views == [CompiledView("/v/a.blade.php", NAME, b"<p>", 5)]
    assert len(outcome.errors) == 4


def test_batches_keep_the_order_and_bound_bytes_and_count() -> None:
    views = [("a", 3), ("b", 3), ("c", 5), ("d", 1), ("e", 1), ("f", 1)]
    assert batches(views, max_bytes=6, max_views=2) == [["a", "b"], ["c", "d"], ["e", "f"]]
    assert batches([("huge", 100), ("x", 1)], max_bytes=6, max_views=10) == [["huge"], ["x"]]
    assert batches([], max_bytes=6, max_views=2) == []


def test_a_source_saved_this_second_gets_a_compiled_mtime_one_second_later() -> None:
    # Laravel recompiles while filemtime(source) >= filemtime(compiled), to the second.
    assert compiled_mtime(1000, 1000.4) == 1001.0
    assert compiled_mtime(999, 1000.4) is None
    assert compiled_mtime(None, 1000.4) is None
    assert compiled_mtime(5000, 1000.4) is None  # a source dated far ahead is not chased


def test_every_test_docs_security_names_for_the_files_the_heal_writes_exists() -> None:
    repo = Path(__file__).parents[2]
    text = (repo / "docs" / "security.md").read_text()
    section = text[text.index("## Files the heal writes"):]
    section = section[:section.find("\n## ", 1)] if "\n## " in section[1:] else section
    named, current = [], None
    for path, name in re.findall(r"`(tests/[\w/]+\.py|…)::(\w+)`", section):
        current = current if path == "…" else path
        named.append((current, name))
    assert len(named) >= 20
    missing = [f"{path}::{name}" for path, name in named
               if not re.search(rf"^(async )?def {name}\(", (repo / str(path)).read_text(), re.M)]
    assert missing == []


class SwappingEndpoint(FpmEndpoint):
    """Answers like FPM, after swapping agent_dir for a symlink to a directory holding a file of the
    script's very name, as someone who can rename agent_dir could while a request runs."""

    def __init__(self, agent_dir: Path, outside: Path) -> None:
        super().__init__("unix:/nonexistent.sock")
        self.agent_dir, self.outside = agent_dir, outside

    async def request(self, params: Mapping[str, str], stdin: bytes = b"", *, read_timeout: float,
                      wait_timeout: float | None = None) -> Response:
        name = Path(params["SCRIPT_FILENAME"]).name
        (self.outside / name).write_text("theirs")
        self.agent_dir.rename(self.agent_dir.with_name("parked"))
        self.agent_dir.symlink_to(self.outside)
        return Response(200, {}, b'{"ok": true, "result": 1, "errors": []}')


async def test_the_agent_script_removed_is_the_one_written_even_after_agent_dir_was_swapped(
        tmp_path: Path) -> None:
    agent_dir, outside = tmp_path / "agent", tmp_path / "outside"
    agent_dir.mkdir()
    outside.mkdir()
    agent = Agent(SwappingEndpoint(agent_dir, outside), agent_dir, timeout=1)

    assert (await agent.run("status")).result == 1

    assert [p.read_text() for p in outside.iterdir()] == ["theirs"]
    assert list((tmp_path / "parked").iterdir()) == []


root_only = pytest.mark.skipif(os.geteuid() != 0, reason="giving a symlink another owner needs root")


@root_only
def test_a_directory_is_reached_through_roots_symlinks_and_never_through_anyone_elses(tmp_path: Path) -> None:
    real = tmp_path / "data" / "cache"
    real.mkdir(parents=True)
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "cache").symlink_to("../data/cache")  # relative, with a `..`
    (tmp_path / "abs").symlink_to(real)
    for path in (real, tmp_path / "var" / "cache", tmp_path / "abs", tmp_path / "var" / ".." / "abs"):
        fd = open_directory(path)
        try:
            assert os.fstat(fd).st_ino == real.stat().st_ino
        finally:
            os.close(fd)
    os.lchown(tmp_path / "abs", 65534, 65534)  # as if the app's user had made it
    with pytest.raises(ForeignSymlink, match="owned by uid 65534"):
        open_directory(tmp_path / "abs")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        open_directory(tmp_path / "file")


FILE_CACHE_ID = "5605b5ef980d64f76a7c2b10eed887dd"


@root_only
@pytest.mark.parametrize("owner", [0, 65534])
def test_a_file_cache_is_purged_through_a_symlink_only_if_root_made_it(tmp_path: Path, owner: int) -> None:
    # FPM's user writes the file cache and may own its directory: it can swap that for a symlink
    # (here, before the measurement, so even the measured directory is the link's target).
    target = tmp_path / "elsewhere"
    orphan = target / FILE_CACHE_ID / "gone" / "a.php.bin"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"OPCACHE")
    link = tmp_path / "file-cache"
    link.symlink_to(target)
    os.lchown(link, owner, owner)
    findings = FileCacheFindings(str(target), FILE_CACHE_ID, None, {
        "orphaned": ["/gone/a.php"], "stale": [], "suspect": [], "outside_release": []}, configured=str(link))

    if owner == 0:
        assert purge(target, findings, dry_run=False).done == [f"deleted {orphan} (orphaned)"]
        assert not orphan.exists()
    else:
        with pytest.raises(UnsafeTarget, match="owned by uid 65534"):
            purge(target, findings, dry_run=False)
        assert orphan.exists()
