#!/usr/bin/env python3
"""The story of an installed app, told by a client from another stack.

A plain script (exit code 0 when every check passes, 1 otherwise) that starts a real
`integration-hub serve --dev` on a free loopback port with a fresh data directory, discovers
the API by server reflection ONLY (no .proto files, no generated code), and walks through
README.md's story: a developer adds a Slack installed app, another developer builds an
integration on it, a watcher streams events, an admin previews and then deletes the app, the
integration breaks (and the watcher is told), a replacement app and one bulk
ReauthenticateIntegrations call restore it (and the watcher is told), and a service token
resolves the new credentials. Then error details (`grpc-status-details-bin`) and a graceful
SIGTERM shutdown (exit code 0, the open watch stream ended with UNAVAILABLE and its cursor).

Environment:
  INTEGRATION_HUB_BIN  the server binary (default: target/debug/integration-hub, relative to
                       the repository root; a relative value is taken relative to it too).

Against a server that is already running (a container, for example: .ci/image-check), instead:
  --address HOST:PORT   the server; tokens are minted with `$INTEGRATION_HUB_BIN token` and the
                        INTEGRATION_HUB_JWT_* settings of the environment (the server's secret,
                        issuer and audience), never with the development secret;
  --stop-command CMD    a shell command that sends the server SIGTERM, waits for it to end and
                        prints its exit code as its last line (`podman kill ... && podman wait ...`);
  --log-command CMD     a shell command that prints the server's log (shown when a check fails);
  --shutdown-within S   the exit after SIGTERM must come within S seconds (default 40).

Dependencies (clients/python/requirements.txt): grpcio, grpcio-reflection, protobuf, and
googleapis-common-protos for the google.rpc types of the error details.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import grpc
from google.protobuf import descriptor_pool, json_format, message_factory
from google.rpc import error_details_pb2, status_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TEAM = "acme"
STARTUP_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 15.0
EVENT_TIMEOUT_S = 15.0
SHUTDOWN_TIMEOUT_S = 40.0

FIRST_TOKEN = "xoxb-first-token-py-client"
NEW_TOKEN = "xoxb-new-token-py-client"


def log(msg: str) -> None:
    print(f"[seed_story] {msg}", flush=True)


def server_binary() -> Path:
    value = os.environ.get("INTEGRATION_HUB_BIN", "target/debug/integration-hub")
    path = Path(value)
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file() or not os.access(path, os.X_OK):
        raise SystemExit(f"server binary not found or not executable: {path} (set INTEGRATION_HUB_BIN)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    """The environment for the server and `token`: no INTEGRATION_HUB_* settings leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEGRATION_HUB_")}
    env.setdefault("RUST_LOG", "info")
    env.setdefault("NO_COLOR", "1")  # a readable server log when a check fails
    return env


class Server:
    """`integration-hub serve --dev` on a free port, with its own data directory."""

    def __init__(self, binary: Path, data_dir: Path):
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / "server.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--dev", "--data-dir", str(self.data_dir), "--listen", self.address],
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env(),
        )
        log(f"started server pid {self.proc.pid} on {self.address} (log: {self.log_path})")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"server exited early with code {self.proc.returncode}")

    def token(self, role: str, subject: str, team: str = TEAM) -> str:
        out = subprocess.run(
            [str(self.binary), "token", "--dev", "--data-dir", str(self.data_dir),
             "--team", team, "--role", role, "--subject", subject],
            check=True, capture_output=True, text=True, env=child_env(), timeout=60,
        )
        token = out.stdout.strip()
        assert token.count(".") == 2, f"`token` did not print a JWT: {out.stdout!r} {out.stderr!r}"
        return token

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
        finally:
            self._log_file.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        return "\n".join(text[-lines:])


