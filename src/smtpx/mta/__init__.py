"""The relay MTA: configuration, routing, relay policy, composition of server, spool and client."""
