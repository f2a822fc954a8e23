"""`--web.config.file`: the web configuration format every Prometheus exporter reads, and its TLS context.

The format is exporter-toolkit's (docs/web-configuration.md): `tls_server_config`, `http_server_config`,
`basic_auth_users` (bcrypt hashes) and `rate_limit`, read strictly as its `yaml.UnmarshalStrict` does:
an unknown or duplicate key is an error naming its path, relative file paths are relative to the
file's directory, and only the response headers the toolkit allows may be set, with its values.

Python's ssl module (OpenSSL) stands where Go's crypto/tls does, which decides three differences,
each refused with the reason rather than half-applied:
- `client_auth_type` RequestClientCert and RequireAnyClientCert ask for a certificate without
  verifying it, which OpenSSL offers only through a verify callback Python does not expose. The
  toolkit calls them insecure; VerifyClientCertIfGiven and RequireAndVerifyClientCert work.
- `curve_preferences`: Python's ssl module sets no group list, so OpenSSL's default order applies.
- `cipher_suites` take Go's (IANA) names and are mapped to OpenSSL's; as in Go they govern TLS 1.2
  and older, TLS 1.3 suites are accepted and left to the library.
HTTP/2 is not served (aiohttp speaks HTTP/1.1); `http2` is accepted, ALPN offers `http/1.1`.

Reloading (`WebConfigFile`): the toolkit re-reads the file on every request and the certificate on
every handshake. Here the web configuration file and the certificate, key and client CA files are
stat()ed on each new connection (four syscalls, against a handshake's milliseconds) and the context
rebuilt when one changed, so a cert-manager rotation needs no restart. A new state that does not
load (a certificate written before its key, a typo) is logged once and the last good one keeps
serving: the process never drops to plain HTTP or to no authentication.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)

from exporter.config import ConfigError, _format_errors

log = logging.getLogger(__name__)

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

# Go's tls.CipherSuites() names and OpenSSL's for the same suite (`openssl ciphers -stdname`).
# None: a TLS 1.3 suite, which Go's cipher_suites do not govern either.
CIPHER_SUITES: dict[str, str | None] = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}

# The headers the toolkit lets a configuration set, with their allowed values (None: any).
EXTRA_HEADERS: dict[str, tuple[str, ...] | None] = {
    "Strict-Transport-Security": None,
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": None,
    "Content-Security-Policy": None,
}

_BCRYPT_HASH = re.compile(r"^\$2[abxy]\$(\d\d)\$[./A-Za-z0-9]{53}$")  # the forms the bcrypt package reads
_GO_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_duration(value: Any) -> Any:
    """A Go duration ("1m30s", "500ms", "0") as seconds; yaml.v2 reads a bare integer as nanoseconds."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value * 1e-9
    if isinstance(value, str):
        if value in ("0", "+0", "-0"):
            return 0.0
        if not value or _GO_DURATION.sub("", value) != "":
            raise ValueError(f"not a duration: {value!r} (use e.g. 1s, 500ms, 1m30s)")
        return sum(float(n) * _GO_UNITS[u] for n, u in _GO_DURATION.findall(value))
    return value


