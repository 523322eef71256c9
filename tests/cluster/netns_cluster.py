"""A throwaway two-node Slurm cluster: each slurmd in its own network namespace and hostname, the nodes
joined to slurmctld (root namespace) through veth pairs on one bridge, so a 2-node job's ranks
rendezvous over a real network link rather than loopback.

    root ns: slurmctld, bridge mjbr<id> 10.77.<id>.1
    node mjn1: netns, UTS ns with hostname mjn1, veth mjeth0 10.77.<id>.11, default route via the bridge
    node mjn2: likewise at .12

Names resolve through /etc/hosts lines that are added at start and removed at stop. Needs root and
iproute2; anything missing raises ClusterUnavailable (a skip).
"""
from __future__ import annotations

import os
import shutil
import subprocess

from cluster.slurm_cluster import ClusterUnavailable, SlurmCluster

HOSTS = "/etc/hosts"
NIC = "mjeth0"  # the same interface name inside every node: GLOO_SOCKET_IFNAME works on all of them


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        raise ClusterUnavailable(f"ip {' '.join(args)} failed: {p.stderr.strip()}")
    return p


class NetnsSlurmCluster(SlurmCluster):
    def __init__(self, root: str | None = None, subnet: int = 77):
        super().__init__(root)
        self.net = f"10.77.{subnet}"
        self.bridge = f"mjbr{subnet}"
        self.ctld_addr = f"{self.net}.1"
        self.nodes = {f"mjn{i}": f"{self.net}.{10 + i}" for i in (1, 2)}
        self.netns = {name: f"mj{subnet}{name}" for name in self.nodes}
        self.marker = f"# megajepa test cluster {subnet}"

    def start(self, timeout: float = 60) -> "NetnsSlurmCluster":
        if os.geteuid() != 0 or not all(shutil.which(b) for b in ("ip", "nsenter", "unshare")):
            raise ClusterUnavailable("a two-node cluster needs root, iproute2, nsenter and unshare")
        self._network_down()  # leftovers of an interrupted run
        try:
            self._network_up()
        except (ClusterUnavailable, OSError, subprocess.SubprocessError) as e:
            self._network_down()
            raise ClusterUnavailable(f"network namespaces: {e}") from e
        return super().start(timeout)

    def stop(self) -> None:
        super().stop()
        self._network_down()

    def slurmd_command(self, node: str) -> list[str]:
        # its own network and hostname: job steps on this node see mjnX, resolve it to their veth address
        # nsenter, not `ip netns exec`: that remounts /sys, hiding the cgroup mounts slurmd needs
        return ["nsenter", f"--net=/var/run/netns/{self.netns[node]}", "unshare", "--uts", "sh", "-c",
                f"hostname {node} && exec slurmd -D -f {self.conf} -N {node}"]

    def _network_up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.ctld_addr}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (node, addr) in enumerate(self.nodes.items(), 1):
            ns, outer = self.netns[node], f"{self.bridge}v{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", NIC, "netns", ns)
            _ip("link", "set", outer, "master", self.bridge)
            _ip("link", "set", outer, "up")
            for args in (("addr", "add", f"{addr}/24", "dev", NIC), ("link", "set", NIC, "up"),
                         ("link", "set", "lo", "up"), ("route", "add", "default", "via", self.ctld_addr)):
                _ip("-n", ns, *args)
        with open(HOSTS, "a") as f:
            f.write("".join(f"{addr} {node} {self.marker}\n" for node, addr in self.nodes.items()))

    def _network_down(self) -> None:
        for ns in self.netns.values():
            _ip("netns", "del", ns, check=False)
        _ip("link", "del", self.bridge, check=False)
        if os.path.exists(HOSTS):
            with open(HOSTS) as f:
                lines = f.readlines()
            kept = [line for line in lines if self.marker not in line]
            if kept != lines:
                with open(HOSTS, "w") as f:  # in place: /etc/hosts may be a bind mount
                    f.writelines(kept)