class ExternalServer:
    """A server someone else started (a container): the same interface as `Server`."""

    def __init__(self, binary: Path, address: str, stop_command: str, log_command: str | None,
                 shutdown_within: float):
        self.binary = binary
        self.address = address
        self.stop_command = stop_command
        self.log_command = log_command
        self.shutdown_within = shutdown_within

    def start(self) -> None:
        log(f"using the server at {self.address}")

    def check_alive(self) -> None:
        pass

    def token(self, role: str, subject: str, team: str = TEAM) -> str:
        if not os.environ.get("INTEGRATION_HUB_JWT_HS256_SECRET"):
            raise SystemExit("--address needs the server's INTEGRATION_HUB_JWT_HS256_SECRET (and issuer, audience)")
        out = subprocess.run(
            [str(self.binary), "token", "--team", team, "--role", role, "--subject", subject],
            check=True, capture_output=True, text=True, timeout=60,
        )
        token = out.stdout.strip()
        assert token.count(".") == 2, f"`token` did not print a JWT: {out.stderr!r}"
        return token

    def terminate(self) -> int:
        started = time.monotonic()
        out = subprocess.run(self.stop_command, shell=True, capture_output=True, text=True,
                             timeout=SHUTDOWN_TIMEOUT_S + 30)
        elapsed = time.monotonic() - started
        assert out.returncode == 0, f"stop command failed ({out.returncode}): {out.stderr.strip()}"
        lines = out.stdout.strip().splitlines()
        assert lines and lines[-1].strip().lstrip("-").isdigit(), f"no exit code from the stop command: {out.stdout!r}"
        log(f"the server ended {elapsed:.1f}s after SIGTERM (within {self.shutdown_within:g}s required)")
        assert elapsed <= self.shutdown_within, f"the server took {elapsed:.1f}s to end after SIGTERM"
        return int(lines[-1])

    def kill(self) -> None:
        pass

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_command:
            return "(no --log-command)"
        out = subprocess.run(self.log_command, shell=True, capture_output=True, text=True, timeout=30)
        return "\n".join((out.stdout + out.stderr).splitlines()[-lines:])


