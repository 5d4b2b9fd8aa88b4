"""Published ports on HCS: the endpoint's port-mapping policies (HCN PortMapping, HNS v1 NAT),
as the simulated host receives them and as the dry run shows them."""

from __future__ import annotations

import json


def _endpoint_settings(run, api: str) -> dict:
    if api == "v2":
        ((_, settings),) = [c["args"] for c in run.calls("HcnCreateEndpoint")]
        return json.loads(settings)
    posts = [c["args"] for c in run.calls("HNSCall") if c["args"][:2] == ["POST", "/endpoints/"]]
    return json.loads(posts[0][2])


def test_v2_endpoint_carries_a_port_mapping_per_published_port(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", network="nat", hcs_api="v2", ports=["8080:80", "127.0.0.1:5353:53/udp"])
    assert run.returncode == 0, run.stderr
    policies = _endpoint_settings(run, "v2")["Policies"]
    assert policies == [
        {"Type": "PortMapping", "Settings": {"Protocol": 6, "InternalPort": 80, "ExternalPort": 8080}},
        {"Type": "PortMapping", "Settings": {"Protocol": 17, "InternalPort": 53, "ExternalPort": 5353, "VIP": "127.0.0.1"}},
    ]


def test_v1_endpoint_carries_nat_policies_and_refuses_a_host_address(host):
    host.script("ok.sh", "exit 0\n")
    run = host.run(process_executable="ok.sh", network="nat", hcs_api="v1", ports=["8080:80/udp"])
    assert run.returncode == 0, run.stderr
    assert _endpoint_settings(run, "v1")["Policies"] == [{"Type": "NAT", "Protocol": "UDP", "InternalPort": 80, "ExternalPort": 8080}]
    refused = host.run(process_executable="ok.sh", network="nat", hcs_api="v1", ports=["127.0.0.1:8080:80"])
    assert refused.returncode == 125 and "HNS v1 cannot limit a published port to one host address" in refused.stderr
    assert not [c for c in refused.calls("HNSCall") if c["args"][:2] == ["POST", "/endpoints/"]]


def test_the_dry_run_shows_the_endpoints(host):
    host.script("ok.sh", "exit 0\n")
    plan = json.loads(host.run("--dry-run", process_executable="ok.sh", network="nat", ports=["9000:90"]).stdout)
    assert plan["endpoint"]["v2"]["Policies"][0]["Settings"] == {"Protocol": 6, "InternalPort": 90, "ExternalPort": 9000}
    assert plan["endpoint"]["v1"]["Policies"][0]["Type"] == "NAT"
    assert json.loads(host.run("--dry-run", process_executable="ok.sh").stdout)["endpoint"] is None
