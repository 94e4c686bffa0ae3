"""Errors a user can cause. The CLI prints each on one line and exits non-zero."""


class DynosimError(Exception):
    """A problem in the user's app or command line, with what to do about it."""

    exit_code = 1


class ProcfileError(DynosimError):
    pass


class ConfigError(DynosimError):
    pass


class ManifestError(DynosimError):
    pass


class FormationError(DynosimError):
    pass


class BuildError(DynosimError):
    pass


class ReleaseError(DynosimError):
    pass


class PortError(DynosimError):
    pass


class AddonError(DynosimError):
    pass


class FaultError(DynosimError):
    pass
