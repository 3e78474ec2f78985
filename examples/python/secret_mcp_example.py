#!/usr/bin/env python3
"""A Secret MCP client in Python, generated from the gRPC contract.

It generates the stubs from ``proto/secret_mcp/v1/secret_mcp.proto`` at run
time (into a temporary directory: no generated code is kept), then, against a
running server:

1. with an operator token, creates a tenant scope (an existing one is fine:
   ``created = false``) and a second, "other" tenant;
2. issues a short-lived owner token for the first tenant;
3. with that tenant token, puts a random value and gets it back;
4. with the same token, tries to get a path of the other tenant and checks
   that the server refuses with ``PERMISSION_DENIED``.

Environment:
  SECRET_MCP_ADDR        host:port, http://host:port or https://host:port
  SECRET_MCP_TOKEN       an operator token (``secret-mcp dev`` prints one)
  SECRET_MCP_TLS_CA      CA certificate (PEM) of the server; turns TLS on
  SECRET_MCP_TLS_CERT    client certificate (PEM), for mTLS servers
  SECRET_MCP_TLS_KEY     the client certificate's key (PEM)
  SECRET_MCP_TLS_DOMAIN  the name the server certificate carries, if it is
                         not the host of SECRET_MCP_ADDR
  SECRET_MCP_EXAMPLE_SCOPE   tenant to create (default: pyexample)

It prints one line per step, never a secret value or a token, and exits 0 on
success, 1 when a step fails and 2 on a usage or set-up error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import secrets
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

try:
    import grpc
    from grpc_tools import protoc
except ImportError as e:  # pragma: no cover - depends on the machine
    sys.exit(
        f"error: {e.name} is not installed: "
        f"python3 -m pip install -r {Path(__file__).parent / 'requirements.txt'}"
    )

PROTO_FILE = "secret_mcp/v1/secret_mcp.proto"
DEFAULT_PROTO_DIR = Path(__file__).resolve().parent.parent.parent / "proto"
SECRET_NAME = "example/greeting"
TOKEN_TTL_SECONDS = 600
CALL_TIMEOUT_SECONDS = 10.0


class StepFailed(Exception):
    """A step did not give the expected result."""


class SetupError(Exception):
    """Bad arguments or environment: nothing was tried on the server."""


@dataclass(frozen=True)
class Stubs:
    """The generated modules."""

    pb2: ModuleType
    pb2_grpc: ModuleType


@dataclass(frozen=True)
class Target:
    """Where and how to connect."""

    host_port: str
    tls: bool


def step(message: str) -> None:
    print(message, flush=True)


def fail(message: str, code: int) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def generate_stubs(proto_dir: Path) -> Stubs:
    """Runs protoc (bundled with grpcio-tools) and imports what it wrote."""
    proto = proto_dir / PROTO_FILE
    if not proto.is_file():
        raise SetupError(f"the contract {proto} does not exist (see --proto-dir)")
    well_known = Path(protoc.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory(prefix="secret-mcp-stubs-") as out:
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{proto_dir}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                PROTO_FILE,
            ]
        )
        if rc != 0:
            raise SetupError(f"protoc failed on {proto} (exit {rc})")
        sys.path.insert(0, out)
        try:
            pb2 = importlib.import_module("secret_mcp.v1.secret_mcp_pb2")
            pb2_grpc = importlib.import_module("secret_mcp.v1.secret_mcp_pb2_grpc")
        finally:
            sys.path.remove(out)
    step(f"stubs generated from {proto}")
    return Stubs(pb2, pb2_grpc)


def parse_addr(addr: str, tls_wanted: bool) -> Target:
    if addr.startswith("https://"):
        return Target(addr.removeprefix("https://").rstrip("/"), True)
    if addr.startswith("http://"):
        if tls_wanted:
            raise SetupError(f"{addr} is plaintext but SECRET_MCP_TLS_CA is set")
        return Target(addr.removeprefix("http://").rstrip("/"), False)
    if "://" in addr:
        raise SetupError(f"SECRET_MCP_ADDR: unsupported scheme in {addr!r}")
    return Target(addr, tls_wanted)


def read_pem(var: str) -> bytes | None:
    path = os.environ.get(var)
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise SetupError(f"{var}: cannot read {path}: {e.strerror}") from e


def open_channel(addr: str) -> tuple[grpc.Channel, str]:
    ca = read_pem("SECRET_MCP_TLS_CA")
    cert = read_pem("SECRET_MCP_TLS_CERT")
    key = read_pem("SECRET_MCP_TLS_KEY")
    if (cert is None) != (key is None):
        raise SetupError("SECRET_MCP_TLS_CERT and SECRET_MCP_TLS_KEY go together")
    domain = os.environ.get("SECRET_MCP_TLS_DOMAIN") or None
    target = parse_addr(addr, tls_wanted=ca is not None or cert is not None)
    if not target.tls:
        return grpc.insecure_channel(target.host_port), "plaintext"
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key, certificate_chain=cert
    )
    options = [("grpc.ssl_target_name_override", domain)] if domain else []
    channel = grpc.secure_channel(target.host_port, credentials, options=options)
    return channel, "mTLS" if cert is not None else "TLS"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Client:
    """The three services on one channel; every call names its step."""

    def __init__(self, stubs: Stubs, channel: grpc.Channel) -> None:
        self.pb2 = stubs.pb2
        self.system: Any = stubs.pb2_grpc.SystemStub(channel)
        self.tenants: Any = stubs.pb2_grpc.TenantsStub(channel)
        self.secrets: Any = stubs.pb2_grpc.SecretsStub(channel)

    @staticmethod
    def call(what: str, method: Callable[..., Any], request: Any, token: str | None) -> Any:
        """Calls `method`; a failure becomes a StepFailed saying which step."""
        metadata = bearer(token) if token is not None else None
        try:
            return method(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.RpcError as e:
            # Server messages never hold a value or a token (see the contract).
            raise StepFailed(f"{what}: {e.code().name}: {e.details()}") from None


def ensure_scope(client: Client, operator: str, slug: str) -> None:
    pb2 = client.pb2
    resp = client.call(
        f"create scope {slug}",
        client.tenants.CreateScope,
        pb2.CreateScopeRequest(slug=slug, kind=pb2.SCOPE_KIND_ENTERPRISE),
        operator,
    )
    if resp.scope.slug != slug:
        raise StepFailed(f"create scope {slug}: the answer is for {resp.scope.slug!r}")
    if resp.created:
        step(f"scope {slug}: created")
    else:
        step(f"scope {slug}: already exists (created=false)")


def run(client: Client, addr: str, mode: str, operator: str, scope: str, other: str) -> None:
    pb2 = client.pb2
    status = client.call("status", client.system.Status, pb2.StatusRequest(), None)
    if status.sealed:
        raise StepFailed(f"the server at {addr} is sealed: unseal it first")
    step(f"connected to {addr} ({mode}); server {status.version}, unsealed")

    # 1. Scopes, as the operator.
    ensure_scope(client, operator, scope)
    ensure_scope(client, operator, other)

    # 2. A tenant owner token, short-lived: the example leaves no lasting
    # credential behind.
    issued = client.call(
        f"issue an owner token for {scope}",
        client.tenants.IssueToken,
        pb2.IssueTokenRequest(
            tenant=scope,
            role="owner",
            ttl_seconds=TOKEN_TTL_SECONDS,
            description="python example client",
        ),
        operator,
    )
    tenant_token: str = issued.token
    if not tenant_token:
        raise StepFailed(f"issue an owner token for {scope}: no token in the answer")
    step(f"owner token issued for {scope} (id {issued.id}, expires in {TOKEN_TTL_SECONDS} s)")

    # 3. Put and get with the tenant token: the value round-trips.
    path = f"tenant/{scope}/{SECRET_NAME}"
    value = secrets.token_bytes(24)
    put = client.call(
        f"put {path}", client.secrets.Put, pb2.PutRequest(path=path, value=value), tenant_token
    )
    step(f"put {path}: version {put.version}")
    got = client.call(f"get {path}", client.secrets.Get, pb2.GetRequest(path=path), tenant_token)
    if got.version != put.version:
        raise StepFailed(f"get {path}: version {got.version}, expected {put.version}")
    if got.value != value:
        raise StepFailed(f"get {path}: the value read back differs from the one written")
    step(f"get {path}: version {got.version}, value round-trips ({len(value)} bytes)")

    # 4. Another tenant's path with the same token: refused.
    foreign = f"tenant/{other}/{SECRET_NAME}"
    what = f"get {foreign} with the {scope} token"
    try:
        client.secrets.Get(
            pb2.GetRequest(path=foreign),
            metadata=bearer(tenant_token),
            timeout=CALL_TIMEOUT_SECONDS,
        )
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.PERMISSION_DENIED:
            raise StepFailed(f"{what}: {e.code().name}, expected PERMISSION_DENIED") from None
        step(f"{what}: PERMISSION_DENIED, as expected")
    else:
        raise StepFailed(f"{what}: succeeded, a tenant token reached another tenant")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Secret MCP Python example: scope, tenant token, put/get, "
        "cross-tenant denial. Reads SECRET_MCP_ADDR and SECRET_MCP_TOKEN "
        "(an operator token)."
    )
    parser.add_argument(
        "scope",
        nargs="?",
        default=os.environ.get("SECRET_MCP_EXAMPLE_SCOPE", "pyexample"),
        help="tenant slug to create and use (default: $SECRET_MCP_EXAMPLE_SCOPE "
        "or pyexample)",
    )
    parser.add_argument(
        "--other",
        help="the other tenant, whose path must be refused (default: SCOPE-other)",
    )
    parser.add_argument(
        "--proto-dir",
        type=Path,
        default=Path(os.environ.get("SECRET_MCP_PROTO_DIR", DEFAULT_PROTO_DIR)),
        help="directory holding secret_mcp/v1/secret_mcp.proto (default: the "
        "repository's proto/)",
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    scope: str = args.scope
    other: str = args.other or f"{scope}-other"
    addr = os.environ.get("SECRET_MCP_ADDR", "")
    operator = os.environ.get("SECRET_MCP_TOKEN", "")
    try:
        if not addr:
            raise SetupError("SECRET_MCP_ADDR is not set (e.g. http://127.0.0.1:7443)")
        if not operator:
            raise SetupError(
                "SECRET_MCP_TOKEN is not set (an operator token: "
                "`secret-mcp dev` prints one)"
            )
        if other == scope:
            raise SetupError("the other tenant must differ from the scope")
        channel, mode = open_channel(addr)
        stubs = generate_stubs(args.proto_dir)
    except SetupError as e:
        fail(str(e), 2)
    try:
        with channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=CALL_TIMEOUT_SECONDS)
            except grpc.FutureTimeoutError:
                raise StepFailed(
                    f"cannot connect to {addr} ({mode}) within {CALL_TIMEOUT_SECONDS:.0f} s"
                ) from None
            run(Client(stubs, channel), addr, mode, operator, scope, other)
    except StepFailed as e:
        fail(str(e), 1)
    step("all steps passed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
