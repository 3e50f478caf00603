"""Certificates: test a theory's hypotheses on a concrete parameter point."""