class Reflected:
    """The API as the server describes it over reflection: message classes and call stubs."""

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.db = ProtoReflectionDescriptorDatabase(channel)
        self.pool = descriptor_pool.DescriptorPool(self.db)

    def services(self) -> list[str]:
        return sorted(self.db.get_services())

    def message(self, full_name: str):
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def _method(self, service: str, method: str):
        svc = self.pool.FindServiceByName(service)
        m = svc.methods_by_name.get(method)
        assert m is not None, f"{service} has no method {method} (has {sorted(svc.methods_by_name)})"
        req_cls = message_factory.GetMessageClass(m.input_type)
        resp_cls = message_factory.GetMessageClass(m.output_type)
        return m, req_cls, resp_cls

    def request(self, service: str, method: str, body: dict):
        _, req_cls, _ = self._method(service, method)
        return json_format.ParseDict(body, req_cls())

    def unary(self, service: str, method: str, body: dict, token: str | None = None, timeout: float = CALL_TIMEOUT_S):
        m, req_cls, resp_cls = self._method(service, method)
        assert not m.server_streaming and not m.client_streaming, f"{method} is not unary"
        stub = self.channel.unary_unary(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        return stub(json_format.ParseDict(body, req_cls()), metadata=auth(token), timeout=timeout)

    def server_stream(self, service: str, method: str, body: dict, token: str | None = None):
        m, req_cls, resp_cls = self._method(service, method)
        assert m.server_streaming and not m.client_streaming, f"{method} is not server streaming"
        stub = self.channel.unary_stream(
            f"/{service}/{method}",
            request_serializer=req_cls.SerializeToString,
            response_deserializer=resp_cls.FromString,
        )
        return stub(json_format.ParseDict(body, req_cls()), metadata=auth(token))


def auth(token: str | None):
    return [("authorization", f"Bearer {token}")] if token else None


def enum_name(msg, field: str) -> str:
    """The name of an enum field's value, from the reflected descriptor."""
    fd = msg.DESCRIPTOR.fields_by_name[field]
    return fd.enum_type.values_by_number[getattr(msg, field)].name


def expect_error(code: grpc.StatusCode, fn, *args, **kwargs) -> grpc.RpcError:
    try:
        resp = fn(*args, **kwargs)
    except grpc.RpcError as err:
        assert err.code() == code, f"expected {code.name}, got {err.code().name}: {err.details()}"
        return err
    raise AssertionError(f"expected {code.name}, got a response: {resp}")


def status_details(err: grpc.RpcError):
    """Decodes the `grpc-status-details-bin` trailer into (Status, ErrorInfo list, BadRequest list)."""
    raw = [v for k, v in (err.trailing_metadata() or ()) if k == "grpc-status-details-bin"]
    assert len(raw) == 1, f"expected one grpc-status-details-bin trailer, got {len(raw)}"
    status = status_pb2.Status.FromString(raw[0])
    assert status.code == err.code().value[0], f"status code {status.code} != {err.code()}"
    infos, bad_requests = [], []
    for any_ in status.details:
        if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_.Unpack(info)
            infos.append(info)
        elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            any_.Unpack(br)
            bad_requests.append(br)
    return status, infos, bad_requests


class Watcher(threading.Thread):
    """Streams WatchIntegrationEvents into a queue until the stream ends."""

    def __init__(self, api: Reflected, token: str):
        super().__init__(name="watcher", daemon=True)
        self.messages: queue.Queue = queue.Queue()
        self.call = api.server_stream(IS, "WatchIntegrationEvents", {}, token)
        self.ended_with: grpc.RpcError | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for msg in self.call:
                self.messages.put(msg)
        except grpc.RpcError as err:
            self.ended_with = err
        finally:
            self.done.set()

    def next_message(self, timeout: float = EVENT_TIMEOUT_S):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"watcher got no message within {timeout}s (ended with: {self.ended_with!r})")

    def wait_event(self, event_type: str, integration: str, timeout: float = EVENT_TIMEOUT_S):
        """Returns the first event of this type for this integration; skips the others."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"watcher saw no {event_type} for {integration}; saw {seen}")
            msg = self.next_message(left)
            assert msg.cursor, "every watch message carries a cursor"
            for ev in msg.events:
                name = enum_name(ev, "type")
                seen.append((name, ev.integration_name))
                if name == event_type and ev.integration_name == integration:
                    return ev


IAS = "integrationhub.v1.InstalledAppService"
IS = "integrationhub.v1.IntegrationService"
HEALTH = "grpc.health.v1.Health"


def wait_until_serving(server: Server, channel: grpc.Channel) -> Reflected:
    """Polls (no fixed sleeps) until the channel connects and health says SERVING."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        server.check_alive()
        if time.monotonic() > deadline:
            raise AssertionError(f"server not reachable within {STARTUP_TIMEOUT_S}s")
        try:
            grpc.channel_ready_future(channel).result(timeout=0.25)
            break
        except grpc.FutureTimeoutError:
            continue
    api = Reflected(channel)
    # The health service is discovered by reflection too.
    while True:
        server.check_alive()
        try:
            for service in ("", IAS, IS):
                resp = api.unary(HEALTH, "Check", {"service": service}, timeout=2)
                if enum_name(resp, "status") != "SERVING":
                    raise AssertionError(f"health of {service!r}: {enum_name(resp, 'status')}")
            return api
        except (grpc.RpcError, AssertionError) as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"server not SERVING within {STARTUP_TIMEOUT_S}s: {err}")
            time.sleep(0.1)


