"""Pure policy: decisions computed from data alone (retention, planning), with no I/O."""
