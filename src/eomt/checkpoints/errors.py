class CheckpointError(ValueError):
    """A checkpoint cannot be found, read or matched to the network; the message names what and why."""


class CheckpointNotFoundError(CheckpointError, OSError):
    """A file, directory, hub repo or revision does not exist (an OSError too, as transformers raises)."""