class _Strict(BaseModel):
    # yaml.UnmarshalStrict: a key the format does not have is an error, never ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Strict):
    cert: str = ""
    key: SecretStr = SecretStr("")
    client_ca: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_auth_type: Literal["", "NoClientCert", "RequestClientCert", "RequireAnyClientCert",
                              "RequireClientCert", "VerifyClientCertIfGiven",
                              "RequireAndVerifyClientCert"] = "NoClientCert"
    client_ca_file: str = ""
    client_allowed_sans: list[str] | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"
    cipher_suites: list[str] = []
    prefer_server_cipher_suites: bool = True
    curve_preferences: list[Literal["CurveP256", "CurveP384", "CurveP521", "X25519"]] = []

    @property
    def enabled(self) -> bool:
        """Whether any TLS key is set (the toolkit's IsEnabled): then it must be complete."""
        return bool(self.cert_file or self.cert or self.key_file or self.key.get_secret_value()
                    or self.client_ca_file or self.client_ca
                    or self.client_auth_type not in ("", "NoClientCert"))

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return {"VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
                "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}.get(self.client_auth_type, ssl.CERT_NONE)

    @model_validator(mode="after")
    def _consistent(self) -> TlsServerConfig:
        problems = []
        if self.enabled:
            if not (self.cert_file or self.cert):
                problems.append("missing one of cert or cert_file")
            if not (self.key_file or self.key.get_secret_value()):
                problems.append("missing one of key or key_file")
        if self.cert and self.cert_file:
            problems.append("cert and cert_file are both set: use one")
        if self.key.get_secret_value() and self.key_file:
            problems.append("key and key_file are both set: use one")
        if self.client_auth_type in ("RequestClientCert", "RequireAnyClientCert", "RequireClientCert"):
            problems.append(f"client_auth_type {self.client_auth_type} (a client certificate asked for "
                            "but not verified) is not supported: use RequireAndVerifyClientCert with "
                            "client_ca_file")
        if (self.client_ca_file or self.client_ca) and self.verify_mode == ssl.CERT_NONE:
            problems.append("client CAs are configured without a client_auth_type")
        if self.client_allowed_sans is not None and self.verify_mode != ssl.CERT_REQUIRED:
            problems.append("client_allowed_sans requires client_auth_type RequireAndVerifyClientCert")
        if TLS_VERSIONS[self.min_version] > TLS_VERSIONS[self.max_version]:
            problems.append(f"min_version {self.min_version} is above max_version {self.max_version}")
        if unknown := [c for c in self.cipher_suites if c not in CIPHER_SUITES]:
            problems.append(f"unknown cipher: {unknown[0]} (Go's names, e.g. "
                            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
        if self.curve_preferences:
            problems.append("curve_preferences is not supported: Python's ssl module sets no list of "
                            "groups, OpenSSL's default order applies (X25519 first)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class HttpServerConfig(_Strict):
    http2: bool = True  # accepted for compatibility; HTTP/1.1 is served either way
    headers: dict[str, str] = {}

    @model_validator(mode="after")
    def _allowed_headers(self) -> HttpServerConfig:
        for name, value in self.headers.items():
            if name not in EXTRA_HEADERS:
                raise ValueError(f"HTTP header {name!r} can not be configured (allowed: "
                                 f"{', '.join(EXTRA_HEADERS)})")
            allowed = EXTRA_HEADERS[name]
            if allowed is not None and value not in allowed:
                raise ValueError(f"invalid value for {name}: expected one of {list(allowed)}, "
                                 f"got {value!r}")
        return self


class RateLimit(_Strict):
    interval: Annotated[float, BeforeValidator(_go_duration), Field(ge=0)] = 0.0  # seconds; 0: off
    burst: Annotated[int, Field(ge=0)] = 0


def _bcrypt_hash(value: Any) -> Any:
    if isinstance(value, str) and not _BCRYPT_HASH.match(value):
        raise ValueError("not a bcrypt hash (make one with: htpasswd -nBC 10 '' | tr -d ':\\n')")
    if isinstance(value, str) and not 4 <= int(value[4:6]) <= 31:
        raise ValueError("bcrypt cost out of range (4 to 31)")
    return value


class ExporterWebConfig(_Strict):
    tls_server_config: TlsServerConfig = TlsServerConfig()
    http_server_config: HttpServerConfig = HttpServerConfig()
    rate_limit: RateLimit = RateLimit()
    basic_auth_users: dict[str, Annotated[str, BeforeValidator(_bcrypt_hash)]] = {}


class _StrictLoader(yaml.SafeLoader):
    """yaml.v2's UnmarshalStrict also refuses a key given twice, which PyYAML would let the last win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} already set in map", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_web_config(text: str, source: str, base_dir: Path) -> tuple[ExporterWebConfig, TlsFiles]:
    """The web configuration in `text` and its TLS files (made absolute against `base_dir`).

    Raises ConfigError listing every problem, each with its path (`tls_server_config.min_version: …`).
    """
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["the top level must be a mapping of keys"])
    try:
        config = ExporterWebConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc)) from None
    t = config.tls_server_config
    paths = (t.cert_file, t.key_file, t.client_ca_file)
    return config, TlsFiles(*(str(base_dir / p) if p else "" for p in paths))


@dataclass(frozen=True, slots=True)
class TlsFiles:
    cert_file: str
    key_file: str
    client_ca_file: str


def build_ssl_context(tls: TlsServerConfig, files: TlsFiles) -> ssl.SSLContext:
    """A server context for `tls`; raises OSError or ValueError naming the file that does not load."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.min_version]
    ctx.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if ciphers := [c for s in tls.cipher_suites if (c := CIPHER_SUITES[s])]:
        ctx.set_ciphers(":".join(ciphers))
    ctx.set_alpn_protocols(["http/1.1"])
    _load_chain(ctx, tls, files)
    ctx.verify_mode = tls.verify_mode
    if ctx.verify_mode != ssl.CERT_NONE:
        if files.client_ca_file:
            try:
                ctx.load_verify_locations(cafile=files.client_ca_file)
            except ssl.SSLError as exc:
                raise ValueError(f"cannot load client_ca_file {files.client_ca_file}: "
                                 f"{exc.reason or exc}") from None
        elif tls.client_ca:
            ctx.load_verify_locations(cadata=tls.client_ca)
        else:  # Go verifies against the system's roots then
            ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    return ctx


def _load_chain(ctx: ssl.SSLContext, tls: TlsServerConfig, files: TlsFiles) -> None:
    # OpenSSL's errors do not name the file: say which one cannot be read first.
    for name, path in (("cert_file", files.cert_file), ("key_file", files.key_file),
                       ("client_ca_file", files.client_ca_file)):
        if path:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise ValueError(f"cannot read {name} {path}: {exc.strerror}") from None
    if files.cert_file and files.key_file:
        try:
            ctx.load_cert_chain(files.cert_file, files.key_file)
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load cert_file {files.cert_file} with key_file "
                             f"{files.key_file}: {exc.reason or exc}") from None
        return
    # Inline PEM: OpenSSL loads a chain only from files, so the PEM goes to a private temporary
    # directory for the call and is removed at once.
    with tempfile.TemporaryDirectory(prefix="cachewarden-tls-") as tmp:
        paths = []
        for name, path, inline in (("cert", files.cert_file, tls.cert),
                                   ("key", files.key_file, tls.key.get_secret_value())):
            if not path:
                path = os.path.join(tmp, name)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(inline)
            paths.append(path)
        try:
            ctx.load_cert_chain(paths[0], paths[1])
        except ssl.SSLError as exc:
            raise ValueError(f"cannot load the certificate and key: {exc.reason or exc}") from None


def _stamp(path: str) -> tuple[int, ...] | None:
    if not path:
        return None
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes Secret volume swaps a `..data` link
    except OSError:
        return (-1,)
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True, slots=True)
class _State:
    config: ExporterWebConfig
    files: TlsFiles
    ssl_context: ssl.SSLContext | None


class WebConfigFile:
    """The loaded `--web.config.file`, reloaded when it or its TLS files change.

    `current` is the last configuration that loaded whole; `ssl_context()` (None without TLS) is what a
    new connection is served with. Switching TLS on or off needs a restart, as with the toolkit.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._state = self._load()  # raises ConfigError: the process does not start on a bad file
        self._stamps = self._file_stamps(self._state.files)
        self._failed_stamps: tuple[Any, ...] | None = None

    @property
    def current(self) -> ExporterWebConfig:
        return self._state.config

    @property
    def tls(self) -> bool:
        return self._state.ssl_context is not None

    def secret_files(self) -> list[tuple[str, Path]]:
        """(key, file) of each private key this configuration reads: the key_file, or this file itself
        when it holds the key inline. Judged at start as the other secret files (exporter.secret_files)."""
        tls = self._state.config.tls_server_config
        if self._state.files.key_file:
            return [("tls_server_config.key_file", Path(self._state.files.key_file))]
        if tls.key.get_secret_value():
            return [("tls_server_config.key", self.path)]
        return []

    def _load(self) -> _State:
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(str(self.path), [f"cannot read the file: {exc.strerror}"]) from None
        config, files = parse_web_config(text, str(self.path), self.path.absolute().parent)
        context = None
        if config.tls_server_config.enabled:
            try:
                context = build_ssl_context(config.tls_server_config, files)
            except (OSError, ValueError) as exc:
                raise ConfigError(str(self.path), [f"tls_server_config: {exc}"]) from None
        return _State(config, files, context)

    def _file_stamps(self, files: TlsFiles) -> tuple[Any, ...]:
        return (_stamp(str(self.path)), _stamp(files.cert_file), _stamp(files.key_file),
                _stamp(files.client_ca_file))

    def refresh(self) -> None:
        """Reload if the file or its TLS files changed since the last load; keep the old state if the
        new one does not load, and say so once per change."""
        stamps = self._file_stamps(self._state.files)
        if stamps == self._stamps or stamps == self._failed_stamps:
            return
        try:
            state = self._load()
            if (state.ssl_context is None) != (self._state.ssl_context is None):
                raise ConfigError(str(self.path), ["switching TLS on or off needs a restart"])
        except ConfigError as exc:
            self._failed_stamps = stamps
            log.error("%s: %s; still serving the web configuration loaded before", self.path,
                      "; ".join(exc.problems))
            return
        self._state, self._stamps, self._failed_stamps = state, self._file_stamps(state.files), None
        log.info("reloaded %s%s", self.path, " and its certificate" if state.ssl_context else "")

    def ssl_context(self) -> ssl.SSLContext | None:
        """The context for a connection accepted now (after reloading what changed)."""
        self.refresh()
        return self._state.ssl_context


def peer_sans(peercert: dict[str, Any] | None) -> set[str]:
    """The subject alternative names of a verified peer certificate, as Go prints them (IPs canonical)."""
    out: set[str] = set()
    for kind, value in (peercert or {}).get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                value = str(ipaddress.ip_address(value.strip()))
            except ValueError:
                continue
        if kind in ("DNS", "email", "URI", "IP Address"):
            out.add(value)
    return out
