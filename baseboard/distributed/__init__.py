"""Tensor parallelism on torch.distributed: sharding a model over ranks (``sharding``),
the layers' collectives (``parallel``), starting or joining the ranks (``launch``) and the
worker processes (``workers``, ``worker``). See docs/distributed.md."""
