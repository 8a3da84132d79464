"""Client-side encryption of artifacts in the standard age format (age-encryption.org/v1)."""