def story(server: Server, api: Reflected) -> None:
    # --- Discovery: reflection lists the services; their methods are all there.
    services = api.services()
    log(f"services by reflection: {services}")
    # (the AuditService is not in this proto yet; the two services of the story are.)
    for name in (IAS, IS, HEALTH):
        assert name in services, f"{name} not listed by reflection: {services}"
    for name, methods in {
        IAS: ["ListServices", "CreateInstalledApp", "GetInstalledApp", "ListInstalledApps",
              "UpdateInstalledApp", "DeleteInstalledApp", "ReportCredentialsRejected"],
        IS: ["CreateIntegration", "GetIntegration", "ListIntegrations", "UpdateIntegration",
             "DeleteIntegration", "ReauthenticateIntegration", "ReauthenticateIntegrations",
             "ResolveIntegrationCredentials", "WatchIntegrationEvents"],
    }.items():
        have = set(api.pool.FindServiceByName(name).methods_by_name)
        missing = set(methods) - have
        assert not missing, f"{name} lacks {sorted(missing)}"
    # Credentials are write-only: the resource messages have no field for them.
    for msg in ("integrationhub.v1.InstalledApp", "integrationhub.v1.Integration"):
        fields = set(api.pool.FindMessageTypeByName(msg).fields_by_name)
        assert "credentials" not in fields, f"{msg} exposes credentials"

    admin = server.token("admin", "alice")
    dana = server.token("developer", "dana")
    erin = server.token("developer", "erin")
    svc = server.token("service", "deliverer")
    viewer = server.token("viewer", "victor")

    # --- What can be installed.
    catalog = api.unary(IAS, "ListServices", {}, viewer)
    by_id = {s.id: s for s in catalog.services}
    assert "slack" in by_id, f"slack not in the catalog: {sorted(by_id)}"
    slack = by_id["slack"]
    cred_fields = {f.name: f for f in slack.credential_fields}
    assert "access_token" in cred_fields and cred_fields["access_token"].secret, cred_fields
    types = {t.id: t for t in slack.integration_types}
    assert "slack.post_monitor_results" in types, sorted(types)
    config_fields = {f.name for f in types["slack.post_monitor_results"].config_fields}
    assert {"channel", "monitor_id"} <= config_fields, config_fields
    log(f"catalog: {len(catalog.services)} services; slack credential fields {sorted(cred_fields)}")

    # --- 1. A developer adds an installed app; the credentials never come back.
    app = api.unary(IAS, "CreateInstalledApp", {
        "installedApp": {"service": "slack", "displayName": "Slack (ops)", "connectedTo": "acme.slack.com"},
        "credentials": {"access_token": FIRST_TOKEN},
        "requestId": "py-add-slack-1",
    }, dana)
    assert app.name.startswith(f"teams/{TEAM}/installedApps/"), app.name
    assert enum_name(app, "state") == "ACTIVE"
    assert app.creator == "dana" and app.service == "slack" and app.etag, app
    assert FIRST_TOKEN.encode() not in app.SerializeToString()
    # The same request_id is an idempotent retry: the same app, not a second one.
    again = api.unary(IAS, "CreateInstalledApp", {
        "installedApp": {"service": "slack", "displayName": "Slack (ops)", "connectedTo": "acme.slack.com"},
        "credentials": {"access_token": FIRST_TOKEN},
        "requestId": "py-add-slack-1",
    }, dana)
    assert again.name == app.name, (again.name, app.name)
    log(f"dana added {app.name}")

    # --- 2. Another developer builds an integration on it, never seeing the credentials.
    integ = api.unary(IS, "CreateIntegration", {
        "integration": {
            "installedApp": app.name, "type": "slack.post_monitor_results",
            "displayName": "Monitor results to #ops",
            "config": {"channel": "#ops", "monitor_id": "mon-42"},
        },
    }, erin)
    assert integ.name.startswith(f"teams/{TEAM}/integrations/"), integ.name
    assert enum_name(integ, "state") == "ACTIVE" and integ.creator == "erin"
    assert integ.installed_app == app.name and integ.service == "slack"
    assert dict(integ.config) == {"channel": "#ops", "monitor_id": "mon-42"}, dict(integ.config)
    got = api.unary(IAS, "GetInstalledApp", {"name": app.name}, erin)
    assert got.integration_count == 1, got.integration_count
    listed = api.unary(IAS, "ListInstalledApps", {}, erin)
    for a in listed.installed_apps:
        assert FIRST_TOKEN.encode() not in a.SerializeToString()
    log(f"erin added {integ.name}")

    # --- 3. A watcher streams the team's events; a live start begins with a checkpoint.
    watcher = Watcher(api, viewer)
    watcher.start()
    first = watcher.next_message()
    assert first.checkpoint and not first.events and first.cursor, f"first watch message: {first}"
    log("watcher is live (checkpoint received)")

    # --- 4. Only an admin deletes; first a preview that changes nothing.
    expect_error(grpc.StatusCode.PERMISSION_DENIED, api.unary, IAS, "DeleteInstalledApp", {"name": app.name}, dana)
    preview = api.unary(IAS, "DeleteInstalledApp", {"name": app.name, "validateOnly": True}, admin)
    assert list(preview.broken_integrations) == [integ.name], list(preview.broken_integrations)
    still = api.unary(IS, "GetIntegration", {"name": integ.name}, dana)
    assert enum_name(still, "state") == "ACTIVE", "validate_only changed the integration"
    api.unary(IAS, "GetInstalledApp", {"name": app.name}, dana)  # still there
    deleted = api.unary(IAS, "DeleteInstalledApp", {"name": app.name}, admin)
    assert list(deleted.broken_integrations) == [integ.name], list(deleted.broken_integrations)
    expect_error(grpc.StatusCode.NOT_FOUND, api.unary, IAS, "GetInstalledApp", {"name": app.name}, dana)
    log(f"alice deleted {app.name}; broke {list(deleted.broken_integrations)}")

    # --- 5. The watcher is told; the integration says why and still names the deleted app.
    ev = watcher.wait_event("INTEGRATION_BROKEN", integ.name)
    assert enum_name(ev, "reason") == "INSTALLED_APP_DELETED", ev
    assert ev.installed_app == app.name and ev.actor == "alice", ev
    assert enum_name(ev.integration, "state") == "BROKEN", ev.integration
    log("watcher saw INTEGRATION_BROKEN (INSTALLED_APP_DELETED)")
    broken = api.unary(IS, "GetIntegration", {"name": integ.name}, dana)
    assert enum_name(broken, "state") == "BROKEN"
    assert enum_name(broken, "broken_reason") == "INSTALLED_APP_DELETED"
    assert broken.installed_app == app.name, broken.installed_app
    assert "Slack (ops)" in broken.broken_detail, broken.broken_detail
    assert broken.HasField("broken_time")
    listing = api.unary(IS, "ListIntegrations", {"installedApp": app.name, "state": "BROKEN"}, dana)
    assert [i.name for i in listing.integrations] == [integ.name], listing
    assert listing.event_cursor, "ListIntegrations carries the event cursor"
    # Nothing to resolve while broken.
    expect_error(grpc.StatusCode.FAILED_PRECONDITION, api.unary, IS, "ResolveIntegrationCredentials",
                 {"name": integ.name}, svc)

    # --- 6. A replacement app, and one bulk call rebinds what the deleted app broke.
    new_app = api.unary(IAS, "CreateInstalledApp", {
        "installedApp": {"service": "slack", "displayName": "Slack (ops, new)"},
        "credentials": {"access_token": NEW_TOKEN},
    }, dana)
    assert new_app.name != app.name
    restored = api.unary(IS, "ReauthenticateIntegrations",
                         {"fromInstalledApp": app.name, "toInstalledApp": new_app.name}, dana)
    assert [i.name for i in restored.integrations] == [integ.name], restored
    r = restored.integrations[0]
    assert enum_name(r, "state") == "ACTIVE" and r.installed_app == new_app.name, r
    assert enum_name(r, "broken_reason") == "BROKEN_REASON_UNSPECIFIED" and not r.broken_detail, r
    ev = watcher.wait_event("INTEGRATION_RESTORED", integ.name)
    assert ev.integration.installed_app == new_app.name, ev
    log(f"bulk reauthentication onto {new_app.name}; watcher saw INTEGRATION_RESTORED")

    # --- 7. A service token resolves the credentials: the new token. Nobody else may.
    expect_error(grpc.StatusCode.PERMISSION_DENIED, api.unary, IS, "ResolveIntegrationCredentials",
                 {"name": integ.name}, dana)
    resolved = api.unary(IS, "ResolveIntegrationCredentials", {"name": integ.name}, svc)
    assert resolved.service == "slack", resolved.service
    assert dict(resolved.credentials) == {"access_token": NEW_TOKEN}, "resolved the wrong credentials"
    assert resolved.integration.name == integ.name
    log("service token resolved the new credentials")

    # --- 8. Errors carry details: INVALID_ARGUMENT with a BadRequest naming the field.
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, api.unary, IS, "CreateIntegration", {
        "integration": {
            "installedApp": new_app.name, "type": "slack.post_monitor_results",
            "displayName": "Missing its monitor", "config": {"channel": "#ops"},
        },
    }, dana)
    status, infos, bad_requests = status_details(err)
    assert len(infos) == 1, f"expected one ErrorInfo: {status}"
    assert infos[0].domain == "integrationhub" and infos[0].reason == "INVALID_ARGUMENT", infos[0]
    assert len(bad_requests) == 1, f"expected one BadRequest: {status}"
    fields = [v.field for v in bad_requests[0].field_violations]
    assert "integration.config.monitor_id" in fields, fields
    log(f"INVALID_ARGUMENT details: ErrorInfo {infos[0].reason}, BadRequest fields {fields}")
    # A bad credential value never appears in an error.
    secret = "xoxb-must-not-leak-in-errors"
    err = expect_error(grpc.StatusCode.INVALID_ARGUMENT, api.unary, IAS, "CreateInstalledApp", {
        "installedApp": {"service": "slack", "displayName": "Bad"},
        "credentials": {"access_token": secret, "not_a_field": secret},
    }, dana)
    status, _, bad_requests = status_details(err)
    fields = [v.field for v in bad_requests[0].field_violations]
    assert "credentials.not_a_field" in fields, fields
    assert secret not in (err.details() or "") and secret.encode() not in status.SerializeToString()
    # Without a token: UNAUTHENTICATED, with its ErrorInfo.
    err = expect_error(grpc.StatusCode.UNAUTHENTICATED, api.unary, IAS, "ListInstalledApps", {})
    _, infos, _ = status_details(err)
    assert [i.reason for i in infos] == ["UNAUTHENTICATED"], infos

    # --- 9. Graceful shutdown: SIGTERM, exit code 0, the open watch ended with its cursor.
    code = server.terminate()
    assert code == 0, f"server exited with {code} after SIGTERM"
    assert watcher.done.wait(EVENT_TIMEOUT_S), "the watch stream did not end at shutdown"
    ended = watcher.ended_with
    assert ended is not None and ended.code() == grpc.StatusCode.UNAVAILABLE, f"watch ended with {ended!r}"
    _, infos, _ = status_details(ended)
    assert infos and infos[0].metadata.get("cursor"), f"no resume cursor at shutdown: {infos}"
    log("SIGTERM: exit code 0; the watch stream ended UNAVAILABLE with its cursor")


