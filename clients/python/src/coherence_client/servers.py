"""Servers and roles, typed (service `coherence.v1.Servers`): which servers of the namespace are
alive, and whether this one should run scheduled and back-office work.

A role is never assumed: a sidecar that cannot prove its role reports `Role.UNKNOWN`, and an
app should then run nothing that only one server may run.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from ._call import Stream, Target
from ._generated import servers_pb2 as pb
from ._generated import servers_pb2_grpc as pb_grpc


class Role(enum.Enum):
    """A server's role."""

    SINGLE = pb.ROLE_SINGLE
    """The only live server: does everything a scheduling publisher does."""
    SCHEDULING_PUBLISHER = pb.ROLE_SCHEDULING_PUBLISHER
    """Runs scheduled and back-office work."""
    SUBSCRIBER = pb.ROLE_SUBSCRIBER
    """Another server is the scheduling publisher."""
    UNKNOWN = pb.ROLE_UNKNOWN
    """No role can be proven now: run nothing that only one server may run."""

    @property
    def runs_scheduled_work(self) -> bool:
        return self in (Role.SINGLE, Role.SCHEDULING_PUBLISHER)

    @classmethod
    def from_proto(cls, value: int) -> "Role":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


class RoleMode(enum.Enum):
    """How roles are chosen (the sidecar's `role` setting)."""

    STATIC = pb.ROLE_MODE_STATIC
    ELECTED = pb.ROLE_MODE_ELECTED
    UNKNOWN = pb.ROLE_MODE_UNSPECIFIED

    @classmethod
    def from_proto(cls, value: int) -> "RoleMode":
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN


@dataclass(frozen=True)
class RoleStatus:
    """This server's role and why."""

    role: Role
    mode: RoleMode
    server_id: str
    leader_id: str | None
    live_servers: int
    reason: str

    @classmethod
    def from_proto(cls, status: pb.RoleStatus) -> "RoleStatus":
        return cls(
            role=Role.from_proto(status.role),
            mode=RoleMode.from_proto(status.mode),
            server_id=status.server_id,
            leader_id=status.leader_id or None,
            live_servers=status.live_servers,
            reason=status.reason,
        )


@dataclass(frozen=True)
class ServerInfo:
    """One live server."""

    server_id: str
    address: str
    version: str
    started_at_unix_ms: int
    last_heartbeat_unix_ms: int
    role: Role


@dataclass(frozen=True)
class ServerList:
    """The live servers of the namespace."""

    servers: list[ServerInfo]
    leader_id: str | None


class Servers:
    """The servers of one sidecar's namespace; from `Client.servers()`."""

    def __init__(self, channel: grpc.Channel, target: Target):
        self._stub = pb_grpc.ServersStub(channel)
        self._target = target

    def role(self) -> RoleStatus:
        """This server's role now."""
        return RoleStatus.from_proto(self._target.unary(self._stub.GetRole, pb.GetRoleRequest()))

    def list(self) -> ServerList:
        """The live servers of the namespace."""
        answer = self._target.unary(self._stub.ListServers, pb.ListServersRequest())
        return ServerList(
            servers=[
                ServerInfo(
                    server_id=s.server_id,
                    address=s.address,
                    version=s.version,
                    started_at_unix_ms=s.started_at_unix_ms,
                    last_heartbeat_unix_ms=s.last_heartbeat_unix_ms,
                    role=Role.from_proto(s.role),
                )
                for s in answer.servers
            ],
            leader_id=answer.leader_id or None,
        )

    def watch_role(self) -> Stream[RoleStatus]:
        """The role now, then every change, until cancelled (or the sidecar ends it)."""
        return self._target.stream(self._stub.WatchRole, pb.WatchRoleRequest(), RoleStatus.from_proto)
