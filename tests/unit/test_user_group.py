"""One `user:group` type, parsed at load for every field that names an account, and trusted downstream."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from exporter.config import ConfigError, parse
from exporter.fs.access import UserGroup
from exporter.heal.actions.base import ActionContext
from exporter.heal.actions.safety import CompiledRoots
from exporter.heal.actions.views_permissions import FixPermissions
from exporter.heal.phpexec import PhpExecutor
from tests.support.healing import compiled_dir, make_app_dir, write_compiled


# Debian's fixed ids: www-data is 33, nobody 65534, nogroup 65534.
@pytest.mark.parametrize(("spec", "uid", "gid", "group_given", "name"), [
    ("33:33", 33, 33, True, "www-data"),
    ("33", 33, 33, False, "www-data"),
    ("www-data", 33, 33, False, "www-data"),
    ("www-data:www-data", 33, 33, True, "www-data"),
    ("nobody:65534", 65534, 65534, True, "nobody"),
    ("4000000000:4000000000", 4000000000, 4000000000, True, None),  # an id with no entry, as in containers
])
def test_names_and_numeric_ids_resolve_to_the_same_account(
        spec: str, uid: int, gid: int, group_given: bool, name: str | None) -> None:
    account = UserGroup.parse(spec)
    assert (account.uid, account.gid, account.group_given, account.name) == (uid, gid, group_given, name)
    assert str(account) == spec


def _with_account(tmp_path: Path, spec: Any) -> dict[str, Any]:
    root = make_app_dir(tmp_path / "shop")
    return {"laravel": [{"name": "shop", "root": str(root), "php_user": spec}],
            "heal": {"views_owner": spec,
                     "warm": [{"target": "shop", "commands": [{"argv": ["true"], "user": spec}]}]}}


@pytest.mark.parametrize(("spec", "why"), [
    ("no-such-user-cw", "no such user: 'no-such-user-cw'"),
    ("www-data:no-such-group-cw", "no such group: 'no-such-group-cw'"),
    ("4242", "user id 4242 has no passwd entry: name its group as '4242:GROUP'"),
    ("www-data:", "not 'user' or 'user:group'"),
    ("a:b:c", "not 'user' or 'user:group'"),
])
def test_every_field_naming_an_account_refuses_the_same_specs_at_load_with_its_path(
        tmp_path: Path, spec: str, why: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(_with_account(tmp_path, spec))
    problems = "\n".join(raised.value.problems)
    for path in ("laravel[0].php_user", "heal.views_owner", "heal.warm[0].commands[0].user"):
        assert path in problems
    assert problems.count(why) == 3


def test_every_field_naming_an_account_accepts_numeric_ids(tmp_path: Path) -> None:
    config = parse(_with_account(tmp_path, "33:33"))
    assert config.laravel[0].php_user == config.heal.views_owner == config.heal.warm[0].commands[0].user
    assert config.heal.views_owner is not None
    assert config.heal.views_owner.uid == 33
    assert config.heal.model_dump()["views_owner"] == "33:33"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
async def test_a_numeric_views_owner_is_applied_by_fix_permissions(tmp_path: Path) -> None:
    # It used to load and then fail in views.fix_permissions with "unknown user or group '33'".
    root = make_app_dir(tmp_path / "shop")
    view = write_compiled(root, str(root / "resources/views/a.blade.php"))
    config = parse({"laravel": [{"name": "shop", "root": str(root)}], "heal": {"views_owner": "33:33"}})
    ctx = ActionContext(config, PhpExecutor(config), CompiledRoots(config.laravel))
    outcome = await FixPermissions(ctx).run("shop", None, dry_run=False)
    assert outcome.ok, outcome.errors
    assert (view.stat().st_uid, view.stat().st_gid) == (33, 33)
    assert (compiled_dir(root).stat().st_uid, compiled_dir(root).stat().st_gid) == (33, 33)