def main() -> int:
    ap = argparse.ArgumentParser(description="README.md's story over reflection only.")
    ap.add_argument("--address", help="a running server (HOST:PORT) instead of a fresh serve --dev")
    ap.add_argument("--stop-command", help="with --address: SIGTERM it, wait, print its exit code")
    ap.add_argument("--log-command", help="with --address: print its log")
    ap.add_argument("--shutdown-within", type=float, default=SHUTDOWN_TIMEOUT_S,
                    help="seconds the server may take to end after SIGTERM")
    args = ap.parse_args()
    if args.address and not args.stop_command:
        ap.error("--address needs --stop-command")
    binary = server_binary()
    with tempfile.TemporaryDirectory(prefix="integration-hub-py-") as tmp:
        if args.address:
            server = ExternalServer(binary, args.address, args.stop_command, args.log_command,
                                    args.shutdown_within)
        else:
            server = Server(binary, Path(tmp) / "data")
        channel = None
        try:
            server.start()
            # No proxy between us and the loopback server, whatever the environment says.
            channel = grpc.insecure_channel(server.address, options=[("grpc.enable_http_proxy", 0)])
            api = wait_until_serving(server, channel)
            log("server is SERVING")
            story(server, api)
        except BaseException:
            traceback.print_exc()
            print("\n--- server log (tail) ---\n" + server.log_tail(), file=sys.stderr, flush=True)
            print("\nFAILED", flush=True)
            return 1
        finally:
            if channel is not None:
                channel.close()
            server.kill()
    print("seed story: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
