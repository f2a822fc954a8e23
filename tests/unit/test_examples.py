"""The shipped examples stay usable: the annotated configuration loads, the unit and manifest hold
together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from exporter.collectors import KINDS
from exporter.config import load
from exporter.web_config import WebConfigFile, parse_web_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def test_example_configuration_loads_once_its_paths_exist(tmp_path: Path) -> None:
    """Every key in the example is a real key with a valid value (unknown keys would be errors)."""
    www, secrets = tmp_path / "www", tmp_path / "secrets"
    for d in ("resources/views", "storage/framework/views"):
        (www / "shop" / d).mkdir(parents=True)
    secrets.mkdir()
    text = (EXAMPLES / "cachewarden.yaml").read_text(encoding="utf-8")
    for name in ("redis-password", "reports-db-password", "cachewarden-heal-token"):
        (secrets / name).write_text("x\n", encoding="utf-8")
    path = tmp_path / "cachewarden.yaml"
    path.write_text(text.replace("/var/www/", f"{www}/").replace("/run/secrets/", f"{secrets}/"),
                    encoding="utf-8")

    config = load(path)

    assert [t.name for t in config.laravel] == ["shop"]
    assert [t.name for t in config.php_fpm] == ["www"]
    assert [t.name for t in config.redis] == ["cache"]
    assert [t.name for t in config.databases] == ["main", "reports"]
    assert [t.name for t in config.app_stats] == ["catalog-cache"]
    assert config.heal.token_file is not None
    assert config.heal.token_file.read_text() == "x\n"
    assert config.collectors.sql.interval == 30.0


def test_example_configuration_names_every_collector_and_section() -> None:
    data = yaml.safe_load((EXAMPLES / "cachewarden.yaml").read_text(encoding="utf-8"))
    assert set(data["collectors"]) == set(KINDS)
    assert {"laravel", "php_fpm", "redis", "databases", "app_stats", "heal"} <= set(data)


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_is_hardened_and_writes_only_where_it_must() -> None:
    settings = unit_settings((EXAMPLES / "systemd" / "cachewarden.service").read_text(encoding="utf-8"))
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["NoNewPrivileges"] == ["yes"]
    assert settings["ReadWritePaths"] == ["/var/www/shop/storage/framework/views", "/var/lib/cachewarden"]
    assert settings["CapabilityBoundingSet"] == [""]
    assert settings["User"] == ["www-data"]
    assert settings["ExecStart"][0].endswith(
        "cachewarden serve --config.file /etc/cachewarden/cachewarden.yaml"
        " --web.config.file /etc/cachewarden/web-config.yml")


def manifests() -> list[dict[str, Any]]:
    text = (EXAMPLES / "kubernetes" / "sidecar.yaml").read_text(encoding="utf-8")
    return [d for d in yaml.safe_load_all(text) if d]


def test_kubernetes_sidecar_shares_the_app_and_the_fpm_socket_with_php_fpm() -> None:
    (deployment,) = [d for d in manifests() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    mounts = {name: {m["name"]: m["mountPath"] for m in c["volumeMounts"]} for name, c in containers.items()}
    volumes = {v["name"] for v in pod["spec"]["volumes"]}

    assert set(containers) == {"php-fpm", "cachewarden"}
    for shared in ("app-code", "app-storage", "fpm-socket", "cachewarden-agent"):
        assert mounts["php-fpm"][shared] == mounts["cachewarden"][shared], shared
    assert {m for c in mounts.values() for m in c} <= volumes
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true", "prometheus.io/port": "9590", "prometheus.io/path": "/metrics",
        "prometheus.io/scheme": "https"}


def sidecar_container() -> dict[str, Any]:
    (deployment,) = [d for d in manifests() if d["kind"] == "Deployment"]
    containers = deployment["spec"]["template"]["spec"]["containers"]
    (sidecar,) = [c for c in containers if c["name"] == "cachewarden"]
    return dict(sidecar)


def test_kubernetes_sidecar_probes_healthz_and_runs_unprivileged() -> None:
    sidecar = sidecar_container()
    assert sidecar["ports"] == [{"name": "metrics", "containerPort": 9590}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert sidecar[probe]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTPS"}
    assert sidecar["securityContext"]["runAsNonRoot"] is True
    assert sidecar["securityContext"]["allowPrivilegeEscalation"] is False


def test_kubernetes_config_map_holds_a_configuration_with_the_sockets_address() -> None:
    (config_map,) = [d for d in manifests() if d["kind"] == "ConfigMap"]
    config = yaml.safe_load(config_map["data"]["cachewarden.yaml"])
    sidecar = sidecar_container()
    socket_dir = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}["fpm-socket"]
    assert config["php_fpm"][0]["address"].startswith(f"unix:{socket_dir}/")


def test_example_web_configuration_loads_once_its_certificate_exists(tmp_path: Path) -> None:
    """examples/web-config.yml is the exporters' format, read strictly: every key real, the hash bcrypt."""
    from tests.support.tls import make_ca

    pair = make_ca(tmp_path).issue(tmp_path, "tls")
    text = (EXAMPLES / "web-config.yml").read_text(encoding="utf-8")
    path = tmp_path / "web-config.yml"
    path.write_text(text.replace("/etc/cachewarden/tls/tls.crt", str(pair.cert))
                    .replace("/etc/cachewarden/tls/tls.key", str(pair.key)), encoding="utf-8")

    web = WebConfigFile(path)

    assert web.tls
    assert set(web.current.basic_auth_users) == {"prometheus"}


def test_kubernetes_sidecar_serves_tls_from_cert_managers_secret(tmp_path: Path) -> None:
    (config_map,) = [d for d in manifests() if d["kind"] == "ConfigMap"]
    sidecar = sidecar_container()
    args = sidecar["args"]
    config_dir = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}["config"]
    assert args[args.index("--web.config.file") + 1] == f"{config_dir}/web-config.yml"
    web = yaml.safe_load(config_map["data"]["web-config.yml"])
    tls_dir = {m["name"]: m["mountPath"] for m in sidecar["volumeMounts"]}["tls"]
    assert web["tls_server_config"]["cert_file"] == f"{tls_dir}/tls.crt"
    assert web["tls_server_config"]["key_file"] == f"{tls_dir}/tls.key"
    (deployment,) = [d for d in manifests() if d["kind"] == "Deployment"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "shop-cachewarden-tls"  # as the header comment says
    # The ConfigMap's web configuration is valid as written (its files aside).
    path = tmp_path / "web-config.yml"
    path.write_text(config_map["data"]["web-config.yml"], encoding="utf-8")
    parse_web_config(path.read_text(encoding="utf-8"), str(path), tmp_path)
