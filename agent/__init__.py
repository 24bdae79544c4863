"""The reference PromSNMP instance: the instance side of the Cloud Manager protocol (docs/protocol.md).

A library (`agent.client.ManagerClient` for REST, `agent.runner.Agent` for the life of one instance)
and the `promsnmp-agent` CLI (`agent.__main__`). It imports nothing from the manager's apps but the
SNMP scanner `discovery.snmp` (and the target parser it uses), and runs without Django settings.
"""
