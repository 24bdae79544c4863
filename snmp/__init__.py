"""SNMP without Django, shared by inventory, discovery and the reference agent (`agent/`):

- `snmp.credentials`: the vocabulary of SNMP credentials on the wire (versions, types, security levels,
  protocols, secrets), their validation and their JSON Schema;
- `snmp.targets`: discovery targets (addresses, CIDR networks, ranges), parsed, counted and expanded;
- `snmp.sweep`: the scanner's first pass, one small hand-encoded request to every address;
- `snmp.scanner`: the discovery scanner (the sweep, then pysnmp's full GET to the addresses that answered).

It imports no Django and no server app (core, sites, instances, inventory, discovery, fleet, config).
"""
