"""Small helpers with no knowledge of jdr's domain."""
