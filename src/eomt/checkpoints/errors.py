class CheckpointError(ValueError):
    """A checkpoint cannot be found, read or matched to the network; the message names what and why."""
