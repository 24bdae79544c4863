"""SNMP without Django, shared by inventory, discovery and the reference agent (`agent/`):

- `snmp.credentials`: the vocabulary of SNMP credentials on the wire (versions, types, security levels,
  protocols, secrets), their validation and their JSON Schema;
- `snmp.targets`: discovery targets (addresses, CIDR networks, ranges), parsed, counted and expanded;
- `snmp.scanner`: the pysnmp discovery scanner.

It imports no Django and no server app (core, sites, instances, inventory, discovery, fleet, config).
"""
