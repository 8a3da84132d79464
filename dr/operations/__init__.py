"""Operations: backup, restore, verify, prune, drill, listing. Each decides (with dr.policy) and acts
through the ports (repository, deployment); none knows which adapter it talks to."""
