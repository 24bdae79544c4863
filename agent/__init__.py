"""The reference PromSNMP instance: the instance side of the Cloud Manager protocol (docs/protocol.md).

A library (`agent.client.ManagerClient` for REST, `agent.runner.Agent` for the life of one instance)
and the `promsnmp-agent` CLI (`agent.__main__`). It imports none of the manager's apps, only the
Django-free `snmp` package (the scanner, and the targets and credentials it reads), and runs without
Django settings.
"""
