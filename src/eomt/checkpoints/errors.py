class CheckpointError(ValueError):
    """A checkpoint cannot be found, read or matched to the network; the message names what and why."""


class CheckpointNotFoundError(CheckpointError, OSError):
    """A file, directory, hub repo or revision does not exist (an OSError too, as transformers raises)."""


class HubUnavailableError(CheckpointNotFoundError):
    """A hub file is not in the local cache and cannot be downloaded (offline, or no network).

    `reason` says why, where it looked; the message adds a hint that holds wherever the error is read. A
    command line replaces that hint with one in its own terms (`eomt.cli.errors`).
    """

    HINT = "give a local directory or checkpoint file instead"

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; {self.HINT}")
        self.reason = reason
